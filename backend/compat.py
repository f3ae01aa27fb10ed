"""The seeds' Python API, as a thin layer over ``backend.spec`` and ``backend.plan``.

Code written against the seed READMEs keeps working::

    cfg = TransformerConfig(hidden_size=256, n_heads=4,
                            attention_types=["SDPA", "spectral", "flash"],
                            mlp_types=["swiglu", "moe", "swiglu"])
    cfg = TransformerConfig.from_pattern("sparse_special", 24, hidden_size=512)
    cfg = TransformerConfig.from_string_pattern("SPECTRAL,SDPA*3,TOKEN_PARAM")
    cfg = TransformerConfig.from_config_file("presets/hybrid.yaml")
    cfg.get_layer_info()        # one dict per executed layer
    cfg.to_design()             # backend.spec.Design; cfg.plan is the Plan
    get_model_config("medium_cycle"); list_model_presets()   # seed 001

Nothing here has semantics of its own: every config is a validated
:class:`~backend.spec.Design` and every per-layer answer comes from
:func:`~backend.plan.resolve_plan`.

Legacy names. The seeds took upper-case names and aliases; they are mapped to
registry kinds (plus params) by :func:`normalize_attention` / :func:`normalize_mlp`
/ :func:`normalize_norm`:

============================  ==============================================
``SDPA``, ``softmax``, ``mha``  ``self_sdpa``
``FLEX``                        ``self_flex``
``flash``                       ``self_sdpa`` with ``backend: flash``
``xformer(s)``, ``efficient``   ``self_sdpa`` with ``backend: efficient``
``performer``, ``linear``       ``linear`` (encoder) / ``causal_linear`` (decoder)
``diff``, ``differential``      ``diff_attn``
``tokenformer``, ``pattention`` ``token_param``
``fft``, ``fnet``               ``spectral``
``fedformer``                   ``frequency``
``gelu``/``relu``/``silu``/``mish`` (as MLP)  ``mlp`` with that ``activation``
``ffn``, ``dense``, ``standard``  ``mlp``
============================  ==============================================

Every other name must be a registry kind (any case). Unknown names raise
:class:`~backend.errors.DesignError` naming the argument, e.g.
``attention_types[3]: unknown attention kind 'foo' (...)``.

With repetition (weight sharing) ``n_layers`` counts unique layers, as in the
design file; ``layer_specs`` and ``get_layer_info()`` list *executed* layers
(``unique_layer_specs`` the unique ones).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from . import plan as _plan
from .errors import DesignError, short_repr
from .registry import ATTENTION, MLP, NORM
from .spec import Design, design_from_dict, parse_document, read_document

__all__ = [
    "TransformerConfig", "LayerConfigBuilder", "LayerPattern", "LayerSpec",
    "get_model_config", "list_model_presets",
    "normalize_attention", "normalize_mlp", "normalize_norm",
]

# ---------------------------------------------------------------------------
# Legacy names -> registry kinds

_ATTENTION_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sdpa": ("self_sdpa", {}),
    "softmax": ("self_sdpa", {}),
    "mha": ("self_sdpa", {}),
    "standard": ("self_sdpa", {}),
    "attention": ("self_sdpa", {}),
    "flex": ("self_flex", {}),
    "flash": ("self_sdpa", {"backend": "flash"}),
    "flash_attention": ("self_sdpa", {"backend": "flash"}),
    "xformer": ("self_sdpa", {"backend": "efficient"}),
    "xformers": ("self_sdpa", {"backend": "efficient"}),
    "efficient": ("self_sdpa", {"backend": "efficient"}),
    "diff": ("diff_attn", {}),
    "differential": ("diff_attn", {}),
    "tokenformer": ("token_param", {}),
    "pattention": ("token_param", {}),
    "fft": ("spectral", {}),
    "fnet": ("spectral", {}),
    "fedformer": ("frequency", {}),
}
_CAUSALITY_DEPENDENT = ("performer", "linear", "causal_linear")

_MLP_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ffn": ("mlp", {}),
    "dense": ("mlp", {}),
    "standard": ("mlp", {}),
    "gelu": ("mlp", {"activation": "gelu"}),
    "relu": ("mlp", {"activation": "relu"}),
    "silu": ("mlp", {"activation": "silu"}),
    "mish": ("mlp", {"activation": "mish"}),
    "squared_relu": ("relu2", {}),
    "relu_squared": ("relu2", {}),
    "mixture_of_experts": ("moe", {}),
}

_NORM_ALIASES = {
    "layernorm": "layer", "layer_norm": "layer", "ln": "layer",
    "rmsnorm": "rms", "rms_norm": "rms",
    "scalenorm": "scale", "scale_norm": "scale",
    "adaln": "adaptive", "ada_ln": "adaptive",
}


def _key(name: Any, path: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DesignError(path, f"must be a kind name, got {short_repr(name)}")
    return name.strip().lower().replace("-", "_")


def normalize_attention(name: Any, causal: bool = True, path: str = "attention") -> tuple[str, dict[str, Any]]:
    """Legacy attention name -> (registry kind, attention params)."""
    key = _key(name, path)
    if key in _CAUSALITY_DEPENDENT:
        # The seeds had one Performer; which variant runs depends on the stack.
        return ("causal_linear" if causal else "linear"), {}
    if key in _ATTENTION_ALIASES:
        kind, params = _ATTENTION_ALIASES[key]
        return kind, dict(params)
    if key in ATTENTION:
        return key, {}
    known = ", ".join(list(ATTENTION) + sorted(_ATTENTION_ALIASES) + ["performer"])
    raise DesignError(path, f"unknown attention kind {short_repr(name)} (known: {known})")


def normalize_mlp(name: Any, path: str = "mlp") -> tuple[str, dict[str, Any]]:
    """Legacy MLP name -> (registry kind, mlp params)."""
    key = _key(name, path)
    if key in MLP:
        return key, {}
    if key in _MLP_ALIASES:
        kind, params = _MLP_ALIASES[key]
        return kind, dict(params)
    known = ", ".join(list(MLP) + sorted(_MLP_ALIASES))
    raise DesignError(path, f"unknown mlp kind {short_repr(name)} (known: {known})")


def normalize_norm(name: Any, path: str = "norm") -> str:
    key = _key(name, path)
    key = _NORM_ALIASES.get(key, key)
    if key not in NORM:
        known = ", ".join(list(NORM) + sorted(_NORM_ALIASES))
        raise DesignError(path, f"unknown norm kind {short_repr(name)} (known: {known})")
    return key


# ---------------------------------------------------------------------------
# Per-layer spec


@dataclass(frozen=True)
class LayerSpec:
    """One layer: registry kinds plus per-layer param overrides.

    ``index``/``unique_index`` are set on specs that come from a plan (executed
    layers); specs built by :class:`LayerConfigBuilder` have ``index`` only.
    """

    attention: str
    mlp: str | None = None  # None = the stack's default MLP
    norm: str | None = None  # None = the stack's / model's norm
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    index: int | None = None
    unique_index: int | None = None

    # seed spellings
    @property
    def attention_type(self) -> str:
        return self.attention

    @property
    def mlp_type(self) -> str | None:
        return self.mlp

    def to_entry(self) -> dict[str, Any]:
        """The design-file form (an ``explicit`` list item)."""
        out: dict[str, Any] = {"attention": self.attention}
        if self.mlp is not None:
            out["mlp"] = self.mlp
        if self.norm is not None:
            out["norm"] = self.norm
        params = {k: dict(v) for k, v in self.params.items() if v}
        if params:
            out["params"] = params
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "unique_index": self.unique_index, "attention": self.attention,
                "mlp": self.mlp, "norm": self.norm, "params": {k: dict(v) for k, v in self.params.items()}}


def _merge_params(*blocks: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in blocks:
        for cat, values in (block or {}).items():
            if values:
                out.setdefault(cat, {}).update(values)
    return out


def _spec_from_value(value: Any, causal: bool, path: str, index: int | None = None) -> LayerSpec:
    """A layer from a legacy value: a name, an (attention, mlp) pair, a dict or a LayerSpec."""
    if isinstance(value, LayerSpec):
        return LayerSpec(value.attention, value.mlp, value.norm, value.params, index)
    if isinstance(value, str):
        att, ap = normalize_attention(value, causal, path)
        return LayerSpec(att, None, None, _merge_params({"attention": ap}), index)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        att, ap = normalize_attention(value[0], causal, f"{path}[0]")
        mlp, mp = normalize_mlp(value[1], f"{path}[1]")
        return LayerSpec(att, mlp, None, _merge_params({"attention": ap, "mlp": mp}), index)
    if isinstance(value, Mapping):
        known = {"attention", "attention_type", "mlp", "mlp_type", "norm", "norm_type", "params"}
        for k in value:
            if k not in known:
                raise DesignError(f"{path}.{k}", f"unknown key (known: {', '.join(sorted(known))})")
        a_name = value.get("attention", value.get("attention_type"))
        m_name = value.get("mlp", value.get("mlp_type"))
        n_name = value.get("norm", value.get("norm_type"))
        params = value.get("params") or {}
        if not isinstance(params, Mapping):
            raise DesignError(f"{path}.params", f"must be a mapping, got {short_repr(params)}")
        att, ap = normalize_attention(a_name, causal, f"{path}.attention") if a_name is not None else (None, {})
        mlp, mp = normalize_mlp(m_name, f"{path}.mlp") if m_name is not None else (None, {})
        norm = normalize_norm(n_name, f"{path}.norm") if n_name is not None else None
        if att is None:
            raise DesignError(f"{path}.attention", "is required")
        return LayerSpec(att, mlp, norm, _merge_params({"attention": ap, "mlp": mp}, params), index)
    raise DesignError(path, f"must be a kind name, an (attention, mlp) pair or a mapping, got {short_repr(value)}")


# ---------------------------------------------------------------------------
# LayerPattern: the seeds' custom patterns


def _parse_condition(key: Any, path: str) -> dict[str, Any]:
    """An override key -> a ``when`` mapping (see :class:`LayerPattern`)."""
    if isinstance(key, bool):
        raise DesignError(path, f"must be a layer index or a condition string, got {short_repr(key)}")
    if isinstance(key, int):
        return {"layer_idx": [key]}
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in key):
        return {"range": list(key)}
    if isinstance(key, Mapping):
        return dict(key)
    if not isinstance(key, str):
        raise DesignError(path, f"must be a layer index or a condition string, got {short_repr(key)}")
    parts = [p.strip() for p in key.strip().lower().split(":")]
    head, args = parts[0], parts[1:]
    try:
        if head in ("first", "last", "middle") and not args:
            return {"position": head}
        if head == "every" and len(args) in (1, 2):
            return {"every": int(args[0]), **({"offset": int(args[1])} if len(args) == 2 else {})}
        if head == "range" and len(args) == 2:
            return {"range": [int(args[0]), int(args[1])]}
        if head == "fraction" and len(args) == 2:
            return {"fraction": [float(args[0]), float(args[1])]}
        if head.lstrip("-").isdigit() and not args:
            return {"layer_idx": [int(head)]}
    except ValueError:
        pass
    raise DesignError(path, f"unknown condition {short_repr(key)} (use an index, 'first', 'last', 'middle', 'every:N[:OFFSET]', "
                            "'range:A:B' or 'fraction:A:B')")


class LayerPattern:
    """A named custom pattern (seed 000): a base layer plus overrides.

    ``overrides`` is a mapping (or a list of ``(key, value)`` pairs), applied in
    order, later entries winning. A key is

    - an ``int`` layer index (negative counts from the end: ``-1`` is the last);
    - a ``(a, b)`` tuple: the index range ``a <= i < b``;
    - a condition string: ``"first"``, ``"last"``, ``"middle"``, ``"every:N"``,
      ``"every:N:OFFSET"``, ``"range:A:B"``, ``"fraction:A:B"``;
    - a ``when`` mapping as in the design file (``{"every": 3, "offset": 1}``).

    A value is an attention name, an ``(attention, mlp)`` pair, or a mapping
    ``{attention, mlp, norm, params}``; names may be legacy aliases. Conditions
    use the design file's semantics (DESIGN.md section 3) over the ``n``
    generated layers; indices outside ``0..n-1`` simply match nothing here.
    """

    def __init__(self, name: str, description: str = "", base_attention: str = "self_sdpa",
                 base_mlp: str | None = None, overrides: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None):
        if not isinstance(name, str) or not name:
            raise DesignError("name", f"must be a non-empty string, got {short_repr(name)}")
        self.name = name
        self.description = description
        self.base_attention = base_attention
        self.base_mlp = base_mlp
        items = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides or [])
        self.overrides: list[tuple[Any, Any]] = items
        # validate names and keys now, so a typo fails at definition time
        normalize_attention(base_attention, True, "base_attention")
        if base_mlp is not None:
            normalize_mlp(base_mlp, "base_mlp")
        for key, value in items:
            _parse_condition(key, f"overrides[{short_repr(key)}]")
            _spec_from_value(value, True, f"overrides[{short_repr(key)}]")

    def __repr__(self) -> str:
        return f"LayerPattern({self.name!r}, base_attention={self.base_attention!r}, base_mlp={self.base_mlp!r}, overrides={len(self.overrides)})"

    def generate_layers(self, n: int, causal: bool = True) -> list[LayerSpec]:
        """``n`` layer specs; ``causal`` picks causal variants of legacy names (performer)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DesignError("n_layers", f"must be an integer >= 1, got {short_repr(n)}")
        from .spec import MAX_LAYERS, When

        if n > MAX_LAYERS:
            raise DesignError("n_layers", f"must be <= {MAX_LAYERS}, got {n}")
        base = _spec_from_value(self.base_attention, causal, "base_attention")
        base_mlp, base_mp = normalize_mlp(self.base_mlp, "base_mlp") if self.base_mlp is not None else (None, {})
        layers = [LayerSpec(base.attention, base_mlp, None, _merge_params(base.params, {"mlp": base_mp}), i) for i in range(n)]
        for key, value in self.overrides:
            path = f"overrides[{short_repr(key)}]"
            cond = _parse_condition(key, path)
            if "layer_idx" in cond:
                cond["layer_idx"] = [i + n if i < 0 else i for i in cond["layer_idx"]]
                if any(i < 0 for i in cond["layer_idx"]):
                    continue
            try:
                when = When.model_validate(cond)
            except Exception as exc:  # pydantic's ValidationError -> our one-line form
                from .spec import _pydantic_to_design_error

                err = _pydantic_to_design_error(exc) if hasattr(exc, "errors") else DesignError(path, str(exc))
                raise DesignError(f"{path}.{err.path}", err.message) from None
            spec = _spec_from_value(value, causal, path)
            for i in range(n):
                if _plan.matches(when, i, n):
                    old = layers[i]
                    params = _merge_params(
                        {c: v for c, v in old.params.items() if c != "attention" or spec.attention == old.attention}, spec.params)
                    layers[i] = LayerSpec(spec.attention, spec.mlp or old.mlp, spec.norm or old.norm, params, i)
        return layers

    def _pattern_fn(self, n: int, stack: Any, params: dict[str, Any], *, causal: bool = True) -> list[tuple]:
        return [(s.attention, s.mlp, s.params) for s in self.generate_layers(n, causal)]


