"""Slow, obviously-correct reference implementations of every attention kind.

Explicit Python loops over batch, head and position; no code shared with
``backend.nn`` beyond reading a module's weights. Used by tests/test_attention.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    y = x @ layer.weight.T
    return y if layer.bias is None else y + layer.bias


def rope_vec(x: torch.Tensor, pos: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotate one head vector: pairs (i, i + d/2) by angle pos * theta^(-2i/d)."""
    d = x.shape[-1]
    half = d // 2
    out = x.clone()
    for i in range(half):
        ang = pos * theta ** (-2.0 * i / d)
        c, s = math.cos(ang), math.sin(ang)
        out[i] = x[i] * c - x[i + half] * s
        out[i + half] = x[i + half] * c + x[i] * s
    return out


def alibi_slope(h: int, n_heads: int) -> float:
    """Press et al.: for a power-of-two head count, slope_h = 2^(-8 (h + 1) / n)."""
    assert n_heads & (n_heads - 1) == 0
    return 2.0 ** (-8.0 * (h + 1) / n_heads)


def allowed(t: int, s: int, *, causal: bool, window: int = 0, prefix: int = 0) -> bool:
    ok = s <= t if causal else True
    if window:
        ok = ok and t - s < window and (causal or s - t < window)
    if prefix and s < prefix:
        ok = True
    return ok


