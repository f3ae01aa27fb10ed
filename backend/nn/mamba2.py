"""Mamba-2 token mixer: the state-space dual (SSD) layer (Dao & Gu 2024, arXiv 2405.21060).

Layout of the reference Mamba-2 block (section 7 of the paper), per token
(``D`` hidden, ``E = expand * D`` inner width, ``P`` head_dim, ``H = E / P``
heads, ``G`` groups sharing B and C, ``N`` d_state, ``K`` d_conv)::

    in_proj: D -> [z (E) | x (E) | B (G N) | C (G N) | dt (H)]
    xBC = silu(depthwise causal conv1d over [x | B | C], kernel K, with bias)
    dt  = softplus(dt + dt_bias)                      (H,)
    A   = -exp(A_log)                                 one scalar per head
    per head h in group g (state h_t: P x N):
        h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T
        y_t = h_t C_t + D_h x_t
    y = RMSNorm_per_group(y * silu(z)) * weight ;  out_proj: E -> D

Full forward: the chunked SSD algorithm (section 6): the sequence is cut in
chunks of ``Q = min(chunk_size, S)`` tokens; inside a chunk the output is the
quadratic (masked, decayed) form ``(C B^T o L) (dt x)``; between chunks the
P x N states are carried by the linear recurrence. Decoding with a cache:
a single new token takes the recurrent step above (O(H P N) per token); a
prompt runs the chunked form from the cached state. The cache (a
:class:`StateCache`) holds a constant state: the last ``K - 1`` conv inputs
``conv`` (B, E + 2 G N, K - 1) in the model dtype and ``ssm`` (B, H, P, N) in
at least float32 (the scan runs in at least float32, as the reference does).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, StateCache, register


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk: int, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD scan in chunked form (Dao & Gu 2024, section 6).

    x (b, S, H, P), dt (b, S, H) (after softplus), A (H,) negative, B and C
    (b, S, G, N), ``state`` (b, H, P, N) or None (zeros). Returns y (b, S, H, P)
    without the D skip, and the final state (b, H, P, N).

    Matmuls (2 FLOPs per multiply-accumulate), with c = ceil(S / Q) chunks:
    C B^T per group (G Q^2 N per chunk), its decayed form times dt x (H Q^2 P),
    the chunk's state contribution (H Q P N) and the carried state read out by
    C (H Q N P); the carry between chunks is element-wise.
    """
    b, S, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Hg = H // G
    Q = max(1, min(chunk, S))
    c = -(-S // Q)
    pad = c * Q - S
    if pad:  # dt = 0 at padded steps: decay 1 and no input, so the final state is unchanged
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    # chunk and split heads into (group, head in group): (b, c, G, Hg, Q, ...)
    xdt = (x * dt[..., None]).view(b, c, Q, G, Hg, P).permute(0, 1, 3, 4, 2, 5)
    a = (dt * A).view(b, c, Q, G, Hg).permute(0, 1, 3, 4, 2)  # log decay per step
    Bc = B.view(b, c, Q, G, N).permute(0, 1, 3, 2, 4)  # (b, c, G, Q, N)
    Cc = C.view(b, c, Q, G, N).permute(0, 1, 3, 2, 4)
    acum = torch.cumsum(a, dim=-1)  # (b, c, G, Hg, Q): log decay from the chunk start to step i
    # L[i, j] = exp(acum_i - acum_j) for j <= i, else 0 (masked before exp so nothing overflows)
    seg = acum[..., :, None] - acum[..., None, :]
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    L = torch.exp(seg.masked_fill(~causal, float("-inf")))
    scores = torch.matmul(Cc, Bc.transpose(-1, -2))  # (b, c, G, Q, Q)
    y = torch.matmul(scores[:, :, :, None] * L, xdt)  # intra-chunk: (b, c, G, Hg, Q, P)
    decay_to_end = torch.exp(acum[..., -1:] - acum)  # (b, c, G, Hg, Q)
    chunk_states = torch.matmul((xdt * decay_to_end[..., None]).transpose(-1, -2), Bc[:, :, :, None])  # (.., P, N)
    s = x.new_zeros(b, G, Hg, P, N) if state is None else state.reshape(b, G, Hg, P, N).to(x.dtype)
    chunk_decay = torch.exp(acum[..., -1])  # (b, c, G, Hg)
    entering = []
    for k in range(c):  # the carry between chunks: element-wise, c steps
        entering.append(s)
        s = chunk_decay[:, k, :, :, None, None] * s + chunk_states[:, k]
    prev = torch.stack(entering, dim=1)  # (b, c, G, Hg, P, N): state before each chunk
    y = y + torch.matmul(Cc[:, :, :, None], prev.transpose(-1, -2)) * torch.exp(acum)[..., None]
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, c * Q, H, P)[:, :S]
    return y, s.reshape(b, H, P, N)


