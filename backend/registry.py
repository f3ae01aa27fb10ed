"""Registry of every layer kind: name -> module path + parameter schema.

This module imports no torch. Validation (``backend.spec``), the plan and the
app's widget forms read the schemas here; ``backend.nn`` holds the modules,
which are imported lazily by dotted path only when a model is built. A new kind
is one module in ``backend/nn/`` plus one ``KindInfo`` entry below.

Each schema entry says type, default, bounds and help text; the app renders
the same schema as widgets, so a new kind appears in the browser unchanged.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .errors import DesignError, format_path, short_repr

ParamType = Literal["int", "float", "bool", "choice", "str"]


@dataclass(frozen=True)
class ParamInfo:
    type: ParamType
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False  # None is a legal value (meaning "derive it")

    def check(self, value: Any, path: list[Any]) -> Any:
        """Return the validated value or raise DesignError naming ``path``."""
        if value is None:
            if self.nullable:
                return None
            raise DesignError.at(path, f"must not be null, got {short_repr(value)}")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise DesignError.at(path, f"must be true or false, got {short_repr(value)}")
            return value
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise DesignError.at(path, f"must be an integer, got {short_repr(value)}")
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DesignError.at(path, f"must be a number, got {short_repr(value)}")
            if value != value or value in (float("inf"), float("-inf")):
                raise DesignError.at(path, f"must be finite, got {short_repr(value)}")
            value = float(value)
        elif self.type in ("choice", "str"):
            if not isinstance(value, str):
                raise DesignError.at(path, f"must be a string, got {short_repr(value)}")
        if self.choices is not None and value not in self.choices:
            opts = ", ".join(map(str, self.choices))
            raise DesignError.at(path, f"must be one of {opts}; got {short_repr(value)}")
        if self.min is not None and value < self.min:
            raise DesignError.at(path, f"must be >= {_num(self.min)}, got {short_repr(value)}")
        if self.max is not None and value > self.max:
            raise DesignError.at(path, f"must be <= {_num(self.max)}, got {short_repr(value)}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


Category = Literal["attention", "mlp", "norm", "positional"]


@dataclass(frozen=True)
class KindInfo:
    name: str
    category: Category
    module: str  # "backend.nn.attention:SelfSDPA", imported lazily
    description: str
    paper: str = ""
    params: dict[str, ParamInfo] = field(default_factory=dict)
    # attention-only capabilities
    causal: bool = True  # can run in a causal (decoder) stack
    bidirectional: bool = True  # can run in a bidirectional (encoder) stack
    cacheable: bool = False  # supports incremental decoding with a cache (in causal stacks)
    uses_positions: bool = True  # applies rope / alibi when the model uses them
    softmax: bool = False  # a softmax attention (allowed as cross-attention)
    # params -> a warning when a layer of this kind with these params sits in a causal stack
    # (it runs, but is not causal by construction), or None; torch-free, read at validation
    causal_warning: Callable[[dict[str, Any]], str | None] | None = None

    def resolve_params(self, given: dict[str, Any] | None, path: list[Any]) -> dict[str, Any]:
        """Defaults filled in, every given key checked against the schema."""
        given = given or {}
        if not isinstance(given, dict):
            raise DesignError.at(path, f"must be a mapping, got {short_repr(given)}")
        out = {k: p.default for k, p in self.params.items()}
        for key, value in given.items():
            if key not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise DesignError.at(
                    path + [key], f"unknown parameter for {self.category} kind '{self.name}' (known: {known})"
                )
            out[key] = self.params[key].check(value, path + [key])
        return out

    def load(self) -> type:
        mod, _, cls = self.module.partition(":")
        return getattr(importlib.import_module(mod), cls)


P = ParamInfo


def _moe_causal_warning(params: dict[str, Any]) -> str | None:
    # Capacity slots are served in token order over the batch (backend/nn/moe.py), so
    # a later token can take an earlier token's expert: not causal, and cached decoding
    # (one token routed alone) differs from a full forward. The smoke test says n/a.
    if params.get("capacity_factor", 0.0) > 0:
        return (f"moe capacity_factor {params['capacity_factor']:g} in a causal stack: capacity routing lets later tokens "
                "change earlier tokens' experts, so training is not causal and cached decoding will not match a full "
                "forward (set capacity_factor 0 for a causal decoder)")
    return None
_BACKENDS = ("auto", "math", "flash", "efficient")
_ACTS = ("gelu", "relu", "silu", "mish")
_MLP_KINDS = ("swiglu", "geglu", "reglu", "relu2", "mlp")
_SOFTMAX_KINDS = ("self_sdpa", "self_flex", "diff_attn")

ATTENTION: dict[str, KindInfo] = {
    k.name: k
    for k in [
        KindInfo(
            "self_sdpa", "attention", "backend.nn.attention:SelfSDPA",
            "Multi-head softmax attention on F.scaled_dot_product_attention (MHA/GQA/MQA via n_kv_heads).",
            "Vaswani et al. 2017, arXiv 1706.03762; GQA: Ainslie et al. 2023, arXiv 2305.13245",
            {
                "window": P("int", 0, "sliding-window size in tokens (0 = full attention)", 0, 1 << 20),
                "backend": P("choice", "auto", "SDPA kernel: auto, math, flash or efficient (xformers-style)", choices=_BACKENDS),
            },
            cacheable=True, softmax=True,
        ),
        KindInfo(
            "self_flex", "attention", "backend.nn.flex:SelfFlex",
            "FlexAttention with score/mask mods: sliding window, ALiBi, soft-capping, prefix-LM.",
            "Dong et al. 2024, arXiv 2412.05496 (FlexAttention); soft-capping: Gemma 2, arXiv 2408.00118",
            {
                "window": P("int", 0, "sliding-window size in tokens (0 = full)", 0, 1 << 20),
                "softcap": P("float", 0.0, "tanh soft-cap on attention logits (0 = off)", 0.0, 1e4),
                "alibi": P("bool", False, "add ALiBi slopes as a score mod in this layer"),
                "prefix_len": P("int", 0, "prefix-LM: the first N tokens attend bidirectionally", 0, 1 << 20),
            },
            cacheable=True, softmax=True,
        ),
        KindInfo(
            "diff_attn", "attention", "backend.nn.diff_attn:DiffAttention",
            "Differential attention: difference of two softmax maps with learnable lambda and per-head RMSNorm.",
            "Ye et al. 2024, Differential Transformer, arXiv 2410.05258",
            {
                "lambda_init": P("float", None, "fixed lambda_init (null = 0.8 - 0.6*exp(-0.3*depth))", 0.0, 1.0, nullable=True),
            },
            cacheable=True, softmax=True,
        ),
        KindInfo(
            "token_param", "attention", "backend.nn.token_param:TokenParamAttention",
            "Pattention: token queries attend to learnable key/value parameter tokens (no token mixing).",
            "Wang et al. 2024, Tokenformer, arXiv 2410.23168",
            {
                "num_param_tokens": P("int", 64, "learnable key/value parameter tokens per head", 1, 1 << 16),
                "normalization": P("choice", "gelu_l2", "score normalisation: Tokenformer's L2+GeLU or softmax", choices=("gelu_l2", "softmax")),
            },
            cacheable=True, uses_positions=False,  # position-wise: its new_cache only counts tokens
        ),
        KindInfo(
            "spectral", "attention", "backend.nn.spectral:SpectralMixer",
            "FFT token mixing with a learnable per-head frequency filter (O(n log n)); causal variant is a zero-padded FFT convolution.",
            "Lee-Thorp et al. 2021, FNet, arXiv 2105.03824; Rao et al. 2021, GFNet, arXiv 2107.00645",
            {
                "adaptive": P("bool", False, "input-adaptive modulation of the filter (small MLP on the input)"),
            },
            cacheable=True, uses_positions=False,
        ),
        KindInfo(
            "frequency", "attention", "backend.nn.frequency:FrequencyAttention",
            "Fourier-enhanced block for time series: mixes a selected set of frequency modes per head.",
            "Zhou et al. 2022, FEDformer, arXiv 2201.12740",
            {
                "modes": P("int", 32, "number of frequency modes kept", 1, 1 << 16),
                "mode_select": P("choice", "lowest", "which modes: lowest or random (seeded)", choices=("lowest", "random")),
                "seed": P("int", 0, "seed for random mode selection", 0, 2**31 - 1),
            },
            causal=False, uses_positions=False,
        ),
        KindInfo(
            "linear", "attention", "backend.nn.performer:PerformerAttention",
            "Performer FAVOR+ linear attention with positive orthogonal random features (bidirectional).",
            "Choromanski et al. 2020, arXiv 2009.14794",
            {
                "nb_features": P("int", 256, "number of random features", 1, 1 << 16),
                "redraw_interval": P("int", 0, "redraw the projection every N training steps (0 = never)", 0, 1 << 30),
                "fix_projection": P("bool", True, "keep the projection fixed (no redraw even if an interval is set)"),
            },
            causal=False,
        ),
        KindInfo(
            "causal_linear", "attention", "backend.nn.performer:CausalPerformerAttention",
            "Causal Performer FAVOR+ via prefix sums; caches its running state for decoding.",
            "Choromanski et al. 2020, arXiv 2009.14794",
            {
                "nb_features": P("int", 256, "number of random features", 1, 1 << 16),
                "redraw_interval": P("int", 0, "redraw the projection every N training steps (0 = never)", 0, 1 << 30),
                "fix_projection": P("bool", True, "keep the projection fixed (no redraw even if an interval is set)"),
            },
            cacheable=True,
        ),
    ]
}

# Cross-attention (decoder of encoder_decoder models): a softmax attention over
# the encoder output. Not a self-attention kind, so it is kept apart.
CROSS = KindInfo(
    "cross", "attention", "backend.nn.attention:CrossAttention",
    "Decoder-to-encoder softmax attention (keys/values from the encoder output, cached once).",
    "Vaswani et al. 2017, arXiv 1706.03762",
    {"backend": P("choice", "auto", "SDPA kernel", choices=_BACKENDS)},
    cacheable=True, softmax=True, uses_positions=False,
)

_MLP_COMMON: dict[str, ParamInfo] = {
    "hidden": P("int", None, "FFN width (null = model mlp_hidden or expansion_ratio * hidden_size)", 1, 1 << 20, nullable=True),
}

MLP: dict[str, KindInfo] = {
    k.name: k
    for k in [
        KindInfo("swiglu", "mlp", "backend.nn.mlp:GatedMLP", "SiLU-gated FFN (w2(silu(w1 x) * w3 x)).",
                 "Shazeer 2020, GLU Variants Improve Transformer, arXiv 2002.05202", dict(_MLP_COMMON)),
        KindInfo("geglu", "mlp", "backend.nn.mlp:GatedMLP", "GELU-gated FFN.",
                 "Shazeer 2020, arXiv 2002.05202", dict(_MLP_COMMON)),
        KindInfo("reglu", "mlp", "backend.nn.mlp:GatedMLP", "ReLU-gated FFN.",
                 "Shazeer 2020, arXiv 2002.05202", dict(_MLP_COMMON)),
        KindInfo("relu2", "mlp", "backend.nn.mlp:DenseMLP", "Squared-ReLU FFN.",
                 "So et al. 2021, Primer, arXiv 2109.08668", dict(_MLP_COMMON)),
        KindInfo("mlp", "mlp", "backend.nn.mlp:DenseMLP", "Two-layer FFN with the model's activation.",
                 "Vaswani et al. 2017, arXiv 1706.03762",
                 {**_MLP_COMMON,
                  "activation": P("choice", None, "activation (null = the model's `activation`)", choices=_ACTS, nullable=True)}),
        KindInfo(
            "moe", "mlp", "backend.nn.moe:MoE",
            "Top-k routed mixture of experts with capacity, overflow handling and a load-balancing loss.",
            "Shazeer et al. 2017, arXiv 1701.06538; Fedus et al. 2021, Switch, arXiv 2101.03961; Mixtral, arXiv 2401.04088",
            {
                **_MLP_COMMON,
                "num_experts": P("int", 8, "number of experts", 1, 1024),
                "top_k": P("int", 2, "experts per token", 1, 64),
                "expert": P("choice", "swiglu", "expert FFN kind", choices=_MLP_KINDS),
                "capacity_factor": P("float", 0.0, "expert capacity = factor * tokens * top_k / experts (0 = no limit)", 0.0, 64.0),
                "overflow": P("choice", "drop", "tokens over capacity: drop (residual passes through) or reroute to the next choice", choices=("drop", "reroute")),
                "aux_loss_weight": P("float", 0.01, "weight of the load-balancing auxiliary loss", 0.0, 100.0),
                "shared_experts": P("int", 0, "always-on shared experts (DeepSeekMoE style)", 0, 64),
            },
            causal_warning=_moe_causal_warning,
        ),
    ]
}

NORM: dict[str, KindInfo] = {
    k.name: k
    for k in [
        KindInfo("layer", "norm", "backend.nn.norms:LayerNorm", "LayerNorm.", "Ba et al. 2016, arXiv 1607.06450"),
        KindInfo("rms", "norm", "backend.nn.norms:RMSNorm", "RMSNorm.", "Zhang & Sennrich 2019, arXiv 1910.07467"),
        KindInfo("scale", "norm", "backend.nn.norms:ScaleNorm", "ScaleNorm: one learned scale over the l2-normalised vector.",
                 "Nguyen & Salazar 2019, arXiv 1910.05895"),
        KindInfo("rezero", "norm", "backend.nn.norms:ReZero", "No normalisation; each residual branch is scaled by a learned alpha initialised at 0.",
                 "Bachlechner et al. 2020, arXiv 2003.04887"),
        KindInfo("adaptive", "norm", "backend.nn.norms:AdaptiveNorm", "AdaLN-style: LayerNorm whose gain and shift are computed from the token itself.",
                 "Peebles & Xie 2022, DiT, arXiv 2212.09748"),
    ]
}

POSITIONAL: dict[str, KindInfo] = {
    k.name: k
    for k in [
        KindInfo("rope", "positional", "backend.nn.positional:RoPE", "Rotary embeddings on q/k.", "Su et al. 2021, arXiv 2104.09864"),
        KindInfo("sinusoidal", "positional", "backend.nn.positional:SinusoidalPositions", "Fixed sinusoidal table added to the input.", "Vaswani et al. 2017"),
        KindInfo("learned", "positional", "backend.nn.positional:LearnedPositions", "Learned absolute position table.", "Radford et al. 2019 (GPT-2)"),
        KindInfo("alibi", "positional", "backend.nn.positional:ALiBi", "Linear biases on attention logits.", "Press et al. 2021, arXiv 2108.12409"),
        KindInfo("none", "positional", "backend.nn.positional:NoPositions", "No positional information.", "Kazemnejad et al. 2023, arXiv 2305.19466"),
    ]
}

REGISTRIES: dict[str, dict[str, KindInfo]] = {
    "attention": ATTENTION,
    "mlp": MLP,
    "norm": NORM,
    "positional": POSITIONAL,
}

# String-notation aliases (upper-case in strings; DESIGN.md section 3).
ATTENTION_ALIASES = {"SDPA": "self_sdpa", "FLEX": "self_flex"}


def kind(category: str, name: str, path: list[Any] | None = None) -> KindInfo:
    """Look a kind up, raising a DesignError that lists the known names."""
    reg = REGISTRIES[category]
    if name not in reg:
        known = ", ".join(reg)
        raise DesignError(format_path(path or [category]), f"unknown {category} kind {short_repr(name)} (known: {known})")
    return reg[name]


def schema_json() -> dict[str, Any]:
    """The registry as plain data (for the app and `python -m backend kinds`)."""
    def info(k: KindInfo) -> dict[str, Any]:
        return {
            "description": k.description,
            "paper": k.paper,
            "causal": k.causal,
            "bidirectional": k.bidirectional,
            "cacheable": k.cacheable,
            "params": {
                n: {"type": p.type, "default": p.default, "help": p.help, "min": p.min, "max": p.max,
                    "choices": list(p.choices) if p.choices else None, "nullable": p.nullable}
                for n, p in k.params.items()
            },
        }

    out = {cat: {n: info(k) for n, k in reg.items()} for cat, reg in REGISTRIES.items()}
    out["cross"] = {"cross": info(CROSS)}
    return out