def softmax_attention(m, x, *, causal, window=0, rope=False, alibi=False, softcap=0.0, prefix=0, pad=None):
    """Self-attention with q/k/v/o_proj weights of ``m`` (SelfSDPA / SelfFlex layout)."""
    B, S, _ = x.shape
    H, Hkv, dh = m.n_heads, m.n_kv_heads, m.head_dim
    q = lin(m.q_proj, x).view(B, S, H, dh)
    k = lin(m.k_proj, x).view(B, S, Hkv, dh)
    v = lin(m.v_proj, x).view(B, S, Hkv, dh)
    if rope:
        q = torch.stack([torch.stack([torch.stack([rope_vec(q[b, t, h], t) for h in range(H)]) for t in range(S)]) for b in range(B)])
        k = torch.stack([torch.stack([torch.stack([rope_vec(k[b, t, h], t) for h in range(Hkv)]) for t in range(S)]) for b in range(B)])
    out = torch.zeros(B, S, H, dh, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            for t in range(S):
                logits, vals = [], []
                for s in range(S):
                    if not allowed(t, s, causal=causal, window=window, prefix=prefix):
                        continue
                    if pad is not None and not pad[b, s]:
                        continue
                    score = torch.dot(q[b, t, h], k[b, s, g]) / math.sqrt(dh)
                    if softcap:
                        score = softcap * torch.tanh(score / softcap)
                    if alibi:
                        score = score - alibi_slope(h, H) * abs(t - s)
                    logits.append(score)
                    vals.append(v[b, s, g])
                if logits:
                    w = torch.softmax(torch.stack(logits), dim=0)
                    out[b, t, h] = sum(wi * vi for wi, vi in zip(w, vals))
    return lin(m.o_proj, out.reshape(B, S, H * dh))


def cross_attention(m, x, memory, memory_mask=None):
    B, S, _ = x.shape
    M = memory.shape[1]
    H, Hkv, dh = m.n_heads, m.n_kv_heads, m.head_dim
    q = lin(m.q_proj, x).view(B, S, H, dh)
    k = lin(m.k_proj, memory).view(B, M, Hkv, dh)
    v = lin(m.v_proj, memory).view(B, M, Hkv, dh)
    out = torch.zeros(B, S, H, dh, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            keys = [s for s in range(M) if memory_mask is None or memory_mask[b, s]]
            for t in range(S):
                logits = torch.stack([torch.dot(q[b, t, h], k[b, s, g]) / math.sqrt(dh) for s in keys])
                w = torch.softmax(logits, dim=0)
                out[b, t, h] = sum(wi * v[b, s, g] for wi, s in zip(w, keys))
    return lin(m.o_proj, out.reshape(B, S, H * dh))


def diff_attention(m, x, *, causal, rope=False):
    """Paper eq. (1)-(3) per head, written from the official multihead_diffattn."""
    B, S, _ = x.shape
    H, Hkv, d = m.n_heads, m.n_kv_heads, m.d
    q = lin(m.q_proj, x).view(B, S, H, 2, d)  # head h, map i = q head 2h + i
    k = lin(m.k_proj, x).view(B, S, Hkv, 2, d)
    v = lin(m.v_proj, x).view(B, S, Hkv, 2 * d)
    lam = (torch.exp(torch.dot(m.lambda_q1, m.lambda_k1)) - torch.exp(torch.dot(m.lambda_q2, m.lambda_k2))
           + m.lambda_init)
    out = torch.zeros(B, S, H, 2 * d, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            for t in range(S):
                keys = [s for s in range(S) if s <= t or not causal]
                maps = []
                for i in range(2):
                    qv = rope_vec(q[b, t, h, i], t) if rope else q[b, t, h, i]
                    logits = torch.stack([
                        torch.dot(qv, rope_vec(k[b, s, g, i], s) if rope else k[b, s, g, i]) / math.sqrt(d) for s in keys
                    ])
                    maps.append(torch.softmax(logits, dim=0))
                a = maps[0] - lam * maps[1]
                o = sum(ai * v[b, s, g] for ai, s in zip(a, keys))
                o = o / torch.sqrt((o * o).mean() + m.subln.eps) * m.subln.weight
                out[b, t, h] = o * (1 - m.lambda_init)
    return lin(m.o_proj, out.reshape(B, S, H * 2 * d))


def token_param(m, x):
    B, S, _ = x.shape
    H, dh, N = m.n_heads, m.head_dim, m.n_tokens
    q = lin(m.q_proj, x).view(B, S, H, dh)
    out = torch.zeros(B, S, H, dh, dtype=x.dtype)
    for b in range(B):
        for t in range(S):
            for h in range(H):
                a = torch.stack([torch.dot(q[b, t, h], m.key_tokens[h, n]) for n in range(N)])
                if m.normalization == "gelu_l2":
                    theta = F.gelu(a * math.sqrt(N) / torch.linalg.vector_norm(a))
                else:
                    theta = torch.softmax(a / math.sqrt(dh), dim=0)
                out[b, t, h] = sum(theta[n] * m.value_tokens[h, n] for n in range(N))
    return lin(m.o_proj, out.reshape(B, S, H * dh))


def _irdft_kernel(w: torch.Tensor, L: int) -> torch.Tensor:
    """Time-domain kernel of a half-spectrum (F,) complex response: explicit inverse real DFT."""
    n = torch.arange(L, dtype=torch.float64)
    out = torch.zeros(L, dtype=torch.float64)
    for f in range(w.shape[0]):
        c = 1.0 if f == 0 or (L % 2 == 0 and f == L // 2) else 2.0
        out = out + c * (w[f].real * torch.cos(2 * math.pi * f * n / L) - w[f].imag * torch.sin(2 * math.pi * f * n / L))
    return out / L


def spectral(m, x):
    B, S, _ = x.shape
    H, dh, L = m.n_heads, m.head_dim, m.max_len
    v = lin(m.v_proj, x).view(B, S, H, dh)
    y = torch.zeros(B, S, H, dh, dtype=x.dtype)
    for h in range(H):
        if m.causal:
            for t in range(S):
                y[:, t, h] = sum(m.kernel[h, j] * v[:, t - j, h] for j in range(t + 1))
        else:
            w = torch.complex(m.filter[h, :, 0].double(), m.filter[h, :, 1].double())
            kt = _irdft_kernel(w, L).to(x.dtype)
            for t in range(S):
                y[:, t, h] = sum(kt[(t - s) % L] * v[:, s, h] for s in range(S))
    y = y.reshape(B, S, H * dh)
    if m.adaptive:
        y = y * torch.sigmoid(lin(m.gate_out, F.gelu(lin(m.gate_in, x))))
    return lin(m.o_proj, y)


def frequency(m, x):
    """Explicit DFT of the kept modes, per-mode complex channel mixing, explicit inverse real DFT."""
    B, S, _ = x.shape
    H, dh = m.n_heads, m.head_dim
    q = lin(m.q_proj, x).view(B, S, H, dh).to(torch.float64)
    t = torch.arange(S, dtype=torch.float64)
    y = torch.zeros(B, S, H, dh, dtype=torch.float64)
    for mi, f in enumerate(m.index):
        if f > S // 2:
            continue
        basis = torch.exp(-2j * math.pi * f * t / S)  # (S,)
        X = torch.einsum("bshd,s->bhd", q.to(torch.complex128), basis)  # (B, H, Dh)
        W = torch.complex(m.weight[..., mi, 0].double(), m.weight[..., mi, 1].double())  # (H, Dh, Dh)
        Y = torch.einsum("bhi,hio->bho", X, W)
        c = 1.0 if f == 0 or (S % 2 == 0 and f == S // 2) else 2.0
        y = y + c * (Y[:, None] * torch.exp(2j * math.pi * f * t / S)[None, :, None, None]).real / S
    return lin(m.o_proj, y.to(x.dtype).reshape(B, S, H * dh))


def performer(m, x, *, causal):
    """FAVOR+ with the paper's feature map, one vector at a time."""
    B, S, _ = x.shape
    H, Hkv, dh = m.n_heads, m.n_kv_heads, m.head_dim
    W = m.projection.to(x.dtype)
    nb = W.shape[0]
    q = lin(m.q_proj, x).view(B, S, H, dh)
    k = lin(m.k_proj, x).view(B, S, Hkv, dh)
    v = lin(m.v_proj, x).view(B, S, Hkv, dh)

    def dash(u):
        u = u * dh ** -0.25
        return W @ u - (u @ u) / 2

    out = torch.zeros(B, S, H, dh, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            kd = [dash(k[b, s, g]) for s in range(S)]
            c_key = 0.0 if causal else max(float((W @ (k[b, s, g] * dh ** -0.25)).detach().max()) for s in range(S))
            phik = [(torch.exp(a - c_key) + 1e-4) / math.sqrt(nb) for a in kd]
            for t in range(S):
                qa = dash(q[b, t, h])
                c_q = float((W @ (q[b, t, h] * dh ** -0.25)).detach().max())
                phiq = (torch.exp(qa - c_q) + 1e-4) / math.sqrt(nb)
                keys = range(t + 1) if causal else range(S)
                wts = [torch.dot(phiq, phik[s]) for s in keys]
                out[b, t, h] = sum(w * v[b, s, g] for w, s in zip(wts, keys)) / sum(wts)
    return lin(m.o_proj, out.reshape(B, S, H * dh))
