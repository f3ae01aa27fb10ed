"""FFT token mixing: a learnable per-head global filter (bidirectional) or causal long convolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, StateCache, register


def _fft_ready(t: torch.Tensor) -> torch.Tensor:
    """FFTs need float32/float64 (CPU has no half-precision FFT): upcast anything else."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@register("attention", "spectral")
class SpectralMixer(nn.Module):
    """Spectral token mixer: FNet (Lee-Thorp et al. 2021, arXiv 2105.03824) with GFNet-style learnable
    global filters (Rao et al. 2021, arXiv 2107.00645), per head.

    Layout, like an attention layer whose attention matrix is a learned
    circulant / Toeplitz matrix per head::

        v = v_proj(x)                     (B, S, H, Dh)
        y_h = K_h * v_h                   (mixing along S; one filter per head, shared by its Dh channels)
        y = y * sigmoid(gate(x))          (``adaptive`` only)
        out = o_proj(y)

    The projections are not in FNet/GFNet; they are kept so the mixer is a
    drop-in replacement for an attention block (heads mix back through
    ``o_proj``) and its parameter count scales like one.

    * Bidirectional (``ctx.causal`` False): ``K_h`` is a complex frequency
      response with ``L // 2 + 1`` bins, ``L = ctx.max_seq_len``, stored as a
      real (H, L//2+1, 2) tensor. A length-S input (S <= L) is zero-padded to
      L, filtered at length L and cut back to S: every input length sees the
      same length-L circular convolution (the filter's time-domain kernel
      ``irfft(K_h, L)``), restricted to the first S positions, so no filter
      is resampled and short inputs do not wrap around onto themselves.
    * Causal (``ctx.causal``): ``K_h`` is a time-domain kernel of length L,
      ``y_t = sum_{j<=t} K_h[j] v_{t-j}``, computed as a zero-padded FFT
      convolution of size >= 2S (no circular wrap, so output t depends only on
      inputs <= t). Decoding keeps the past ``v`` in a :class:`StateCache` and
      computes a step as the direct convolution sum.
    * ``adaptive``: input-dependent modulation by a per-token, per-channel
      sigmoid gate from a small MLP on ``x`` (Hyena-style data-controlled
      gating, Poli et al. 2023, arXiv 2302.10866); per token, so it stays causal.

    Both filters start at the identity (unit response / unit impulse) plus
    noise of ``ctx.init_std``. Positions are not used (a convolution is
    translation-equivariant); padded tokens are zeroed before mixing.
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.n_heads, self.head_dim = ctx.n_heads, ctx.head_dim
        self.max_len = ctx.max_seq_len
        self.causal = ctx.causal
        self.adaptive = bool(ctx.params.get("adaptive", False))
        self.init_std = ctx.init_std
        d, H, hd = ctx.hidden_size, ctx.n_heads, ctx.head_dim
        self.v_proj = nn.Linear(d, H * hd, bias=ctx.bias)
        if self.causal:
            self.kernel = nn.Parameter(torch.empty(H, self.max_len))  # (H, L) time-domain taps
        else:
            self.filter = nn.Parameter(torch.empty(H, self.max_len // 2 + 1, 2))  # (H, F, re/im)
        if self.adaptive:
            r = max(8, d // 4)
            self.gate_in = nn.Linear(d, r, bias=True)
            self.gate_out = nn.Linear(r, H * hd, bias=True)
        self.o_proj = nn.Linear(H * hd, d, bias=ctx.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.v_proj.weight.is_meta:  # nothing to fill (and normal_ on meta would import torch._dynamo)
            return
        with torch.no_grad():
            if self.causal:
                self.kernel.normal_(0.0, self.init_std)
                self.kernel[:, 0] += 1.0
            else:
                self.filter.normal_(0.0, self.init_std)
                self.filter[..., 0] += 1.0

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (Linear layers are initialised by the model)."""
        self.reset_parameters()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        if not self.causal:
            raise ValueError("spectral: only the causal variant supports incremental decoding")
        return StateCache()

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        v = self.v_proj(x).view(B, S, self.n_heads, self.head_dim)  # (B, S, H, Dh)
        if padding_mask is not None:
            v = v * padding_mask.to(v.dtype)[:, :, None, None]
        if self.causal:
            y = self._causal(v, cache)
        else:
            if cache is not None:
                raise ValueError("spectral: the bidirectional variant cannot decode with a cache")
            y = self._global(v)
        y = y.reshape(B, S, self.n_heads * self.head_dim)
        if self.adaptive:
            y = y * torch.sigmoid(self.gate_out(F.gelu(self.gate_in(x))))
        return self.o_proj(y)

    def _global(self, v: torch.Tensor) -> torch.Tensor:
        S, L = v.shape[1], self.max_len
        if S > L:
            raise ValueError(f"spectral: sequence length {S} exceeds max_seq_len {L}")
        vf = torch.fft.rfft(_fft_ready(v), n=L, dim=1)  # (B, F, H, Dh), zero-padded to L
        w = torch.view_as_complex(_fft_ready(self.filter).contiguous())  # (H, F)
        y = torch.fft.irfft(vf * w.transpose(0, 1)[None, :, :, None], n=L, dim=1)[:, :S]  # (B, S, H, Dh)
        return y.to(v.dtype)

    def _causal(self, v: torch.Tensor, cache: StateCache | None) -> torch.Tensor:
        S = v.shape[1]
        if cache is not None:
            past = cache.state.get("v")
            v = v if past is None else torch.cat([past, v], dim=1)  # (B, T, H, Dh)
            cache.state["v"] = v
            cache.length += S
        T = v.shape[1]
        if T > self.max_len:
            raise ValueError(f"spectral: sequence length {T} exceeds max_seq_len {self.max_len}")
        taps = self.kernel[:, :T]  # (H, T)
        if cache is not None and S == 1:
            # One decoding step: y_T-1 = sum_j taps[j] v[T-1-j], a direct sum over the cache.
            y = torch.einsum("bthd,ht->bhd", v, taps.flip(-1).to(v.dtype))
            return y[:, None]  # (B, 1, H, Dh)
        n = _next_pow2(2 * T)  # >= 2T: linear (not circular) convolution
        vf = torch.fft.rfft(_fft_ready(v), n=n, dim=1)  # (B, n/2+1, H, Dh)
        kf = torch.fft.rfft(_fft_ready(taps), n=n, dim=-1)  # (H, n/2+1)
        y = torch.fft.irfft(vf * kf.transpose(0, 1)[None, :, :, None], n=n, dim=1)[:, T - S:T]
        return y.to(v.dtype)  # (B, S, H, Dh)
