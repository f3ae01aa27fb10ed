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
    """Learned absolute position table (max_seq_len, D) (Radford et al. 2019, GPT-2).

    With the model's ``position_offset`` k (``ctx.params["offset"]``) the table has max_seq_len + k rows
    and position p reads row p + k: RoBERTa (Liu et al. 2019, arXiv 1907.11692) and BART (Lewis et al.
    2019, arXiv 1910.13461) start at padding_idx + 1 = 2. (RoBERTa numbers only non-padding tokens; with
    right padding, every real token gets the same row here.)"""

    additive = True

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.max_seq_len = ctx.max_seq_len
        self.offset = int(ctx.params.get("offset", 0))
        # torch.empty, not nn.Embedding's normal_ init: normal_ on the meta device
        # imports torch._dynamo (~1 s, DESIGN.md section 5); the model's
        # init_weights() fills it for real builds.
        self.weight = nn.Parameter(torch.empty(ctx.max_seq_len + self.offset, ctx.hidden_size))
        if not self.weight.is_meta:
            with torch.no_grad():
                self.weight.normal_(0.0, ctx.init_std)

    def init_weights(self, std: float) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, std)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        # the model checks start_pos + S <= max_seq_len before calling
        return self.weight[positions + self.offset if self.offset else positions]  # (S, D)


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


@register("positional", "t5_bias")
class RelativePositionBias(nn.Module):
    """Bucketed relative position bias on the attention logits (Raffel et al. 2020, T5, arXiv 1910.10683, section 2.1).

    One learned scalar per (bucket, head) -- a ``weight`` table (num_buckets, H) -- is added to the
    logit of query i and key j; the bucket depends on the relative position ``j - i`` only:

    * distances below ``num_buckets // 2`` (of the buckets one direction gets) have one bucket each;
    * larger distances share logarithmically wider buckets up to ``max_distance``, beyond which all
      distances fall in the last bucket;
    * bidirectional stacks (encoder) give half of the buckets to keys after the query; causal stacks
      (decoder) only ever see ``j <= i`` and use all buckets for ``i - j``.

    The model holds one such module (or one per stack with ``positional_per_stack``); each stack hands
    ``bias(q_pos, k_pos)`` of its own direction to every attention module that takes a score bias
    (``takes_score_bias``), so all layers of a stack share the table (T5 keeps it in the first
    layer and reuses it). Cross-attention gets none. Nothing is added to the input (``additive`` False).
    """

    additive = False
    score_bias = True  # the stack passes ``partial(self, causal=...)`` to the attention modules

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.num_buckets = int(ctx.params.get("num_buckets", 32))
        self.max_distance = int(ctx.params.get("max_distance", 128))
        self.weight = nn.Parameter(torch.empty(self.num_buckets, ctx.n_heads))  # (num_buckets, H)
        if not self.weight.is_meta:
            with torch.no_grad():
                self.weight.normal_(0.0, ctx.init_std)

    def init_weights(self, std: float) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, std)

    def buckets(self, rel: torch.Tensor, *, causal: bool) -> torch.Tensor:
        """Bucket index (long, same shape) of relative positions ``rel = key - query``."""
        n = self.num_buckets
        out = torch.zeros_like(rel)
        if causal:
            dist = (-rel).clamp_min(0)  # keys at or before the query: distance i - j
        else:
            n //= 2
            out = out + (rel > 0).to(rel.dtype) * n  # keys after the query: the upper half
            dist = rel.abs()
        exact = n // 2
        # log-spaced buckets between `exact` and `max_distance`, in float32 like the reference
        # (Mesh TensorFlow / transformers), so boundary distances land in the same bucket
        far = dist.clamp_min(1).to(torch.float32) / exact
        far = exact + (torch.log(far) / math.log(self.max_distance / exact) * (n - exact)).to(rel.dtype)
        far = far.clamp_max(n - 1)
        return out + torch.where(dist < exact, dist, far)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor, *, causal: bool) -> torch.Tensor:
        """(Sq,), (Sk,) absolute positions -> (1, H, Sq, Sk) bias."""
        rel = k_pos[None, :] - q_pos[:, None]  # (Sq, Sk)
        return self.weight[self.buckets(rel, causal=causal)].permute(2, 0, 1)[None]
