"""Mamba token mixer: the selective state-space layer (Gu & Dao 2023, arXiv 2312.00752), as Jamba uses it.

Layout of the reference Mamba block (section 3.4, Algorithm 2 of the paper;
HF ``MambaMixer`` / ``JambaMambaMixer``), per token (``D`` hidden, ``E =
expand * D`` inner width, ``N`` d_state, ``K`` d_conv, ``R`` dt_rank)::

    in_proj: D -> [x (E) | z (E)]
    x  = silu(depthwise causal conv1d over x, kernel K, with bias)
    x_proj: E -> [dt (R) | B (N) | C (N)]      (bc_norm: RMSNorm on each, Jamba)
    dt = softplus(dt_proj(dt))                 R -> E, with bias
    A  = -exp(A_log)                           (E, N): a diagonal per channel
    per channel d (state h_t[d]: N values):
        h_t[d] = exp(dt_t[d] A[d]) * h_{t-1}[d] + dt_t[d] x_t[d] B_t
        y_t[d] = h_t[d] . C_t + D[d] x_t[d]
    y = y * silu(z) ;  out_proj: E -> D

Unlike Mamba-2 the decay differs per state entry (d, n), so there is no
matmul (SSD) form. Full forward: the chunked scan: chunks of ``Q =
min(chunk_size, S)`` tokens; inside a chunk the recurrence is solved by a
parallel (Hillis-Steele) associative scan over ``(decay, input)`` pairs in
``ceil(log2 Q)`` whole-chunk steps, with the state entering the chunk folded
into its first input; between chunks the (E, N) state is carried. Only decays
<= 1 are multiplied, so nothing overflows (a cumulative sum of log decays
would need exp(-sum), which overflows in float32). Decoding with a cache: a
single new token takes the recurrent step (O(E N)); a prompt runs the chunked
form from the cached state. The cache (a :class:`StateCache`) is constant per
layer: the last ``K - 1`` conv inputs ``conv`` (B, E, K - 1) in the model
dtype and ``ssm`` (B, E, N) in at least float32 (the scan runs in at least
float32, as the reference does).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, StateCache, register


def selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   chunk: int, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan in chunked form (module docstring).

    x and dt (b, S, E) (dt after softplus), A (E, N) negative, B and C (b, S, N),
    ``state`` (b, E, N) or None (zeros). Returns y (b, S, E) without the D skip
    and the final state (b, E, N). The only matmul is the read-out ``h_t . C_t``
    (2 E N FLOPs per token); the scan itself is element-wise.
    """
    b, S, E = x.shape
    N = A.shape[1]
    Q = max(1, min(chunk, S))
    h = x.new_zeros(b, E, N) if state is None else state.to(x.dtype)
    ys = []
    for k0 in range(0, S, Q):
        sl = slice(k0, min(k0 + Q, S))
        q = sl.stop - sl.start
        a = torch.exp(dt[:, sl, :, None] * A)  # (b, q, E, N): decay of each step
        u = (dt[:, sl] * x[:, sl])[..., None] * B[:, sl, None, :]  # (b, q, E, N): input of each step
        u = torch.cat([u[:, :1] + a[:, :1] * h[:, None], u[:, 1:]], dim=1)  # the entering state
        step = 1
        while step < q:  # after the pass with offset `step`, u_t sums the inputs of steps t-2*step+1 .. t
            u = torch.cat([u[:, :step], u[:, step:] + a[:, step:] * u[:, :-step]], dim=1)
            if 2 * step < q:
                a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
            step *= 2
        ys.append(torch.matmul(u, C[:, sl, :, None])[..., 0])  # (b, q, E)
        h = u[:, -1]
    return torch.cat(ys, dim=1), h


