"""JSON and YAML exports, in two forms.

* **compact**: the design as written, with pattern / string / rules /
  repetition preserved. Fields equal to their default are left out, except a
  few headline fields that make a file readable on its own (name,
  architecture, task, sizes, and each stack's ``n_layers`` / ``attention`` /
  ``mlp``). The form depends only on the design's values, never on how it was
  built, so exporting is idempotent and ``load_design(compact) == design``.
* **resolved**: every stack as an ``explicit`` per-layer list of its unique
  layers (attention, mlp, norm and the params that differ from the kind's
  defaults); no pattern, string, rules or stack-level params. Repetition and
  flow are kept, so resolving the file gives the same executed layers with the
  same kinds and configs as the original design.

Key order follows the field order of :class:`~backend.spec.Design` (stable,
and the order a reader expects). YAML is block style with short flat
collections inline, multi-line text as literal blocks, and a comment header
with the headline numbers; comments never carry user text, so they cannot
break a round trip.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import yaml

from ..plan import Plan, resolve_plan
from ..spec import Design, load_design

# Fields kept in the compact form even when they equal the default.
HEADLINE = ("name", "architecture", "task", "vocab_size", "hidden_size", "n_heads", "max_seq_len")
STACK_HEADLINE = ("n_layers", "attention", "mlp")
STACK_KEYS = ("layers", "encoder", "decoder")
# Stack fields that describe how layers are assigned; the resolved form replaces them by `explicit`.
ASSIGNMENT_KEYS = ("params", "pattern", "string", "hybrid_override_pattern", "rules", "explicit")


def _merge_headline(full: dict[str, Any], compact: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    """Keys of ``full`` in order: the non-default ones plus ``keep``."""
    return {k: compact.get(k, full[k]) for k in full if k in compact or k in keep}


def compact_dict(design: Design) -> dict[str, Any]:
    """The design without default-valued fields (headline fields kept), JSON-ready."""
    full = design.to_dict()
    compact = design.to_dict(exclude_defaults=True)
    out = _merge_headline(full, compact, HEADLINE)
    for key in STACK_KEYS:
        if out.get(key) is not None:
            out[key] = _merge_headline(full[key], compact.get(key, {}), STACK_HEADLINE)
    return out


def _entry(layer: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"attention": layer.attention, "mlp": layer.mlp, "norm": layer.norm}
    params = {cat: dict(values) for cat, values in layer.params.items() if values}
    if params:
        entry["params"] = params
    return entry


def resolved_dict(design_or_plan: Design | Plan) -> dict[str, Any]:
    """The compact dict with every stack written as an explicit per-layer list."""
    plan = design_or_plan if isinstance(design_or_plan, Plan) else resolve_plan(design_or_plan)
    out = compact_dict(plan.design)
    for key, stack_plan in plan.stacks.items():
        explicit = [_entry(layer) for layer in stack_plan.unique]
        stack: dict[str, Any] = {}
        for field_name, value in out[key].items():
            if field_name in ("repeat", "flow") and "explicit" not in stack:
                stack["explicit"] = explicit  # after the stack defaults, before repeat / flow
            if field_name not in ASSIGNMENT_KEYS:
                stack[field_name] = value
        stack.setdefault("explicit", explicit)
        out[key] = stack
    return out


def design_dict(design: Design, resolved: bool = False) -> dict[str, Any]:
    return resolved_dict(design) if resolved else compact_dict(design)


# ---------------------------------------------------------------------------
# JSON


def to_json(design: Design, resolved: bool = False) -> str:
    """Indented JSON; small flat objects and lists (a layer entry, a rule) stay on one line."""
    return json_dump(design_dict(design, resolved)) + "\n"


def json_dump(value: Any, indent: int = 0) -> str:
    one = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or not value or (_is_flat(value) and indent + len(one) <= 116):
        return one
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {json_dump(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{json_dump(v, indent + 2)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


# ---------------------------------------------------------------------------
# YAML


class _Dumper(yaml.SafeDumper):
    """Safe dumper with indented block lists (``key:\\n  - item``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


_SCALARS = (str, int, float, bool, type(None))
_FLOW_WIDTH = 88


def _is_flat(value: Any) -> bool:
    """Small collections of scalars (or of such collections) read best inline."""
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return isinstance(value, _SCALARS) and not (isinstance(value, str) and ("\n" in value or len(value) > 40))
    return all(_is_flat(v) for v in items)


def _flow_ok(value: Any) -> bool:
    if not value or not _is_flat(value):
        return False
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    except yaml.YAMLError:
        return False
    return len(text.strip()) <= _FLOW_WIDTH


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=_flow_ok(data))


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_flow_ok(data))


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # Control characters, NEL, U+2028/2029 and BOM are double-quoted, where
    # PyYAML escapes them (in plain or single-quoted scalars it writes them raw
    # and a reader folds the line breaks to spaces). Other multi-line text asks
    # for a literal block; the emitter falls back to quotes whenever a block
    # could not represent the string exactly.
    if not all(ch.isprintable() or ch == "\n" for ch in data):
        style = '"'
    elif "\n" in data.strip("\n"):
        style = "|"
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)
_Dumper.add_representer(str, _represent_str)


