"""The layer plan: one pure function from a design to the executed layers.

``resolve_plan(design)`` applies, per stack and in this order:

1. stack defaults (``attention``, ``mlp``, ``norm``, ``params``);
2. at most one of a named ``pattern``, the ``string`` notation or an
   ``explicit`` per-layer list;
3. ``rules`` in order (a later rule overrides only the fields it sets);
4. repetition (``repeat``), mapping executed layers to unique ones.

Everything downstream (model, analysis, export, the app's grid) reads the
returned :class:`Plan` and nothing else. No torch here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import DesignError, format_path, short_repr
from .kinds.base import KindError
from .kinds.empty import MEGATRON_SYMBOLS
from .registry import ATTENTION, ATTENTION_ALIASES, CROSS, MLP, POSITIONAL, KindInfo, kind, role
from .spec import Design, LayerEntry, LayerParams, Rule, Stack, When, load_design

CATEGORIES = ("attention", "mlp", "norm")


# ---------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class ResolvedLayer:
    """One executed layer. ``params`` are the overrides; ``config`` has defaults filled."""

    stack: str  # "layers" | "encoder" | "decoder"
    index: int  # executed index within the stack
    unique_index: int  # index of the unique layer (module) it runs
    attention: str
    mlp: str
    norm: str
    causal: bool
    cross: bool  # has a cross-attention sub-block (decoder of encoder_decoder)
    params: dict[str, dict[str, Any]]
    config: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "index": self.index,
            "unique_index": self.unique_index,
            "attention": self.attention,
            "mlp": self.mlp,
            "norm": self.norm,
            "cross": self.cross,
            "params": self.params,
        }

    def signature(self) -> tuple:
        """Hashable identity of the computation (for analysing each kind once)."""
        cfg = tuple((c, tuple(sorted((k, repr(v)) for k, v in self.config[c].items()))) for c in sorted(self.config))
        return (self.attention, self.mlp, self.norm, self.causal, self.cross, cfg)


@dataclass(frozen=True)
class StackPlan:
    name: str
    causal: bool
    unique: tuple[ResolvedLayer, ...]  # one per unique layer (index == unique_index)
    executed: tuple[ResolvedLayer, ...]

    @property
    def n_unique(self) -> int:
        return len(self.unique)

    @property
    def depth(self) -> int:
        return len(self.executed)


@dataclass(frozen=True)
class Plan:
    design: Design
    stacks: dict[str, StackPlan]
    warnings: tuple[str, ...] = ()

    @property
    def layers(self) -> list[ResolvedLayer]:
        """Every executed layer, encoder before decoder."""
        return [layer for s in self.stacks.values() for layer in s.executed]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers], "warnings": list(self.warnings)}


# ---------------------------------------------------------------------------
# Named patterns. A pattern maps (n, stack defaults, params) to per-layer
# (attention, mlp-or-None) pairs. Custom patterns can be registered at runtime.

# Each item is (attention, mlp-or-None) or (attention, mlp-or-None, params)
# where params is a LayerParams-shaped dict ({"attention": {...}, "mlp": {...}}).
PatternFn = Callable[..., list[tuple]]


@dataclass(frozen=True)
class PatternInfo:
    name: str
    description: str
    params: dict[str, str]  # name -> help (with the default)
    fn: PatternFn
    causal_aware: bool = False  # fn takes a keyword `causal` (is the stack causal?)
    builtin: bool = False


PATTERNS: dict[str, PatternInfo] = {}


# Where a name missing from PATTERNS is looked up, in order (name -> PatternInfo or None).
# backend.patterns adds the design library's custom patterns when the package is imported.
PATTERN_LOOKUPS: list[Callable[[str], "PatternInfo | None"]] = []


def find_pattern(name: str) -> PatternInfo | None:
    """A registered pattern, else the first lookup that knows ``name``."""
    info = PATTERNS.get(name)
    for lookup in PATTERN_LOOKUPS if info is None else ():
        info = lookup(name)
        if info is not None:
            break
    return info


def register_pattern(name: str, description: str, params: dict[str, str], fn: PatternFn, *, replace: bool = False,
                     causal_aware: bool = False) -> None:
    """Add a named pattern. ``fn(n, stack, params[, causal=...])`` returns ``n`` items
    (see ``PatternFn``). Custom patterns live in this process only; a design that
    names one loads elsewhere only after the same registration. Built-ins can't be replaced."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DesignError("pattern.name", f"must be lower snake case, got {short_repr(name)}")
    if name in PATTERNS and (PATTERNS[name].builtin or not replace):
        raise DesignError("pattern.name", f"{name!r} is already registered")
    PATTERNS[name] = PatternInfo(name, description, params, fn, causal_aware)


