"""Differential attention (Ye et al. 2024, Differential Transformer, arXiv 2410.05258)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import KVCache, LayerContext, alibi_bias, apply_rope, attention_mask, open_empty_rows
from .common import positions, register, repeat_kv, rope_cos_sin


def lambda_init_fn(depth: int) -> float:
    """The paper's depth schedule: lambda_init = 0.8 - 0.6 * exp(-0.3 * depth), depth 0-based."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class SubLayerNorm(nn.Module):
    """RMSNorm over each head's 2d output channels, one gain shared by all heads (``subln``)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


@register("attention", "diff_attn")
class DiffAttention(nn.Module):
    """Differential attention (Ye et al. 2024, arXiv 2410.05258), official ``multihead_diffattn`` layout.

    Each of the ``H = ctx.n_heads`` heads owns two softmax maps over half-size
    query/key heads of ``d = ctx.head_dim // 2`` dims and subtracts them::

        A = softmax(Q1 K1^T / sqrt(d)) - lambda * softmax(Q2 K2^T / sqrt(d))
        lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init
        out_h = (1 - lambda_init) * RMSNorm_{2d}(A V_h)

    With ``head_dim = hidden // n_heads`` the shapes are exactly the official
    code's (``q_proj`` D -> D viewed as 2H heads of d; ``k_proj`` D -> 2*Hkv*d;
    ``v_proj`` D -> Hkv heads of 2d; ``o_proj`` D -> D). ``lambda_init`` comes
    from ``ctx.layer_index`` unless ``params["lambda_init"]`` fixes it. Rope
    uses the half-split convention (the official code rotates interleaved
    pairs; the two differ by a fixed permutation of q/k channels, which the
    projections absorb). ALiBi (if the model uses it) biases both maps alike.

    GQA (``n_kv_heads < n_heads``): map i of head h uses map i of kv group
    ``h // (n_heads / n_kv_heads)``. The official code's ``repeat_kv`` on the
    interleaved 2*Hkv key heads instead gives both maps of a head the same key
    head; the two agree whenever ``n_kv_heads == n_heads``.
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        if ctx.n_heads % ctx.n_kv_heads:
            raise ValueError(f"n_heads ({ctx.n_heads}) must be a multiple of n_kv_heads ({ctx.n_kv_heads})")
        if ctx.head_dim % 2 or (ctx.positional == "rope" and ctx.head_dim % 4):
            raise ValueError(f"diff_attn needs head_dim divisible by 2 (by 4 with rope), got {ctx.head_dim}")
        self.n_heads, self.n_kv_heads = ctx.n_heads, ctx.n_kv_heads
        self.n_rep = ctx.n_heads // ctx.n_kv_heads
        self.d = ctx.head_dim // 2  # per-map query/key head size (head_dim_diff in the official code)
        self.causal = ctx.causal
        self.rope = ctx.positional == "rope"
        self.alibi = ctx.positional == "alibi"
        self.rope_theta, self.rope_scaling = ctx.rope_theta, ctx.rope_scaling
        li = ctx.params.get("lambda_init")
        self.lambda_init = float(li) if li is not None else lambda_init_fn(ctx.layer_index)
        qkv_bias = ctx.bias or ctx.qkv_bias
        D, d = ctx.hidden_size, self.d
        self.q_proj = nn.Linear(D, 2 * ctx.n_heads * d, bias=qkv_bias)
        self.k_proj = nn.Linear(D, 2 * ctx.n_kv_heads * d, bias=qkv_bias)
        self.v_proj = nn.Linear(D, 2 * ctx.n_kv_heads * d, bias=qkv_bias)
        self.o_proj = nn.Linear(2 * ctx.n_heads * d, D, bias=ctx.bias)
        self.lambda_q1 = nn.Parameter(torch.empty(d))
        self.lambda_k1 = nn.Parameter(torch.empty(d))
        self.lambda_q2 = nn.Parameter(torch.empty(d))
        self.lambda_k2 = nn.Parameter(torch.empty(d))
        self.subln = SubLayerNorm(2 * d, ctx.norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.lambda_q1.is_meta:  # nothing to fill (and normal_ on meta would import torch._dynamo)
            return
        with torch.no_grad():
            for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
                p.normal_(mean=0.0, std=0.1)  # as in the official code

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (Linear layers are initialised by the model)."""
        self.reset_parameters()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> KVCache:
        return KVCache(window=window)

    def lambda_full(self) -> torch.Tensor:
        l1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1))
        l2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2))
        return l1 - l2 + self.lambda_init

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: KVCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        H, Hkv, d = self.n_heads, self.n_kv_heads, self.d
        q = self.q_proj(x).view(B, S, 2 * H, d).transpose(1, 2)  # (B, 2H, S, d)
        k = self.k_proj(x).view(B, S, 2 * Hkv, d).transpose(1, 2)  # (B, 2Hkv, S, d)
        v = self.v_proj(x).view(B, S, Hkv, 2 * d).transpose(1, 2)  # (B, Hkv, S, 2d)
        q_pos = positions(start_pos, S, x.device)
        if self.rope:
            cos, sin = rope_cos_sin(q_pos, d, self.rope_theta, q.dtype, self.rope_scaling)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_start, k_pad = start_pos, padding_mask
        if cache is not None:
            k, v = cache.append(k, v, padding_mask)
            k_start, k_pad = cache.returned_start, cache.returned_pad
        T = k.shape[2]
        # k heads (2g, 2g+1) are the two maps of kv group g; repeat the pair per group so
        # q head 2h+i (map i of head h) meets map i of group h // n_rep.
        k = k.view(B, Hkv, 1, 2, T, d).expand(B, Hkv, self.n_rep, 2, T, d).reshape(B, 2 * H, T, d)
        v = repeat_kv(v, self.n_rep)  # (B, H, T, 2d)

        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)  # (B, 2H, S, T)
        k_pos = positions(k_start, T, x.device)
        mask = attention_mask(q_pos, k_pos, causal=self.causal, padding_mask=k_pad)
        keep = None
        if mask is not None and k_pad is not None:
            mask, keep = open_empty_rows(mask)  # (B, 1, S, T), (B, 1, S, 1)
        if self.alibi:
            scores = scores + alibi_bias(H, q_pos, k_pos, scores.dtype).repeat_interleave(2, dim=0)[None]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = scores.softmax(dim=-1).view(B, H, 2, S, T)
        attn = attn[:, :, 0] - self.lambda_full() * attn[:, :, 1]  # (B, H, S, T)
        out = torch.matmul(attn, v)  # (B, H, S, 2d)
        out = self.subln(out) * (1.0 - self.lambda_init)
        if keep is not None:
            out = out * keep
        return self.o_proj(out.transpose(1, 2).reshape(B, S, 2 * H * d))
