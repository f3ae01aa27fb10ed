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

import yaml

from backend.errors import DesignError, short_repr

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
    rules = list(s.get("rules") or [])
    pruned = _pruned(rules, idx, category)
    s["rules"] = _add_paint_rule(rules, idx, category, kind, params)
    if pruned == rules:
        return d
    simpler = copy.deepcopy(d)
    _stack(simpler, stack)["rules"] = _add_paint_rule(pruned, idx, category, kind, params)
    return simpler if _same_plan(simpler, d) else d


def _add_paint_rule(rules: list[dict[str, Any]], idx: list[int], category: str, kind: str,
                    params: dict[str, Any]) -> list[dict[str, Any]]:
    """``rules`` + a ``layer_idx`` rule, merged into the last rule when that paints the same thing."""
    rules = copy.deepcopy(rules)
    body = {category: kind, "params": {category: params} if params else {}}
    last = rules[-1] if rules else None
    if last is not None and _is_paint_rule(last) and _body(last) == _body(body):
        last["when"]["layer_idx"] = sorted(set(last["when"]["layer_idx"]) | set(idx))
        return rules
    rule: dict[str, Any] = {"when": {"layer_idx": idx}, category: kind}
    if params:
        rule["params"] = {category: params}
    return rules + [rule]


def _pruned(rules: list[dict[str, Any]], idx: list[int], category: str) -> list[dict[str, Any]]:
    """Earlier paint rules of the same row lose the layers painted again (they would be overridden)."""
    out = []
    for rule in rules:
        if _is_paint_rule(rule) and _sets_only(rule, category):
            left = [i for i in rule["when"]["layer_idx"] if i not in idx]
            if not left:
                continue
            rule = {**rule, "when": {**rule["when"], "layer_idx": left}}
        out.append(rule)
    return out


def _sets_only(rule: dict[str, Any], category: str) -> bool:
    kinds = {c for c in CATEGORIES if rule.get(c)}
    params = {c for c, v in (rule.get("params") or {}).items() if v}
    return kinds <= {category} and params <= {category}


