"""Fourier-enhanced block for time series (Zhou et al. 2022, FEDformer, arXiv 2201.12740)."""
from __future__ import annotations

import random

import torch
from torch import nn

from .common import LayerContext, register


def select_modes(seq_len: int, modes: int, method: str, seed: int) -> list[int]:
    """FEDformer's ``get_frequency_modes``: ``min(modes, seq_len // 2)`` rFFT bins, lowest or seeded random, sorted."""
    modes = max(1, min(modes, seq_len // 2))
    if method == "random":
        return sorted(random.Random(seed).sample(range(seq_len // 2), modes))
    return list(range(modes))


@register("attention", "frequency")
class FrequencyAttention(nn.Module):
    """FEDformer Fourier block (Zhou et al. 2022, arXiv 2201.12740), bidirectional only.

    ``q = q_proj(x)`` (B, S, H, Dh) is transformed with an rFFT along the
    sequence; only a fixed set of M frequency modes is kept, and each kept
    mode is mixed across the head's channels by its own complex (Dh x Dh)
    matrix; all other modes are zeroed; an irFFT and ``o_proj`` follow::

        Y[b, h, :, m] = X[b, h, :, idx_m] @ W[h, :, :, m]      (complex)

    Weights are stored as a real (H, Dh, Dh, M, 2) tensor (real/imag last), so
    they build on the meta device; initialised as in FEDformer,
    ``scale * U[0, 1)`` with ``scale = 1 / (in_channels * out_channels)``.

    Modes are chosen once for ``L = ctx.max_seq_len`` (``modes`` lowest, or a
    ``seed``-ed random subset, as FEDformer's ``get_frequency_modes``). An
    input of length S < L uses the chosen modes that exist at S (index
    < S // 2 + 1) and drops the rest. Deviation: FEDformer writes mode
    ``idx_m`` to output bin ``m`` (identical for ``lowest``); here output bin
    ``idx_m`` is used, so a random mode stays at its own frequency.
    Queries only (FEDformer's Fourier block ignores keys and values, so it has
    no k/v projections here); padded positions are zeroed before the FFT.
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        if ctx.causal:
            raise ValueError("frequency attention mixes the whole sequence and cannot run in a causal stack")
        p = ctx.params
        self.n_heads, self.head_dim = ctx.n_heads, ctx.head_dim
        self.index = select_modes(ctx.max_seq_len, int(p.get("modes", 32)), p.get("mode_select", "lowest"), int(p.get("seed", 0)))
        d, H, hd, M = ctx.hidden_size, ctx.n_heads, ctx.head_dim, len(self.index)
        self.q_proj = nn.Linear(d, H * hd, bias=ctx.bias or ctx.qkv_bias)
        self.weight = nn.Parameter(torch.empty(H, hd, hd, M, 2))  # (H, Dh_in, Dh_out, M, re/im)
        self.o_proj = nn.Linear(H * hd, d, bias=ctx.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.is_meta:  # shapes only on the meta device
            return
        scale = 1.0 / (self.n_heads * self.head_dim) ** 2
        with torch.no_grad():
            self.weight.uniform_(0.0, scale)

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (Linear layers are initialised by the model)."""
        self.reset_parameters()

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache=None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("frequency attention is bidirectional and has no decoding cache")
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim)  # (B, S, H, Dh)
        if padding_mask is not None:
            q = q * padding_mask.to(q.dtype)[:, :, None, None]
        work = q if q.dtype in (torch.float32, torch.float64) else q.float()  # no half FFT on CPU
        xf = torch.fft.rfft(work.permute(0, 2, 3, 1), dim=-1)  # (B, H, Dh, S//2+1)
        n_bins = xf.shape[-1]
        used = [m for m, i in enumerate(self.index) if i < n_bins]
        idx = torch.tensor([self.index[m] for m in used], device=x.device, dtype=torch.long)
        w = self.weight.to(work.dtype)[:, :, :, used]  # (H, Dh, Dh, M', 2)
        w = torch.view_as_complex(w.contiguous())  # (H, Dh, Dh, M')
        mixed = torch.einsum("bhim,hiom->bhom", xf[..., idx], w)  # (B, H, Dh, M')
        out_f = torch.zeros_like(xf).index_copy(-1, idx, mixed)  # (B, H, Dh, S//2+1)
        y = torch.fft.irfft(out_f, n=S, dim=-1).permute(0, 3, 1, 2).to(q.dtype)  # (B, S, H, Dh)
        return self.o_proj(y.reshape(B, S, self.n_heads * self.head_dim))