def _kinds_list(params: dict[str, Any], key: str, default: list[str]) -> list[str]:
    value = params.get(key, default)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DesignError(f"params.{key}", f"must be a non-empty list of kind names, got {short_repr(value)}")
    return value


def _int_param(params: dict[str, Any], key: str, default: int, lo: int = 0) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise DesignError(f"params.{key}", f"must be an integer >= {lo}, got {short_repr(value)}")
    return value


def _str_param(params: dict[str, Any], key: str, default: str) -> str:
    value = params.get(key, default)
    if not isinstance(value, str):
        raise DesignError(f"params.{key}", f"must be a kind name, got {short_repr(value)}")
    return value


def _full() -> str:
    return role("attention", "full")


def _other(stack: Stack) -> str:
    """The patterns' default partner of the stack's kind: a cheap mixer, or full attention if the stack is cheap."""
    cheap = role("attention", "cheap")
    return cheap if stack.attention != cheap else _full()


def _uniform(n: int, stack: Stack, p: dict[str, Any]) -> list[tuple[str, str | None]]:
    a = _str_param(p, "attention", stack.attention)
    m = p.get("mlp")
    if m is not None and not isinstance(m, str):
        raise DesignError("params.mlp", f"must be a kind name, got {short_repr(m)}")
    return [(a, m)] * n


def _alternating(n: int, stack: Stack, p: dict[str, Any]) -> list[tuple[str, str | None]]:
    kinds = _kinds_list(p, "kinds", [stack.attention, _other(stack)])
    mlps = p.get("mlps")
    if mlps is not None:
        mlps = _kinds_list(p, "mlps", [])
    period = _int_param(p, "period", 1, lo=1)
    out = []
    for i in range(n):
        j = i // period
        out.append((kinds[j % len(kinds)], mlps[j % len(mlps)] if mlps else None))
    return out


def _sandwich(n: int, stack: Stack, p: dict[str, Any]) -> list[tuple[str, str | None]]:
    outer = _str_param(p, "outer", _full())
    inner = _str_param(p, "inner", stack.attention if stack.attention != outer else _other(stack))
    n_outer = _int_param(p, "n_outer", 1, lo=0)
    return [(outer if (i < n_outer or i >= n - n_outer) else inner, None) for i in range(n)]


