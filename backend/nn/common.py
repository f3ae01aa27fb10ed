"""Shared runtime pieces of every layer module: context, registries, caches, rope, alibi.

Contract for every file in ``backend/nn/`` (the standalone exporter inlines
these files into one script, so it depends on it):

* import only ``torch``, the standard library and sibling modules, the latter
  only as ``from .common import A, B`` / ``from .mlp import C`` (one line each,
  no aliases); no pydantic, no ``backend.*`` absolute imports;
* register each class with ``@register(category, name)`` so the model finds it
  by the kind name the plan carries;
* take the layer's :class:`LayerContext` in ``__init__`` (``Attention(ctx)``),
  never kwargs routed by prefix.

Module interfaces (``B`` batch, ``S`` sequence, ``D`` hidden):

* self-attention / token mixer::

      forward(x: (B, S, D), *, start_pos: int = 0, cache=None,
              padding_mask: (B, S) bool or None = None) -> (B, S, D)
      new_cache(batch: int, max_len: int, *, window: int = 0) -> cache   # cacheable kinds only

  ``start_pos`` is the absolute position of ``x[:, 0]``; with a cache the call
  appends to it in place and attends over everything cached. ``padding_mask``
  is True where a token is real; with a cache it covers the new tokens only
  (``KVCache.append`` remembers it for later steps). Query rows with no key
  to attend to (all padded) come out as zeros, never NaN. Kinds with random
  or custom initial values define ``reset_parameters()``, a no-op on meta
  (call it after ``to_empty``); the Performer draws its projection there.
  ``init_weights(std)`` is the same hook under the name the model-wide init calls.
* cross-attention: ``forward(x, memory, *, cache=None, memory_mask=None)``.
* MLP: ``forward(x) -> y``; a MoE also sets ``self.aux_loss`` (0-dim tensor).
* norm: ``forward(x) -> y``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REGISTRY: dict[str, dict[str, type]] = {"attention": {}, "mlp": {}, "norm": {}, "positional": {}, "cross": {}}


def register(category: str, *names: str):
    """Class decorator: ``@register("attention", "self_sdpa")``."""

    def deco(cls: type) -> type:
        for name in names:
            REGISTRY[category][name] = cls
        return cls

    return deco


@dataclass(frozen=True)
class LayerContext:
    """Everything a layer module needs: model-level settings plus its own params.

    ``params`` are this kind's parameters with registry defaults filled in
    (``backend.registry``); ``layer_index`` is the unique-layer index within its
    stack (shared executions reuse the module), ``n_layers`` that stack's unique
    count and ``depth`` its executed depth.
    """

    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden: int
    activation: str = "gelu"
    max_seq_len: int = 2048
    positional: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # YaRN (rope_cos_sin); None = plain rotary
    norm_eps: float = 1e-5
    bias: bool = False
    qkv_bias: bool = False
    dropout: float = 0.0
    causal: bool = True
    layer_index: int = 0
    n_layers: int = 1
    depth: int = 1
    init_std: float = 0.02
    params: dict[str, Any] = field(default_factory=dict)

    def with_params(self, params: dict[str, Any]) -> "LayerContext":
        return LayerContext(**{**self.__dict__, "params": dict(params)})


# ---------------------------------------------------------------------------
# Caches for incremental decoding. One cache object per *executed* layer:
# weight-shared layers run the same module at several depths, each with its own cache.


class KVCache:
    """Keys/values of past tokens, (B, H_kv, T, Dh). ``window > 0`` keeps only the last ``window``."""

    def __init__(self, window: int = 0):
        self.window = window
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.start: int = 0  # absolute position of k[:, :, 0]
        self.length: int = 0  # tokens seen so far (absolute position of the next token)
        self.pad: torch.Tensor | None = None  # (B, T) True = real token; None = all real
        self.returned_start: int = 0  # absolute position of the tensors the last append returned
        self.returned_pad: torch.Tensor | None = None  # their padding mask (B, T_returned) or None

    def append(self, k: torch.Tensor, v: torch.Tensor,
               pad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Add new keys/values; return everything the new queries may attend to.

        The returned tensors start at absolute position ``self.start`` (before
        trimming), so callers can build position-aware masks. ``pad`` (B, S_new),
        True where the new token is real, is remembered alongside the keys so
        later steps keep masking padded positions (see ``returned_pad``).
        """
        old = 0 if self.k is None else self.k.shape[2]
        if pad is not None or self.pad is not None:
            b, new = k.shape[0], k.shape[2]
            prev = self.pad if self.pad is not None else torch.ones(b, old, dtype=torch.bool, device=k.device)
            cur = pad.to(torch.bool) if pad is not None else torch.ones(b, new, dtype=torch.bool, device=k.device)
            self.pad = torch.cat([prev, cur], dim=1)
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        self.length += k.shape[2]
        full_k, full_v, full_start, full_pad = self.k, self.v, self.start, self.pad
        if self.window and self.k.shape[2] > self.window:
            drop = self.k.shape[2] - self.window
            self.k = self.k[:, :, drop:]
            self.v = self.v[:, :, drop:]
            if self.pad is not None:
                self.pad = self.pad[:, drop:]
            self.start += drop
        self.returned_start = full_start
        self.returned_pad = full_pad
        return full_k, full_v


