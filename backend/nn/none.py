"""Empty sublayers: a block without a token mixer, or without an MLP.

Hybrid stacks such as Nemotron-H (arXiv 2504.03624) and Megatron-LM's
``hybrid_override_pattern`` make every layer a single sublayer: a Mamba layer
has no MLP, an MLP layer no mixer. ``attention: none`` / ``mlp: none`` say so:
the module has no parameters, and the block (``model.Block``), seeing
``identity = True``, skips that residual branch and its norms entirely, so
``x`` passes through unchanged. Called directly, the branch contributes
nothing: ``forward`` returns zeros.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import LayerContext, register


@register("attention", "none")
class NoMixer(nn.Module):
    """No token mixing: the block's attention branch is skipped."""

    identity = True
    mixes_tokens = False

    def __init__(self, ctx: LayerContext):
        super().__init__()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> None:
        return None  # nothing to remember

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache=None, padding_mask=None) -> torch.Tensor:
        return torch.zeros_like(x)


@register("mlp", "none")
class NoMlp(nn.Module):
    """No MLP: the block's MLP branch is skipped."""

    identity = True

    def __init__(self, ctx: LayerContext):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)