def yaml_dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)


def to_yaml(design: Design, resolved: bool = False, *, header: bool = True, numbers: dict[str, Any] | None = None) -> str:
    """Block-style YAML; ``header`` adds a comment block with the headline numbers."""
    body = yaml_dump(design_dict(design, resolved))
    if not header:
        return body
    return "".join(f"# {line}\n" if line else "#\n" for line in header_lines(design, resolved, numbers)) + body


# ---------------------------------------------------------------------------
# The comment header. Only numbers and fixed text: never user strings.


def header_lines(design: Design, resolved: bool, numbers: dict[str, Any] | None = None) -> list[str]:
    form = "resolved (explicit per-layer list)" if resolved else "compact (as designed)"
    lines = [f"Transformer design, {form}.", "Load with `python -m backend plan FILE` or backend.load_design(FILE)."]
    nums = numbers if numbers is not None else headline_numbers(design)
    if nums.get("params") is not None:
        text = f"parameters: {nums['params']:,}"
        if nums.get("params_embedding") is not None:
            text += f" ({nums['params'] - nums['params_embedding']:,} non-embedding)"
        lines.append(text)
    for key, label in (("flops_forward", "forward FLOPs"), ("flops_training", "training FLOPs")):
        if isinstance(nums.get(key), (int, float)) and nums.get("seq_len"):
            lines.append(f"{label} per sequence of {int(nums['seq_len']):,} tokens: {float(nums[key]):.3e}")
    depths = ", ".join(f"{name} {stack.executed_depth}" for name, stack in design.stacks().items())
    lines.append(f"executed layers: {depths}")
    return lines


@functools.lru_cache(maxsize=64)
def _numbers_cached(canonical: str) -> tuple[tuple[str, Any], ...]:
    design = load_design(json.loads(canonical))
    nums: dict[str, Any] = {}
    try:  # the analysis report, when that module is present
        from ..analysis.report import analyze  # type: ignore

        report = analyze(design)
        report = report.to_dict() if hasattr(report, "to_dict") else report
        params = report.get("params", {}) if isinstance(report, dict) else {}
        flops = report.get("flops", {}) if isinstance(report, dict) else {}
        nums["params"] = params.get("total")
        nums["params_embedding"] = params.get("embedding")
        nums["flops_forward"] = flops.get("forward")
        nums["flops_training"] = flops.get("training")
        nums["seq_len"] = report.get("seq_len") or flops.get("seq_len") or design.max_seq_len
    except Exception:  # no analysis yet, or it failed: fall back to a plain count
        nums = {}
    if nums.get("params") is None:
        try:
            nums = {"params": count_params(design)}
        except Exception:
            nums = {}
    return tuple(sorted((k, v) for k, v in nums.items() if v is not None))


def headline_numbers(design: Design) -> dict[str, Any]:
    """Parameters (and FLOPs when the analysis is available), or {} when nothing can be computed."""
    return dict(_numbers_cached(json.dumps(design.to_dict(), sort_keys=True)))


def count_params(design: Design) -> int:
    """Exact ``sum(p.numel())`` of the backend's model built on the meta device."""
    from ..build import build_model  # torch: only when a count is asked for

    model = build_model(design, device="meta")
    return sum(p.numel() for p in model.parameters())