def scan_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: x and dt (b, E), B and C (b, N), state (b, E, N) -> (y (b, E), state)."""
    state = torch.exp(dt[..., None] * A) * state + (dt * x)[..., None] * B[:, None, :]
    return torch.matmul(state, C[..., None])[..., 0], state


class _RMSNorm(nn.Module):
    """RMSNorm with a gain, computed in at least float32 (Jamba's dt / B / C norms)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            with torch.no_grad():
                self.weight.fill_(1.0)

    def init_weights(self, std: float) -> None:
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(x.dtype)


@register("attention", "mamba")
class Mamba(nn.Module):
    """Mamba selective-scan mixer (Gu & Dao 2023, arXiv 2312.00752; module docstring); causal only."""

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        if not ctx.causal:
            raise ValueError("mamba is a causal recurrence and cannot run in a bidirectional stack")
        D = ctx.hidden_size
        self.d_state, self.d_conv = int(p["d_state"]), int(p["d_conv"])
        self.d_inner = int(p["expand"]) * D
        self.dt_rank = int(p["dt_rank"]) or math.ceil(D / 16)
        self.chunk_size = int(p["chunk_size"])
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        self.in_proj = nn.Linear(D, 2 * E, bias=ctx.bias)
        self.conv1d = nn.Conv1d(E, E, self.d_conv, groups=E, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, D, bias=ctx.bias)
        if p["bc_norm"]:  # Jamba (Lieber et al. 2024, arXiv 2403.19887): RMSNorm on dt, B and C
            self.dt_layernorm = _RMSNorm(R, ctx.norm_eps)
            self.b_layernorm = _RMSNorm(N, ctx.norm_eps)
            self.c_layernorm = _RMSNorm(N, ctx.norm_eps)
        else:
            self.dt_layernorm = self.b_layernorm = self.c_layernorm = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference init: A = 1..N per channel (S4D-real), D = 1, dt log-uniform in [1e-3, 1e-1]
        (floor 1e-4) stored in dt_proj's bias as softplus^-1, dt_proj weight uniform +-R^-0.5."""
        if self.A_log.is_meta:
            return
        with torch.no_grad():
            E, N, R = self.d_inner, self.d_state, self.dt_rank
            self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N))
            self.D.fill_(1.0)
            dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.dt_proj.weight.uniform_(-R ** -0.5, R ** -0.5)

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (which initialises the Linear layers first)."""
        self.reset_parameters()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        return StateCache()

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, S, _ = x.shape
        E, N, R, K = self.d_inner, self.d_state, self.dt_rank, self.d_conv
        xs, z = self.in_proj(x).split([E, E], dim=-1)
        real = None if padding_mask is None else padding_mask.to(x.dtype)[..., None]  # (B, S, 1)
        if real is not None:  # padded tokens feed nothing into the conv or the state
            xs = xs * real
        xs = xs.transpose(1, 2)  # (B, E, S)
        if cache is not None:
            past = cache.state.get("conv")
            if past is None:
                past = xs.new_zeros(b, E, K - 1)
            xs = torch.cat([past, xs], dim=-1)
            cache.state["conv"] = xs[..., -(K - 1):].contiguous() if K > 1 else xs[..., :0]
        else:
            xs = F.pad(xs, (K - 1, 0))  # causal: output t sees inputs t-K+1 .. t
        xs = F.silu(self.conv1d(xs)).transpose(1, 2)  # (B, S, E)
        sdt = torch.promote_types(x.dtype, torch.float32)  # the scan runs in at least float32
        dt, Bm, Cm = self.x_proj(xs).to(sdt).split([R, N, N], dim=-1)
        if self.dt_layernorm is not None:
            dt, Bm, Cm = self.dt_layernorm(dt), self.b_layernorm(Bm), self.c_layernorm(Cm)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight.to(sdt), self.dt_proj.bias.to(sdt)))
        if real is not None:
            dt = dt * real.to(sdt)
        A = -torch.exp(self.A_log.to(sdt))
        xs = xs.to(sdt)
        state = cache.state.get("ssm") if cache is not None else None
        if cache is not None and S == 1 and state is not None:
            y, state = scan_step(xs[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], state)
            y = y[:, None]
        else:
            y, state = selective_scan(xs, dt, A, Bm, Cm, self.chunk_size, state)
        if cache is not None:
            cache.state["ssm"] = state
            cache.length += S
        y = (y + self.D.to(sdt) * xs) * F.silu(z.to(sdt))
        return self.out_proj(y.to(x.dtype))
