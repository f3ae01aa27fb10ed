"""Multi-head Latent Attention (MLA), registered as attention kind ``"mla"``.

DeepSeek-V2 (DeepSeek-AI 2024, arXiv 2405.04434, section 2.1) and DeepSeek-V3
(arXiv 2412.19437, section 2.1.1). Notation: D hidden, H heads, ``qr``
q_lora_rank, ``c`` kv_lora_rank, ``n`` qk_nope_head_dim, ``r``
qk_rope_head_dim, ``dv`` v_head_dim; x (B, S, D).

* queries: ``q_proj`` D -> H(n+r) when ``q_lora_rank`` is 0 / null
  (DeepSeek-V2-Lite), else the low-rank ``q_b_proj(RMSNorm(q_a_proj(x)))``
  with ``q_a_proj`` D -> qr, ``q_a_layernorm`` over qr, ``q_b_proj`` qr -> H(n+r);
* keys / values: ``kv_a_proj_with_mqa`` D -> c + r gives the latent
  ``c_kv`` (normalised by ``kv_a_layernorm``) and one rope key ``k_pe`` of r
  channels *shared by every head* (the paper's decoupled key, like MQA);
  ``kv_b_proj`` c -> H(n+dv) up-projects the latent into per-head ``k_nope``
  and ``v``; each head's key is ``[k_nope_h ; k_pe]``, its query ``[q_nope_h ; q_pe_h]``;
* rotary (Su et al. 2021, arXiv 2104.09864) on the r rope channels only, with
  the model's ``rope_theta``; ``rope_interleave`` (DeepSeek's layout, and
  Hugging Face's ``modeling_deepseek_v2`` / ``_v3``): channel pairs
  (2i, 2i+1) rotate by frequency i; otherwise the half-split (NeoX / Llama)
  pairs (i, i + r/2);
* YaRN (Peng et al. 2023, arXiv 2309.00071) when ``yarn_factor`` > 1, as in
  Hugging Face's ``_compute_yarn_parameters`` with ``truncate`` on: the
  frequencies are blended between extrapolation and interpolation by
  ``factor`` over the ramp between the correction dims of ``beta_fast`` /
  ``beta_slow`` rotations at ``yarn_original_max`` positions; cos / sin are
  scaled by the attention factor ``m(factor, mscale) / m(factor,
  mscale_all_dim)`` (``m(factor)`` when either is unset), with
  ``m(s, a) = 0.1 a ln s + 1``;
* softmax scale ``1 / sqrt(n + r)``, times ``m(factor, mscale_all_dim)^2``
  with YaRN and a non-zero ``mscale_all_dim`` (DeepSeek's mscale);
* ``o_proj`` H dv -> D.

Biases: ``q_a_proj`` / ``q_proj`` / ``kv_a_proj_with_mqa`` carry one with the
model's ``bias`` or ``qkv_bias``, ``o_proj`` with ``bias``; the up-projections
``q_b_proj`` / ``kv_b_proj`` never (Hugging Face's ``attention_bias`` layout),
which is what lets the absorbed form fold ``kv_b_proj`` into q and the output.
``n_kv_heads`` and ``head_dim`` do not apply (null sizes derive from
``head_dim``: n = dv = head_dim, r = head_dim / 2 rounded down to even,
c = 4 head_dim, the paper's ratios).

Two evaluation forms, the same function (DeepSeek-V2 section 2.1.2):

* without a cache (training, a full forward): the *expanded* form above,
  ``kv_b_proj`` applied to every token's latent;
* with a cache (decoding): the cache holds only ``c_kv`` (B, 1, T, c) and the
  rotated ``k_pe`` (B, 1, T, r) -- c + r values per token per layer -- and
  attention runs in the *absorbed* form: ``q_lat_h = q_nope_h W_UK_h`` (c
  channels), scores ``q_lat_h . c_kv + q_pe_h . k_pe`` (one latent key shared
  by all heads), values ``c_kv``, then ``W_UV_h`` maps each head's latent
  output to dv channels, where ``kv_b_proj.weight`` = per head
  ``[W_UK_h (n x c) ; W_UV_h (dv x c)]``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .attention import attend
from .common import KVCache, LayerContext, apply_rope, positions, register
from .norms import RMSNorm


def mla_sizes(head_dim: int, p: dict) -> tuple[int, int, int, int, int]:
    """(q_lora_rank (0 = plain q), kv_lora_rank, qk_nope, qk_rope, v_head_dim) with null sizes derived."""
    return (int(p.get("q_lora_rank") or 0), int(p.get("kv_lora_rank") or 4 * head_dim),
            int(p.get("qk_nope_head_dim") or head_dim), int(p.get("qk_rope_head_dim") or max(2, head_dim // 4 * 2)),
            int(p.get("v_head_dim") or head_dim))


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's ``0.1 * mscale * ln(scale) + 1`` (1 for scale <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(dim: int, theta: float, factor: float, original_max: int, beta_fast: float,
                  beta_slow: float) -> torch.Tensor:
    """(dim/2,) float64 inverse frequencies of YaRN (frequency blend with a linear ramp; truncated range)."""
    exponent = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    extrapolation = 1.0 / theta ** exponent
    if factor <= 1:
        return extrapolation

    def correction_dim(rotations: float) -> float:  # the dim at which a wavelength fits `rotations` times
        return dim * math.log(original_max / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    high = high + 0.001 if low == high else high  # no zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: extrapolate (high frequencies), 0: interpolate by `factor`
    return extrapolation / factor * (1 - keep) + extrapolation * keep


@register("attention", "mla")
class MultiHeadLatentAttention(nn.Module):
    """Multi-head Latent Attention (DeepSeek-V2, arXiv 2405.04434); layout in the module docstring."""

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        self.causal = ctx.causal
        self.backend = p.get("backend", "auto")
        self.dropout = ctx.dropout
        self.rope = ctx.positional == "rope"
        self.alibi = ctx.positional == "alibi"
        self.n_heads = H = ctx.n_heads
        self.q_rank, self.kv_rank, self.nope, self.rope_dim, self.v_dim = mla_sizes(ctx.head_dim, p)
        D, qk = ctx.hidden_size, self.nope + self.rope_dim
        in_bias = ctx.bias or ctx.qkv_bias
        eps = p.get("latent_norm_eps")
        latent_ctx = ctx if eps is None else dataclasses.replace(ctx, norm_eps=float(eps))
        if self.q_rank:
            self.q_proj = None
            self.q_a_proj = nn.Linear(D, self.q_rank, bias=in_bias)
            self.q_a_layernorm = RMSNorm(latent_ctx, self.q_rank)
            self.q_b_proj = nn.Linear(self.q_rank, H * qk, bias=False)
        else:
            self.q_proj = nn.Linear(D, H * qk, bias=in_bias)
            self.q_a_proj = self.q_a_layernorm = self.q_b_proj = None
        self.kv_a_proj_with_mqa = nn.Linear(D, self.kv_rank + self.rope_dim, bias=in_bias)
        self.kv_a_layernorm = RMSNorm(latent_ctx, self.kv_rank)
        self.kv_b_proj = nn.Linear(self.kv_rank, H * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(H * self.v_dim, D, bias=ctx.bias)
        # rotary of the rope channels: frequencies (YaRN when yarn_factor > 1) and the cos/sin factor
        self.rope_theta = ctx.rope_theta
        self.interleave = bool(p.get("rope_interleave", True))
        factor = float(p.get("yarn_factor", 1.0))
        self.yarn = (factor, int(p.get("yarn_original_max") or ctx.max_seq_len),
                     float(p.get("yarn_beta_fast", 32.0)), float(p.get("yarn_beta_slow", 1.0)))
        mscale, mscale_all = float(p.get("yarn_mscale", 0.0)), float(p.get("yarn_mscale_all_dim", 0.0))
        if mscale and mscale_all:
            self.rope_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
        else:
            self.rope_factor = yarn_mscale(factor)
        self.scale = qk ** -0.5 * (yarn_mscale(factor, mscale_all) ** 2 if mscale_all else 1.0)

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> KVCache:
        """The compressed latent: ``k`` holds c_kv (B, 1, T, c), ``v`` the rotated k_pe (B, 1, T, r)."""
        return KVCache()

    def _rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotary on (..., S, r) at absolute positions ``start..``."""
        inv = yarn_inv_freq(self.rope_dim, self.rope_theta, *self.yarn).to(x.device)
        ang = positions(start, x.shape[-2], x.device).to(torch.float64)[:, None] * inv[None, :]  # (S, r/2)
        cos, sin = (ang.cos() * self.rope_factor).to(x.dtype), (ang.sin() * self.rope_factor).to(x.dtype)
        if not self.interleave:
            return apply_rope(x, torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1))
        even, odd = x[..., 0::2], x[..., 1::2]  # pairs (2i, 2i+1); output de-interleaved (the scores are the same)
        return torch.cat([even * cos - odd * sin, odd * cos + even * sin], dim=-1)

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: KVCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        H, n, r = self.n_heads, self.nope, self.rope_dim
        q = self.q_proj(x) if self.q_proj is not None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q_nope, q_pe = q.view(B, S, H, n + r).transpose(1, 2).split([n, r], dim=-1)  # (B, H, S, n), (B, H, S, r)
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_rank, r], dim=-1)  # (B, S, c), (B, S, r)
        c_kv, k_pe = self.kv_a_layernorm(c_kv)[:, None], k_pe[:, None]  # (B, 1, S, c), (B, 1, S, r)
        if self.rope:
            q_pe, k_pe = self._rotate(q_pe, start_pos), self._rotate(k_pe, start_pos)
        if cache is None:
            out = self._expanded(q_nope, q_pe, c_kv, k_pe, start_pos, padding_mask)
        else:
            c_kv, k_pe = cache.append(c_kv, k_pe, padding_mask)  # (B, 1, T, c), (B, 1, T, r)
            out = self._absorbed(q_nope, q_pe, c_kv, k_pe, start_pos, cache.returned_start, cache.returned_pad)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, H * self.v_dim))

    def _attend(self, q, k, v, q_start: int, k_start: int, k_pad) -> torch.Tensor:
        return attend(q, k, v, q_start, k_start, k_pad, causal=self.causal, alibi=self.alibi, scale=self.scale,
                      dropout_p=self.dropout if self.training else 0.0, backend=self.backend)

    def _expanded(self, q_nope, q_pe, c_kv, k_pe, start: int, k_pad) -> torch.Tensor:
        """Training form: per-head keys and values from ``kv_b_proj`` of every latent -> (B, H, S, dv)."""
        B, H, T = c_kv.shape[0], self.n_heads, c_kv.shape[2]
        kv = self.kv_b_proj(c_kv[:, 0]).view(B, T, H, self.nope + self.v_dim).transpose(1, 2)  # (B, H, T, n + dv)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(B, H, T, self.rope_dim)], dim=-1)  # (B, H, T, n + r)
        return self._attend(torch.cat([q_nope, q_pe], dim=-1), k, v, start, start, k_pad)

    def _absorbed(self, q_nope, q_pe, c_kv, k_pe, q_start: int, k_start: int, k_pad) -> torch.Tensor:
        """Decoding form over the cached latent (kv_b_proj folded into q and the output) -> (B, H, S, dv)."""
        B, H, T = c_kv.shape[0], self.n_heads, c_kv.shape[2]
        w = self.kv_b_proj.weight.view(H, self.nope + self.v_dim, self.kv_rank)
        w_uk, w_uv = w[:, :self.nope], w[:, self.nope:]  # (H, n, c), (H, dv, c)
        q_lat = torch.einsum("bhsn,hnc->bhsc", q_nope, w_uk)  # (B, H, S, c)
        k = torch.cat([c_kv, k_pe], dim=-1).expand(B, H, T, self.kv_rank + self.rope_dim)  # one key for all heads
        out = self._attend(torch.cat([q_lat, q_pe], dim=-1), k, c_kv.expand(B, H, T, self.kv_rank), q_start,
                           k_start, k_pad)  # (B, H, S, c)
        return torch.einsum("bhsc,hvc->bhsv", out, w_uv)
