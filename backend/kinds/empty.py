"""Declarations of the empty sublayers: ``attention: none`` and ``mlp: none`` (module ``backend.nn.none``).

A block with an empty sublayer skips that residual branch and its norms
(``identity``), so a hybrid pattern maps one block to one layer (Nemotron-H,
arXiv 2504.03624; Megatron-LM's ``hybrid_override_pattern``): no parameters,
no FLOPs, no cache, nothing saved for backward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import AttentionKind, CacheLayout, KindInfo, MlpKind


@dataclass(frozen=True)
class NoMixerKind(AttentionKind):
    identity: bool = True
    cacheable: bool = True  # decodes incrementally: there is nothing to remember
    uses_positions: bool = False

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        return 0.0, 0.0

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        return 0

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        return CacheLayout()

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        return 0.0, 0.0


@dataclass(frozen=True)
class NoMlpKind(MlpKind):
    identity: bool = True

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int) -> float:
        return 0.0

    def param_count(self, model: Any, cfg: dict[str, Any]) -> int:
        return 0

    def activation_elems(self, model: Any, cfg: dict[str, Any]) -> float:
        return 0.0


KINDS: list[KindInfo] = [
    NoMixerKind("none", "attention", "backend.nn.none:NoMixer",
                "No token mixer: the block skips its attention branch (an MLP-only layer).",
                "Nemotron-H, NVIDIA 2025, arXiv 2504.03624 (one sublayer per layer)",
                label="none (MLP only)", abbrev="NONE", color="#BAB0AC"),
    NoMlpKind("none", "mlp", "backend.nn.none:NoMlp",
              "No MLP: the block skips its MLP branch (a mixer-only layer).",
              "Nemotron-H, NVIDIA 2025, arXiv 2504.03624 (one sublayer per layer)",
              label="none (mixer only)", abbrev="NONE", color="#BAB0AC"),
]

# Megatron-LM's ``hybrid_override_pattern`` (one character per layer, as in Nemotron-H's configs):
# character -> (attention kind, MLP kind or None = the stack's MLP). Read by ``backend.plan``.
MEGATRON_SYMBOLS: dict[str, tuple[str, str | None]] = {
    "M": ("mamba2", "none"),  # a Mamba layer
    "*": ("self_sdpa", "none"),  # a self-attention layer
    "-": ("none", None),  # an MLP layer
    "E": ("none", "moe"),  # a MoE layer
}
