"""Normalisation layers, registered under category ``"norm"``.

Every norm takes the layer's :class:`LayerContext` (``hidden_size``,
``norm_eps``, ``bias``) and an optional ``dim`` override (for per-head norms),
and maps ``(..., D) -> (..., D)``.

Half-precision inputs are normalised in float32 and cast back (the Llama
recipe); float32/float64 inputs stay in their own dtype, so float64 reference
tests are exact.

ReZero is not a normalisation: it is the identity plus a learned scalar
``alpha`` (initialised at 0) that scales a residual *branch*. Norm classes
carry ``scales_branch``; the model's block (``model.Block``) multiplies each
sublayer's output by ``norm.alpha`` when it is True, whatever the placement:
``x = x + alpha * f(x)`` (see ``model.py``).

``init_weights(std)`` restores each norm's starting point; the model calls it
after its generic Linear/Embedding initialisation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, register


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@register("norm", "layer")
class LayerNorm(nn.Module):
    """LayerNorm (Ba et al. 2016, arXiv 1607.06450); bias only when ``ctx.bias``."""

    scales_branch = False

    def __init__(self, ctx: LayerContext, dim: int | None = None):
        super().__init__()
        d = dim or ctx.hidden_size
        self.eps = ctx.norm_eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if ctx.bias else None

    def init_weights(self, std: float) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(_upcast(x), self.weight.shape, _upcast(self.weight),
                         None if self.bias is None else _upcast(self.bias), self.eps)
        return y.to(x.dtype)


@register("norm", "rms")
class RMSNorm(nn.Module):
    """RMSNorm: x / rms(x) * g (Zhang & Sennrich 2019, arXiv 1910.07467)."""

    scales_branch = False

    def __init__(self, ctx: LayerContext, dim: int | None = None):
        super().__init__()
        d = dim or ctx.hidden_size
        self.eps = ctx.norm_eps
        self.weight = nn.Parameter(torch.ones(d))

    def init_weights(self, std: float) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _upcast(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * _upcast(self.weight)).to(x.dtype)


@register("norm", "scale")
class ScaleNorm(nn.Module):
    """ScaleNorm: g * x / ||x||, one learned scalar g initialised at sqrt(D).

    Nguyen & Salazar 2019, Transformers without Tears, arXiv 1910.05895.
    """

    scales_branch = False

    def __init__(self, ctx: LayerContext, dim: int | None = None):
        super().__init__()
        self.dim = dim or ctx.hidden_size
        self.eps = ctx.norm_eps
        self.scale = nn.Parameter(torch.full((), math.sqrt(self.dim)))

    def init_weights(self, std: float) -> None:
        with torch.no_grad():
            self.scale.fill_(math.sqrt(self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _upcast(x)
        n = h.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return (_upcast(self.scale) * h / n).to(x.dtype)


@register("norm", "rezero")
class ReZero(nn.Module):
    """ReZero: no normalisation; the block scales its sublayer output by ``alpha`` (init 0).

    Bachlechner et al. 2020, ReZero is All You Need, arXiv 2003.04887:
    ``x = x + alpha * f(x)``, so every layer starts as the identity.
    ``forward`` is the identity; the block reads :attr:`alpha` (``scales_branch``).
    """

    scales_branch = True

    def __init__(self, ctx: LayerContext, dim: int | None = None):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))

    def init_weights(self, std: float) -> None:
        nn.init.zeros_(self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def scale(self, y: torch.Tensor) -> torch.Tensor:
        return self.alpha.to(y.dtype) * y


@register("norm", "adaptive")
class AdaptiveNorm(nn.Module):
    """AdaLN-style norm whose gain and shift are computed from the token itself.

    ``h = LN(x)`` (no affine), ``[gamma, beta] = W h + b`` and
    ``y = h * (1 + gamma) + beta``. ``W`` and ``b`` start at zero, so the layer
    starts as a plain LayerNorm (the "adaLN-Zero" trick of Peebles & Xie 2022,
    DiT, arXiv 2212.09748; there the condition is a class/time embedding, here
    it is the normalised token, which keeps the modulation scale-free).
    """

    scales_branch = False

    def __init__(self, ctx: LayerContext, dim: int | None = None):
        super().__init__()
        self.dim = dim or ctx.hidden_size
        self.eps = ctx.norm_eps
        self.mod = nn.Linear(self.dim, 2 * self.dim)  # -> (gamma, beta)
        self.init_weights(ctx.init_std)

    def init_weights(self, std: float) -> None:
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.layer_norm(_upcast(x), (self.dim,), None, None, self.eps)
        gamma, beta = F.linear(h, _upcast(self.mod.weight), _upcast(self.mod.bias)).chunk(2, dim=-1)  # (..., D) each
        return (h * (1 + gamma) + beta).to(x.dtype)
