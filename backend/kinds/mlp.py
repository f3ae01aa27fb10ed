"""Declarations of the built-in MLP kinds (the contract: ``base``).

Widths: ``F = params["hidden"]`` or the model's ``ffn_hidden``. FLOPs count
the linear layers (2 per multiply-accumulate); activations and gates are
element-wise and count zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import REGISTRIES, KindError, MlpKind, ParamInfo as P

# The model-level ``activation`` choices (for the dense ``mlp`` kind and its MoE experts).
ACTIVATIONS = ("gelu", "relu", "silu", "mish")


def width(model: Any, cfg: dict[str, Any]) -> int:
    return cfg.get("hidden") or model.ffn_hidden


@dataclass(frozen=True)
class FfnKind(MlpKind):
    """A two- or three-matrix FFN: ``gated`` kinds have w1 (gate), w3 (up), w2 (down)."""

    gated: bool = False

    @property
    def matrices(self) -> int:
        return 3 if self.gated else 2

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int) -> float:
        return 2 * b * s * model.hidden_size * width(model, cfg) * self.matrices

    def param_count(self, model: Any, cfg: dict[str, Any]) -> int:
        # the dense kind's own `bias` (null = the model's) decides its linear biases (GPT-J: MLP only)
        D, F = model.hidden_size, width(model, cfg)
        has_bias = model.bias if cfg.get("bias") is None else cfg["bias"]
        bias = ((self.matrices - 1) * F + D) if has_bias else 0
        return self.matrices * D * F + bias

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        # the dense kind's tanh GELU applies to a GELU only
        act = cfg.get("activation") or getattr(model, "activation", None)
        if cfg.get("gelu_approximate", "none") != "none" and "activation" in self.params and act != "gelu":
            raise KindError(f"approximates GELU and needs activation 'gelu', got {act!r}", "gelu_approximate")

    def activation_elems(self, model: Any, cfg: dict[str, Any]) -> float:
        # the up projection(s) and the activation output
        F = width(model, cfg)
        return (2 if self.gated else 1) * F + F

    def affine_probes(self, cfg: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
        return hidden_probe(cfg)


def hidden_probe(cfg: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
    """An explicit FFN width: weights, matmuls and saved activations are each linear in it (no rounding),
    so layers that differ only in ``hidden`` are measured at widths 1 and 2 and share the measurement."""
    h = cfg.get("hidden")
    return (("hidden", h, 1),) if isinstance(h, int) and h > 2 else ()


class _WithBias:
    """The model's sizes with ``bias`` on: the experts of a MoE with ``expert_bias``."""

    def __init__(self, model: Any):
        self._model = model

    bias = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@dataclass(frozen=True)
