"""Softmax attention on ``F.scaled_dot_product_attention``: self-attention and cross-attention.

``SelfSDPA`` covers MHA, GQA and MQA (``ctx.n_kv_heads``), causal or
bidirectional stacks, sliding windows, rope / ALiBi and KV-cached decoding.
``CrossAttention`` is the decoder-to-encoder block of encoder-decoder models.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .common import add_qkvo, KVCache, LayerContext, alibi_bias, apply_rope, attention_mask, open_empty_rows
from .common import apply_rope_interleaved
from .common import positions, register, repeat_kv, rope_cos_sin
from .norms import RMSNorm

_KERNELS = {
    "math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, *,
         is_causal: bool = False, dropout_p: float = 0.0, backend: str = "auto",
         scale: float | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` pinned to ``backend`` (auto / math / flash / efficient).

    A pinned kernel that cannot run on this device, dtype or mask (flash and
    efficient are CUDA kernels; flash on CPU takes no explicit mask) falls back
    to the math kernel, which gives the same result, instead of crashing.
    ``scale`` None is SDPA's ``1 / sqrt(q.shape[-1])``.
    """
    kwargs = dict(attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    if backend == "auto":
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "kernel not used because ..." notes before the fallback
            with sdpa_kernel([_KERNELS[backend]]):
                return F.scaled_dot_product_attention(q, k, v, **kwargs)
    except RuntimeError:
        with sdpa_kernel([SDPBackend.MATH]):
            return F.scaled_dot_product_attention(q, k, v, **kwargs)


@register("attention", "self_sdpa")
class SelfSDPA(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017, arXiv 1706.03762).

    Grouped-query / multi-query attention when ``n_kv_heads < n_heads``
    (Ainslie et al. 2023, arXiv 2305.13245; Shazeer 2019, arXiv 1911.02150).
    ``params["window"] > 0`` restricts each query to the last ``window`` keys
    (itself included), as in Mistral 7B (arXiv 2310.06825); in a bidirectional
    stack the window is symmetric. Rotary embeddings (Su et al. 2021,
    arXiv 2104.09864) when ``ctx.positional == "rope"``; ALiBi (Press et al.
    2021, arXiv 2108.12409) when ``ctx.positional == "alibi"``.
    ``params["qk_norm"]``: an RMSNorm over each head's Dh channels of q and of k
    (one gain each, shared by the heads), before rotary -- Qwen3 (arXiv
    2505.09388) and Gemma-3; it bounds the attention logits (Dehghani et al.
    2023, arXiv 2302.05442).
    ``params["sinks"]``: attention sinks as in gpt-oss (arXiv 2508.10925): a
    learned logit per head (``sinks``, shape (H,)) joins every row's softmax
    denominator and attends to nothing, ``p_j = exp(s_j) / (sum_i exp(s_i) +
    exp(sink_h))``. Run on SDPA as one extra key of zeros whose additive mask
    is the sink logit and whose value is zero: the same probabilities, any
    kernel that takes a float mask; it is not cached, so cached decoding
    equals the full forward. It adds one (query, key) pair per query to the
    traced FLOPs (the declaration counts it).
    ``params["scale"]``: the logit scale (null = 1/sqrt(Dh)); T5 uses 1 (Raffel et al. 2020, arXiv
    1910.10683: the scaling is folded into the initialisation). ``score_bias`` (forward): the stack's
    learned logit bias ``(q_pos, k_pos) -> (1, H, Sq, Sk)`` (T5's relative bias, ``positional.py``).
    ``params["output_gate"]``: Qwen3-Next's gated attention (Qiu et al. 2025,
    arXiv 2505.06708, the element-wise SDPA-output gate): q_proj is doubled to
    give, per head, ``[q_h | gate_h]`` (Dh each); the attention output is
    multiplied by ``sigmoid(gate)`` before o_proj.
    ``params["qk_norm_over"]``: ``"head"`` (above) or ``"projection"``: one RMSNorm over the whole q
    projection (H*Dh gains) and one over k (KV*Dh), before the split into heads -- OLMo 2 (OLMo et al.
    2024, "2 OLMo 2 Furious", arXiv 2501.00656, section 3.2).
    ``params["rotary_fraction"]``: rotary on the first ``int(Dh * fraction)`` channels of each head only
    (half-split pairs within them, frequencies over that width), the rest pass unrotated -- GPT-NeoX /
    Pythia's ``rotary_pct`` (Black et al. 2022, arXiv 2204.06745; Biderman et al. 2023, arXiv 2304.01373).
    ``params["rotary_interleaved"]``: the rotated channels pair up as (2i, 2i+1) -- GPT-J's
    ``rotate_every_two`` (Wang & Komatsuzaki 2021, mesh-transformer-jax) -- instead of the half-split
    (i, i + r/2); pair i turns by the same frequency either way.
    ``params["rope_theta"]``: this layer's rotary base (null = the model's ``rope_theta``): Gemma 3's
    local (sliding) layers use 10k, its global ones 1M (Gemma Team 2025, arXiv 2503.19786, section 2).
    """

    takes_score_bias = True

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        self.scale = p.get("scale")
        self.causal = ctx.causal
        self.window = int(p.get("window", 0) or 0)
        self.backend = p.get("backend", "auto")
        self.rope = ctx.positional == "rope"
        self.alibi = ctx.positional == "alibi"
        self.rope_theta, self.rope_scaling = p.get("rope_theta") or ctx.rope_theta, ctx.rope_scaling
        self.rotary_dim = int(ctx.head_dim * float(p.get("rotary_fraction", 1.0) or 1.0))
        self.rope_pairs = apply_rope_interleaved if p.get("rotary_interleaved") else apply_rope
        self.dropout = ctx.dropout
        add_qkvo(self, ctx)  # q_proj, k_proj, v_proj, o_proj
        self.output_gate = bool(p.get("output_gate"))
        if self.output_gate:  # q_proj: D -> H * 2Dh, per head [q_h | gate_h] (Qwen3-Next's layout)
            self.q_proj = nn.Linear(ctx.hidden_size, 2 * ctx.n_heads * ctx.head_dim, bias=ctx.bias or ctx.qkv_bias)
        self.qk_norm_over = p.get("qk_norm_over", "head")
        if p.get("qk_norm") and self.qk_norm_over == "projection":  # OLMo 2: over all heads at once
            self.q_norm = RMSNorm(ctx, ctx.n_heads * ctx.head_dim)
            self.k_norm = RMSNorm(ctx, ctx.n_kv_heads * ctx.head_dim)
        elif p.get("qk_norm"):
            self.q_norm, self.k_norm = RMSNorm(ctx, ctx.head_dim), RMSNorm(ctx, ctx.head_dim)
        else:
            self.q_norm = self.k_norm = None
        self.sinks = nn.Parameter(torch.zeros(self.n_heads)) if p.get("sinks") else None  # (H,) sink logits

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> KVCache:
        """Expanding cache, or a sliding one of the layer's own window (else the caller's)."""
        return KVCache(window=self.window or window)

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: KVCache | None = None,
                padding_mask: torch.Tensor | None = None, score_bias=None) -> torch.Tensor:
        B, S, _ = x.shape
        gate = None
        if self.q_norm is not None and self.qk_norm_over == "projection":
            return self._forward_projection_norm(x, start_pos, cache, padding_mask, score_bias)
        if self.output_gate:
            q, gate = self.q_proj(x).view(B, S, self.n_heads, 2 * self.head_dim).chunk(2, dim=-1)  # (B, S, H, Dh) each
            q, gate = q.transpose(1, 2), gate.reshape(B, S, self.n_heads * self.head_dim)
        else:
            q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, Dh)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, Dh)
        if self.q_norm is not None:  # per head, over Dh
            q, k = self.q_norm(q), self.k_norm(k)
        return self._rest(q, k, v, gate, start_pos, cache, padding_mask, score_bias)

    def _forward_projection_norm(self, x, start_pos, cache, padding_mask, score_bias):
        """qk_norm_over "projection" (OLMo 2): normalise q (B, S, H*Dh) and k (B, S, KV*Dh), then split heads."""
        B, S, _ = x.shape
        q = self.q_norm(self.q_proj(x)).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_norm(self.k_proj(x)).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return self._rest(q, k, v, None, start_pos, cache, padding_mask, score_bias)

    def _rotate(self, q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.rotary_dim
        cos, sin = rope_cos_sin(q_pos, r, self.rope_theta, q.dtype, self.rope_scaling)
        rot = self.rope_pairs
        if r == self.head_dim:
            return rot(q, cos, sin), rot(k, cos, sin)
        # partial rotary (GPT-NeoX, GPT-J): rotate the first r channels, pass the rest
        return (torch.cat([rot(q[..., :r], cos, sin), q[..., r:]], dim=-1),
                torch.cat([rot(k[..., :r], cos, sin), k[..., r:]], dim=-1))

    def _rest(self, q, k, v, gate, start_pos, cache, padding_mask, score_bias):
        B, S = q.shape[0], q.shape[2]
        q_pos = positions(start_pos, S, q.device)
        if self.rope:
            q, k = self._rotate(q, k, q_pos)
        k_start, k_pad = start_pos, padding_mask
        if cache is not None:
            k, v = cache.append(k, v, padding_mask)  # (B, Hkv, T, Dh), T = cached + S
            k_start, k_pad = cache.returned_start, cache.returned_pad
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # (B, H, T, Dh)
        out = self._attend(q, k, v, start_pos, k_start, k_pad, score_bias)  # (B, H, S, Dh)
        out = out.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out)

    def _attend(self, q, k, v, q_start: int, k_start: int, k_pad, score_bias=None):
        S, T = q.shape[2], k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        plain = not self.window and k_pad is None and not self.alibi and self.sinks is None and score_bias is None
        if plain and (not self.causal or (S == T and q_start == k_start)):
            # No explicit mask: lets SDPA pick its fused kernels (is_causal for the square case).
            return sdpa(q, k, v, None, is_causal=self.causal, dropout_p=dropout_p, backend=self.backend, scale=self.scale)
        q_pos, k_pos = positions(q_start, S, q.device), positions(k_start, T, q.device)
        mask = attention_mask(q_pos, k_pos, causal=self.causal, window=self.window, padding_mask=k_pad)
        keep = None
        if mask is not None and k_pad is not None:
            mask, keep = open_empty_rows(mask)  # (B, 1, S, T), (B, 1, S, 1)
        bias = None
        if self.alibi:
            bias = alibi_bias(self.n_heads, q_pos, k_pos, q.dtype)[None]  # (1, H, S, T)
        if score_bias is not None:
            learned = score_bias(q_pos, k_pos).to(q.dtype)  # (1, H, S, T)
            bias = learned if bias is None else bias + learned
        if bias is not None:
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        backend = self.backend
        if self.sinks is not None:
            k, v, mask = self._with_sink(q, k, v, mask)
            # the sink logit's gradient flows through the mask: the CPU fused kernel takes none, and whether a
            # CUDA kernel auto-picked for the float mask does is not checked here, so training runs on the math
            # kernel unless a CUDA kernel is pinned with `backend` (inference keeps any kernel)
            if mask.requires_grad and (q.device.type != "cuda" or backend == "auto"):
                backend = "math"
        out = sdpa(q, k, v, mask, dropout_p=dropout_p, backend=backend, scale=self.scale)
        return out if keep is None else out * keep

    def _with_sink(self, q, k, v, mask):
        """K, V with one zero key / value appended (B, H, T+1, Dh) and the float mask (B|1, H, S, T+1) whose
        last column is the sink logit: a zero key scores 0, so its logit is the mask value alone."""
        B, H, S, _ = q.shape
        T = k.shape[2]
        if mask is None:
            bias = q.new_zeros(1, H, S, T)
        elif mask.dtype == torch.bool:
            bias = q.new_zeros(mask.shape).masked_fill(~mask, float("-inf")).expand(mask.shape[0], H, S, T)
        else:
            bias = mask.to(q.dtype).expand(mask.shape[0], H, S, T)
        sink = self.sinks.to(q.dtype).view(1, H, 1, 1).expand(bias.shape[0], H, S, 1)
        zero = k.new_zeros(B, H, 1, k.shape[3])
        return torch.cat([k, zero], dim=2), torch.cat([v, zero], dim=2), torch.cat([bias, sink], dim=-1)


@register("cross", "cross")
class CrossAttention(nn.Module):
    """Decoder-to-encoder softmax attention (Vaswani et al. 2017, arXiv 1706.03762).

    Queries come from the decoder stream, keys/values from the encoder output
    ``memory``; GQA via ``ctx.n_kv_heads``. No positional encoding is applied
    (the encoder output already carries positions). With a cache the projected
    memory keys/values (and ``memory_mask``) are stored on the first call and
    reused by every later decoding step, so ``memory`` may then be ``None``.
    ``params["scale"]``: the logit scale (null = 1/sqrt(Dh); T5: 1).
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.backend = ctx.params.get("backend", "auto")
        self.scale = ctx.params.get("scale")
        self.dropout = ctx.dropout
        add_qkvo(self, ctx)  # q_proj, k_proj, v_proj, o_proj

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> KVCache:
        return KVCache()

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, *, cache: KVCache | None = None,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)
        if cache is not None and cache.k is not None:
            k, v = cache.k, cache.v  # projected once, on the first call
            if memory_mask is None:
                memory_mask = cache.pad
        else:
            if memory is None:
                raise ValueError("CrossAttention needs `memory` on the first call (empty cache)")
            M = memory.shape[1]
            k = self.k_proj(memory).view(B, M, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, M, Dh)
            v = self.v_proj(memory).view(B, M, self.n_kv_heads, self.head_dim).transpose(1, 2)
            if cache is not None:
                cache.k, cache.v, cache.length = k, v, M
                cache.pad = None if memory_mask is None else memory_mask.to(torch.bool)
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # (B, H, M, Dh)
        mask = keep = None
        if memory_mask is not None:
            mask, keep = open_empty_rows(memory_mask.to(torch.bool)[:, None, None, :].expand(B, 1, S, k.shape[2]))
        out = sdpa(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0, backend=self.backend, scale=self.scale)
        if keep is not None:
            out = out * keep
        return self.o_proj(out.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int, k_start: int, k_pad: torch.Tensor | None, *,
           causal: bool, window: int = 0, alibi: bool = False, dropout_p: float = 0.0, backend: str = "auto",
           scale: float | None = None) -> torch.Tensor:
    """Softmax attention of q (B, H, S, E) over k (B, H, T, E), v (B, H, T, Ev) with this project's masks.

    ``q_start`` / ``k_start``: absolute positions of q[:, :, 0] / k[:, :, 0]; ``k_pad`` (B, T) True = real key.
    Causal and sliding-window masks (``common.attention_mask``), ALiBi as a score bias, all-padded query rows
    as zeros (``common.open_empty_rows``). Shared by the softmax kinds that run on SDPA.
    """
    S, T = q.shape[2], k.shape[2]
    plain = not window and k_pad is None and not alibi
    if plain and (not causal or (S == T and q_start == k_start)):
        # No explicit mask: lets SDPA pick its fused kernels (is_causal for the square case).
        return sdpa(q, k, v, None, is_causal=causal, dropout_p=dropout_p, backend=backend, scale=scale)
    q_pos, k_pos = positions(q_start, S, q.device), positions(k_start, T, q.device)
    mask = attention_mask(q_pos, k_pos, causal=causal, window=window, padding_mask=k_pad)
    keep = None
    if mask is not None and k_pad is not None:
        mask, keep = open_empty_rows(mask)  # (B, 1, S, T), (B, 1, S, 1)
    if alibi:
        bias = alibi_bias(q.shape[1], q_pos, k_pos, q.dtype)[None]  # (1, H, S, T)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    out = sdpa(q, k, v, mask, dropout_p=dropout_p, backend=backend, scale=scale)
    return out if keep is None else out * keep