# ---------------------------------------------------------------------------
# TransformerConfig

# Seed keyword spellings -> design-file fields.
_MODEL_ALIASES = {
    "d_model": "hidden_size", "dim": "hidden_size", "n_embd": "hidden_size", "embed_dim": "hidden_size",
    "num_heads": "n_heads", "n_head": "n_heads", "num_attention_heads": "n_heads",
    "num_kv_heads": "n_kv_heads", "num_key_value_heads": "n_kv_heads",
    "d_ff": "mlp_hidden", "ffn_hidden": "mlp_hidden", "intermediate_size": "mlp_hidden", "ff_dim": "mlp_hidden",
    "max_position_embeddings": "max_seq_len", "block_size": "max_seq_len", "seq_len": "max_seq_len", "max_len": "max_seq_len",
    "norm_type": "norm", "mlp_ratio": "expansion_ratio", "positional_encoding": "positional",
}
_STACK_ALIASES = {
    "num_layers": "n_layers", "n_layer": "n_layers", "num_hidden_layers": "n_layers", "depth": "n_layers",
    "attention_type": "attention", "mlp_type": "mlp",
}
_STACK_KEYS = ("n_layers", "attention", "mlp", "params", "pattern", "string", "rules", "explicit", "repeat", "flow")
_MODEL_KEYS = tuple(k for k in Design.model_fields if k not in ("layers",))


