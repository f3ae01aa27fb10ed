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
        D, F = model.hidden_size, width(model, cfg)
        bias = ((self.matrices - 1) * F + D) if model.bias else 0
        return self.matrices * D * F + bias

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


@dataclass(frozen=True)
class MoeKind(MlpKind):
    """Top-k routed experts of another MLP kind, plus always-on shared experts."""

    def _expert(self, cfg: dict[str, Any]) -> MlpKind:
        return REGISTRIES["mlp"][cfg.get("expert") or self.params["expert"].default]  # any registered FFN kind

    def _counts(self, cfg: dict[str, Any]) -> tuple[int, int, int]:
        return int(cfg.get("num_experts", 8)), int(cfg.get("top_k", 2)), int(cfg.get("shared_experts", 0))

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        e, k, _ = self._counts(cfg)
        if k > e:
            raise KindError(f"must be <= num_experts {e}, got {k}", "top_k")

    def sub_kinds(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        return (self._expert(cfg).name,)

    def affine_probes(self, cfg: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
        # router D*E, E experts, the router's logits over E: affine in E; routed work (top_k experts a
        # token) is not. A capacity below the balanced share drops tokens, which is not affine: measure.
        # Every expert's (and shared expert's) counts are linear in the expert width for a fixed E.
        e, k, _ = self._counts(cfg)
        factor = cfg.get("capacity_factor", 0.0)
        experts: tuple[tuple[str, int, int], ...] = ()
        if not (e <= k + 8 or cfg.get("capacity", 0) or 0 < factor < 1):
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
        # the router on every token, then top_k routed experts and every shared expert per token
        e, k, shared = self._counts(cfg)
        per = self._expert(cfg).flops(model, {"hidden": width(model, cfg)}, b, s)
        return 2 * b * s * model.hidden_size * e + (k + shared) * per

    def param_count(self, model: Any, cfg: dict[str, Any]) -> int:
        e, _, shared = self._counts(cfg)
        per = self._expert(cfg).param_count(model, {"hidden": width(model, cfg)})
        return model.hidden_size * e + per * (e + shared)

    def activation_elems(self, model: Any, cfg: dict[str, Any]) -> float:
        e, k, shared = self._counts(cfg)
        return e + (k + shared) * self._expert(cfg).activation_elems(model, {"hidden": width(model, cfg)})


_COMMON = {
    "hidden": P("int", None, "FFN width (null = model mlp_hidden or expansion_ratio * hidden_size)", 1, 1 << 20, nullable=True),
}
_EXPERTS = ("swiglu", "geglu", "reglu", "relu2", "mlp")

KINDS: list[MlpKind] = [
    FfnKind("swiglu", "mlp", "backend.nn.mlp:GatedMLP", "SiLU-gated FFN (w2(silu(w1 x) * w3 x)).",
            "Shazeer 2020, GLU Variants Improve Transformer, arXiv 2002.05202", dict(_COMMON),
            label="SwiGLU", abbrev="SwiGLU", color="#9ECAE9", roles=("default", "gated_silu"), gated=True),
    FfnKind("geglu", "mlp", "backend.nn.mlp:GatedMLP", "GELU-gated FFN.",
            "Shazeer 2020, arXiv 2002.05202", dict(_COMMON), label="GeGLU", abbrev="GeGLU", color="#FFBF79", roles=("gated_gelu",), gated=True),
    FfnKind("reglu", "mlp", "backend.nn.mlp:GatedMLP", "ReLU-gated FFN.",
            "Shazeer 2020, arXiv 2002.05202", dict(_COMMON), label="ReGLU", abbrev="ReGLU", color="#D6A5C9", gated=True),
    FfnKind("relu2", "mlp", "backend.nn.mlp:DenseMLP", "Squared-ReLU FFN.",
            "So et al. 2021, Primer, arXiv 2109.08668", dict(_COMMON), label="squared ReLU", abbrev="ReLU²", color="#BAB0AC"),
    FfnKind("mlp", "mlp", "backend.nn.mlp:DenseMLP", "Two-layer FFN with the model's activation.",
            "Vaswani et al. 2017, arXiv 1706.03762",
            {**_COMMON,
             "activation": P("choice", None, "activation (null = the model's `activation`)", choices=ACTIVATIONS, nullable=True)},
            label="dense MLP", abbrev="MLP", color="#8CD17D", roles=("dense",)),
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
        },
        label="mixture of experts", abbrev="MoE", color="#FF9D98", roles=("experts",),
    ),
]
