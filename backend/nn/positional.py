"""Positional encodings, registered under category ``"positional"``.

Absolute encodings (``learned``, ``sinusoidal``) are *added to the input*
embeddings by the model: ``forward(positions: (S,) long) -> (S, D)``.
Relative encodings (``rope``, ``alibi``) and ``none`` are markers without
parameters: the attention kinds apply them themselves from
``ctx.positional`` (``common.rope_cos_sin`` / ``common.alibi_bias``).
``additive`` tells the model which is which.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerContext, register


@register("positional", "learned")
class LearnedPositions(nn.Module):
    """Learned absolute position table (max_seq_len, D) (Radford et al. 2019, GPT-2)."""

    additive = True

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.max_seq_len = ctx.max_seq_len
        # torch.empty, not nn.Embedding's normal_ init: normal_ on the meta device
        # imports torch._dynamo (~1 s, DESIGN.md section 5); the model's
        # init_weights() fills it for real builds.
        self.weight = nn.Parameter(torch.empty(ctx.max_seq_len, ctx.hidden_size))
        if not self.weight.is_meta:
            with torch.no_grad():
                self.weight.normal_(0.0, ctx.init_std)

    def init_weights(self, std: float) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, std)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        # the model checks start_pos + S <= max_seq_len before calling
        return self.weight[positions]  # (S, D)


@register("positional", "sinusoidal")
class SinusoidalPositions(nn.Module):
    """Fixed sin/cos table (Vaswani et al. 2017, arXiv 1706.03762), computed on the fly (no buffer)."""

    additive = True

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.dim = ctx.hidden_size

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        half = (self.dim + 1) // 2
        inv = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float64) * (-math.log(10000.0) * 2 / self.dim))
        ang = positions.to(torch.float64)[:, None] * inv[None, :]  # (S, half)
        table = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(1)  # (S, 2*half): sin, cos interleaved
        return table[:, : self.dim]


class _Marker(nn.Module):
    """Applied inside attention (see ``ctx.positional``); nothing is added to the input."""

    additive = False

    def __init__(self, ctx: LayerContext):
        super().__init__()


@register("positional", "rope")
class RoPE(_Marker):
    """Rotary position embedding on q/k (Su et al. 2021, arXiv 2104.09864); applied by the attention kinds."""


@register("positional", "alibi")
class ALiBi(_Marker):
    """Linear attention biases (Press et al. 2021, arXiv 2108.12409); applied by the attention kinds."""


@register("positional", "none")
class NoPositions(_Marker):
    """No positional information (NoPE, Kazemnejad et al. 2023, arXiv 2305.19466)."""