class TransformerConfig:
    """A design built from seed-style keyword arguments.

    Model keywords are the design file's fields (``hidden_size``, ``n_heads``,
    ``vocab_size``, ``task``, …) or their common spellings (``d_model``,
    ``num_heads``, ``d_ff``, …). Stack keywords go to ``layers``: ``n_layers``,
    ``attention`` / ``mlp`` (defaults), ``pattern``, ``string``, ``rules``,
    ``explicit``, ``repeat``, ``flow``, ``params``, and the legacy per-layer
    forms ``attention_types=[...]``, ``mlp_types=[...]`` or ``layer_specs=[...]``.
    Any keyword that is none of these raises ``DesignError`` naming it.

    ``TransformerConfig(design)`` wraps an existing :class:`Design`.
    """

    def __init__(self, design: Design | None = None, /, **kwargs: Any):
        if design is not None:
            if kwargs:  # model-level overrides of an existing design
                over = {_MODEL_ALIASES.get(k, k): v for k, v in kwargs.items()}
                design = design_from_dict({**design.to_dict(), **over})
            if not isinstance(design, Design):
                raise DesignError("design", f"must be a Design, got {type(design).__name__}")
            self._design = design
        else:
            self._design = design_from_dict(_design_dict(kwargs))
        self._plan: _plan.Plan | None = None

    # ---- constructors -------------------------------------------------------
    @classmethod
    def from_design(cls, design: Design) -> "TransformerConfig":
        return cls(design)

    @classmethod
    def from_pattern(cls, pattern_name: str | LayerPattern, n_layers: int, *, pattern_params: Mapping[str, Any] | None = None,
                     **kwargs: Any) -> "TransformerConfig":
        """A named pattern over ``n_layers``. Keywords that are parameters of the
        pattern (``every=4``, ``kinds=[...]``) go to it; the rest to the model.
        A :class:`LayerPattern` instance is registered first."""
        if isinstance(pattern_name, LayerPattern):
            LayerConfigBuilder.add_custom_pattern(pattern_name)
            pattern_name = pattern_name.name
        if not isinstance(pattern_name, str) or pattern_name not in _plan.PATTERNS:
            raise DesignError("pattern", f"unknown pattern {short_repr(pattern_name)} (known: {', '.join(_plan.PATTERNS)})")
        info = _plan.PATTERNS[pattern_name]
        pp = dict(pattern_params or {})
        for key in list(kwargs):
            if key in info.params and key not in _STACK_KEYS and key not in _MODEL_KEYS:
                pp[key] = kwargs.pop(key)
        causal = kwargs.get("architecture", "decoder") != "encoder"
        for key in ("kinds", "mlps"):
            if isinstance(pp.get(key), list):
                norm = normalize_mlp if key == "mlps" else (lambda v, p: normalize_attention(v, causal, p))
                pp[key] = [norm(v, f"pattern.params.{key}[{i}]")[0] for i, v in enumerate(pp[key])]
        for key in ("attention", "outer", "inner", "special", "base"):
            if isinstance(pp.get(key), str) and key in info.params:
                pp[key] = normalize_attention(pp[key], causal, f"pattern.params.{key}")[0]
        pattern: Any = {"name": pattern_name, "params": pp} if pp else pattern_name
        return cls(n_layers=n_layers, pattern=pattern, **kwargs)

    @classmethod
    def from_string_pattern(cls, pattern: str, n_layers: int | None = None, **kwargs: Any) -> "TransformerConfig":
        """The string notation (``"SPECTRAL,SDPA*3,TOKEN_PARAM"``, ``"SDPA:MOE*2"``).
        ``n_layers`` defaults to the string's total count; otherwise the string
        is tiled over it. Legacy names (FLASH, PERFORMER, …) are accepted too."""
        causal = kwargs.get("architecture", "decoder") != "encoder"
        specs = _parse_legacy_string(pattern, causal)
        if n_layers is None:
            n_layers = len(specs)
        try:
            _plan.parse_string(pattern, n_layers)
            plain = all(not s.params for s in specs) and all(s.attention not in ("linear", "causal_linear") for s in specs)
        except DesignError:
            plain = False
        if plain:
            return cls(n_layers=n_layers, string=pattern, **kwargs)
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1 or n_layers % len(specs):
            raise DesignError("string", f"counts add up to {len(specs)}, which does not divide n_layers {n_layers}")
        return cls(n_layers=n_layers, explicit=[s.to_entry() for s in specs] * (n_layers // len(specs)), **kwargs)

    @classmethod
    def from_config_file(cls, path: Union[str, Path]) -> "TransformerConfig":
        """A design file (YAML/JSON, DESIGN.md section 3) or a seed-style flat
        file whose keys are this class's keywords (``attention_types`` …)."""
        data = read_document(path)
        if isinstance(data, dict) and not ({"layers", "encoder", "decoder"} & set(data)):
            return cls(**data)
        return cls(design_from_dict(data))

    @classmethod
    def from_preset(cls, name: str) -> "TransformerConfig":
        from .presets import load_preset

        return cls(load_preset(name))

    # ---- the design and its plan ---------------------------------------------
    def to_design(self) -> Design:
        return self._design

    @property
    def design(self) -> Design:
        return self._design

    @property
    def plan(self) -> _plan.Plan:
        if self._plan is None:
            self._plan = _plan.resolve_plan(self._design)
        return self._plan

    @property
    def warnings(self) -> list[str]:
        return list(self.plan.warnings)

    @property
    def n_layers(self) -> int:
        """Unique layers of the main stack (the decoder for encoder_decoder)."""
        return list(self.plan.stacks.values())[-1].n_unique

    @property
    def n_executed_layers(self) -> int:
        return len(self.plan.layers)

    effective_layers = n_executed_layers

    @property
    def layer_specs(self) -> list[LayerSpec]:
        """One :class:`LayerSpec` per executed layer (every stack, in order)."""
        return [LayerSpec(l.attention, l.mlp, l.norm, {k: dict(v) for k, v in l.params.items()}, l.index, l.unique_index)
                for l in self.plan.layers]

    @property
    def unique_layer_specs(self) -> list[LayerSpec]:
        return [LayerSpec(l.attention, l.mlp, l.norm, {k: dict(v) for k, v in l.params.items()}, l.index, l.unique_index)
                for s in self.plan.stacks.values() for l in s.unique]

    @property
    def attention_types(self) -> list[str]:
        return [l.attention for l in self.plan.layers]

    @property
    def mlp_types(self) -> list[str]:
        return [l.mlp for l in self.plan.layers]

    def get_layer_info(self) -> list[dict[str, Any]]:
        """One dict per executed layer: stack, index, unique_index, attention, mlp,
        norm, causal, shared (its module runs more than once), params (overrides)
        and config (every param with defaults filled)."""
        out = []
        for st in self.plan.stacks.values():
            uses: dict[int, int] = {}
            for l in st.executed:
                uses[l.unique_index] = uses.get(l.unique_index, 0) + 1
            for l in st.executed:
                out.append({
                    "stack": l.stack, "index": l.index, "unique_index": l.unique_index,
                    "attention": l.attention, "mlp": l.mlp, "norm": l.norm, "causal": l.causal,
                    "shared": uses[l.unique_index] > 1,
                    "params": {k: dict(v) for k, v in l.params.items()},
                    "config": {k: dict(v) for k, v in l.config.items()},
                })
        return out

    # ---- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self._design.to_dict()

    def to_json(self) -> str:
        return self._design.to_json()

    def to_yaml(self) -> str:
        return self._design.to_yaml()

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix.lower() == ".json" else self.to_yaml())
        return path

    # ---- attribute access to the design's fields -------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        field_name = _MODEL_ALIASES.get(name, name)
        if field_name in Design.model_fields:
            return getattr(self._design, field_name)
        if hasattr(self._design, field_name):  # derived properties: kv_heads, ffn_hidden, ...
            return getattr(self._design, field_name)
        raise AttributeError(f"TransformerConfig has no attribute {name!r}")

    def __getitem__(self, name: str) -> Any:  # seed 001 read configs as dicts
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransformerConfig) and other._design == self._design

    def __repr__(self) -> str:
        d = self._design
        return f"TransformerConfig(name={d.name!r}, hidden_size={d.hidden_size}, n_heads={d.n_heads}, n_layers={self.n_layers}, executed={self.n_executed_layers})"


