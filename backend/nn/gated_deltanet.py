"""Gated DeltaNet token mixer (Yang, Kautz & Hatamizadeh 2024, arXiv 2412.06464), as Qwen3-Next uses it.

Layout (Qwen3-Next's linear-attention layer), per token, with ``D`` hidden,
``Hk`` key heads of ``dk``, ``Hv`` value heads of ``dv`` (``r = Hv / Hk`` value
heads share one q/k head, like GQA), ``K`` the conv kernel::

    in_proj_qkvz: D -> per key head g: [q_g (dk) | k_g (dk) | v_g (r dv) | z_g (r dv)]
    in_proj_ba:   D -> per key head g: [b_g (r) | a_g (r)]
    [q | k | v] = silu(causal depthwise conv1d over [q | k | v], kernel K, no bias)
    q = l2norm(q) / sqrt(dk),  k = l2norm(k)          per head (eps 1e-6 inside the rsqrt)
    beta = sigmoid(b),  g = -exp(A_log) * softplus(a + dt_bias)      (Hv,) per token
    per value head (state S_t: dk x dv, alpha_t = exp(g_t) in (0, 1]):
        S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T      (the gated delta rule)
        o_t = S_t^T q_t
    y = RMSNorm_per_head(o) * weight * silu(z);  out_proj: Hv dv -> D

Full forward: the chunkwise-parallel form (section 3.3 of the paper; the WY
representation of DeltaNet, Yang et al. 2024, arXiv 2406.06484): in a chunk of
``Q`` tokens with in-chunk cumulative decay ``gamma_i = prod_{j <= i} alpha_j``
and incoming state ``S0``,

    A[i, j] = beta_i (gamma_i / gamma_j) k_i . k_j   for j < i   (strictly lower)
    U = (I + A)^-1 (beta v),   W = (I + A)^-1 (beta gamma k)      (two unit-triangular solves: the UT transform)
    V' = U - W S0                                     (the delta-rule corrections of the chunk)
    O  = (gamma q) S0 + ((q k^T) o Gamma o tril) V',  Gamma[i, j] = gamma_i / gamma_j
    S  = gamma_Q S0 + ((gamma_Q / gamma) k)^T V'

so the chunk's work is matmuls and the carry between chunks is one state
update per chunk. Decoding with a cache: a single new token takes the
recurrent step (O(Hv dk dv)); a prompt runs the chunked form from the cached
state. The cache (a :class:`StateCache`) holds the last ``K - 1`` conv inputs
``conv`` (B, 2 Hk dk + Hv dv, K - 1) in the model dtype and ``state``
(B, Hv, dk, dv) in at least float32 (the rule runs in at least float32, as
Qwen3-Next's reference does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, StateCache, register


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(|x|^2 + eps) over the last dim (the FLA / Qwen3-Next convention)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def gated_delta_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
                        chunk: int, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule in chunkwise-parallel form (module docstring).

    q, k (b, S, H, dk) (normalised; q scaled), v (b, S, H, dv), beta and g
    (b, S, H) (g <= 0, the log decay), ``state`` (b, H, dk, dv) or None (zeros).
    Returns o (b, S, H, dv) and the final state (b, H, dk, dv).

    Matmuls per chunk and head (2 FLOPs per multiply-accumulate): beta k k^T and
    q k^T (Q^2 dk each), the two unit-triangular solves (Q (Q - 1) / 2 (dv + dk)),
    W S0 and q S0 (Q dk dv each), the intra-chunk product with V' (Q^2 dv) and
    the state update k^T V' (Q dk dv).
    """
    b, S, H, dk = k.shape
    dv = v.shape[-1]
    Q = max(1, min(chunk, S))
    c = -(-S // Q)
    pad = c * Q - S
    if pad:  # beta = 0 and g = 0 at padded steps: no write, no decay, so the final state is unchanged
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        beta, g = (F.pad(t, (0, 0, 0, pad)) for t in (beta, g))

    def chunks(t: torch.Tensor) -> torch.Tensor:  # (b, c*Q, H, ...) -> (b, H, c, Q, ...)
        return t.reshape(b, c, Q, H, -1).permute(0, 3, 1, 2, 4).contiguous()

    q, k, v = chunks(q), chunks(k), chunks(v)
    beta = chunks(beta)  # (b, H, c, Q, 1)
    gc = chunks(g)[..., 0].cumsum(-1)  # (b, H, c, Q): log gamma_i
    # Gamma[i, j] = gamma_i / gamma_j for j <= i, else 0 (masked before exp so nothing overflows)
    lower = torch.ones(Q, Q, dtype=torch.bool, device=q.device).tril()
    decay = torch.exp((gc[..., :, None] - gc[..., None, :]).masked_fill(~lower, float("-inf")))
    kb = k * beta
    A = (kb @ k.transpose(-1, -2) * decay).tril(-1)  # (b, H, c, Q, Q), strictly lower
    U = torch.linalg.solve_triangular(A, v * beta, upper=False, unitriangular=True)  # (b, H, c, Q, dv)
    W = torch.linalg.solve_triangular(A, kb * gc.exp()[..., None], upper=False, unitriangular=True)  # (.., Q, dk)
    attn = q @ k.transpose(-1, -2) * decay  # (b, H, c, Q, Q), diagonal included
    q_in = q * gc.exp()[..., None]  # reads the incoming state
    k_out = k * torch.exp(gc[..., -1:] - gc)[..., None]  # writes the outgoing state
    chunk_decay = torch.exp(gc[..., -1])[..., None, None]  # (b, H, c, 1, 1)
    s = q.new_zeros(b, H, dk, dv) if state is None else state.to(q.dtype)
    outs = []
    for i in range(c):  # the carry between chunks: c steps
        v_new = U[:, :, i] - W[:, :, i] @ s  # (b, H, Q, dv)
        outs.append(q_in[:, :, i] @ s + attn[:, :, i] @ v_new)
        s = s * chunk_decay[:, :, i] + k_out[:, :, i].transpose(-1, -2) @ v_new
    o = torch.stack(outs, dim=2)  # (b, H, c, Q, dv)
    return o.permute(0, 2, 3, 1, 4).reshape(b, c * Q, H, dv)[:, :S], s


def gated_delta_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
                     state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: q, k (b, H, dk), v (b, H, dv), beta and g (b, H), state (b, H, dk, dv) -> (o, state)."""
    state = state * torch.exp(g)[..., None, None]
    predicted = (state * k[..., None]).sum(-2)  # S^T k: (b, H, dv)
    state = state + k[..., None] * ((v - predicted) * beta[..., None])[..., None, :]
    return (state * q[..., None]).sum(-2), state


class HeadGatedRMSNorm(nn.Module):
    """RMSNorm over each head's ``dv`` channels, times a gain shared by the heads, times ``silu(z)``
    (Qwen3-Next's ``RMSNormGated``: norm first, then the gate)."""

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

    def forward(self, o: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps)
        return o * self.weight.to(o.dtype) * F.silu(z.to(o.dtype))


@register("attention", "gated_deltanet")
class GatedDeltaNet(nn.Module):
    """Gated DeltaNet mixer (Yang et al. 2024, arXiv 2412.06464; module docstring); causal only, positions unused."""

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        if not ctx.causal:
            raise ValueError("gated_deltanet is a causal recurrence and cannot run in a bidirectional stack")
        self.n_k, self.n_v = int(p["num_key_heads"]), int(p["num_value_heads"])
        self.dk, self.dv = int(p["key_head_dim"]), int(p["value_head_dim"])
        self.d_conv, self.chunk_size = int(p["conv_kernel"]), int(p["chunk_size"])
        if self.n_v % self.n_k:
            raise ValueError(f"num_value_heads ({self.n_v}) must be a multiple of num_key_heads ({self.n_k})")
        self.key_dim, self.value_dim = self.n_k * self.dk, self.n_v * self.dv
        self.conv_dim = 2 * self.key_dim + self.value_dim
        D = ctx.hidden_size
        self.in_proj_qkvz = nn.Linear(D, 2 * self.key_dim + 2 * self.value_dim, bias=ctx.bias)
        self.in_proj_ba = nn.Linear(D, 2 * self.n_v, bias=ctx.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.d_conv, groups=self.conv_dim, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(self.n_v))
        self.A_log = nn.Parameter(torch.empty(self.n_v))
        self.norm = HeadGatedRMSNorm(self.dv, ctx.norm_eps)
        self.out_proj = nn.Linear(self.value_dim, D, bias=ctx.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Qwen3-Next's init: dt_bias = 1, A uniform in [0.01, 16] (stored as its log)."""
        if self.A_log.is_meta:
            return
        with torch.no_grad():
            self.dt_bias.fill_(1.0)
            self.A_log.copy_(torch.empty(self.n_v).uniform_(0.01, 16.0).log())

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (the Linear layers are initialised by the model)."""
        self.reset_parameters()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        return StateCache()

    def _split(self, x: torch.Tensor):
        """in_proj_qkvz / in_proj_ba outputs regrouped: [q | k | v] (b, S, conv_dim), z (b, S, Hv, dv), b, a (b, S, Hv)."""
        bsz, S, _ = x.shape
        r = self.n_v // self.n_k
        qkvz = self.in_proj_qkvz(x).view(bsz, S, self.n_k, 2 * self.dk + 2 * r * self.dv)
        q, k, v, z = qkvz.split([self.dk, self.dk, r * self.dv, r * self.dv], dim=-1)
        b, a = self.in_proj_ba(x).view(bsz, S, self.n_k, 2 * r).split([r, r], dim=-1)
        mixed = torch.cat([q.reshape(bsz, S, -1), k.reshape(bsz, S, -1), v.reshape(bsz, S, -1)], dim=-1)
        return mixed, z.reshape(bsz, S, self.n_v, self.dv), b.reshape(bsz, S, self.n_v), a.reshape(bsz, S, self.n_v)

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        bsz, S, _ = x.shape
        K, r = self.d_conv, self.n_v // self.n_k
        mixed, z, b, a = self._split(x)
        real = None if padding_mask is None else padding_mask.to(x.dtype)[..., None]  # (B, S, 1)
        if real is not None:  # padded tokens feed nothing into the conv or the state
            mixed = mixed * real
        mixed = mixed.transpose(1, 2)  # (B, conv_dim, S)
        if cache is not None:
            past = cache.state.get("conv")
            if past is None:
                past = mixed.new_zeros(bsz, self.conv_dim, K - 1)
            mixed = torch.cat([past, mixed], dim=-1)
            cache.state["conv"] = mixed[..., -(K - 1):].contiguous() if K > 1 else mixed[..., :0]
        else:
            mixed = F.pad(mixed, (K - 1, 0))  # causal: output t sees inputs t-K+1 .. t
        mixed = F.silu(self.conv1d(mixed)).transpose(1, 2)  # (B, S, conv_dim)
        sdt = torch.promote_types(x.dtype, torch.float32)  # the rule runs in at least float32
        q, k, v = mixed.to(sdt).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q = l2norm(q.view(bsz, S, self.n_k, self.dk)) * self.dk ** -0.5
        k = l2norm(k.view(bsz, S, self.n_k, self.dk))
        q, k = q.repeat_interleave(r, dim=2), k.repeat_interleave(r, dim=2)  # (B, S, Hv, dk): value heads share q/k
        v = v.reshape(bsz, S, self.n_v, self.dv)
        beta = torch.sigmoid(b.to(sdt))
        g = -torch.exp(self.A_log.to(sdt)) * F.softplus(a.to(sdt) + self.dt_bias.to(sdt))
        if real is not None:
            beta, g = beta * real.to(sdt), g * real.to(sdt)
        state = cache.state.get("state") if cache is not None else None
        if cache is not None and S == 1 and state is not None:
            o, state = gated_delta_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], g[:, 0], state)
            o = o[:, None]
        else:
            o, state = gated_delta_chunked(q, k, v, beta, g, self.chunk_size, state)
        if cache is not None:
            cache.state["state"] = state
            cache.length += S
        y = self.norm(o, z.to(sdt)).reshape(bsz, S, self.value_dim)
        return self.out_proj(y.to(x.dtype))