class MoeKind(MlpKind):
    """Top-k routed experts of another MLP kind, plus always-on shared experts (backend/nn/moe.py)."""

    def _expert(self, cfg: dict[str, Any]) -> MlpKind:
        return REGISTRIES["mlp"][cfg.get("expert") or self.params["expert"].default]  # any registered FFN kind

    def _counts(self, cfg: dict[str, Any]) -> tuple[int, int, int]:
        return int(cfg.get("num_experts", 8)), int(cfg.get("top_k", 2)), int(cfg.get("shared_experts", 0))

    def _widths(self, model: Any, cfg: dict[str, Any]) -> tuple[int, int]:
        """(routed expert width, shared expert width)."""
        routed = width(model, cfg)
        return routed, cfg.get("shared_hidden") or routed

    def _expert_model(self, model: Any, cfg: dict[str, Any]) -> Any:
        return _WithBias(model) if cfg.get("expert_bias") and not model.bias else model

    def _plain(self, cfg: dict[str, Any]) -> bool:
        # MoE._plain: Mixtral routing, no extra score tensor
        return (cfg.get("scoring", "softmax") == "softmax" and cfg.get("norm_topk_prob", True)
                and not cfg.get("score_bias") and int(cfg.get("n_group", 1)) == 1)

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        e, k, shared = self._counts(cfg)
        if k > e:
            raise KindError(f"must be <= num_experts {e}, got {k}", "top_k")
        if cfg.get("shared_gate") and not shared:
            raise KindError("gates the shared experts' output and needs shared_experts >= 1, got shared_experts 0", "shared_gate")
        if cfg.get("shared_hidden") and not shared:
            raise KindError(f"sets the shared experts' width and needs shared_experts >= 1, got {cfg['shared_hidden']}",
                            "shared_hidden")
        g, tg = int(cfg.get("n_group", 1)), int(cfg.get("topk_group", 1))
        if e % g:
            raise KindError(f"must divide num_experts {e}, got {g}", "n_group")
        if tg > g:
            raise KindError(f"must be <= n_group {g}, got {tg}", "topk_group")
        if g > 1 and k > tg * (e // g):
            raise KindError(f"must be <= the {tg * (e // g)} experts of topk_group {tg} groups of {e // g}, got {k}", "top_k")

    def sub_kinds(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        return (self._expert(cfg).name,)

    def affine_probes(self, cfg: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
        # router D*E, E experts, the router's logits over E: affine in E; routed work (top_k experts a
        # token) is not. A capacity below the balanced share drops tokens, which is not affine: measure.
        # Every expert's (and shared expert's) counts are linear in the expert width for a fixed E.
        # Group-limited routing needs num_experts divisible by n_group: no expert-count probe then.
        e, k, _ = self._counts(cfg)
        factor = cfg.get("capacity_factor", 0.0)
        experts: tuple[tuple[str, int, int], ...] = ()
        if not (e <= k + 8 or cfg.get("capacity", 0) or 0 < factor < 1 or int(cfg.get("n_group", 1)) > 1):
            experts = (("num_experts", e, k),)
        return experts + hidden_probe(cfg)

    def causal_warning(self, cfg: dict[str, Any]) -> str | None:
        # Capacity slots are served in token order over the batch (backend/nn/moe.py), so a later
        # token can take an earlier token's expert: not causal, and cached decoding (one token
        # routed alone) differs from a full forward.
        limit = (f"capacity_factor {cfg['capacity_factor']:g}" if cfg.get("capacity_factor", 0.0) > 0
                 else f"capacity {cfg['capacity']}" if cfg.get("capacity", 0) else None)
        if limit is None:
            return None
        return (f"moe {limit} in a causal stack: capacity routing lets later tokens change earlier tokens' experts, "
                "so training is not causal and cached decoding will not match a full forward (set it to 0 for a causal decoder)")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int) -> float:
        # the router (D -> E) and the shared gate (D -> 1) on every token, then top_k routed experts and
        # every shared expert per token; scores, biases, group masks and scales are element-wise (zero).
        # Routing is data-dependent: this is the data-free convention (every token runs top_k experts).
        e, k, shared = self._counts(cfg)
        fr, fs = self._widths(model, cfg)
        expert = self._expert(cfg)
        gate = 2 * b * s * model.hidden_size if cfg.get("shared_gate") else 0
        return (2 * b * s * model.hidden_size * e + gate + k * expert.flops(model, {"hidden": fr}, b, s)
                + shared * expert.flops(model, {"hidden": fs}, b, s))

    def param_count(self, model: Any, cfg: dict[str, Any]) -> int:
        # router D*E (+ E bias); E routed and `shared` shared experts (biased with expert_bias); the
        # shared gate's D. score_bias is a buffer, not a parameter.
        e, _, shared = self._counts(cfg)
        fr, fs = self._widths(model, cfg)
        expert, em = self._expert(cfg), self._expert_model(model, cfg)
        D = model.hidden_size
        return (D * e + (e if cfg.get("router_bias") else 0) + e * expert.param_count(em, {"hidden": fr})
                + shared * expert.param_count(em, {"hidden": fs}) + (D if cfg.get("shared_gate") else 0))

    def activation_elems(self, model: Any, cfg: dict[str, Any]) -> float:
        # the router logits (E), the score tensor of non-Mixtral routing (E), the experts' own; the shared
        # gate's sigmoid (1) and the shared sum it multiplies (D)
        e, k, shared = self._counts(cfg)
        fr, fs = self._widths(model, cfg)
        expert = self._expert(cfg)
        extra = (0 if self._plain(cfg) else e) + (1 + model.hidden_size if cfg.get("shared_gate") else 0)
        return (e + extra + k * expert.activation_elems(model, {"hidden": fr})
                + shared * expert.activation_elems(model, {"hidden": fs}))


_COMMON = {
    "hidden": P("int", None, "FFN width (null = model mlp_hidden or expansion_ratio * hidden_size)", 1, 1 << 20, nullable=True),
}
_EXPERTS = ("swiglu", "geglu", "reglu", "relu2", "mlp", "swiglu_clamped")
_CLAMP = {
    "limit": P("float", 7.0, "clamp of the gate (above) and the up projection (both sides)", 1e-3, 1e4),
    "alpha": P("float", 1.702, "sigmoid slope of the gate: g * sigmoid(alpha * g)", 1e-3, 100.0),
}

KINDS: list[MlpKind] = [
    FfnKind("swiglu", "mlp", "backend.nn.mlp:GatedMLP", "SiLU-gated FFN (w2(silu(w1 x) * w3 x)).",
            "Shazeer 2020, GLU Variants Improve Transformer, arXiv 2002.05202", dict(_COMMON),
            label="SwiGLU", abbrev="SwiGLU", color="#9ECAE9", roles=("default", "gated_silu"), gated=True),
    FfnKind("geglu", "mlp", "backend.nn.mlp:GatedMLP", "GELU-gated FFN.",
            "Shazeer 2020, arXiv 2002.05202; tanh GELU: Hendrycks & Gimpel 2016, arXiv 1606.08415 (Gemma's GeGLU)",
            {**_COMMON, "gelu_approximate": P("choice", "none", "GELU of the gate: exact (none) or its tanh "
                                              "approximation (Gemma's gelu_pytorch_tanh)", choices=("none", "tanh"))}, label="GeGLU", abbrev="GeGLU", color="#FFBF79", roles=("gated_gelu",), gated=True),
    FfnKind("reglu", "mlp", "backend.nn.mlp:GatedMLP", "ReLU-gated FFN.",
            "Shazeer 2020, arXiv 2002.05202", dict(_COMMON), label="ReGLU", abbrev="ReGLU", color="#D6A5C9", gated=True),
    FfnKind("relu2", "mlp", "backend.nn.mlp:DenseMLP", "Squared-ReLU FFN.",
            "So et al. 2021, Primer, arXiv 2109.08668", dict(_COMMON), label="squared ReLU", abbrev="ReLU²", color="#BAB0AC",
            roles=("squared_relu",)),
    FfnKind("mlp", "mlp", "backend.nn.mlp:DenseMLP", "Two-layer FFN with the model's activation.",
            "Vaswani et al. 2017, arXiv 1706.03762",
            {**_COMMON,
             "activation": P("choice", None, "activation (null = the model's `activation`)", choices=ACTIVATIONS, nullable=True),
             # issue 12 (GPT-J, BLOOM): the tanh GELU (gelu_new / BLOOM's GeLU) and biases on the MLP alone
             "gelu_approximate": P("choice", "none", "GELU: exact (none) or its tanh approximation (GPT-J gelu_new, "
                                   "BLOOM); needs activation gelu", choices=("none", "tanh")),
             "bias": P("bool", None, "biases of fc1 / fc2 (null = the model's `bias`; GPT-J: true with attention "
                       "projections unbiased)", nullable=True)},
            label="dense MLP", abbrev="MLP", color="#8CD17D", roles=("dense",)),
    FfnKind("swiglu_clamped", "mlp", "backend.nn.mlp:ClampedSwiGLU",
            "gpt-oss's clamped SwiGLU: w2((clamp(w3 x) + 1) * g * sigmoid(1.702 g)), g = min(w1 x, 7).",
            "OpenAI 2025, gpt-oss-120b & gpt-oss-20b Model Card, arXiv 2508.10925", {**_COMMON, **_CLAMP},
            label="clamped SwiGLU", abbrev="cSwiGLU", color="#6BAED6", roles=("clamped_swiglu",), gated=True),
    MoeKind(
        "moe", "mlp", "backend.nn.moe:MoE",
        "Top-k routed mixture of experts with capacity, overflow handling and a load-balancing loss.",
        "Shazeer et al. 2017, arXiv 1701.06538; Fedus et al. 2021, Switch, arXiv 2101.03961; Mixtral, arXiv 2401.04088",
        {
            **_COMMON,
            "num_experts": P("int", 8, "number of experts", 1, 1024),
            "top_k": P("int", 2, "experts per token", 1, 64),
            "expert": P("choice", "swiglu", "expert FFN kind", choices=_EXPERTS),
            "capacity_factor": P("float", 0.0, "expert capacity = factor * tokens * top_k / experts (0 = no limit)", 0.0, 64.0),
            "capacity": P("int", 0, "expert capacity in tokens per batch; overrides capacity_factor (0 = off)", 0, 1 << 30),
            "overflow": P("choice", "drop", "tokens over capacity: drop (residual passes through) or reroute to the next choice", choices=("drop", "reroute")),
            "aux_loss_weight": P("float", 0.01, "weight of the load-balancing auxiliary loss", 0.0, 100.0),
            "shared_experts": P("int", 0, "always-on shared experts (DeepSeekMoE style)", 0, 64),
            # Hugging Face MoE families (Qwen2-MoE, DeepSeek-V2/V3, gpt-oss): backend/nn/moe.py
            "shared_hidden": P("int", None, "width of each shared expert (null = hidden)", 1, 1 << 20, nullable=True),
            "shared_gate": P("bool", False, "sigmoid(Linear(D, 1)) gate on the shared experts' output (Qwen2-MoE)"),
            "router_bias": P("bool", False, "bias on the router (gpt-oss)"),
            "expert_bias": P("bool", False, "biases in every expert linear (gpt-oss)"),
            "norm_topk_prob": P("bool", True, "renormalise the top-k weights to sum to 1 (false: raw top-k "
                                "probabilities of the softmax over all experts, Qwen2-MoE / DeepSeek-V2)"),
            "scoring": P("choice", "softmax", "expert scores: softmax over the experts, or sigmoid (DeepSeek-V3)",
                         choices=("softmax", "sigmoid")),
            "score_bias": P("bool", False, "per-expert bias added to the scores for selection only (DeepSeek-V3, a buffer)"),
            "routed_scale": P("float", 1.0, "scale of the routed output (DeepSeek routed_scaling_factor)", 0.0, 1e4),
            "n_group": P("int", 1, "expert groups for group-limited routing (DeepSeek)", 1, 1024),
            "topk_group": P("int", 1, "groups each token may route to", 1, 1024),
            "swiglu_limit": P("float", 7.0, "clamp of a swiglu_clamped expert (gpt-oss swiglu_limit)", 1e-3, 1e4),
            "swiglu_alpha": P("float", 1.702, "sigmoid slope of a swiglu_clamped expert (gpt-oss swiglu_alpha)", 1e-3, 100.0),
        },
        label="mixture of experts", abbrev="MoE", color="#FF9D98", roles=("experts",),
    ),
]