def ssd_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: x (b, H, P), dt (b, H), B and C (b, G, N), state (b, H, P, N) -> (y, state)."""
    H, G = x.shape[1], B.shape[1]
    Bh = B.repeat_interleave(H // G, dim=1)  # (b, H, N)
    Ch = C.repeat_interleave(H // G, dim=1)
    state = torch.exp(dt * A)[..., None, None] * state + (dt[..., None] * x)[..., None] * Bh[:, :, None, :]
    return (state * Ch[:, :, None, :]).sum(-1), state


class GatedRMSNorm(nn.Module):
    """RMSNorm over each group's channels of ``y * silu(z)``, times a gain (Mamba-2's norm before out_proj)."""

    def __init__(self, dim: int, groups: int, eps: float):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            with torch.no_grad():
                self.weight.fill_(1.0)

    def init_weights(self, std: float) -> None:
        self.reset_parameters()

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = y * F.silu(z)
        shape = g.shape
        g = g.view(*shape[:-1], self.groups, -1)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.view(shape) * self.weight.to(g.dtype)


@register("attention", "mamba2")
class Mamba2(nn.Module):
    """Mamba-2 / SSD mixer (Dao & Gu 2024, arXiv 2405.21060; module docstring); causal only, positions unused."""

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        if not ctx.causal:
            raise ValueError("mamba2 is a causal recurrence and cannot run in a bidirectional stack")
        self.d_state, self.d_conv = int(p["d_state"]), int(p["d_conv"])
        self.head_dim, self.n_groups = int(p["head_dim"]), int(p["n_groups"])
        self.chunk_size = int(p["chunk_size"])
        self.d_inner = int(p["expand"]) * ctx.hidden_size
        if self.d_inner % self.head_dim:
            raise ValueError(f"expand * hidden_size ({self.d_inner}) must be a multiple of head_dim ({self.head_dim})")
        self.n_heads = self.d_inner // self.head_dim
        if self.n_heads % self.n_groups:
            raise ValueError(f"the {self.n_heads} heads must split evenly into n_groups ({self.n_groups})")
        E, GN, H = self.d_inner, self.n_groups * self.d_state, self.n_heads
        self.conv_dim = E + 2 * GN
        self.in_proj = nn.Linear(ctx.hidden_size, 2 * E + 2 * GN + H, bias=ctx.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.d_conv, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(E, self.n_groups, ctx.norm_eps)
        self.out_proj = nn.Linear(E, ctx.hidden_size, bias=ctx.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference init: dt log-uniform in [1e-3, 1e-1] (floor 1e-4) stored as softplus^-1, A in [1, 16]."""
        if self.A_log.is_meta:
            return
        with torch.no_grad():
            H = self.n_heads
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_log.copy_(torch.log(torch.empty(H).uniform_(1.0, 16.0)))
            self.D.fill_(1.0)

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (the Linear layers are initialised by the model)."""
        self.reset_parameters()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        return StateCache()

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, S, _ = x.shape
        E, GN, H, P, N, K = self.d_inner, self.n_groups * self.d_state, self.n_heads, self.head_dim, self.d_state, self.d_conv
        z, xBC, dt = self.in_proj(x).split([E, self.conv_dim, H], dim=-1)
        real = None if padding_mask is None else padding_mask.to(x.dtype)[..., None]  # (B, S, 1)
        if real is not None:  # padded tokens feed nothing into the conv or the state
            xBC = xBC * real
        xBC = xBC.transpose(1, 2)  # (B, conv_dim, S)
        if cache is not None:
            past = cache.state.get("conv")
            if past is None:
                past = xBC.new_zeros(b, self.conv_dim, K - 1)
            xBC = torch.cat([past, xBC], dim=-1)
            cache.state["conv"] = xBC[..., -(K - 1):].contiguous() if K > 1 else xBC[..., :0]
        else:
            xBC = F.pad(xBC, (K - 1, 0))  # causal: output t sees inputs t-K+1 .. t
        xBC = F.silu(self.conv1d(xBC)).transpose(1, 2)  # (B, S, conv_dim)
        xs, Bm, Cm = xBC.split([E, GN, GN], dim=-1)
        sdt = torch.promote_types(x.dtype, torch.float32)  # the scan runs in at least float32
        dt = F.softplus(dt.to(sdt) + self.dt_bias.to(sdt))
        if real is not None:
            dt = dt * real.to(sdt)
        A = -torch.exp(self.A_log.to(sdt))
        xs = xs.to(sdt).view(b, S, H, P)
        Bm = Bm.to(sdt).view(b, S, self.n_groups, N)
        Cm = Cm.to(sdt).view(b, S, self.n_groups, N)
        state = cache.state.get("ssm") if cache is not None else None
        if cache is not None and S == 1 and state is not None:
            y, state = ssd_step(xs[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], state)
            y = y[:, None]
        else:
            y, state = ssd_chunked(xs, dt, A, Bm, Cm, self.chunk_size, state)
        if cache is not None:
            cache.state["ssm"] = state
            cache.length += S
        y = y + self.D.to(sdt)[:, None] * xs
        y = self.norm(y.reshape(b, S, E), z.to(sdt))
        return self.out_proj(y.to(x.dtype))