def _same_plan(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Both designs resolve to the same layers (pruning a rule is only a simplification then)."""
    from backend.plan import resolve_plan

    try:
        pa, pb = resolve_plan(a), resolve_plan(b)
    except DesignError:
        return False
    return [x.to_dict() for x in pa.layers] == [x.to_dict() for x in pb.layers]


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


def restructure(d: dict[str, Any], stack: str, unique_layers: list[Any], order: list[int | None]) -> tuple[dict[str, Any], str]:
    """Rebuild ``stack`` from its resolved unique layers in a new ``order`` (moved, duplicated, deleted;
    ``None`` inserts a layer of the stack defaults). Returns the design and a note on its form.

    The compact form (defaults, pattern / string, rules) is kept when the same stack at the new
    depth, with its rules fitted to it (:func:`fit_depth`), resolves to exactly the wanted layers
    (deleting or adding layers at the end usually does); otherwise the stack becomes an explicit
    per-layer list. ``unique_layers`` is ``plan.stacks[stack].unique``.
    """
    from backend.plan import parse_string, resolve_plan

    if not order:
        raise DesignError(f"{stack}.n_layers", "a stack needs at least one layer")
    base = _stack(d, stack)
    defaults = {"attention": base.get("attention"), "mlp": base.get("mlp"), "norm": base.get("norm") or d.get("norm")}
    want = [None if i is None else unique_layers[i] for i in order]
    baked = _stack(bake_explicit(d, stack, list(unique_layers)), stack)["explicit"]
    default_entry = {k: v for k, v in defaults.items() if v is not None}
    entries = [copy.deepcopy(default_entry if i is None else baked[i]) for i in order]

    # the compact form, if it expresses the result
    compact = copy.deepcopy(d)
    _stack(compact, stack)["n_layers"] = len(order)
    if base.get("explicit") is None:
        items = parse_string(base["string"], base["n_layers"]) if base.get("string") else None
        try:
            compact, _ = fit_depth(compact, stack, items)
            got = resolve_plan(compact).stacks[stack].unique
            wanted = [(w.attention, w.mlp, w.norm, w.params) if w is not None else
                      (defaults["attention"], defaults["mlp"], defaults["norm"], {}) for w in want]
            if [(g.attention, g.mlp, g.norm, g.params) for g in got] == wanted:
                return compact, "kept the stack's compact form"
        except (DesignError, ValueError):
            pass
    out = copy.deepcopy(d)
    s = _stack(out, stack)
    s.update(n_layers=len(order), pattern=None, string=None, rules=[], explicit=entries)
    return out, f"the stack is now an explicit list of {len(order)} layers (this order is not expressible by its rules)"


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


def fit_depth(d: dict[str, Any], stack: str, string_items: list[tuple[str, str | None]] | None = None
              ) -> tuple[dict[str, Any], list[str]]:
    """Make the rules and string of ``stack`` fit its (new, smaller) ``n_layers``; notes say what changed.

    Indices and ranges past the stack are clipped, rules left matching nothing are dropped;
    a string whose counts no longer divide ``n_layers`` becomes its first ``n_layers`` entries
    (``string_items``: the old string expanded, ``backend.plan.parse_string``).
    """
    from backend.plan import to_string

    d = copy.deepcopy(d)
    s = _stack(d, stack)
    n = int(s["n_layers"])
    notes: list[str] = []
    kept = []
    for i, rule in enumerate(s.get("rules") or []):
        when = dict(rule.get("when") or {})
        drop = False
        if when.get("layer_idx") is not None:
            inside = [j for j in when["layer_idx"] if j < n]
            if inside != list(when["layer_idx"]):
                notes.append(f"rule #{i}: layer_idx {short_repr(when['layer_idx'])} -> {inside or 'dropped'}")
                drop = not inside
                when["layer_idx"] = inside
        if when.get("range") is not None and not drop:
            a, b = when["range"]
            if a >= n:
                notes.append(f"rule #{i}: range [{a}, {b}] dropped")
                drop = True
            elif b > n:
                notes.append(f"rule #{i}: range [{a}, {b}] -> [{a}, {n}]")
                when["range"] = [a, n]
        if when.get("offset") and when["offset"] >= n and not drop:
            notes.append(f"rule #{i}: offset {when['offset']} dropped")
            drop = True
        if not drop:
            kept.append({**rule, "when": when})
    s["rules"] = kept
    if s.get("string") and string_items:
        total = len(string_items)
        if n % total and total > n:
            new = to_string([(a, m) for a, m in string_items[:n]], s.get("mlp"))
            notes.append(f"string {s['string']!r} -> {new!r} (its first {n} entries)")
            s["string"] = new
    return d, notes


# ---- form fields: text -> value, errors naming the field ------------------------------


def parse_yaml(text: str, field: str, *, mapping: bool = False) -> Any:
    """A YAML value typed into a form (empty = None); DesignError naming ``field`` when it does not parse."""
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DesignError(field, f"is not valid YAML ({problem}): {short_repr(text)}") from None
    if mapping and value is not None and not isinstance(value, dict):
        raise DesignError(field, f"must be a mapping like {{mlp: {{...}}}}, got {short_repr(text)}")
    return value


def parse_numbers(text: str, field: str, cast: type = int) -> list | None:
    """``"1, 2"`` or ``"[1, 2]"`` -> ``[1, 2]`` (empty = None); DesignError naming the field and the item."""
    items = [x.strip() for x in text.replace("[", "").replace("]", "").split(",")]
    if not any(items):
        return None
    out = []
    what = "an integer" if cast is int else "a number"
    for x in items:
        try:
            out.append(cast(x))
        except ValueError:
            raise DesignError(field, f"{short_repr(x)} is not {what} (in {short_repr(text)})") from None
    return out


def parse_number(text: str, field: str, cast: type = int) -> Any:
    """One optional number typed as text (empty = None, so the field can be cleared)."""
    values = parse_numbers(text, field, cast)
    if values is not None and len(values) != 1:
        raise DesignError(field, f"must be one number, got {short_repr(text)}")
    return None if values is None else values[0]


def format_indices(idx: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 8]`` -> ``"0-3, 8"`` (the form :func:`parse_indices` reads)."""
    out: list[str] = []
    for i in sorted(set(idx)):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = out[-1].split("-")[0] + f"-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


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
