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

from .common import LayerContext, StateCache, register


def _nothing(x: torch.Tensor) -> torch.Tensor:
    """Zeros that stay in the autograd graph (a backward through the branch gives zero gradients)."""
    return x * 0.0


@register("attention", "none")
class NoMixer(nn.Module):
    """No token mixing (Nemotron-H's MLP-only layers, arXiv 2504.03624): the block skips this branch."""

    identity = True
    mixes_tokens = False

    def __init__(self, ctx: LayerContext):
        super().__init__()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        return StateCache()  # holds no tensors: only counts the tokens seen

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if cache is not None:
            cache.length += x.shape[1]
        return _nothing(x)


@register("mlp", "none")
class NoMlp(nn.Module):
    """No MLP (Nemotron-H's mixer-only layers, arXiv 2504.03624): the block skips this branch."""

    identity = True

    def __init__(self, ctx: LayerContext):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nothing(x)