def _pyramid(n: int, stack: Stack, p: dict[str, Any]) -> list[tuple[str, str | None]]:
    cheap = role("attention", "cheap")
    kinds = _kinds_list(p, "kinds", [cheap, stack.attention if stack.attention != cheap else _full()])
    return [(kinds[min(len(kinds) - 1, i * len(kinds) // n)], None) for i in range(n)]


def _sparse_special(n: int, stack: Stack, p: dict[str, Any]) -> list[tuple[str, str | None]]:
    special = _str_param(p, "special", _full())
    base = _str_param(p, "base", stack.attention if stack.attention != special else _other(stack))
    every = _int_param(p, "every", 4, lo=1)
    offset = _int_param(p, "offset", every - 1, lo=0)
    return [(special if i >= offset and (i - offset) % every == 0 else base, None) for i in range(n)]


register_pattern("uniform", "Every layer the same kind.",
                 {"attention": "kind for every layer (default: the stack's attention)", "mlp": "MLP for every layer (default: the stack's mlp)"}, _uniform)
register_pattern("alternating", "Cycle through a list of attention kinds, `period` layers each.",
                 {"kinds": "attention kinds to cycle (default: [stack attention, spectral])", "mlps": "optional MLP kinds to cycle alongside",
                  "period": "consecutive layers per kind (default 1)"}, _alternating)
register_pattern("sandwich", "`outer` kind on the first and last `n_outer` layers, `inner` in between.",
                 {"outer": "kind at both ends (default self_sdpa)", "inner": "kind in the middle (default: the stack's attention)",
                  "n_outer": "layers at each end (default 1)"}, _sandwich)
register_pattern("pyramid", "Contiguous depth bands, one kind each, bottom to top (cheap mixers low, full attention high).",
                 {"kinds": "kinds from the bottom band to the top (default [spectral, stack attention])"}, _pyramid)
register_pattern("sparse_special", "Mostly `base`; every `every`-th layer (from `offset`) is `special`.",
                 {"special": "the sparse kind (default self_sdpa)", "base": "the common kind (default: the stack's attention)",
                  "every": "period (default 4)", "offset": "first special layer (default every-1)"}, _sparse_special)
for _info in list(PATTERNS.values()):
    PATTERNS[_info.name] = PatternInfo(_info.name, _info.description, _info.params, _info.fn, builtin=True)


def list_patterns() -> dict[str, str]:
    return {name: info.description for name, info in PATTERNS.items()}


# ---------------------------------------------------------------------------
# String notation: "SPECTRAL,SDPA*3,TOKEN_PARAM", "SDPA:MOE*2".

_TOKEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::\s*([A-Za-z_][A-Za-z0-9_]*))?\s*(?:\*\s*(\d+))?\s*$")


def _attention_name(token: str) -> str | None:
    up = token.upper()
    if up in ATTENTION_ALIASES:
        return ATTENTION_ALIASES[up]
    low = token.lower()
    return low if low in ATTENTION else None


MAX_STRING_COUNT = 1_000_000  # layers one string item may expand to


def string_count(count: str | None, pos: int, path: str, limit: int = MAX_STRING_COUNT) -> int:
    """The ``*COUNT`` of string item ``pos`` (1 when absent), checked on its digits before ``int()``."""
    if count is None:
        return 1
    if len(count.lstrip("0")) > len(str(limit)) or int(count) > limit:
        raise DesignError(path, f"item {pos + 1}: count {short_repr(count, 20)} is too large (at most {limit:,})")
    c = int(count)
    if c < 1:
        raise DesignError(path, f"item {pos + 1}: count must be >= 1, got {c}")
    return c


def parse_string(text: str, n_layers: int, path: str = "string") -> list[tuple[str, str | None]]:
    """Expand the string notation to ``n_layers`` (attention, mlp-or-None) pairs."""
    if not text.strip():
        raise DesignError(path, "is empty")
    items: list[tuple[str, str | None]] = []
    for pos, raw in enumerate(text.split(",")):
        m = _TOKEN.match(raw)
        if not m:
            raise DesignError(path, f"item {pos + 1} {short_repr(raw.strip())} is not NAME, NAME*COUNT or NAME:MLP*COUNT")
        name, mlp, count = m.group(1), m.group(2), m.group(3)
        att = _attention_name(name)
        if att is None:
            known = ", ".join(sorted([k.upper() for k in ATTENTION] + list(ATTENTION_ALIASES)))
            raise DesignError(path, f"item {pos + 1}: unknown attention {short_repr(name)} (known: {known})")
        if mlp is not None and mlp.lower() not in MLP:
            raise DesignError(path, f"item {pos + 1}: unknown MLP {short_repr(mlp)} (known: {', '.join(k.upper() for k in MLP)})")
        c = string_count(count, pos, path)
        if len(items) + c > MAX_STRING_COUNT:
            raise DesignError(path, f"expands to more than {MAX_STRING_COUNT:,} layers")
        items.extend([(att, mlp.lower() if mlp else None)] * c)
    total = len(items)
    if n_layers % total != 0:
        raise DesignError(path, f"counts add up to {total}, which does not divide n_layers {n_layers}")
    return items * (n_layers // total)


def to_string(layers: list[tuple[str, str]], default_mlp: str | None = None) -> str:
    """Compact string notation for a list of (attention, mlp) pairs (run-length encoded)."""
    out: list[str] = []
    i = 0
    while i < len(layers):
        j = i
        while j < len(layers) and layers[j] == layers[i]:
            j += 1
        att, mlp = layers[i]
        name = ATTENTION[att].token if att in ATTENTION else att.upper()
        if mlp and mlp != default_mlp:
            name += ":" + mlp.upper()
        out.append(name if j - i == 1 else f"{name}*{j - i}")
        i = j
    return ",".join(out)


# ---------------------------------------------------------------------------
# Rules


def matches(when: When, i: int, n: int) -> bool:
    if when.every is not None and not (i >= when.offset and (i - when.offset) % when.every == 0):
        return False
    if when.position is not None and i != {"first": 0, "last": n - 1, "middle": n // 2}[when.position]:
        return False
    if when.range is not None and not (when.range[0] <= i < when.range[1]):
        return False
    if when.fraction is not None:
        a, b = when.fraction
        f = i / n
        if not (a <= f < b or (b >= 1.0 and i == n - 1 and f >= a)):
            return False
    if when.layer_idx is not None and i not in when.layer_idx:
        return False
    return True


def _check_rule_bounds(when: When, n: int, path: list[Any]) -> None:
    if when.every is not None and when.offset >= n:
        raise DesignError.at(path + ["offset"], f"{when.offset} is outside the stack of {n} layers (indices 0..{n - 1})")
    if when.range is not None and when.range[1] > n:
        raise DesignError.at(path + ["range"], f"{list(when.range)} reaches outside the stack of {n} layers (indices 0..{n - 1})")
    if when.layer_idx is not None:
        bad = [i for i in when.layer_idx if i >= n]
        if bad:
            raise DesignError.at(path + ["layer_idx"], f"{bad} outside the stack of {n} layers (indices 0..{n - 1})")


# ---------------------------------------------------------------------------
# Resolution


@dataclass
class _Slot:
    """Mutable state of one unique layer while resolving; origins name where each value came from."""

    kinds: dict[str, str]
    origin: dict[str, list[Any]]
    overrides: dict[str, dict[str, tuple[Any, list[Any]]]] = field(default_factory=lambda: {c: {} for c in CATEGORIES + ("cross",)})

    def set_kind(self, cat: str, name: str, origin: list[Any]) -> None:
        if self.kinds[cat] != name:
            self.overrides[cat] = {}
        self.kinds[cat] = name
        self.origin[cat] = origin

    def set_params(self, params: LayerParams, origin: list[Any]) -> None:
        for cat in CATEGORIES + ("cross",):
            for key, value in getattr(params, cat).items():
                self.overrides[cat][key] = (value, origin + ["params", cat, key])


def _new_slots(design: Design, name: str, stack: Stack) -> list[_Slot]:
    """Step 1: every unique layer starts from the stack defaults."""
    norm = stack.norm or design.norm
    return [
        _Slot({"attention": stack.attention, "mlp": stack.mlp, "norm": norm},
              {"attention": [name, "attention"], "mlp": [name, "mlp"], "norm": [name, "norm"]})
        for _ in range(stack.n_layers)
    ]


def _apply_pattern(slots: list[_Slot], name: str, stack: Stack, causal: bool) -> None:
    """Step 2a: a named pattern assigns kinds (and optionally params) per layer."""
    n = stack.n_layers
    pname = stack.pattern if isinstance(stack.pattern, str) else stack.pattern.name
    pparams = {} if isinstance(stack.pattern, str) else dict(stack.pattern.params)
    ppath = [name, "pattern"] + ([] if isinstance(stack.pattern, str) else ["name"])
    info = find_pattern(pname)
    if info is None:
        raise DesignError.at(ppath, f"unknown pattern {short_repr(pname)} (known: {', '.join(PATTERNS)}; library patterns: "
                                    "`python -m backend patterns list`)")
    for key in pparams:
        if key not in info.params:
            raise DesignError.at([name, "pattern", "params", key], f"unknown parameter for pattern {short_repr(pname)} (known: {', '.join(info.params) or 'none'})")
    try:
        assigned = info.fn(n, stack, pparams, causal=causal) if info.causal_aware else info.fn(n, stack, pparams)
    except DesignError as exc:
        raise DesignError(format_path([name, "pattern"]) + "." + exc.path, exc.message) from None
    if len(assigned) != n:
        raise DesignError.at(ppath, f"pattern {pname!r} produced {len(assigned)} layers for n_layers {n}")
    origin = [name, "pattern"]
    for slot, item in zip(slots, assigned):
        att, mlp = item[0], item[1]
        slot.set_kind("attention", att, origin)
        if mlp is not None:
            slot.set_kind("mlp", mlp, origin)
        if len(item) > 2 and item[2]:
            slot.set_params(LayerParams(**item[2]), origin)


def _apply_string(slots: list[_Slot], name: str, stack: Stack) -> None:
    """Step 2b: the string notation assigns attention (and optionally MLP) kinds."""
    assigned = parse_string(stack.string, stack.n_layers, format_path([name, "string"]))
    for slot, (att, mlp) in zip(slots, assigned):
        slot.set_kind("attention", att, [name, "string"])
        if mlp is not None:
            slot.set_kind("mlp", mlp, [name, "string"])


def _apply_megatron(slots: list[_Slot], name: str, stack: Stack) -> None:
    """Step 2d: Megatron-LM's ``hybrid_override_pattern``, one character per layer (``kinds.empty``)."""
    text, path = stack.hybrid_override_pattern, [name, "hybrid_override_pattern"]
    if len(text) != stack.n_layers:
        raise DesignError.at(path, f"has {len(text)} characters but n_layers is {stack.n_layers}")
    for i, (slot, ch) in enumerate(zip(slots, text)):
        if ch not in MEGATRON_SYMBOLS:
            raise DesignError.at(path, f"character {i + 1} {ch!r} is not one of {' '.join(MEGATRON_SYMBOLS)}")
        att, mlp = MEGATRON_SYMBOLS[ch]
        slot.set_kind("attention", att, path)
        if mlp is not None:
            slot.set_kind("mlp", mlp, path)


def _apply_explicit(slots: list[_Slot], name: str, stack: Stack) -> None:
    """Step 2c: an explicit per-layer list."""
    for i, (slot, entry) in enumerate(zip(slots, stack.explicit)):
        origin = [name, "explicit", i]
        for cat in CATEGORIES:
            value = getattr(entry, cat)
            if value is not None:
                slot.set_kind(cat, value, origin + [cat])
        slot.set_params(entry.params, origin)


def _apply_rules(slots: list[_Slot], name: str, stack: Stack, warnings: list[str]) -> None:
    """Step 3: rules in order; warn about rules that match nothing or that later rules fully override."""
    n = stack.n_layers
    last_setter: dict[tuple[int, str], int] = {}
    rule_sets: list[set[tuple[int, str]]] = []
    for r, rule in enumerate(stack.rules):
        rpath = [name, "rules", r]
        _check_rule_bounds(rule.when, n, rpath + ["when"])
        hit = [i for i in range(n) if matches(rule.when, i, n)]
        sets: set[tuple[int, str]] = set()
        if not hit:
            warnings.append(f"{format_path(rpath)} matches no layer")
        for i in hit:
            for cat in CATEGORIES:
                value = getattr(rule, cat)
                if value is not None:
                    slots[i].set_kind(cat, value, rpath + [cat])
                    sets.add((i, cat))
            slots[i].set_params(rule.params, rpath)
            for cat in CATEGORIES + ("cross",):
                for key in getattr(rule.params, cat):
                    sets.add((i, f"{cat}.{key}"))
        for key in sets:
            last_setter[key] = r
        rule_sets.append(sets)
    for r, sets in enumerate(rule_sets):
        if sets and all(last_setter[k] != r for k in sets):
            warnings.append(f"{format_path([name, 'rules', r])} is fully overridden by later rules")


def _check_placement(att: KindInfo, causal: bool, origin: list[Any], i: int, name: str) -> None:
    """The attention kind may run in this stack (its own causal / bidirectional flags)."""
    if causal and not att.causal:
        alt = f" (use {att.causal_alternative!r})" if att.causal_alternative else ""
        raise DesignError.at(origin, f"{att.name!r} cannot run in a causal (decoder) stack{alt}; layer {i} of {name}")
    if not causal and not att.bidirectional:
        raise DesignError.at(origin, f"{att.name!r} cannot run in a bidirectional (encoder) stack; layer {i} of {name}")


def _finalise_layer(design: Design, name: str, stack: Stack, slot: _Slot, i: int, causal: bool, has_cross: bool,
                    used_default_keys: dict[str, set[str]]) -> ResolvedLayer:
    """Step 4: one unique layer's kinds looked up, params checked and filled, the kinds' own checks run."""
    infos: dict[str, KindInfo] = {cat: kind(cat, slot.kinds[cat], slot.origin[cat]) for cat in CATEGORIES}
    att = infos["attention"]
    _check_placement(att, causal, slot.origin["attention"], i, name)
    overrides: dict[str, dict[str, Any]] = {}
    config: dict[str, dict[str, Any]] = {}
    for cat in CATEGORIES + (("cross",) if has_cross else ()):
        info = CROSS if cat == "cross" else infos[cat]
        given: dict[str, Any] = {}
        # stack-level defaults reach the layers whose kind takes the key
        for key, value in getattr(stack.params, cat).items():
            if key in info.params:
                given[key] = value
                used_default_keys[cat].add(key)
        for key, (value, origin) in slot.overrides[cat].items():
            if key not in info.params:
                known = ", ".join(sorted(info.params)) or "none"
                raise DesignError.at(origin, f"unknown parameter for {cat} kind {info.name!r} at layer {i} (known: {known})")
            info.params[key].check(value, origin)
            given[key] = value
        config[cat] = info.resolve_params(given, [name, "params", cat])
        if given:
            overrides[cat] = given
    _check_layer(design, infos, config, slot, name, i, causal)
    return ResolvedLayer(name, i, i, att.name, infos["mlp"].name, infos["norm"].name, causal, has_cross, overrides, config)


def _check_layer(design: Design, infos: dict[str, KindInfo], config: dict[str, dict[str, Any]], slot: _Slot,
                 name: str, i: int, causal: bool) -> None:
    """Each kind's own cross-field checks (``KindInfo.check``), located where the kind or param was set."""
    positional = POSITIONAL[design.positional]
    att = infos["attention"]
    if positional.score_bias and att.uses_positions and not att.softmax:
        raise DesignError.at(slot.origin["attention"],
                             f"{att.name!r} cannot apply positional {positional.name!r} (it has no score matrix to bias); "
                             f"layer {i} of {name}: use another positional scheme, or a softmax kind")
    if positional.bias_table and att.uses_positions and not att.takes_score_bias:
        raise DesignError.at(slot.origin["attention"],
                             f"{att.name!r} does not take the learned score bias of positional {positional.name!r}; "
                             f"layer {i} of {name}: use a kind that does (one declaring takes_score_bias), or another "
                             "positional scheme")
    for cat in CATEGORIES:
        try:
            infos[cat].check(design, config[cat], causal=causal, positional=positional)
        except KindError as exc:
            if exc.param:  # where the offending param was set, else where the stack default would go
                where = slot.overrides[cat].get(exc.param, (None, [name, "params", cat, exc.param]))[1]
            else:  # where the kind was chosen
                where = slot.origin[cat]
            raise DesignError.at(where, f"layer {i} of {name}: {exc.message}") from None


def _causal_notes(name: str, unique: list[ResolvedLayer], causal: bool, warnings: list[str]) -> None:
    """Each kind's own warning for a layer that runs in a causal stack but is not causal by construction."""
    if not causal:
        return
    notes: dict[str, list[int]] = {}
    for layer in unique:
        for cat in CATEGORIES:
            note = kind(cat, getattr(layer, cat)).causal_warning(layer.config[cat])
            if note:
                notes.setdefault(note, []).append(layer.unique_index)
    for note, idx in notes.items():
        shown = ", ".join(map(str, idx[:8])) + (f", ... ({len(idx)} layers)" if len(idx) > 8 else "")
        warnings.append(f"{name}: layer{'s' if len(idx) > 1 else ''} {shown}: {note}")


def _check_default_keys(name: str, stack: Stack, unique: list[ResolvedLayer], used: dict[str, set[str]]) -> None:
    """Every stack-level default param must reach at least one layer whose kind takes it."""
    for cat in CATEGORIES + ("cross",):
        for key in getattr(stack.params, cat):
            if key not in used[cat]:
                kinds_used = "cross" if cat == "cross" else ", ".join(sorted({getattr(u, cat) for u in unique}))
                raise DesignError.at([name, "params", cat, key], f"no layer's {cat} kind takes this parameter (kinds used: {kinds_used})")


def _check_flow(name: str, stack: Stack, unique: list[ResolvedLayer], has_cross: bool) -> None:
    """A learned or predicted flow speed scales residual branches: a stack of empty layers has none, so the
    speed would be a parameter no gradient ever reaches (found by tests/test_accepted_runs.py)."""
    if stack.flow.mode not in ("learned", "predicted") or has_cross:
        return
    if all(kind("attention", u.attention).identity and kind("mlp", u.mlp).identity for u in unique):
        raise DesignError.at([name, "flow", "mode"], f"{stack.flow.mode!r} scales residual branches, but every layer of "
                                                     f"{name} is empty (no mixer and no MLP): use mode 'none'")


def _resolve_stack(design: Design, name: str, stack: Stack, warnings: list[str]) -> StackPlan:
    """Defaults -> pattern | string | explicit -> rules -> checked unique layers -> repetition."""
    causal = design.is_causal(name)
    has_cross = name == "decoder"
    slots = _new_slots(design, name, stack)
    if stack.pattern is not None:
        _apply_pattern(slots, name, stack, causal)
    elif stack.string is not None:
        _apply_string(slots, name, stack)
    elif stack.explicit is not None:
        _apply_explicit(slots, name, stack)
    elif stack.hybrid_override_pattern is not None:
        _apply_megatron(slots, name, stack)
    _apply_rules(slots, name, stack, warnings)
    if stack.params.cross and not has_cross:
        raise DesignError.at([name, "params", "cross"], "cross-attention params only apply to the decoder of an encoder_decoder model")
    used: dict[str, set[str]] = {c: set() for c in CATEGORIES + ("cross",)}
    unique = [_finalise_layer(design, name, stack, slot, i, causal, has_cross, used) for i, slot in enumerate(slots)]
    _check_default_keys(name, stack, unique, used)
    _check_flow(name, stack, unique, has_cross)
    _causal_notes(name, unique, causal, warnings)
    executed = tuple(
        ResolvedLayer(name, j, u, unique[u].attention, unique[u].mlp, unique[u].norm, causal, has_cross, unique[u].params, unique[u].config)
        for j, u in enumerate(_repeat_map(stack))
    )
    return StackPlan(name, causal, tuple(unique), executed)


def _repeat_map(stack: Stack) -> list[int]:
    r, n = stack.repeat, stack.n_layers
    if r.mode == "cycle":
        return [j % n for j in range(n * r.factor)]
    if r.mode == "layerwise":
        return [j // r.factor for j in range(n * r.factor)]
    if r.mode == "grouped":
        out: list[int] = []
        start = 0
        for size, factor in zip(r.groups or [], r.group_factors or []):
            for _ in range(factor):
                out.extend(range(start, start + size))
            start += size
        return out
    return list(range(n))


def resolve_plan(source: Design | dict | str) -> Plan:
    """Design (or anything :func:`~backend.spec.load_design` takes) -> Plan."""
    design = load_design(source)
    warnings: list[str] = []
    stacks = {name: _resolve_stack(design, name, stack, warnings) for name, stack in design.stacks().items()}
    _check_bias_table_used(design, stacks)
    return Plan(design, stacks, tuple(warnings))


def _check_bias_table_used(design: Design, stacks: dict[str, StackPlan]) -> None:
    """A learned score-bias table (T5's) that no self-attention takes would be a parameter no gradient
    reaches (found by tests/test_accepted_runs.py): refuse it, per stack when each stack has its own."""
    positional = POSITIONAL[design.positional]
    if not positional.bias_table:
        return
    takers = {name: any(ATTENTION[u.attention].takes_score_bias for u in st.unique) for name, st in stacks.items()}
    idle = [name for name, used in takers.items() if not used]
    if (design.positional_per_stack and idle) or len(idle) == len(takers):
        where = idle[0]
        raise DesignError.at(["positional"], f"{positional.name!r} learns a bias for attention scores, but no layer "
                                             f"of {where} runs an attention kind that takes it (softmax self-attention "
                                             "does): use another positional scheme"
                             + (", or positional_per_stack: false" if design.positional_per_stack else ""))


def length_limits(plan: Plan) -> dict[str, tuple[int, str] | None]:
    """The longest sequence the built model accepts, and which kind sets it, or None.

    Each kind says its own limit (``KindInfo.max_positions``): ``"positional"``
    is the positional kind's (a learned table has ``max_seq_len`` rows; the
    model refuses later positions, the counts still extrapolate); ``"layers"``
    the tightest of the sublayer kinds of the executed layers (spectral filters
    have one tap per position: the module itself cannot run longer inputs).
    """
    d = plan.design
    pos = POSITIONAL[d.positional]
    found: list[tuple[int, str]] = []
    seen: set[tuple] = set()
    for layer in plan.layers:
        for cat, name in (("attention", layer.attention), ("mlp", layer.mlp), ("norm", layer.norm)):
            sig = (cat, name, repr(sorted(layer.config[cat].items())))
            if sig not in seen:
                seen.add(sig)
                lim = kind(cat, name).max_positions(d, layer.config[cat])
                if lim:
                    found.append(lim)
    return {"positional": pos.max_positions(d, pos.resolve_params(d.positional_params, ["positional_params"])),
            "layers": min(found, key=lambda t: t[0]) if found else None}


def length_warning(plan: Plan, seq_len: int | None) -> str | None:
    """A one-line warning when figures are asked for past what the model accepts or past max_seq_len;
    a :class:`DesignError` on ``seq_len`` when a layer's module cannot run that length at all."""
    if seq_len is None:
        return None
    d = plan.design
    lim = length_limits(plan)
    if lim["layers"] and seq_len > lim["layers"][0]:
        raise DesignError("seq_len", f"{seq_len} exceeds {lim['layers'][0]}, the longest sequence this model's layers "
                                     f"accept ({lim['layers'][1]})")
    if lim["positional"] and seq_len > lim["positional"][0]:
        return (f"seq_len {seq_len} exceeds {lim['positional'][0]}, the longest sequence this model accepts "
                f"({lim['positional'][1]}); the figures are extrapolated and the model itself refuses that length")
    if seq_len > d.max_seq_len:
        return (f"seq_len {seq_len} exceeds max_seq_len {d.max_seq_len}: positions past the designed context "
                f"({d.positional}) are extrapolated")
    return None


__all__ = [
    "Plan", "StackPlan", "ResolvedLayer", "resolve_plan", "length_limits", "length_warning", "parse_string", "to_string", "matches",
    "PATTERNS", "register_pattern", "list_patterns", "LayerEntry", "Rule",
]
