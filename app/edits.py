"""Design edits as plain-data transformations (no streamlit, no numbers).

Every edit takes the design as a dict (``Design.to_dict()``), returns a new
dict, and leaves validation to ``backend.spec.load_design`` +
``backend.plan.resolve_plan`` (``state.set_design``), so a bad edit is
rejected with the backend's field-named message and the last valid design
stays on screen.

Painting works on *unique* layers: with repetition (cycle / layerwise /
grouped) an executed layer runs a shared module, so painting it paints every
execution of that module. The edit is a rule ``when: {layer_idx: [...]}``
(repetition, patterns and earlier rules keep their meaning), or, when the stack
is already an ``explicit`` list, a change of those entries.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

CATEGORIES = ("attention", "mlp", "norm")
ARCH_DEFAULT_TASK = {"decoder": "lm", "encoder": "mlm", "encoder_decoder": "seq2seq"}


def _stack(d: dict[str, Any], stack: str) -> dict[str, Any]:
    s = d.get(stack)
    if not isinstance(s, dict):
        raise KeyError(f"the design has no stack {stack!r}")
    return s


def paint(d: dict[str, Any], stack: str, unique: Iterable[int], category: str, kind: str,
          params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set ``category`` of the unique layers ``unique`` to ``kind`` (with ``params``)."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    idx = sorted({int(i) for i in unique})
    if not idx:
        return d
    d = copy.deepcopy(d)
    s = _stack(d, stack)
    params = dict(params or {})
    if s.get("explicit") is not None:
        for i in idx:
            entry = s["explicit"][i]
            entry[category] = kind
            entry.setdefault("params", {})
            entry["params"][category] = dict(params)
        return d
    rules = s.setdefault("rules", []) or []
    s["rules"] = rules
    body = {category: kind, "params": {category: params} if params else {}}
    last = rules[-1] if rules else None
    if last is not None and _is_paint_rule(last) and _body(last) == _body(body):
        last["when"]["layer_idx"] = sorted(set(last["when"]["layer_idx"]) | set(idx))
        return d
    rule: dict[str, Any] = {"when": {"layer_idx": idx}, category: kind}
    if params:
        rule["params"] = {category: params}
    rules.append(rule)
    return d


def _is_paint_rule(rule: dict[str, Any]) -> bool:
    when = {k: v for k, v in (rule.get("when") or {}).items() if v is not None and not (k == "offset" and v == 0)}
    return set(when) == {"layer_idx"}


def _body(rule: dict[str, Any]) -> tuple:
    kinds = tuple(rule.get(c) for c in CATEGORIES)
    params = {k: v for k, v in (rule.get("params") or {}).items() if v}
    return kinds, repr(sorted(params.items()))


def bake_explicit(d: dict[str, Any], stack: str, unique_layers: list[Any]) -> dict[str, Any]:
    """Replace pattern / string / rules of ``stack`` by the explicit list of its resolved unique layers.

    ``unique_layers`` is ``plan.stacks[stack].unique`` (``ResolvedLayer`` objects).
    """
    d = copy.deepcopy(d)
    s = _stack(d, stack)
    entries = []
    for layer in unique_layers:
        entry: dict[str, Any] = {"attention": layer.attention, "mlp": layer.mlp, "norm": layer.norm}
        params = {c: dict(v) for c, v in (layer.params or {}).items() if v}
        # stack-level defaults still apply to every layer; don't copy them into each entry
        defaults = s.get("params") or {}
        for c in list(params):
            params[c] = {k: v for k, v in params[c].items() if (defaults.get(c) or {}).get(k, object()) != v}
            if not params[c]:
                del params[c]
        if params:
            entry["params"] = params
        entries.append(entry)
    s["pattern"] = None
    s["string"] = None
    s["rules"] = []
    s["explicit"] = entries
    return d


def set_field(d: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    node: Any = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return d


def set_fields(d: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Model-level fields; an architecture change moves the stacks and picks a fitting task."""
    d = copy.deepcopy(d)
    arch = values.get("architecture", d.get("architecture"))
    if arch != d.get("architecture"):
        d = change_architecture(d, arch)
        if values.get("task") == d.get("task") or "task" not in values:
            values = {**values, "task": d["task"]}
    for k, v in values.items():
        if k != "architecture":
            d[k] = v
    return d


