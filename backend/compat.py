"""The seeds' Python API, as a thin layer over ``backend.spec``, ``backend.plan`` and the real modules.

The five seed systems' examples run with their imports pointed here
(``python -m backend from-code`` and ``tests/test_seeds.py`` do exactly that).
Seeds 000/001 are configs (below); seeds 002 (``TransformerModel``,
``AutoregressiveTransformerModel``, ``EncoderDecoder``, ``MultiHeadAttention`` /
``MultiQueryAttention`` / ``GroupQueryAttention``, ``get_attention``, ``MOE``,
``FFNConfig``, masks), 003 (``TransformerEncoder``, ``TransformerDecoder`` with
``forward_one_step``) and 004 (``PerformerLayer`` / ``Encoder`` / ``Decoder``,
``EncoderDecoderTransformer``, ``ActivationFunctions``) are ``nn.Module`` s that
map their keywords onto a design and hold the designer's own module for it
(section "Seed models" below); every object has ``to_design()``.

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
:class:`~backend.spec.Design`, every per-layer answer comes from
:func:`~backend.plan.resolve_plan`, and every seed model runs the module
:func:`~backend.build.build_model` makes for its design (no second model code).
The seeds' own words that have no exact counterpart are listed where they are
mapped (``_CUSTOM_PARAMS``, :meth:`FFNConfig.mlp`, the "Seed models" notes).

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

import contextlib
import copy
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from . import plan as _plan
from .errors import DesignError, short_repr
from .registry import ATTENTION, MLP, NORM
from .spec import Design, design_from_dict, parse_document, read_document

__all__ = [
    # seed 000 / 001
    "TransformerConfig", "LayerConfigBuilder", "LayerPattern", "LayerSpec", "ClusterPredictionConfig",
    "get_model_config", "list_model_presets", "translate_custom_params",
    "normalize_attention", "normalize_mlp", "normalize_norm",
    # seed 002
    "FFNConfig", "TransformerModel", "AutoregressiveTransformerModel", "EncoderDecoder", "MultiHeadAttention",
    "MultiQueryAttention", "GroupQueryAttention", "get_attention", "MOE", "TransformerEncoderLayer",
    "create_causal_mask", "scaled_dot_product_attention",
    # seed 003
    "TransformerEncoder", "TransformerDecoder",
    # seed 004
    "ActivationFunctions", "PerformerLayer", "PerformerEncoder", "PerformerDecoder", "EncoderDecoderTransformer",
    # helpers
    "capture_models", "default_device",
]

# ---------------------------------------------------------------------------
# Capture: which seed objects a script built (``python -m backend from-code``)

_CAPTURED: list[Any] | None = None  # set while backend.seedcode runs a script
_SUPPRESS = 0  # > 0 inside compat's own helper constructions


def _capture(obj: Any) -> None:
    if _CAPTURED is not None and _SUPPRESS == 0:
        _CAPTURED.append(obj)


def _absorb(obj: Any) -> None:
    """``obj`` became part of a later object (ClusterPredictionConfig's transformer): not a model of its own."""
    if _CAPTURED is not None:
        _CAPTURED[:] = [o for o in _CAPTURED if o is not obj]


@contextlib.contextmanager
def _no_capture():
    global _SUPPRESS
    _SUPPRESS += 1
    try:
        yield
    finally:
        _SUPPRESS -= 1


@contextlib.contextmanager
def capture_models():
    """Collect every top-level seed object (configs and models) built inside the block."""
    global _CAPTURED
    outer, _CAPTURED = _CAPTURED, []
    try:
        yield _CAPTURED
    finally:
        _CAPTURED = outer


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
# Seed 000's per-layer custom_params -> registry params


def _use_fft(value: Any, kind: str | None, hidden: int | None, path: str) -> dict[str, Any] | None:
    if kind != "spectral":
        raise DesignError(path, f"only applies to spectral layers, this layer is {short_repr(kind)}")
    if value is not True:
        raise DesignError(path, f"spectral always mixes tokens with the FFT; got {short_repr(value)} (choose another kind)")
    return {}


def _expansion(value: Any, kind: str | None, hidden: int | None, path: str) -> dict[str, Any] | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DesignError(path, f"must be a number > 0, got {short_repr(value)}")
    if hidden is None:
        raise DesignError(path, "needs the model's hidden_size here; give params {'mlp': {'hidden': N}} instead")
    return {"hidden": max(1, int(round(value * hidden)))}


# (category, seed key) -> translator(value, kind, hidden_size, path) returning registry params,
# or None: the seed flag has no counterpart; it is dropped with a warning naming it.
_CUSTOM_PARAMS: dict[tuple[str, str], Any] = {
    ("attention", "use_fft"): _use_fft,
    ("mlp", "expansion_ratio"): _expansion,
    # Seed 000 never says what it shares; token_param keeps separate key and value parameter tokens.
    ("attention", "param_sharing"): None,
}


def translate_custom_params(custom: Mapping[str, Mapping[str, Any]], attention: str | None, mlp: str | None,
                            hidden_size: int | None, path: str = "custom_params",
                            notes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Seed 000 ``custom_params`` -> ``params``: registry params pass through, the seed's own
    flags are translated (``use_fft``, ``expansion_ratio``), anything else is a DesignError."""
    import warnings

    kinds = {"attention": (ATTENTION, attention), "mlp": (MLP, mlp), "norm": (NORM, None)}
    out: dict[str, dict[str, Any]] = {}
    for cat, values in custom.items():
        if cat not in kinds:
            raise DesignError(f"{path}.{cat}", "unknown category (known: attention, mlp, norm)")
        registry, kind = kinds[cat]
        info = registry.get(kind) if kind else None
        for key, value in values.items():
            where = f"{path}.{cat}.{key}"
            if info is not None and key in info.params:
                out.setdefault(cat, {})[key] = value
            elif (cat, key) in _CUSTOM_PARAMS:
                fn = _CUSTOM_PARAMS[(cat, key)]
                if fn is None:
                    note = f"{where}: has no counterpart in the designer; dropped"
                    warnings.warn(note, UserWarning, stacklevel=3)
                    if notes is not None:
                        notes.append(note)
                    continue
                out.setdefault(cat, {}).update(fn(value, kind, hidden_size, where) or {})
            else:
                known = ", ".join(sorted(info.params)) if info is not None else "none"
                raise DesignError(where, f"unknown parameter for {cat} kind {short_repr(kind)} (known: {known})")
    return out


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
    # Seed 000's per-layer ``custom_params`` as written ({"attention": {...}, "mlp": {...}});
    # translated into ``params`` by :func:`translate_custom_params` when the design is made.
    custom: dict[str, dict[str, Any]] = field(default_factory=dict)

    # seed spellings
    @property
    def attention_type(self) -> str:
        return self.attention

    @property
    def mlp_type(self) -> str | None:
        return self.mlp

    @property
    def custom_params(self) -> dict[str, dict[str, Any]]:
        """Seed 000's name: the custom params as given, else the per-layer overrides."""
        return self.custom or {k: dict(v) for k, v in self.params.items() if v}

    def to_entry(self, hidden_size: int | None = None, notes: list[str] | None = None,
                 path: str = "layers") -> dict[str, Any]:
        """The design-file form (an ``explicit`` list item); ``custom`` is translated here."""
        out: dict[str, Any] = {"attention": self.attention}
        if self.mlp is not None:
            out["mlp"] = self.mlp
        if self.norm is not None:
            out["norm"] = self.norm
        extra = translate_custom_params(self.custom, self.attention, self.mlp, hidden_size, f"{path}.custom_params",
                                        notes) if self.custom else {}
        params = {k: dict(v) for k, v in _merge_params(self.params, extra).items() if v}
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


def _spec_from_value(value: Any, causal: bool, path: str, index: int | None = None,
                     require_attention: bool = True) -> LayerSpec:
    """A layer from a legacy value: a name, an (attention, mlp) pair, a dict or a LayerSpec."""
    if isinstance(value, LayerSpec):
        return LayerSpec(value.attention, value.mlp, value.norm, value.params, index, custom=value.custom)
    if isinstance(value, str):
        att, ap = normalize_attention(value, causal, path)
        return LayerSpec(att, None, None, _merge_params({"attention": ap}), index)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        att, ap = normalize_attention(value[0], causal, f"{path}[0]")
        mlp, mp = normalize_mlp(value[1], f"{path}[1]")
        return LayerSpec(att, mlp, None, _merge_params({"attention": ap, "mlp": mp}), index)
    if isinstance(value, Mapping):
        known = {"attention", "attention_type", "mlp", "mlp_type", "norm", "norm_type", "params", "custom_params"}
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
        if att is None and require_attention:
            raise DesignError(f"{path}.attention", "is required")
        custom = value.get("custom_params") or {}
        if not isinstance(custom, Mapping) or not all(isinstance(v, Mapping) for v in custom.values()):
            raise DesignError(f"{path}.custom_params", f"must map attention/mlp/norm to mappings, got {short_repr(custom)}")
        return LayerSpec(att, mlp, norm, _merge_params({"attention": ap, "mlp": mp}, params), index,  # type: ignore[arg-type]
                         custom={k: dict(v) for k, v in custom.items()})
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
    raise DesignError(path, f"unknown condition {key!r} (use an index, 'first', 'last', 'middle', 'every:N[:OFFSET]', "
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
        # Seed 000's documented form: a list of {"condition": {...}, "attention_type": ..., ...}.
        items = [(item["condition"], {k: v for k, v in item.items() if k != "condition"})
                 if isinstance(item, Mapping) and "condition" in item else item for item in items]
        for i, item in enumerate(items):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise DesignError(f"overrides[{i}]", "must be a {condition: ..., attention_type: ...} mapping or a "
                                                     f"(condition, layer) pair, got {short_repr(item)}")
        self.overrides: list[tuple[Any, Any]] = items
        # validate names and keys now, so a typo fails at definition time
        normalize_attention(base_attention, True, "base_attention")
        if base_mlp is not None:
            normalize_mlp(base_mlp, "base_mlp")
        for key, value in items:
            _parse_condition(key, f"overrides[{key!r}]")
            _spec_from_value(value, True, f"overrides[{key!r}]", require_attention=False)

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
            path = f"overrides[{key!r}]"
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
            spec = _spec_from_value(value, causal, path, require_attention=False)
            extra = translate_custom_params(spec.custom, spec.attention, spec.mlp, None, f"{path}.custom_params") \
                if spec.custom else {}
            for i in range(n):
                if _plan.matches(when, i, n):
                    old = layers[i]
                    att = spec.attention or old.attention
                    params = _merge_params(
                        {c: v for c, v in old.params.items() if c != "attention" or att == old.attention}, spec.params, extra)
                    layers[i] = LayerSpec(att, spec.mlp or old.mlp, spec.norm or old.norm, params, i)
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


# Seed 001's TransformerConfig fields (config/model.py there) and their defaults (seed 001's table).
_SEED001_DEFAULTS: dict[str, Any] = {
    "input_dim": 2, "hidden_dim": 256, "num_layers": 6, "num_heads": 8, "dropout": 0.1, "ff_expansion": 4,
    "activation": "gelu", "bias": True, "norm_eps": 1e-5, "use_flash_attn": True, "layer_repeat_mode": "none",
    "repeat_factor": 1, "layer_groups": None, "group_repeat_factors": None, "use_flow_predictor": False,
    "flow_predictor_type": "dummy", "flow_predictor_per_layer": False,
}
# Keywords only seed 001 uses: one of them makes a TransformerConfig(...) call a seed-001 one.
_SEED001_ONLY = frozenset(_SEED001_DEFAULTS) - {"input_dim", "num_layers", "num_heads", "dropout", "activation",
                                                 "bias", "norm_eps"}
# Flow predictor types: seed 001's "dummy" predictor ignores the input (a learned speed), "mlp" reads it.
_FLOW_TYPES = {"dummy": "learned", "mlp": "predicted", "learned": "learned", "predicted": "predicted",
               "constant": "constant"}
_REPEAT_HELD = ("repeat_factor", "layer_groups", "group_repeat_factors", "flow_predictor_type")


def _seed001_base() -> dict[str, Any]:
    """The model around a seed-001 transformer: 2-D points in, cluster centers out (as the presets)."""
    return {"name": "seed001_model", "architecture": "encoder", "task": "cluster_centers", "vocab_size": None,
            "output_dim": 8, "max_seq_len": 1024, "positional": "none", "norm": "layer", "tie_embeddings": False,
            "layers": {"n_layers": 1, "attention": "self_sdpa", "mlp": "mlp"}}


def _seed001_design(f: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Seed-001 fields ``f`` applied to the design dict ``base``."""
    for key in ("use_flash_attn", "bias", "use_flow_predictor", "flow_predictor_per_layer"):
        if not isinstance(f[key], bool):
            raise DesignError(key, f"must be true or false, got {short_repr(f[key])}")
    d = copy.deepcopy(base)
    d.pop("mlp_hidden", None)
    ff = f["ff_expansion"]
    d.update(input_dim=f["input_dim"], hidden_size=f["hidden_dim"], n_heads=f["num_heads"], dropout=f["dropout"],
             expansion_ratio=float(ff) if isinstance(ff, int) and not isinstance(ff, bool) else ff,
             activation=f["activation"], bias=f["bias"], norm_eps=f["norm_eps"])
    stack = d["layers"]
    stack["n_layers"] = f["num_layers"]
    mode = f["layer_repeat_mode"]
    repeat: dict[str, Any] = {"mode": mode}
    if mode in ("cycle", "layerwise"):
        repeat["factor"] = f["repeat_factor"]
    elif mode == "grouped":
        repeat.update(groups=f["layer_groups"], group_factors=f["group_repeat_factors"])
    stack["repeat"] = repeat
    flow = dict(stack.get("flow") or {})
    if f["use_flow_predictor"]:
        kind = f["flow_predictor_type"]
        if kind not in _FLOW_TYPES:
            raise DesignError("flow_predictor_type", f"must be one of {', '.join(_FLOW_TYPES)}, got {short_repr(kind)}")
        flow.update(mode=_FLOW_TYPES[kind], per_layer=f["flow_predictor_per_layer"])
    else:
        flow = {"mode": "none"}
    stack["flow"] = flow
    params = copy.deepcopy(stack.get("params") or {})
    att = params.setdefault("attention", {})
    att.pop("backend", None)
    if not f["use_flash_attn"]:
        att["backend"] = "math"  # "auto" already takes flash attention where the device has it
    stack["params"] = {k: v for k, v in params.items() if v}
    return d


def _seed001_view(design: Design, held: dict[str, Any]) -> dict[str, Any]:
    """A design read back as seed-001 fields (``held`` keeps values inert in the current mode)."""
    st = list(design.stacks().values())[-1]
    r, flow = st.repeat, st.flow
    types = {v: k for k, v in reversed(list(_FLOW_TYPES.items()))}
    return {
        "input_dim": design.input_dim, "hidden_dim": design.hidden_size, "num_layers": st.n_layers,
        "num_heads": design.n_heads, "dropout": design.dropout,
        "ff_expansion": design.ffn_hidden / design.hidden_size if design.mlp_hidden else design.expansion_ratio,
        "activation": design.activation, "bias": design.bias, "norm_eps": design.norm_eps,
        "use_flash_attn": st.params.attention.get("backend", "auto") != "math",
        "layer_repeat_mode": r.mode,
        "repeat_factor": r.factor if r.mode in ("cycle", "layerwise") else held.get("repeat_factor", 1),
        "layer_groups": list(r.groups) if r.groups else held.get("layer_groups"),
        "group_repeat_factors": list(r.group_factors) if r.group_factors else held.get("group_repeat_factors"),
        "use_flow_predictor": flow.mode != "none",
        "flow_predictor_type": types[flow.mode] if flow.mode != "none" else held.get("flow_predictor_type", "dummy"),
        "flow_predictor_per_layer": flow.per_layer,
    }


def _seed000_pattern_params(pattern_name: str, base_attention: Any, pp: dict[str, Any]) -> None:
    """Seed 000's documented pattern defaults: alternating is SDPA / token_param, sparse_special
    puts token_param every few layers into a ``base_attention`` stack."""
    base = base_attention if base_attention is not None else "self_sdpa"
    if pattern_name == "alternating" and "kinds" not in pp:
        pp["kinds"] = [base, "token_param"]
    elif pattern_name == "sparse_special" and base_attention is not None:
        pp.setdefault("base", base)
        pp.setdefault("special", "token_param")


class TransformerConfig:
    """A design built from seed-style keyword arguments (seeds 000 and 001).

    Model keywords are the design file's fields (``hidden_size``, ``n_heads``,
    ``vocab_size``, ``task``, …) or their common spellings (``d_model``,
    ``num_heads``, ``d_ff``, …). Stack keywords go to ``layers``: ``n_layers``,
    ``attention`` / ``mlp`` (defaults), ``pattern``, ``string``, ``rules``,
    ``explicit``, ``repeat``, ``flow``, ``params``, and the legacy per-layer
    forms ``attention_types=[...]``, ``mlp_types=[...]``, ``layer_specs=[...]``
    or seed 000's ``layer_config={"layers": [...]}``. Any keyword that is none of
    these raises ``DesignError`` naming it.

    Seed 001's keywords (``hidden_dim``, ``ff_expansion``, ``layer_repeat_mode``,
    ``repeat_factor``, ``layer_groups``, ``group_repeat_factors``,
    ``use_flow_predictor``, ``flow_predictor_type``, ``flow_predictor_per_layer``,
    ``use_flash_attn``) make a seed-001 transformer with that seed's defaults: an
    encoder over 2-D points predicting cluster centers. Its fields read and write
    as attributes (``cfg.repeat_factor = 4``); every write re-validates the design.
    ``repeat_factor`` is kept but inert while ``layer_repeat_mode`` is "none", as
    in seed 001.

    ``TransformerConfig(design)`` wraps an existing :class:`Design`.
    """

    def __init__(self, design: Design | None = None, /, **kwargs: Any):
        object.__setattr__(self, "_held", {})
        object.__setattr__(self, "_notes", [])
        object.__setattr__(self, "_plan", None)
        if design is not None:
            if kwargs:  # model-level overrides of an existing design
                over = {_MODEL_ALIASES.get(k, k): v for k, v in kwargs.items()}
                design = design_from_dict({**design.to_dict(), **over})
            if not isinstance(design, Design):
                raise DesignError("design", f"must be a Design, got {type(design).__name__}")
        elif _SEED001_ONLY & set(kwargs):
            design = self._seed001(kwargs)
        else:
            design = design_from_dict(_design_dict(kwargs, self._notes))
        object.__setattr__(self, "_design", design)
        _capture(self)

    def _seed001(self, kwargs: Mapping[str, Any]) -> Design:
        fields = dict(_SEED001_DEFAULTS)
        for key, value in kwargs.items():
            if key not in fields:
                raise DesignError(key, f"unknown keyword for a seed-001 TransformerConfig (known: {', '.join(fields)})")
            fields[key] = value
        self._held.update({k: fields[k] for k in _REPEAT_HELD})
        return design_from_dict(_seed001_design(fields, _seed001_base()))

    # ---- constructors -------------------------------------------------------
    @classmethod
    def from_seed001(cls, name: str = "seed001_model", **fields: Any) -> "TransformerConfig":
        """A seed-001 transformer from its fields (defaults: seed 001's table), named ``name``."""
        cfg = cls(**{"layer_repeat_mode": "none", **fields})  # a seed-001-only keyword: the seed-001 path
        cfg._design = design_from_dict({**cfg._design.to_dict(), "name": name})
        return cfg

    @classmethod
    def from_design(cls, design: Design) -> "TransformerConfig":
        return cls(design)

    @classmethod
    def from_pattern(cls, pattern_name: str | LayerPattern, n_layers: int, *, pattern_params: Mapping[str, Any] | None = None,
                     base_attention: str | None = None, base_mlp: str | None = None, **kwargs: Any) -> "TransformerConfig":
        """A named pattern over ``n_layers``. Keywords that are parameters of the
        pattern (``every=4``, ``kinds=[...]``) go to it; the rest to the model.
        ``base_attention`` / ``base_mlp`` (seed 000) set the stack's kinds; the
        seed's defaults hold (alternating: SDPA / token_param; sparse_special
        with a base: token_param every ``every`` layers).
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
        if base_attention is not None:
            kwargs["attention"] = base_attention
        if base_mlp is not None:
            kwargs["mlp"] = base_mlp
        if info.builtin:
            _seed000_pattern_params(pattern_name, base_attention, pp)
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
        is tiled over it, and a total that does not divide ``n_layers`` is an
        error naming both numbers. Legacy names (FLASH, PERFORMER, …) are accepted too."""
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
    def from_config_file(cls, config_file: Union[str, Path], **kwargs: Any) -> "TransformerConfig":
        """A design file (YAML/JSON, DESIGN.md section 3), one of seed 000's files
        (``layers: [{attention_type, mlp_type, custom_params}, …]`` or
        ``{"pattern": {"name", "n_layers", "params"}}``), or a seed-style flat
        file whose keys are this class's keywords. ``kwargs`` (``hidden_size=…``,
        ``n_heads=…``) set or override model fields."""
        data = read_document(config_file)
        if isinstance(data, dict) and isinstance(data.get("layers"), list):
            rest = {k: v for k, v in data.items() if k != "layers"}
            return cls(layer_specs=data["layers"], **{**rest, **kwargs})
        if isinstance(data, dict) and isinstance(data.get("pattern"), dict) and "n_layers" in data["pattern"]:
            p = dict(data["pattern"])
            if "name" not in p:
                raise DesignError("pattern.name", "is required")
            params = dict(p.pop("params", None) or {})
            name, n = p.pop("name"), p.pop("n_layers")
            for key in p:
                raise DesignError(f"pattern.{key}", "unknown key (known: name, n_layers, params)")
            rest = {k: v for k, v in data.items() if k != "pattern"}
            return cls.from_pattern(name, n, **{**params, **rest, **kwargs})
        if isinstance(data, dict) and not ({"layers", "encoder", "decoder"} & set(data)):
            return cls(**{**data, **kwargs})
        return cls(design_from_dict(data), **kwargs)

    @classmethod
    def from_preset(cls, name: str) -> "TransformerConfig":
        from .spec import load_preset

        return cls(load_preset(name))

    # ---- the design and its plan ---------------------------------------------
    def to_design(self) -> Design:
        return self._design

    @property
    def design(self) -> Design:
        return self._design

    @property
    def transformer(self) -> "TransformerConfig":
        """Seed 001 reads ``config.transformer.<field>``; for a bare transformer that is itself."""
        return self

    @property
    def plan(self) -> _plan.Plan:
        if self._plan is None:
            object.__setattr__(self, "_plan", _plan.resolve_plan(self._design))
        return self._plan

    @property
    def warnings(self) -> list[str]:
        return list(self._notes) + list(self.plan.warnings)

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
        if name in _SEED001_DEFAULTS:
            return _seed001_view(self._design, self._held)[name]
        field_name = _MODEL_ALIASES.get(name, name)
        if field_name in Design.model_fields:
            return getattr(self._design, field_name)
        if hasattr(self._design, field_name):  # derived properties: kv_heads, ffn_hidden, ...
            return getattr(self._design, field_name)
        raise AttributeError(f"TransformerConfig has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        """``cfg.<field> = value``: a seed-001 field or a model-level design field; the
        design is rebuilt and re-validated (errors name the field as written)."""
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        try:
            if name in _SEED001_DEFAULTS:
                if self._design.layers is None:
                    raise DesignError(name, "seed 001's fields describe one stack; this design is an encoder_decoder "
                                            "(edit its `encoder` / `decoder` blocks instead)")
                view = _seed001_view(self._design, self._held)
                view[name] = value
                if name in _REPEAT_HELD:
                    self._held[name] = value
                design = design_from_dict(_seed001_design(view, self._design.to_dict()))
            else:
                field_name = _MODEL_ALIASES.get(name, name)
                if field_name not in _MODEL_KEYS:
                    raise DesignError(name, "is not a field that can be set (set model fields such as hidden_size, or "
                                            "seed 001's transformer fields)")
                design = design_from_dict({**self._design.to_dict(), field_name: value})
        except DesignError as exc:
            if exc.path == name:
                raise
            raise DesignError(name, f"{exc.message} (as {exc.path})") from None
        object.__setattr__(self, "_design", design)
        object.__setattr__(self, "_plan", None)

    def __getitem__(self, name: str) -> Any:  # seed 001 read configs as dicts
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransformerConfig) and other._design == self._design

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        d = self._design
        return f"TransformerConfig(name={d.name!r}, hidden_size={d.hidden_size}, n_heads={d.n_heads}, n_layers={self.n_layers}, executed={self.n_executed_layers})"


class ClusterPredictionConfig:
    """Seed 001's model config: a seed-001 :class:`TransformerConfig` plus the
    prediction head (``prediction_type`` "centers" or "assignments",
    ``num_clusters``). ``to_design()`` is the transformer's design with the
    matching task (cluster_centers / cluster_assignments) and ``output_dim`` the
    number of clusters (default: the transformer's, 8 for the presets). Other
    attributes read through to the transformer."""

    def __init__(self, transformer: TransformerConfig | None = None, prediction_type: str = "centers",
                 num_clusters: int | None = None, description: str | None = None):
        if transformer is None:
            with _no_capture():
                transformer = TransformerConfig(input_dim=2, hidden_dim=256, layer_repeat_mode="none")
        if not isinstance(transformer, TransformerConfig):
            raise DesignError("transformer", f"must be a TransformerConfig, got {type(transformer).__name__}")
        if prediction_type not in ("centers", "assignments"):
            raise DesignError("prediction_type", f"must be 'centers' or 'assignments', got {short_repr(prediction_type)}")
        if prediction_type == "assignments" and num_clusters is None:
            raise DesignError("num_clusters", "is required when prediction_type is 'assignments'")
        self.transformer = transformer
        self.prediction_type = prediction_type
        self.num_clusters = num_clusters
        self.description = description if description is not None else transformer.to_design().description
        self.to_design()  # validate now
        _absorb(transformer)
        _capture(self)

    def to_design(self) -> Design:
        d = self.transformer.to_design().to_dict()
        d["task"] = "cluster_centers" if self.prediction_type == "centers" else "cluster_assignments"
        if self.num_clusters is not None:
            d["output_dim"] = self.num_clusters
        d["description"] = self.description or d.get("description", "")
        try:
            return design_from_dict(d)
        except DesignError as exc:
            raise DesignError("num_clusters" if exc.path == "output_dim" else exc.path, exc.message) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "transformer":
            raise AttributeError(name)
        return getattr(self.transformer, name)

    def __repr__(self) -> str:
        return (f"ClusterPredictionConfig(prediction_type={self.prediction_type!r}, num_clusters={self.num_clusters}, "
                f"transformer={self.transformer!r})")


def _design_dict(kwargs: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """Seed keywords -> a design-file dict (validated by the caller)."""
    model: dict[str, Any] = {}
    stack: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in ("attention_types", "mlp_types", "norm_types", "layer_specs"):
            legacy[key] = value
        elif key == "layer_config":  # seed 000: {"layers": [ {attention_type, mlp_type, custom_params}, ... ]}
            layers = value.get("layers") if isinstance(value, Mapping) else value
            if not isinstance(layers, list):
                raise DesignError("layer_config", f"must be {{'layers': [...]}} or a list of layers, got {short_repr(value)}")
            if "layer_specs" in legacy:
                raise DesignError("layer_config", "give either layer_config or layer_specs, not both")
            legacy["layer_specs"] = layers
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
        hidden = model.get("hidden_size", Design.model_fields["hidden_size"].default)
        entries = _legacy_entries(legacy, causal, hidden if isinstance(hidden, int) else None, notes)
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


def _legacy_entries(legacy: dict[str, Any], causal: bool, hidden_size: int | None = None,
                    notes: list[str] | None = None) -> list[dict[str, Any]]:
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
        entry = spec.to_entry(hidden_size, notes, f"layer_specs[{i}]") if spec is not None else {}
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
            raise DesignError(path, f"item {pos + 1} {raw.strip()!r} is not NAME, NAME*COUNT or NAME:MLP*COUNT")
        name, mlp_name, count = m.group(1), m.group(2), m.group(3)
        att, ap = normalize_attention(name, causal, f"{path} item {pos + 1}")
        mlp, mp = normalize_mlp(mlp_name, f"{path} item {pos + 1}") if mlp_name else (None, {})
        c = int(count) if count is not None else 1
        if c < 1:
            raise DesignError(path, f"item {pos + 1}: count must be >= 1, got {c}")
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
        with _no_capture():
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
        with _no_capture():
            cfg = TransformerConfig(design)
        return [LayerSpec(s.attention, s.mlp, s.norm, s.params, s.index) for s in cfg.unique_layer_specs]

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


def _seed001_json_presets() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Seed 001's own preset files: ``*.json`` in the preset folders mapping a name to
    ``{description, transformer: {seed-001 fields}, prediction_type, num_clusters}``
    (its ``config/json_defaults/model/defaults.json``). Other JSON files are ignored."""
    import json

    from .presets import preset_dirs

    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for d in reversed(preset_dirs()):
        for f in sorted(d.glob("*.json")):
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                for name, entry in data.items():
                    if isinstance(entry, dict) and isinstance(entry.get("transformer"), dict):
                        out[name] = (f, entry)
    return out


def list_model_presets() -> list[str]:
    """Every preset name: the YAML designs in presets/ (and ``BACKEND_PRESETS_DIR``) plus
    seed 001's JSON preset files there. A file dropped into the folder appears here."""
    from .presets import list_presets

    return sorted(set(list_presets()) | set(_seed001_json_presets()))


def get_model_config(name: str) -> "TransformerConfig | ClusterPredictionConfig":
    """The preset ``name``: a :class:`ClusterPredictionConfig` for cluster-prediction
    presets (seed 001: ``.transformer.<field>`` reads and writes), else a
    :class:`TransformerConfig`. DesignError if unknown."""
    from .presets import find_preset
    from .spec import load_preset

    json_presets = _seed001_json_presets()
    if find_preset(name) is None and name in json_presets:
        path, entry = json_presets[name]
        known = {"description", "transformer", "prediction_type", "num_clusters"}
        for key in entry:
            if key not in known:
                raise DesignError(f"{path.name}:{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        with _no_capture():
            transformer = TransformerConfig.from_seed001(name, **entry["transformer"])
            cfg = ClusterPredictionConfig(transformer, entry.get("prediction_type", "centers"),
                                          entry.get("num_clusters"), entry.get("description", ""))
        _capture(cfg)
        return cfg
    design = load_preset(name)
    with _no_capture():
        transformer = TransformerConfig(design)
        if not design.task.startswith("cluster_"):
            cfg: Any = transformer
        else:
            kind = "centers" if design.task == "cluster_centers" else "assignments"
            cfg = ClusterPredictionConfig(transformer, kind, design.output_dim if kind == "assignments" else None)
    _capture(cfg)
    return cfg


# ===========================================================================
# Seed models (seeds 002, 003, 004): each class maps its keywords onto a design
# and holds the designer's real module for it (``backend.build.build_model``);
# there is no model code here. ``to_design()`` gives the design; ``part`` says
# which part of that design's model the object holds:
#
#   ("model",)                  the whole model
#   ("decoder",)                an encoder-decoder model without its encoder stack
#                               (a decoder that cross-attends to a memory it is given)
#   ("stacks", name, ...)       only those stacks: inputs and outputs are hidden states
#   ("block" | "attention" | "mlp", stack)   the first layer / its attention / its MLP
#
# A design always has an input projection, positions and a head, and a decoder
# that cross-attends always has an encoder; so a bare seed component is the part
# of the smallest design that contains it (for a cross-attending decoder, an
# encoder of the same shape). Weights are built on the meta device, pruned to the
# part, then materialised and initialised by the model's own ``init_weights``.

import torch  # noqa: E402  (seeds 000/001 above need no torch)
from torch import nn  # noqa: E402

_DEVICE: list[Any] = [None]


@contextlib.contextmanager
def default_device(device: Any):
    """Build seed models on ``device`` unless they name one; ``"meta"`` allocates no weights
    (for looking at designs and parameter counts without running the model)."""
    old, _DEVICE[0] = _DEVICE[0], device
    try:
        yield
    finally:
        _DEVICE[0] = old


def _build_part(design: Design, part: tuple, device: Any = None) -> nn.Module:
    from .build import build_model

    dev = torch.device(device if device is not None else (_DEVICE[0] or "cpu"))
    model = build_model(design, device="meta")
    what = part[0]
    if what == "decoder":
        del model.stacks["encoder"]
    elif what != "model":
        keep = part[1:]
        for name in list(model.stacks):
            if name not in keep:
                del model.stacks[name]
        model.embed = model.head = model.pos = None
    if dev.type != "meta":
        model.to_empty(device=dev)
        model.init_weights()
    if what in ("model", "decoder", "stacks"):
        return model
    block = model.stacks[part[1]].blocks[0]
    return {"block": block, "attention": block.attn, "mlp": block.mlp}[what]


def _key_padding(mask: Any, path: str) -> torch.Tensor | None:
    """A seed mask -> (B, S) bool key-padding mask (True = real token).

    (B, S) masks pass; (B, T, S) masks are accepted when every query row is the
    same (a padding mask broadcast over queries, as the seeds build them).
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise DesignError(path, f"must be a tensor, got {type(mask).__name__}")
    m = mask != 0 if mask.dtype != torch.bool else mask
    if m.dim() == 3:
        if not bool((m == m[:, :1, :]).all()):
            raise DesignError(path, "only key-padding masks are supported (every query row the same); "
                                    "causal masking is the decoder's own")
        m = m[:, 0, :]
    if m.dim() != 2:
        raise DesignError(path, f"must be (batch, keys) or (batch, queries, keys), got shape {tuple(mask.shape)}")
    return m


class _SeedModule(nn.Module):
    """A seed class over the designer's module for ``part`` of ``design``."""

    def __init__(self, design: Design, part: tuple = ("model",), device: Any = None):
        super().__init__()
        self._design = design
        self.part = part
        self.module = _build_part(design, part, device)
        self.aux_loss = torch.zeros(())  # MoE load-balancing loss of the last forward (0 without MoE)
        _capture(self)

    def to_design(self) -> Design:
        return self._design

    def extra_repr(self) -> str:
        return f"design={self._design.name!r}, part={self.part}"


def _name(cls_name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls_name).lower()


# ---------------------------------------------------------------------------
# Seed 002: transformer components (post-norm, ReLU FFN, sinusoidal positions)


@dataclass
class FFNConfig:
    """Seed 002's feed-forward config: a two-layer ReLU FFN of width ``latent_dim``, or
    with ``use_moe`` a mixture of ``num_experts`` such FFNs (top-``topk`` routing, at
    most ``capacity`` tokens per expert and batch, load-balancing weight ``alpha``)."""

    embed_dim: int
    latent_dim: int
    use_moe: bool = False
    num_experts: int | None = None
    capacity: int | None = None
    alpha: float = 0.01
    topk: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.use_moe, bool):
            raise DesignError("ffn_config.use_moe", f"must be true or false, got {short_repr(self.use_moe)}")
        if self.use_moe and self.num_experts is None:
            raise DesignError("ffn_config.num_experts", "is required when use_moe=True")
        if self.use_moe and (isinstance(self.num_experts, bool) or not isinstance(self.num_experts, int) or self.num_experts < 1):
            raise DesignError("ffn_config.num_experts", f"must be an integer >= 1, got {short_repr(self.num_experts)}")

    def mlp(self) -> tuple[str, dict[str, Any]]:
        """(mlp kind, params). The seed's loss is ``alpha * sum_i f_i p_i``; the MoE kind's
        is ``weight * E * sum_i f_i P_i`` (Switch), so ``weight = alpha / E`` is the same loss.
        The seed's dedicated overflow expert has no counterpart: over-capacity tokens
        ride the residual (``overflow: drop``)."""
        if not self.use_moe:
            return "mlp", {"hidden": self.latent_dim}
        return "moe", {"hidden": self.latent_dim, "num_experts": self.num_experts, "top_k": self.topk, "expert": "mlp",
                       "capacity": self.capacity or 0, "overflow": "drop",
                       "aux_loss_weight": float(self.alpha) / self.num_experts}


def _kv_heads(attention_type: Any, num_heads: int, num_groups: int | None, path: str = "attention_type") -> int | None:
    """Seed 002's attention types: mha (every head its own K/V), mqa (one), gqa (``num_groups``,
    default ``num_heads // 2``)."""
    key = attention_type.lower() if isinstance(attention_type, str) else attention_type
    if key == "mha":
        return None
    if key == "mqa":
        return 1
    if key == "gqa":
        return num_groups if num_groups is not None else max(1, num_heads // 2)
    raise DesignError(path, f"must be 'mha', 'mqa' or 'gqa', got {short_repr(attention_type)}")


def _seed002_design(cls_name: str, *, input_dim: int, embed_dim: int, ffn_latent_dim: int, num_heads: int,
                    output_dim: int, max_seq_len: int, attention_type: str, ffn_config: FFNConfig | None,
                    num_groups: int | None, dropout: float, task: str, architecture: str,
                    stacks: dict[str, int]) -> Design:
    if ffn_config is None:
        ffn_config = FFNConfig(embed_dim, ffn_latent_dim)
    if not isinstance(ffn_config, FFNConfig):
        raise DesignError("ffn_config", f"must be an FFNConfig, got {type(ffn_config).__name__}")
    if ffn_config.embed_dim != embed_dim:
        raise DesignError("ffn_config.embed_dim", f"must match embed_dim {embed_dim}, got {short_repr(ffn_config.embed_dim)}")
    if ffn_config.latent_dim != ffn_latent_dim:
        raise DesignError("ffn_config.latent_dim", f"must match ffn_latent_dim {ffn_latent_dim}, got {short_repr(ffn_config.latent_dim)}")
    mlp, mp = ffn_config.mlp()
    d: dict[str, Any] = {
        "name": _name(cls_name),
        "description": f"Seed 002 {cls_name}: post-norm blocks, {attention_type} attention, "
                       f"{'MoE of ReLU FFNs' if mlp == 'moe' else 'ReLU FFN'}, sinusoidal positions.",
        "architecture": architecture, "task": task, "vocab_size": None, "input_dim": input_dim, "output_dim": output_dim,
        "hidden_size": embed_dim, "n_heads": num_heads, "n_kv_heads": _kv_heads(attention_type, num_heads, num_groups),
        "mlp_hidden": ffn_latent_dim, "activation": "relu", "max_seq_len": max_seq_len, "positional": "sinusoidal",
        "norm": "layer", "norm_placement": "post", "bias": True, "tie_embeddings": False, "final_norm": False,
        "dropout": dropout,
    }
    for name, n in stacks.items():
        d[name] = {"n_layers": n, "attention": "self_sdpa", "mlp": mlp, "params": {"mlp": mp}}
    return design_from_dict(d)


def _new_cache(model: nn.Module, batch: int, expanding: bool) -> Any:
    """The model's decoding cache; ``expanding=False`` makes every growing KV cache a
    sliding window of ``max_seq_len`` (seed 002's "sliding window" context mode)."""
    from .nn.common import KVCache

    max_len = model.cfg["max_seq_len"]
    cache = model.new_cache(batch, max_len)
    if not expanding:
        for entry in cache.layers:
            kv = entry.get("self")
            if isinstance(kv, KVCache) and not kv.window:
                kv.window = max_len
    return cache


class TransformerModel(_SeedModule):
    """Seed 002's regression model: ``(B, S, input_dim) -> (B, output_dim)`` (mean-pooled head).

    Design: features in (``input_dim``), post-norm blocks of ``attention_type`` attention
    (mha / mqa / gqa with ``num_groups``) and a ReLU FFN (or MoE via ``ffn_config``),
    sinusoidal positions, bidirectional unless ``apply_causal_mask``; task regression.
    The MoE auxiliary loss of the last forward is ``self.aux_loss``.
    """

    def __init__(self, input_dim: int, embed_dim: int, ffn_latent_dim: int, num_layers: int, num_heads: int,
                 output_dim: int, apply_causal_mask: bool = False, max_seq_len: int = 512, attention_type: str = "mha",
                 ffn_config: FFNConfig | None = None, use_kv_cache: bool = False, num_groups: int | None = None,
                 dropout: float = 0.0, device: Any = None):
        design = _seed002_design(
            type(self).__name__, input_dim=input_dim, embed_dim=embed_dim, ffn_latent_dim=ffn_latent_dim,
            num_heads=num_heads, output_dim=output_dim, max_seq_len=max_seq_len, attention_type=attention_type,
            ffn_config=ffn_config, num_groups=num_groups, dropout=dropout, task=self._task,
            architecture="decoder" if apply_causal_mask else "encoder", stacks={"layers": num_layers})
        if use_kv_cache and not apply_causal_mask:
            raise DesignError("use_kv_cache", "needs apply_causal_mask=True (a KV cache decodes causally)")
        super().__init__(design, device=device)
        self.use_kv_cache = use_kv_cache
        self._cache: Any = None
        self._cache_key: tuple | None = None

    _task = "regression"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.module(x, mask=_key_padding(mask, "mask"))
        self.aux_loss = out.aux_loss
        return out.output

    def reset_cache(self) -> None:
        self._cache = self._cache_key = None


class AutoregressiveTransformerModel(TransformerModel):
    """Seed 002's autoregressive model: ``(B, S, input_dim) -> (B, S, output_dim)``, causal.

    Same design as :class:`TransformerModel` with a per-token head (task sequence).
    With ``use_kv_cache``, ``model(x, expanding_context=True)`` feeds ``x`` as the next
    tokens through the model's decoding cache (the first call fills it, later calls
    append: outputs for the new tokens only); ``expanding_context=False`` keeps a
    sliding window of ``max_seq_len`` keys. Without ``expanding_context`` (or without
    a cache) a call is an ordinary full forward pass.
    """

    _task = "sequence"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                expanding_context: bool | None = None) -> torch.Tensor:
        if expanding_context is None or not self.use_kv_cache:
            return super().forward(x, mask)
        if mask is not None:
            raise DesignError("mask", "is not supported with the KV cache (expanding_context)")
        key = (bool(expanding_context), x.shape[0])
        if self._cache is None or self._cache_key != key:
            self._cache, self._cache_key = _new_cache(self.module, x.shape[0], bool(expanding_context)), key
        return self.module.forward_one_step(x, self._cache)

    def generate_next_token(self, x: torch.Tensor) -> torch.Tensor:
        """The prediction for the position after ``x``: ``(B, 1, output_dim)``."""
        return super().forward(x)[:, -1:]


def _extends(prefix: torch.Tensor | None, seq: torch.Tensor) -> bool:
    if prefix is None:
        return True
    n = prefix.shape[1]
    return seq.shape[0] == prefix.shape[0] and seq.shape[1] >= n and torch.equal(seq[:, :n], prefix)


class EncoderDecoder(_SeedModule):
    """Seed 002's encoder-decoder: ``encode(source) -> (B, S, embed_dim)``,
    ``decode(target, encoder_output) -> (B, T, output_dim)``, ``model(source, target)``.

    With ``use_kv_cache``, ``decode(target, encoder_output, expanding_context=...)``
    decodes incrementally through the model's cache: each call may pass the whole
    target so far (as seed 002's generation loop does); the part already cached is
    not recomputed, and the outputs for the whole target are returned. A target
    that does not extend the cached one, or a new ``encoder_output``, starts afresh.
    """

    def __init__(self, input_dim: int, embed_dim: int, ffn_latent_dim: int, num_encoder_layers: int,
                 num_decoder_layers: int, num_heads: int, output_dim: int, apply_causal_mask: bool = True,
                 max_seq_len: int = 512, attention_type: str = "mha", ffn_config: FFNConfig | None = None,
                 use_kv_cache: bool = False, num_groups: int | None = None, dropout: float = 0.0, device: Any = None):
        if apply_causal_mask is not True:
            raise DesignError("apply_causal_mask", "the decoder of an encoder-decoder is always causal; pass True")
        design = _seed002_design(
            type(self).__name__, input_dim=input_dim, embed_dim=embed_dim, ffn_latent_dim=ffn_latent_dim,
            num_heads=num_heads, output_dim=output_dim, max_seq_len=max_seq_len, attention_type=attention_type,
            ffn_config=ffn_config, num_groups=num_groups, dropout=dropout, task="sequence",
            architecture="encoder_decoder", stacks={"encoder": num_encoder_layers, "decoder": num_decoder_layers})
        super().__init__(design, device=device)
        self.use_kv_cache = use_kv_cache
        self._state: dict[str, Any] | None = None

    def encode(self, source: torch.Tensor, src_mask: torch.Tensor | None = None,
               expanding_context: bool | None = None) -> torch.Tensor:
        """``(B, S, input_dim) -> (B, S, embed_dim)``; the encoder has no cache (it sees all of ``source``)."""
        return self.module.encode(source, _key_padding(src_mask, "src_mask"))

    def decode(self, target: torch.Tensor, encoder_output: torch.Tensor, expanding_context: bool | None = None,
               memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        memory_mask = _key_padding(memory_mask, "memory_mask")
        if expanding_context is None or not self.use_kv_cache:
            out = self.module.decode(target, encoder_output, memory_mask=memory_mask)
            self.aux_loss = out.aux_loss
            return out.output
        st = self._state
        if (st is None or st["mode"] != bool(expanding_context) or st["memory"] is not encoder_output
                or not _extends(st["inputs"], target)):
            st = self._state = {"mode": bool(expanding_context), "memory": encoder_output, "inputs": None, "outputs": None,
                                "cache": _new_cache(self.module, target.shape[0], bool(expanding_context))}
        done = 0 if st["inputs"] is None else st["inputs"].shape[1]
        if target.shape[1] > done:
            first = st["inputs"] is None
            out = self.module.forward_one_step(target[:, done:], st["cache"],
                                               memory=encoder_output if first else None, memory_mask=memory_mask)
            st["outputs"] = out if first else torch.cat([st["outputs"], out], dim=1)
            st["inputs"] = target
        return st["outputs"]

    def forward(self, source: torch.Tensor, target: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.module(source, target, mask=_key_padding(src_mask, "src_mask"), tgt_mask=_key_padding(tgt_mask, "tgt_mask"))
        self.aux_loss = out.aux_loss
        return out.output

    def reset_cache(self) -> None:
        self._state = None


def _layer_design(cls_name: str, embed_dim: int, num_heads: int, n_kv_heads: int | None, causal: bool,
                  mlp: tuple[str, dict[str, Any]] | None = None) -> Design:
    """The one-layer seed-002 model around a bare attention / MoE layer."""
    mlp = mlp or ("mlp", {})
    return design_from_dict({
        "name": _name(cls_name), "description": f"Seed 002 {cls_name} as the layer of a one-layer model.",
        "architecture": "decoder" if causal else "encoder", "task": "sequence", "vocab_size": None,
        "input_dim": embed_dim, "output_dim": embed_dim, "hidden_size": embed_dim, "n_heads": num_heads,
        "n_kv_heads": n_kv_heads, "activation": "relu", "positional": "none", "norm": "layer", "norm_placement": "post",
        "bias": True, "tie_embeddings": False, "final_norm": False,
        "layers": {"n_layers": 1, "attention": "self_sdpa", "mlp": mlp[0], "params": {"mlp": mlp[1]}},
    })


class MultiHeadAttention(_SeedModule):
    """Seed 002's multi-head self-attention ``(B, S, embed_dim) -> (B, S, embed_dim)``: the
    ``self_sdpa`` module of a one-layer design, no positional encoding (as the seed's layer).

    ``attn(x)`` or ``attn(x, x, x)``; ``mask`` is a key-padding mask (B, S). Queries,
    keys and values from different tensors are cross-attention, which lives in
    :class:`EncoderDecoder`. With ``use_kv_cache``, ``attn(x, expanding_context=True)``
    appends ``x`` to the layer's KV cache and attends over everything cached
    (``False``: a sliding window of ``max_seq_len`` keys); ``reset_cache()`` empties it.
    """

    _kv: Any = "mha"

    def __init__(self, embed_dim: int, num_heads: int, apply_causal_mask: bool = False, use_kv_cache: bool = False,
                 num_groups: int | None = None, device: Any = None):
        kv = _kv_heads(self._kv, num_heads, num_groups)
        super().__init__(_layer_design(type(self).__name__, embed_dim, num_heads, kv, bool(apply_causal_mask)),
                         ("attention", "layers"), device)
        self.use_kv_cache = use_kv_cache
        self.num_groups = kv or num_heads
        self._cache: Any = None
        self._cache_key: tuple | None = None

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, expanding_context: bool | None = None) -> torch.Tensor:
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise DesignError("key", "this is self-attention (key and value are the query); cross-attention is in EncoderDecoder")
        if expanding_context is None or not self.use_kv_cache:
            return self.module(query, padding_mask=_key_padding(mask, "mask"))
        ck = (bool(expanding_context), query.shape[0])
        if self._cache is None or self._cache_key != ck:
            window = 0 if expanding_context else self._design.max_seq_len
            self._cache, self._cache_key = self.module.new_cache(query.shape[0], self._design.max_seq_len, window=window), ck
        return self.module(query, start_pos=self._cache.length, cache=self._cache,
                           padding_mask=_key_padding(mask, "mask"))

    def reset_cache(self) -> None:
        self._cache = self._cache_key = None


class MultiQueryAttention(MultiHeadAttention):
    """Seed 002's multi-query attention: one key/value head shared by all query heads."""

    _kv = "mqa"


class GroupQueryAttention(MultiHeadAttention):
    """Seed 002's grouped-query attention: ``num_groups`` key/value heads (default ``num_heads // 2``)."""

    _kv = "gqa"


_ATTENTION_CLASSES = {"mha": MultiHeadAttention, "mqa": MultiQueryAttention, "gqa": GroupQueryAttention}


def get_attention(attention_type: str, embed_dim: int, num_heads: int, num_groups: int | None = None,
                  apply_causal_mask: bool = False, use_kv_cache: bool = False, device: Any = None) -> MultiHeadAttention:
    """Seed 002's attention factory; ``num_groups`` only matters for gqa."""
    key = attention_type.lower() if isinstance(attention_type, str) else attention_type
    if key not in _ATTENTION_CLASSES:
        raise DesignError("attention_type", f"must be 'mha', 'mqa' or 'gqa', got {short_repr(attention_type)}")
    groups = num_groups if key == "gqa" else None
    return _ATTENTION_CLASSES[key](embed_dim, num_heads, apply_causal_mask=apply_causal_mask, use_kv_cache=use_kv_cache,
                                   num_groups=groups, device=device)


class MOE(_SeedModule):
    """Seed 002's mixture of experts: ``moe(x) -> (output, aux_loss)``, output shaped like ``x``.

    The ``moe`` module of a one-layer design: ``num_experts`` ReLU FFNs of width
    ``ffn_latent_dim``, top-``topk`` routing, at most ``capacity`` tokens per expert and
    batch, auxiliary loss ``alpha * sum_i f_i p_i`` (see :meth:`FFNConfig.mlp`).
    """

    def __init__(self, embed_dim: int, ffn_latent_dim: int, num_experts: int, capacity: int | None = None,
                 alpha: float = 0.01, topk: int = 1, device: Any = None):
        ffn = FFNConfig(embed_dim, ffn_latent_dim, True, num_experts, capacity, alpha, topk)
        super().__init__(_layer_design(type(self).__name__, embed_dim, 1, None, False, ffn.mlp()), ("mlp", "layers"), device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.module(x)
        self.aux_loss = self.module.aux_loss
        return out, self.aux_loss


class TransformerEncoderLayer(_SeedModule):
    """Seed 002's encoder layer ``(B, S, embed_dim) -> (B, S, embed_dim)``: one post-norm block
    (attention + residual, LayerNorm, FFN or MoE + residual, LayerNorm); ``aux_loss`` as above."""

    def __init__(self, embed_dim: int, num_heads: int, ffn_latent_dim: int | None = None, attention_type: str = "mha",
                 num_groups: int | None = None, apply_causal_mask: bool = False, ffn_config: FFNConfig | None = None,
                 dropout: float = 0.0, device: Any = None):
        latent = ffn_latent_dim or (ffn_config.latent_dim if isinstance(ffn_config, FFNConfig) else 4 * embed_dim)
        design = _seed002_design(
            type(self).__name__, input_dim=embed_dim, embed_dim=embed_dim, ffn_latent_dim=latent, num_heads=num_heads,
            output_dim=embed_dim, max_seq_len=2048, attention_type=attention_type, ffn_config=ffn_config,
            num_groups=num_groups, dropout=dropout, task="sequence",
            architecture="decoder" if apply_causal_mask else "encoder", stacks={"layers": 1})
        super().__init__(design, ("block", "layers"), device)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y, self.aux_loss = self.module(x, padding_mask=_key_padding(mask, "mask"))
        return y


def create_causal_mask(seq_len: int, device: Any = None) -> torch.Tensor:
    """(seq_len, seq_len) lower-triangular bool mask: True where query i may attend key j <= i."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (..., S, d) tensors (the designer's SDPA call). ``mask``:
    True / non-zero where attending is allowed (e.g. :func:`create_causal_mask`)."""
    from .nn.attention import sdpa

    if mask is not None and mask.dtype != torch.bool:
        mask = mask != 0
    return sdpa(query, key, value, mask, dropout_p=dropout_p)


# ---------------------------------------------------------------------------
# Seed 003: configurable encoder / decoder with incremental decoding

_NORM_STRATEGIES = {"pre_norm": "pre", "post_norm": "post", "pre": "pre", "post": "post", "pre_post": "pre_post"}
_ACTIVATION_SPELLINGS = {"swish": "silu"}


def _seed003_design(cls_name: str, *, input_size: int, output_size: int | None, d_model: int, nhead: int,
                    num_layers: int, dim_feedforward: int, dropout: float, att_type: str, use_swiglu: bool,
                    norm_strategy: str, use_adaptive_ln: Any, use_gradient_checkpointing: bool, share_layers: bool,
                    use_final_norm: bool, activation: str, max_seq_len: int, cross: bool) -> Design:
    att, ap = normalize_attention(att_type, cross, "att_type")
    act = _ACTIVATION_SPELLINGS.get(activation, activation)
    mlp, mp = ("swiglu", {}) if use_swiglu else normalize_mlp(act, "activation")
    if use_adaptive_ln is True:
        norm = "adaptive"
    elif use_adaptive_ln in (False, None):
        norm = "layer"
    else:
        norm = normalize_norm(use_adaptive_ln, "use_adaptive_ln")
    if norm_strategy not in _NORM_STRATEGIES:
        raise DesignError("norm_strategy", f"must be one of {', '.join(_NORM_STRATEGIES)}, got {short_repr(norm_strategy)}")
    repeat = {"mode": "cycle", "factor": num_layers} if share_layers and num_layers > 1 else {"mode": "none"}
    stack = {"n_layers": 1 if share_layers else num_layers, "attention": att, "mlp": mlp,
             "params": {"attention": ap, "mlp": mp}, "repeat": repeat}
    d: dict[str, Any] = {
        "name": _name(cls_name),
        "description": f"Seed 003 {cls_name}: {norm_strategy} {norm} norms, {att_type} attention, "
                       f"{'SwiGLU' if use_swiglu else act} FFN{', one layer shared by every depth' if share_layers else ''}.",
        "architecture": "encoder_decoder" if cross else "encoder", "task": "sequence", "vocab_size": None,
        "input_dim": input_size, "output_dim": output_size or d_model, "hidden_size": d_model, "n_heads": nhead,
        "mlp_hidden": dim_feedforward, "activation": act if act in ("gelu", "relu", "silu", "mish") else "gelu",
        "max_seq_len": max_seq_len, "positional": "sinusoidal", "norm": norm, "norm_placement": _NORM_STRATEGIES[norm_strategy],
        "final_norm": use_final_norm, "dropout": dropout, "gradient_checkpointing": use_gradient_checkpointing,
        "bias": True, "tie_embeddings": False,
    }
    if cross:  # the decoder's encoder: the same shape, bidirectional
        enc_att, enc_ap = normalize_attention(att_type, False, "att_type")
        d["encoder"] = {**stack, "attention": enc_att, "params": {"attention": enc_ap, "mlp": mp}}
        d["decoder"] = stack
    else:
        d["layers"] = stack
    return design_from_dict(d)


class TransformerEncoder(_SeedModule):
    """Seed 003's encoder: ``(B, S, input_size) -> (B, S, output_size or d_model)``.

    ``att_type``: standard / xformer (memory-efficient SDPA kernel) / flash / frequency;
    ``use_swiglu`` (else a two-layer FFN with ``activation``); ``norm_strategy``
    pre_norm / post_norm; ``use_adaptive_ln``: "layer", "rms", "adaptive" (True);
    ``share_layers``: one layer run at every depth; sinusoidal positions. A design always
    ends in a head, so without ``output_size`` a per-token Linear maps back to ``d_model``.
    """

    _cross = False

    def __init__(self, input_size: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, att_type: str = "standard", use_swiglu: bool = True,
                 norm_strategy: str = "pre_norm", use_adaptive_ln: Any = "layer", use_gradient_checkpointing: bool = False,
                 share_layers: bool = False, use_final_norm: bool = True, activation: str = "gelu",
                 output_size: int | None = None, max_seq_len: int = 2048, device: Any = None):
        design = _seed003_design(
            type(self).__name__, input_size=input_size, output_size=output_size, d_model=d_model, nhead=nhead,
            num_layers=num_layers, dim_feedforward=dim_feedforward, dropout=dropout, att_type=att_type,
            use_swiglu=use_swiglu, norm_strategy=norm_strategy, use_adaptive_ln=use_adaptive_ln,
            use_gradient_checkpointing=use_gradient_checkpointing, share_layers=share_layers,
            use_final_norm=use_final_norm, activation=activation, max_seq_len=max_seq_len, cross=self._cross)
        super().__init__(design, ("decoder",) if self._cross else ("model",), device)

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.module(src, mask=_key_padding(mask, "mask"))
        self.aux_loss = out.aux_loss
        return out.output


class TransformerDecoder(TransformerEncoder):
    """Seed 003's decoder: causal self-attention, cross-attention to ``memory`` (an encoder's
    output, ``(B, M, d_model)``), ``(B, T, input_size) -> (B, T, output_size)``.

    ``forward_one_step(tgt, memory, incremental_state)`` decodes ``tgt`` (B, s, input_size)
    as the next positions and returns ``(output (B, s, output_size), incremental_state)``.
    ``incremental_state`` starts as ``{}``; afterwards ``state["layers"][j]`` is
    ``{"self_attn": {"key", "value"}, "cross_attn": {"key", "value"}}`` for executed layer
    ``j``, each (B, T, n_kv_heads * head_dim) (= (B, T, d_model) for full attention), views
    of the model's own cache, which is kept in ``state["cache"]``. ``memory`` is read on
    the first step (its keys/values are cached).

    The design is the encoder-decoder this decoder belongs to (its encoder of the same
    shape); the module holds the decoder part (embedding, decoder stack, head).
    """

    _cross = True

    def __init__(self, input_size: int, output_size: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, att_type: str = "standard", use_swiglu: bool = True,
                 norm_strategy: str = "pre_norm", use_adaptive_ln: Any = "layer", use_gradient_checkpointing: bool = False,
                 share_layers: bool = False, use_final_norm: bool = True, activation: str = "gelu",
                 max_seq_len: int = 2048, device: Any = None):
        super().__init__(input_size, d_model, nhead, num_layers, dim_feedforward, dropout, att_type, use_swiglu,
                         norm_strategy, use_adaptive_ln, use_gradient_checkpointing, share_layers, use_final_norm,
                         activation, output_size, max_seq_len, device)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,  # type: ignore[override]
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.module.decode(tgt, memory, tgt_mask=_key_padding(tgt_mask, "tgt_mask"),
                                 memory_mask=_key_padding(memory_mask, "memory_mask"))
        self.aux_loss = out.aux_loss
        return out.output

    def forward_one_step(self, tgt: torch.Tensor, memory: torch.Tensor | None = None,
                         incremental_state: dict[str, Any] | None = None,
                         memory_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        state = incremental_state if incremental_state is not None else {}
        cache = state.get("cache")
        first = cache is None
        if first:
            if memory is None:
                raise DesignError("memory", "is required on the first step (the encoder output to cross-attend to)")
            cache = state["cache"] = _new_cache(self.module, tgt.shape[0], True)
        out = self.module.forward_one_step(tgt, cache, memory=memory if first else None,
                                           memory_mask=_key_padding(memory_mask, "memory_mask") if first else None)
        state["layers"] = [{"self_attn": _kv_view(e.get("self")), "cross_attn": _kv_view(e.get("cross"))}
                           for e in cache.layers]
        return out, state


def _kv_view(cache: Any) -> dict[str, torch.Tensor]:
    """A KV cache (B, H_kv, T, Dh) as seed 003's {"key", "value"} of shape (B, T, H_kv * Dh)."""
    k = getattr(cache, "k", None)
    if k is None:
        return {}
    return {"key": k.transpose(1, 2).flatten(2), "value": cache.v.transpose(1, 2).flatten(2)}


# ---------------------------------------------------------------------------
# Seed 004: Performer universal layers (inputs and outputs are d_model-wide hidden states)


class ActivationFunctions(str, Enum):
    """Seed 004's FFN activations: the GLU variants are gated FFN kinds, GELU / RELU a two-layer FFN."""

    GELU = "gelu"
    RELU = "relu"
    SWIGLU = "swiglu"
    GEGLU = "geglu"
    REGLU = "reglu"


_PERFORMER_ATTENTION = {"softmax": "self_sdpa", "linear": "linear", "causal_linear": "causal_linear"}
_PERFORMER_DEFAULTS: dict[str, Any] = {
    "d_model": 512, "device": None, "batch_size": None, "num_layers": 6, "num_heads": 8, "d_ff": 4, "dropout": 0.1,
    "attention_type": "linear", "activation": ActivationFunctions.GELU, "nb_features": 256, "use_rezero": False,
    "use_scalenorm": False, "feature_redraw_interval": 1000, "auto_check_redraw": True, "use_cross_attention": False,
    "max_seq_len": 2048,
}
_PERFORMER_MODEL_KEYS = ("d_model", "num_heads", "dropout", "max_seq_len")


def _performer_fields(given: Mapping[str, Any] | None, path: str, **defaults: Any) -> dict[str, Any]:
    f = {**_PERFORMER_DEFAULTS, **defaults}
    for key, value in (given or {}).items():
        if key not in f:
            raise DesignError(f"{path}{key}", f"unknown keyword (known: {', '.join(_PERFORMER_DEFAULTS)})")
        f[key] = value
    return f


def _performer_stack(f: dict[str, Any], path: str, mirror: bool = False, n_layers: int | None = None) -> dict[str, Any]:
    """Seed-004 fields -> a design stack. ``nb_features`` / redraw settings go to the Performer
    kinds (fix_projection = not auto_check_redraw); ``d_ff`` multiplies ``d_model``.
    ``mirror``: the encoder a bare decoder's design gets, bidirectional where the decoder is causal."""
    name = f["attention_type"]
    if name not in _PERFORMER_ATTENTION:
        raise DesignError(f"{path}attention_type", f"must be one of {', '.join(_PERFORMER_ATTENTION)}, got {short_repr(name)}")
    att = _PERFORMER_ATTENTION[name]
    if mirror and att == "causal_linear":
        att = "linear"
    act = f["activation"].value if isinstance(f["activation"], ActivationFunctions) else f["activation"]
    mlp, mp = normalize_mlp(act, f"{path}activation")
    d_ff = f["d_ff"]
    if isinstance(d_ff, bool) or not isinstance(d_ff, (int, float)) or d_ff <= 0:
        raise DesignError(f"{path}d_ff", f"must be a number > 0 (FFN width = d_ff * d_model), got {short_repr(d_ff)}")
    mp["hidden"] = max(1, int(round(d_ff * f["d_model"])))
    ap: dict[str, Any] = {}
    if "nb_features" in ATTENTION[att].params:
        ap = {"nb_features": f["nb_features"], "redraw_interval": f["feature_redraw_interval"] or 0,
              "fix_projection": not f["auto_check_redraw"]}
    if f["use_rezero"] and f["use_scalenorm"]:
        raise DesignError(f"{path}use_scalenorm", "choose one of use_rezero and use_scalenorm")
    norm = "rezero" if f["use_rezero"] else "scale" if f["use_scalenorm"] else "layer"
    return {"n_layers": f["num_layers"] if n_layers is None else n_layers, "attention": att, "mlp": mlp, "norm": norm,
            "params": {"attention": ap, "mlp": mp}}


def _performer_design(cls_name: str, stacks: dict[str, tuple[dict[str, Any], str]], architecture: str,
                      n_layers: int | None = None) -> Design:
    """stacks: design stack name -> (seed-004 fields, error path prefix). An encoder given the
    decoder's own fields is the mirror encoder of a bare decoder (see :func:`_performer_stack`)."""
    fields = [f for f, _ in stacks.values()]
    for key in _PERFORMER_MODEL_KEYS:
        values = {repr(f[key]) for f in fields}
        if len(values) > 1:
            (fa, pa), (fb, pb) = list(stacks.values())[:2]
            raise DesignError(f"{pb}{key}", f"must equal {pa}{key} ({short_repr(fa[key])}): a design has one {key}; "
                                            f"got {short_repr(fb[key])}")
    f0 = fields[-1]
    d: dict[str, Any] = {
        "name": _name(cls_name),
        "description": f"Seed 004 {cls_name}: pre-norm Performer layers over d_model-wide hidden states.",
        "architecture": architecture, "task": "sequence", "vocab_size": None, "input_dim": f0["d_model"],
        "output_dim": f0["d_model"], "hidden_size": f0["d_model"], "n_heads": f0["num_heads"], "dropout": f0["dropout"],
        "max_seq_len": f0["max_seq_len"], "positional": "none", "norm": "layer", "norm_placement": "pre", "bias": True,
        "tie_embeddings": False,
    }
    dec = stacks.get("decoder", (None, ""))[0]
    for name, (f, path) in stacks.items():
        d[name] = _performer_stack(f, path, mirror=name == "encoder" and f is dec, n_layers=n_layers)
    d["norm"] = d[list(stacks)[-1]]["norm"]
    return design_from_dict(d)


def _fix_projections(owner: _SeedModule, stacks: Sequence[str]) -> None:
    """Stop redrawing the Performer features of ``stacks`` (module flag and design param)."""
    mods = [owner.module.stacks[n] for n in stacks] if hasattr(owner.module, "stacks") else [owner.module]
    for mod in mods:
        for m in mod.modules():
            if hasattr(m, "fix_projection") and hasattr(m, "redraw_projection"):
                m.fix_projection = True
    d = owner._design.to_dict()
    for name in stacks:
        st = d[name]
        if "fix_projection" in ATTENTION[st["attention"]].params:
            st["params"]["attention"]["fix_projection"] = True
    owner._design = design_from_dict(d)


class PerformerLayer(_SeedModule):
    """Seed 004's universal layer ``(B, S, d_model) -> (B, S, d_model)``: an encoder layer, or with
    ``use_cross_attention`` a decoder layer that attends to ``encoder_output``.

    ``attention_type``: softmax / linear (FAVOR+, bidirectional) / causal_linear;
    ``activation``: an :class:`ActivationFunctions`; ``d_ff``: FFN width multiplier;
    ``use_rezero`` / ``use_scalenorm`` instead of LayerNorm (pre-norm). ``batch_size`` is
    accepted and unused (the modules take any batch); ``device`` is where weights live.
    """

    def __init__(self, **kwargs: Any):
        f = _performer_fields(kwargs, "")
        cross = bool(f["use_cross_attention"])
        causal = cross or f["attention_type"] == "causal_linear"
        if cross:
            design = _performer_design(type(self).__name__, {"encoder": (f, ""), "decoder": (f, "")}, "encoder_decoder", 1)
            part = ("block", "decoder")
        else:
            design = _performer_design(type(self).__name__, {"layers": (f, "")}, "decoder" if causal else "encoder", 1)
            part = ("block", "layers")
        super().__init__(design, part, f["device"])
        self.batch_size = f["batch_size"]

    def forward(self, x: torch.Tensor, encoder_output: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cross_attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y, self.aux_loss = self.module(x, padding_mask=_key_padding(mask, "mask"), memory=encoder_output,
                                       memory_mask=_key_padding(cross_attn_mask, "cross_attn_mask"))
        return y

    def fix_projection_matrices_(self) -> None:
        _fix_projections(self, [self.part[1]])


class _PerformerStacks(_SeedModule):
    """Shared forward passes of the seed-004 stack classes."""

    def _encode(self, name: str, x: torch.Tensor, mask: Any) -> torch.Tensor:
        h, self.aux_loss = self.module.stacks[name](x, padding_mask=_key_padding(mask, "mask"))
        return h

    def _decode(self, name: str, tgt: torch.Tensor, encoder_output: torch.Tensor | None, self_attn_mask: Any,
                cross_attn_mask: Any, use_causal_mask: bool, mask: Any) -> torch.Tensor:
        if use_causal_mask is not True:
            raise DesignError("use_causal_mask", "decoder stacks are always causal here; pass True (or use an encoder)")
        if self_attn_mask is not None:
            raise DesignError("self_attn_mask", "custom self-attention masks are not supported; the causal mask is built "
                                                "in, padding goes in `mask`")
        stack = self.module.stacks[name]
        if stack.has_cross and encoder_output is None:
            raise DesignError("encoder_output", "is required: this decoder cross-attends (use_cross_attention=False for a "
                                                "decoder-only model)")
        h, self.aux_loss = stack(tgt, padding_mask=_key_padding(mask, "mask"),
                                 memory=encoder_output if stack.has_cross else None,
                                 memory_mask=_key_padding(cross_attn_mask, "cross_attn_mask"))
        return h


class PerformerEncoder(_PerformerStacks):
    """Seed 004's encoder ``(B, S, d_model) -> (B, S, d_model)``: ``num_layers`` bidirectional
    layers (keywords as :class:`PerformerLayer`), then a final norm."""

    def __init__(self, **kwargs: Any):
        f = _performer_fields(kwargs, "")
        super().__init__(_performer_design(type(self).__name__, {"layers": (f, "")}, "encoder"), ("stacks", "layers"),
                         f["device"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._encode("layers", x, mask)

    def fix_projection_matrices_(self) -> None:
        _fix_projections(self, ["layers"])


class PerformerDecoder(_PerformerStacks):
    """Seed 004's decoder ``(B, T, d_model) -> (B, T, d_model)``: causal layers that cross-attend
    to ``encoder_output`` (``use_cross_attention=True``, the default), or a decoder-only stack."""

    def __init__(self, **kwargs: Any):
        f = _performer_fields(kwargs, "", attention_type="causal_linear", use_cross_attention=True)
        if f["use_cross_attention"]:
            design = _performer_design(type(self).__name__, {"encoder": (f, ""), "decoder": (f, "")}, "encoder_decoder")
            self_name = "decoder"
        else:
            design = _performer_design(type(self).__name__, {"layers": (f, "")}, "decoder")
            self_name = "layers"
        super().__init__(design, ("stacks", self_name), f["device"])

    def forward(self, tgt: torch.Tensor, encoder_output: torch.Tensor | None = None, self_attn_mask: Any = None,
                cross_attn_mask: Any = None, use_causal_mask: bool = True, mask: Any = None) -> torch.Tensor:
        return self._decode(self.part[1], tgt, encoder_output, self_attn_mask, cross_attn_mask, use_causal_mask, mask)

    def fix_projection_matrices_(self) -> None:
        _fix_projections(self, [self.part[1]])


class _StackView:
    """``model.encoder`` / ``model.decoder`` of an :class:`EncoderDecoderTransformer` (no weights of its own)."""

    def __init__(self, owner: "EncoderDecoderTransformer", name: str):
        self._owner, self._name = owner, name

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._name == "encoder":
            return self._owner.encode(*args, **kwargs)
        return self._owner.decode(*args, **kwargs)

    def fix_projection_matrices_(self) -> None:
        _fix_projections(self._owner, [self._name])

    def parameters(self):
        return self._owner.module.stacks[self._name].parameters()


class EncoderDecoderTransformer(_PerformerStacks):
    """Seed 004's seq2seq model over hidden states: ``model(src, tgt) -> (B, T, d_model)``,
    ``encode(src)``, ``decode(tgt, encoder_output=...)``; ``model.encoder`` / ``model.decoder``
    call the stacks and have ``fix_projection_matrices_()``.

    ``encoder_params`` / ``decoder_params`` take :class:`PerformerLayer`'s keywords per
    stack (decoder default ``causal_linear``); ``d_model``, ``num_heads``, ``dropout`` and
    ``max_seq_len`` are model-wide in a design and must agree between the two.
    """

    def __init__(self, encoder_params: Mapping[str, Any] | None = None, decoder_params: Mapping[str, Any] | None = None):
        fe = _performer_fields(encoder_params, "encoder_params.")
        fd = _performer_fields(decoder_params, "decoder_params.", attention_type="causal_linear")
        design = _performer_design(type(self).__name__, {"encoder": (fe, "encoder_params."),
                                                         "decoder": (fd, "decoder_params.")}, "encoder_decoder")
        if fe["device"] is not None and fd["device"] is not None and str(fe["device"]) != str(fd["device"]):
            raise DesignError("decoder_params.device", f"must equal encoder_params.device ({fe['device']}), got {fd['device']}")
        super().__init__(design, ("stacks", "encoder", "decoder"), fe["device"] if fe["device"] is not None else fd["device"])

    @property
    def encoder(self) -> _StackView:
        return _StackView(self, "encoder")

    @property
    def decoder(self) -> _StackView:
        return _StackView(self, "decoder")

    def encode(self, src: torch.Tensor, mask: Any = None) -> torch.Tensor:
        return self._encode("encoder", src, mask)

    def decode(self, tgt: torch.Tensor, encoder_output: torch.Tensor | None = None, self_attn_mask: Any = None,
               cross_attn_mask: Any = None, use_causal_mask: bool = True, mask: Any = None) -> torch.Tensor:
        return self._decode("decoder", tgt, encoder_output, self_attn_mask, cross_attn_mask, use_causal_mask, mask)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: Any = None, tgt_mask: Any = None,
                cross_attn_mask: Any = None) -> torch.Tensor:
        memory = self.encode(src, src_mask)
        aux = self.aux_loss
        out = self.decode(tgt, memory, cross_attn_mask=cross_attn_mask if cross_attn_mask is not None else src_mask,
                          mask=tgt_mask)
        self.aux_loss = self.aux_loss + aux
        return out