def _design_dict(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Seed keywords -> a design-file dict (validated by the caller)."""
    model: dict[str, Any] = {}
    stack: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in ("attention_types", "mlp_types", "norm_types", "layer_specs"):
            legacy[key] = value
        elif key in _STACK_KEYS or key in _STACK_ALIASES:
            target = _STACK_ALIASES.get(key, key)
            if target in stack:
                raise DesignError(key, f"given twice (as {target!r} too)")
            stack[target] = value
        elif key in _MODEL_KEYS or key in _MODEL_ALIASES or key == "layers":
            target = _MODEL_ALIASES.get(key, key)
            if target in model:
                raise DesignError(key, f"given twice (as {target!r} too)")
            model[target] = value
        else:
            raise DesignError(key, "unknown keyword (use a design-file field, e.g. hidden_size, n_heads, n_layers, "
                                   "attention_types, mlp_types, pattern, string, rules, repeat)")
    if isinstance(model.get("norm"), str):
        model["norm"] = normalize_norm(model["norm"], "norm")
    arch = model.get("architecture", "decoder")
    causal = arch != "encoder"
    if "layers" in model:
        if stack or legacy:
            raise DesignError("layers", "give either a `layers` block or stack keywords (n_layers, attention_types, ...), not both")
        return model
    if arch == "encoder_decoder":
        if stack or legacy:
            first = next(iter(list(stack) + list(legacy)))
            raise DesignError(first, "stack keywords apply to one stack; for encoder_decoder pass `encoder={...}` and `decoder={...}`")
        return model
    if isinstance(stack.get("attention"), str):
        att, ap = normalize_attention(stack["attention"], causal, "attention")
        stack["attention"] = att
        if ap:
            stack["params"] = _merge_params(stack.get("params"), {"attention": ap})
    if isinstance(stack.get("mlp"), str):
        mlp, mp = normalize_mlp(stack["mlp"], "mlp")
        stack["mlp"] = mlp
        if mp:
            stack["params"] = _merge_params(stack.get("params"), {"mlp": mp})
    if legacy:
        entries = _legacy_entries(legacy, causal)
        for other in ("pattern", "string", "explicit"):
            if other in stack:
                raise DesignError(next(iter(legacy)), f"per-layer lists are mutually exclusive with `{other}`")
        n = stack.get("n_layers")
        if n is not None and n != len(entries):
            raise DesignError(next(iter(legacy)), f"has {len(entries)} entries but n_layers is {short_repr(n)}")
        stack["n_layers"] = len(entries)
        stack["explicit"] = entries
    if "n_layers" not in stack:
        raise DesignError("n_layers", "is required (or give attention_types / layer_specs)")
    model["layers"] = stack
    return model


def _legacy_entries(legacy: dict[str, Any], causal: bool) -> list[dict[str, Any]]:
    lists: dict[str, list[Any]] = {}
    for key, value in legacy.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise DesignError(key, f"must be a non-empty list, got {short_repr(value)}")
        lists[key] = list(value)
    lengths = {len(v) for v in lists.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{k} has {len(v)}" for k, v in lists.items())
        raise DesignError(list(lists)[-1], f"lists must have the same length ({detail})")
    n = lengths.pop()
    if "layer_specs" in lists and ("attention_types" in lists):
        raise DesignError("layer_specs", "give either layer_specs or attention_types, not both")
    entries = []
    for i in range(n):
        if "layer_specs" in lists:
            spec = _spec_from_value(lists["layer_specs"][i], causal, f"layer_specs[{i}]")
        elif "attention_types" in lists:
            spec = _spec_from_value(lists["attention_types"][i], causal, f"attention_types[{i}]")
        else:
            spec = None
        entry = spec.to_entry() if spec is not None else {}
        if "mlp_types" in lists:
            mlp, mp = normalize_mlp(lists["mlp_types"][i], f"mlp_types[{i}]")
            entry["mlp"] = mlp
            if mp:
                entry["params"] = _merge_params(entry.get("params"), {"mlp": mp})
        if "norm_types" in lists:
            entry["norm"] = normalize_norm(lists["norm_types"][i], f"norm_types[{i}]")
        entries.append(entry)
    return entries


def _parse_legacy_string(text: Any, causal: bool, path: str = "string") -> list[LayerSpec]:
    """The string notation with legacy names allowed: NAME[:MLP][*COUNT], comma-separated."""
    if not isinstance(text, str) or not text.strip():
        raise DesignError(path, f"must be a non-empty string, got {short_repr(text)}")
    out: list[LayerSpec] = []
    for pos, raw in enumerate(text.split(",")):
        m = _plan._TOKEN.match(raw)
        if not m:
            raise DesignError(path, f"item {pos + 1} {short_repr(raw.strip())} is not NAME, NAME*COUNT or NAME:MLP*COUNT")
        name, mlp_name, count = m.group(1), m.group(2), m.group(3)
        att, ap = normalize_attention(name, causal, f"{path} item {pos + 1}")
        mlp, mp = normalize_mlp(mlp_name, f"{path} item {pos + 1}") if mlp_name else (None, {})
        c = _plan.string_count(count, pos, path, 4096)
        if len(out) + c > 4096:
            raise DesignError(path, "expands to more than 4096 layers")
        out.extend([LayerSpec(att, mlp, None, _merge_params({"attention": ap, "mlp": mp}))] * c)
    return out


# ---------------------------------------------------------------------------
# LayerConfigBuilder: per-layer lists from the seed's inputs


class LayerConfigBuilder:
    """Builds lists of :class:`LayerSpec` (unique layers) from the seeds' inputs.

    The lists feed ``TransformerConfig(layer_specs=...)``. ``causal`` (default
    True, a decoder) picks the causal variant of legacy names like PERFORMER.
    """

    @staticmethod
    def from_lists(attention_types: Sequence[Any], mlp_types: Sequence[Any] | None = None,
                   norm_types: Sequence[Any] | None = None, causal: bool = True) -> list[LayerSpec]:
        legacy: dict[str, Any] = {"attention_types": attention_types}
        if mlp_types is not None:
            legacy["mlp_types"] = mlp_types
        if norm_types is not None:
            legacy["norm_types"] = norm_types
        return [LayerSpec(e["attention"], e.get("mlp"), e.get("norm"), e.get("params", {}), i)
                for i, e in enumerate(_legacy_entries(legacy, causal))]

    @staticmethod
    def from_string_pattern(pattern: str, n_layers: int | None = None, causal: bool = True) -> list[LayerSpec]:
        specs = _parse_legacy_string(pattern, causal)
        n = len(specs) if n_layers is None else n_layers
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n % len(specs):
            raise DesignError("string", f"counts add up to {len(specs)}, which does not divide n_layers {n}")
        return [LayerSpec(s.attention, s.mlp, s.norm, s.params, i) for i, s in enumerate(specs * (n // len(specs)))]

    @staticmethod
    def from_pattern(pattern: str | LayerPattern, n_layers: int, causal: bool = True, **pattern_params: Any) -> list[LayerSpec]:
        """A built-in or registered pattern's layers (resolved through the plan)."""
        kwargs: dict[str, Any] = {} if causal else {"architecture": "encoder", "task": "mlm"}
        cfg = TransformerConfig.from_pattern(pattern, n_layers, pattern_params=pattern_params, **kwargs)
        return [LayerSpec(s.attention, s.mlp, s.norm, s.params, s.index) for s in cfg.unique_layer_specs]

    @staticmethod
    def from_json(source: Union[str, Path], causal: bool = True) -> list[LayerSpec]:
        """A JSON list of layers (names, pairs or mappings), ``{"layers": [...]}``,
        or a whole design (its unique layers). ``source`` is a path or JSON text."""
        return LayerConfigBuilder._from_data(_read(source, "json"), causal)

    @staticmethod
    def from_yaml(source: Union[str, Path], causal: bool = True) -> list[LayerSpec]:
        return LayerConfigBuilder._from_data(_read(source, "yaml"), causal)

    @staticmethod
    def _from_data(data: Any, causal: bool) -> list[LayerSpec]:
        if isinstance(data, dict) and isinstance(data.get("layers"), list):
            data = data["layers"]
        if isinstance(data, list):
            if not data:
                raise DesignError("layers", "must be a non-empty list")
            return [_spec_from_value(v, causal, f"layers[{i}]", i) for i, v in enumerate(data)]
        design = design_from_dict(data)
        return [LayerSpec(s.attention, s.mlp, s.norm, s.params, s.index) for s in TransformerConfig(design).unique_layer_specs]

    @staticmethod
    def add_custom_pattern(pattern: LayerPattern, *, replace: bool = True) -> None:
        """Register ``pattern`` by name so designs and ``from_pattern`` can use it.
        Re-registering a custom name replaces it; built-in names are refused."""
        if not isinstance(pattern, LayerPattern):
            raise DesignError("pattern", f"must be a LayerPattern, got {type(pattern).__name__}")
        _plan.register_pattern(pattern.name, pattern.description or f"custom pattern {pattern.name}", {},
                               pattern._pattern_fn, replace=replace, causal_aware=True)

    @staticmethod
    def list_patterns() -> dict[str, str]:
        """Pattern name -> description (built-in and registered)."""
        return _plan.list_patterns()


def _read(source: Union[str, Path], fmt: str) -> Any:
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.strip()[:1] not in "[{"
                                    and Path(source).suffix.lower() in (".json", ".yaml", ".yml")):
        return read_document(source)
    return parse_document(source, fmt)


# ---------------------------------------------------------------------------
# Seed 001's registry over presets/


def list_model_presets() -> list[str]:
    from .presets import list_presets

    return list_presets()


def get_model_config(name: str) -> TransformerConfig:
    """The preset ``name`` as a TransformerConfig (DesignError if unknown)."""
    from .presets import load_preset

    return TransformerConfig(load_preset(name))