def change_architecture(d: dict[str, Any], arch: str) -> dict[str, Any]:
    d = copy.deepcopy(d)
    old = d.get("architecture", "decoder")
    if arch == old:
        return d
    if arch == "encoder_decoder":
        base = d.get("layers") or {"n_layers": 6}
        d["encoder"] = copy.deepcopy(base)
        d["decoder"] = copy.deepcopy(base)
        d["layers"] = None
    elif old == "encoder_decoder":
        d["layers"] = copy.deepcopy(d.get("decoder" if arch == "decoder" else "encoder") or {"n_layers": 6})
        d["encoder"] = None
        d["decoder"] = None
    d["architecture"] = arch
    allowed = {
        "decoder": {"lm", "regression", "sequence", "classification", "cluster_centers", "cluster_assignments"},
        "encoder": {"mlm", "regression", "sequence", "classification", "cluster_centers", "cluster_assignments"},
        "encoder_decoder": {"seq2seq", "regression", "sequence", "classification"},
    }[arch]
    if d.get("task") not in allowed:
        d["task"] = ARCH_DEFAULT_TASK[arch]
    return d


def set_layout(d: dict[str, Any], stack: str, mode: str, value: Any) -> dict[str, Any]:
    """Choose how the stack's layers are described: ``rules`` only, a ``pattern``, a ``string``."""
    d = copy.deepcopy(d)
    s = _stack(d, stack)
    for k in ("pattern", "string", "explicit"):
        s[k] = None
    s.pop("hybrid_override_pattern", None)  # a Megatron pattern is one more layout, exclusive with these
    if mode == "pattern":
        s["pattern"] = value
    elif mode == "string":
        s["string"] = value
    elif mode == "explicit":
        s["explicit"] = value
    return d


# ---- rules -----------------------------------------------------------------


def add_rule(d: dict[str, Any], stack: str, rule: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    s = _stack(d, stack)
    s["rules"] = list(s.get("rules") or []) + [rule]
    return d


def replace_rule(d: dict[str, Any], stack: str, i: int, rule: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    _stack(d, stack)["rules"][i] = rule
    return d


def remove_rule(d: dict[str, Any], stack: str, i: int) -> dict[str, Any]:
    d = copy.deepcopy(d)
    del _stack(d, stack)["rules"][i]
    return d


def move_rule(d: dict[str, Any], stack: str, i: int, delta: int) -> dict[str, Any]:
    d = copy.deepcopy(d)
    rules = _stack(d, stack)["rules"]
    j = i + delta
    if 0 <= j < len(rules):
        rules[i], rules[j] = rules[j], rules[i]
    return d


def parse_indices(text: str, n: int) -> list[int]:
    """``"0-3, 8"`` -> ``[0, 1, 2, 3, 8]`` (inclusive ranges); ValueError naming the bad item."""
    out: set[int] = set()
    for raw in text.replace(";", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            if "-" in item[1:]:
                a, b = item.split("-", 1) if not item.startswith("-") else ("", item)
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(item))
        except ValueError:
            raise ValueError(f"{item!r} is not an index or a range like 2-5") from None
    bad = sorted(i for i in out if not 0 <= i < n)
    if bad:
        raise ValueError(f"{bad} outside the executed layers 0..{n - 1}")
    return sorted(out)


def apply_edit(d: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    """Apply one edit described as data (used for injected / queued edits).

    ``{"op": "paint", "stack", "unique", "category", "kind", "params"}``,
    ``{"op": "set", "path": [...], "value"}``, ``{"op": "fields", "values": {...}}``,
    ``{"op": "layout", "stack", "mode", "value"}``, ``{"op": "add_rule" | "replace_rule" | "remove_rule" | "move_rule", ...}``.
    """
    op = edit.get("op")
    if op == "paint":
        return paint(d, edit.get("stack", "layers"), edit["unique"], edit["category"], edit["kind"], edit.get("params"))
    if op == "set":
        return set_field(d, list(edit["path"]), edit["value"])
    if op == "fields":
        return set_fields(d, dict(edit["values"]))
    if op == "layout":
        return set_layout(d, edit.get("stack", "layers"), edit["mode"], edit.get("value"))
    if op == "add_rule":
        return add_rule(d, edit.get("stack", "layers"), edit["rule"])
    if op == "replace_rule":
        return replace_rule(d, edit.get("stack", "layers"), edit["index"], edit["rule"])
    if op == "remove_rule":
        return remove_rule(d, edit.get("stack", "layers"), edit["index"])
    if op == "move_rule":
        return move_rule(d, edit.get("stack", "layers"), edit["index"], edit["delta"])
    raise ValueError(f"unknown edit op {op!r}")