class StateCache:
    """Free-form recurrent state (e.g. Performer prefix sums): a dict of tensors plus a length."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] = {}
        self.length: int = 0


# ---------------------------------------------------------------------------
# Positions


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype,
                 scaling: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (S, dim) for rotary embeddings (Su et al. 2021, arXiv 2104.09864).

    ``scaling`` (the design's ``rope_scaling``): YaRN (Peng et al. 2023, arXiv
    2309.00071, section 3.2 "NTK-by-parts" and eq. 22 for the temperature).
    Frequency ``i`` of ``dim/2`` is blended between its original value
    (extrapolation) and that value divided by ``factor`` (interpolation) by a
    linear ramp over dimension indices: dimension ``d`` does
    ``r = L / (2 pi theta^(2d/dim))`` rotations over the pre-training context
    ``L``; dimensions with ``r > beta_fast`` keep their frequency, those with
    ``r < beta_slow`` are interpolated. The correction range in dimension
    index is ``d(beta) = dim ln(L / (2 pi beta)) / (2 ln theta)``, floored /
    ceiled when ``truncate``, clipped to [0, dim - 1]. cos and sin are scaled
    by ``attention_factor`` (default ``0.1 ln(factor) + 1``), which scales the
    attention logits by its square.
    """
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim))
    mscale = 1.0
    if scaling is not None:
        factor, orig = float(scaling["factor"]), float(scaling["original_max_position_embeddings"])

        def correction_dim(rotations: float) -> float:
            return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = correction_dim(float(scaling.get("beta_fast", 32.0))), correction_dim(float(scaling.get("beta_slow", 1.0)))
        if scaling.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # a one-point ramp
        ramp = ((torch.arange(dim // 2, device=positions.device, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        inv = inv / factor * ramp + inv * (1 - ramp)  # ramp 0: extrapolate (keep), 1: interpolate (/ factor)
        mscale = scaling.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]  # (S, dim/2)
    ang = torch.cat([ang, ang], dim=-1)
    return (ang.cos() * mscale).to(dtype), (ang.sin() * mscale).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, S, Dh) by the half-split convention (GPT-NeoX / Llama)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, S, Dh) with adjacent pairs (2i, 2i+1) turned by frequency i (GPT-J's rotate_every_two).

    ``cos`` / ``sin``: :func:`rope_cos_sin`'s (S, Dh) tables, whose first half holds one entry per pair.
    """
    half = x.shape[-1] // 2
    c, s = cos[..., :half], sin[..., :half]
    a, b = x[..., 0::2], x[..., 1::2]  # (B, H, S, Dh/2) each
    return torch.stack([a * c - b * s, b * c + a * s], dim=-1).flatten(-2)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes (Press et al. 2021, arXiv 2108.12409), also for non-powers of two."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, q_pos: torch.Tensor, k_pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(H, Sq, Sk) additive bias: -slope * |i - j| (symmetric, so it also serves encoders)."""
    slopes = alibi_slopes(n_heads).to(device=q_pos.device, dtype=torch.float32)
    dist = (q_pos[:, None] - k_pos[None, :]).abs().to(torch.float32)
    return (-slopes[:, None, None] * dist[None]).to(dtype)


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, *, causal: bool, window: int = 0,
                   padding_mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, Sq, Sk), True = may attend; None when nothing is masked."""
    mask = None
    if causal:
        mask = k_pos[None, :] <= q_pos[:, None]
    if window:
        w = (q_pos[:, None] - k_pos[None, :]) < window
        if not causal:
            w = w & ((k_pos[None, :] - q_pos[:, None]) < window)
        mask = w if mask is None else mask & w
    if mask is not None:
        mask = mask[None, None]
    if padding_mask is not None:
        pm = padding_mask[:, None, None, :].to(torch.bool)
        mask = pm if mask is None else mask & pm
    return mask


def open_empty_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Let query rows that may attend to nothing (all keys padded) attend everywhere.

    A softmax over an all ``-inf`` row is NaN, which would poison gradients;
    callers multiply the attention output by the returned ``keep`` (..., Sq, 1)
    so those rows come out as exact zeros instead.
    """
    keep = mask.any(dim=-1, keepdim=True)
    return mask | ~keep, keep


def positions(start: int, length: int, device: torch.device) -> torch.Tensor:
    """Absolute positions ``start .. start + length - 1`` (int64)."""
    return torch.arange(start, start + length, device=device)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, Dh) -> (B, H_kv * n_rep, S, Dh) for GQA/MQA."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "mish": F.mish,
}


def linear(d_in: int, d_out: int, bias: bool) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=bias)


def add_qkvo(module: nn.Module, ctx: LayerContext) -> None:
    """Give ``module`` the head layout (``n_heads``, ``n_kv_heads``, ``head_dim``, ``n_rep`` query heads per
    kv head) and the q/k/v/o projections of (GQA) multi-head attention.

    q_proj: D -> H*Dh, k_proj / v_proj: D -> H_kv*Dh (bias: ``bias`` or
    ``qkv_bias``), o_proj: H*Dh -> D (bias: ``bias``). Shared by every kind
    with this layout so their state-dict names and shapes stay identical.
    """
    if ctx.n_heads % ctx.n_kv_heads:
        raise ValueError(f"n_heads ({ctx.n_heads}) must be a multiple of n_kv_heads ({ctx.n_kv_heads})")
    module.n_heads, module.n_kv_heads, module.head_dim = ctx.n_heads, ctx.n_kv_heads, ctx.head_dim
    module.n_rep = ctx.n_heads // ctx.n_kv_heads
    qkv_bias = ctx.bias or ctx.qkv_bias
    d, hd = ctx.hidden_size, ctx.head_dim
    module.q_proj = nn.Linear(d, ctx.n_heads * hd, bias=qkv_bias)
    module.k_proj = nn.Linear(d, ctx.n_kv_heads * hd, bias=qkv_bias)
    module.v_proj = nn.Linear(d, ctx.n_kv_heads * hd, bias=qkv_bias)
    module.o_proj = nn.Linear(ctx.n_heads * hd, d, bias=ctx.bias)
