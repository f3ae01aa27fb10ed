"""FlexAttention self-attention with score / mask mods.

Where FlexAttention can run (CUDA; CPU for inference in torch 2.13) the mods
go to ``torch.nn.attention.flex_attention`` with a block mask. Elsewhere the
*same* mod functions are evaluated on broadcast index tensors over the full
score matrix (the explicit-mask math path), so both paths compute identical
attention:

* torch 2.13 CPU runs FlexAttention eagerly (an unfused reference, with a
  "called without torch.compile()" note) but has no backward: whenever a
  gradient is needed on CPU the math path runs;
* the meta device has no FlexAttention kernel: the math path runs there
  (shapes only, nothing allocated);
* any other refusal by FlexAttention falls back to the math path as well.
  Seen on an H100 with torch 2.11: eager FlexAttention with autograd runs the
  first score_mod a process traces, then fails to trace a different one
  ("RuntimeError when making fake tensor call"); those calls take the math
  path, with the same outputs and gradients (checked there).

Eager FlexAttention materialises the score matrix anyway; for fused kernels
wrap the model in ``torch.compile``.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .common import add_qkvo, KVCache, LayerContext, alibi_slopes, apply_rope, open_empty_rows, positions, register, repeat_kv, rope_cos_sin

try:  # FlexAttention is new (torch >= 2.5); the math path below needs nothing from it.
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    create_block_mask = flex_attention = None


@register("attention", "self_flex")
class SelfFlex(nn.Module):
    """Self-attention through FlexAttention score/mask mods (Dong et al. 2024, arXiv 2412.05496).

    Mods (``ctx.params``):

    * ``window`` > 0: sliding window, each query sees the last ``window`` keys
      (symmetric in a bidirectional stack);
    * ``softcap`` > 0: ``cap * tanh(score / cap)`` on the scaled logits
      (Gemma 2, arXiv 2408.00118);
    * ``alibi`` (or ``ctx.positional == "alibi"``): ``-slope_h * |i - j|``
      (Press et al. 2021, arXiv 2108.12409), added *after* soft-capping so
      the cap bounds the content logits without flattening ALiBi's recency bias;
    * ``prefix_len`` > 0 (causal stacks): prefix-LM, every query may also see
      the first ``prefix_len`` tokens (so the prefix attends bidirectionally;
      Raffel et al. 2020, T5, arXiv 1910.10683).

    Rotary embeddings when ``ctx.positional == "rope"``. Projections are named
    as in :class:`~attention.SelfSDPA`, so state dicts are interchangeable.
    """

    use_flex = True  # set False to force the explicit-mask math path

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        self.causal = ctx.causal
        self.window = int(p.get("window", 0) or 0)
        self.softcap = float(p.get("softcap", 0.0) or 0.0)
        self.alibi = bool(p.get("alibi", False)) or ctx.positional == "alibi"
        self.prefix_len = int(p.get("prefix_len", 0) or 0) if ctx.causal else 0
        self.rope = ctx.positional == "rope"
        self.rope_theta, self.rope_scaling = ctx.rope_theta, ctx.rope_scaling
        self.scale = 1.0 / math.sqrt(ctx.head_dim)
        add_qkvo(self, ctx)  # q_proj, k_proj, v_proj, o_proj

    @property
    def bidirectional_prefix(self) -> int:
        """Leading positions that see each other both ways (prefix-LM); causality holds only after them."""
        return self.prefix_len

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> KVCache:
        # Prefix-LM keeps the prefix visible forever: a sliding cache would drop it.
        return KVCache(window=0 if self.prefix_len else (self.window or window))

    # -- mods: plain functions of (score, b, h, q_idx, kv_idx), valid both for
    # FlexAttention's scalar calls and for broadcast index tensors.

    def _mods(self, q_off: int, k_off: int, pad: torch.Tensor | None, device: torch.device):
        causal, window, prefix, cap = self.causal, self.window, self.prefix_len, self.softcap
        slopes = alibi_slopes(self.n_heads).to(device) if self.alibi else None

        def mask_mod(b, h, q_idx, kv_idx):
            qp, kp = q_idx + q_off, kv_idx + k_off
            ok = kp <= qp if causal else kp >= 0
            if window:
                ok = ok & (qp - kp < window)
                if not causal:
                    ok = ok & (kp - qp < window)
            if prefix:
                ok = ok | (kp < prefix)
            if pad is not None:
                ok = ok & pad[b, kv_idx]
            return ok

        def score_mod(score, b, h, q_idx, kv_idx):
            if cap:
                score = cap * torch.tanh(score / cap)
            if slopes is not None:
                score = score - slopes[h].to(score.dtype) * (q_idx + q_off - kv_idx - k_off).abs().to(score.dtype)
            return score

        return score_mod, mask_mod

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: KVCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, Dh)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            cos, sin = rope_cos_sin(positions(start_pos, S, x.device), self.head_dim, self.rope_theta, q.dtype, self.rope_scaling)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_start, k_pad = start_pos, padding_mask
        if cache is not None:
            k, v = cache.append(k, v, padding_mask)  # (B, Hkv, T, Dh)
            k_start, k_pad = cache.returned_start, cache.returned_pad
        if k_pad is not None:
            k_pad = k_pad.to(torch.bool)
        score_mod, mask_mod = self._mods(start_pos, k_start, k_pad, x.device)
        out = None
        if self._flex_usable(x):
            out = self._flex(q, k, v, score_mod, mask_mod, k_pad is not None)
        if out is None:
            out = self._math(q, repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep), score_mod, mask_mod)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim))

    def _flex_usable(self, x: torch.Tensor) -> bool:
        if not self.use_flex or flex_attention is None or x.device.type == "meta":
            return False
        if x.device.type == "cpu":  # eager CPU FlexAttention has no backward in torch 2.13
            needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
            return not needs_grad
        return True

    def _flex(self, q, k, v, score_mod, mask_mod, batched_mask: bool):
        B, _, S, _ = q.shape
        T = k.shape[2]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "called without torch.compile()" on CPU
                block_mask = create_block_mask(mask_mod, B if batched_mask else None, None, S, T, device=q.device)
                return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=self.scale,
                                      enable_gqa=self.n_rep > 1)
        except Exception:  # unsupported here: the math path computes the same thing
            return None

    def _math(self, q, k, v, score_mod, mask_mod):
        """Explicit (B, H, S, T) scores with the same mods; fully masked rows give zeros (as FlexAttention)."""
        B, H, S, _ = q.shape
        T = k.shape[2]
        dev = q.device
        b = torch.arange(B, device=dev)[:, None, None, None]
        h = torch.arange(H, device=dev)[None, :, None, None]
        qi = torch.arange(S, device=dev)[None, None, :, None]
        ki = torch.arange(T, device=dev)[None, None, None, :]
        scores = score_mod(torch.matmul(q, k.transpose(-1, -2)) * self.scale, b, h, qi, ki)  # (B, H, S, T)
        mask, keep = open_empty_rows(mask_mod(b, h, qi, ki).expand(B, 1, S, T))
        attn = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return torch.matmul(attn, v) * keep  # (B, H, S, Dh)
