"""Mamba (Gu & Dao 2023, arXiv 2312.00752): the chunked scan and the decode step against references.

The reference here is the paper's recurrence (Algorithm 2) written out one
token at a time, one channel at a time, in float64, with plain Python loops
over the conv taps -- nothing shared with the module but its parameters.
Second references: transformers' own ``MambaMixer`` and ``JambaMambaMixer``
(their pure-PyTorch sequential paths) with the same weights.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backend.nn.common import LayerContext
from backend.nn.mamba import Mamba
from backend.registry import ATTENTION

D = 16


def mixer(chunk: int = 5, *, d_state: int = 3, d_conv: int = 4, expand: int = 2, dt_rank: int = 0,
          bc_norm: bool = False, seed: int = 0) -> Mamba:
    torch.manual_seed(seed)
    params = {"d_state": d_state, "d_conv": d_conv, "expand": expand, "dt_rank": dt_rank, "bc_norm": bc_norm,
              "chunk_size": chunk}
    ctx = LayerContext(hidden_size=D, n_heads=2, n_kv_heads=2, head_dim=8, ffn_hidden=32, norm_eps=1e-6,
                       params=params)
    m = Mamba(ctx).double()
    g = torch.Generator().manual_seed(seed + 1)
    m.requires_grad_(False)
    with torch.no_grad():  # generic values: move the structured starts (A = 1..N, D = 1, gains = 1)
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def rms(v: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return v / math.sqrt(float(v.pow(2).mean()) + eps) * w


def sequential(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """The Mamba layer token by token, channel by channel (Algorithm 2 of the paper), float64."""
    b, S, _ = x.shape
    E, N, K, R = m.d_inner, m.d_state, m.d_conv, m.dt_rank
    W_in, W_x, W_dt, b_dt = (t.double() for t in (m.in_proj.weight, m.x_proj.weight, m.dt_proj.weight, m.dt_proj.bias))
    cw, cb = m.conv1d.weight.double()[:, 0], m.conv1d.bias.double()
    A = -torch.exp(m.A_log.double())
    out = torch.zeros(b, S, D, dtype=torch.float64)
    for n in range(b):
        proj = x[n] @ W_in.T
        xin, z = proj[:, :E], proj[:, E:]
        conv = torch.zeros(S, E, dtype=torch.float64)
        for t in range(S):  # causal depthwise conv: tap K-1 is the current token
            acc = cb.clone()
            for k in range(K):
                src = t - (K - 1) + k
                if src >= 0:
                    acc = acc + cw[:, k] * xin[src]
            conv[t] = F.silu(acc)
        h = torch.zeros(E, N, dtype=torch.float64)
        for t in range(S):
            dbc = W_x @ conv[t]
            dtr, Bt, Ct = dbc[:R], dbc[R:R + N], dbc[R + N:]
            if m.dt_layernorm is not None:
                eps = m.dt_layernorm.eps
                dtr = rms(dtr, m.dt_layernorm.weight.double(), eps)
                Bt = rms(Bt, m.b_layernorm.weight.double(), eps)
                Ct = rms(Ct, m.c_layernorm.weight.double(), eps)
            y = torch.zeros(E, dtype=torch.float64)
            for d in range(E):
                dt = F.softplus(W_dt[d] @ dtr + b_dt[d])
                for s in range(N):
                    h[d, s] = math.exp(float(dt) * float(A[d, s])) * h[d, s] + dt * conv[t, d] * Bt[s]
                y[d] = h[d] @ Ct + m.D[d].double() * conv[t, d]
            out[n, t] = (y * F.silu(z[t])) @ m.out_proj.weight.double().T
    return out


def inputs(b: int = 2, s: int = 11, seed: int = 7) -> torch.Tensor:
    return torch.randn(b, s, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


_REF: dict = {}


def reference(m: Mamba, x: torch.Tensor, key) -> torch.Tensor:
    """The (slow) sequential reference, computed once per weights and input."""
    if key not in _REF:
        _REF[key] = sequential(m, x)
    return _REF[key]


@pytest.mark.parametrize("chunk", [1, 3, 4, 11, 64])
def test_chunked_scan_equals_sequential_recurrence(chunk):
    m = mixer(chunk)
    x = inputs()
    with torch.no_grad():
        got = m(x)
    ref = reference(m, x, "plain")
    assert (got - ref).abs().max() < 1e-5
    assert torch.allclose(got, ref, atol=1e-11, rtol=1e-9)  # in float64 it is exact up to rounding


def test_jamba_norms_and_explicit_dt_rank():
    m = mixer(4, d_state=5, d_conv=2, expand=1, dt_rank=3, bc_norm=True)
    x = inputs(1, 9)
    with torch.no_grad():
        got = m(x)
    assert torch.allclose(got, sequential(m, x), atol=1e-11, rtol=1e-9)


def test_decode_step_equals_sequential_recurrence():
    """Token-by-token decoding with the cache (the recurrent step) == the reference; a prompt through the
    chunked form and a 2-token block from a cached state == the reference too."""
    m = mixer(4)
    x = inputs()
    ref = reference(m, x, "plain")
    cache = m.new_cache(2, 11)
    with torch.no_grad():
        outs = [m(x[:, :6], cache=cache)]  # prompt: chunked form, state and conv inputs cached
        outs += [m(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(6, 9)]  # recurrent steps
        outs.append(m(x[:, 9:], cache=cache, start_pos=9))  # a 2-token block from the cached state: chunked
    got = torch.cat(outs, dim=1)
    assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10), (got - ref).abs().max()
    assert cache.length == 11
    assert cache.state["ssm"].shape == (2, m.d_inner, m.d_state)
    assert cache.state["conv"].shape == (2, m.d_inner, m.d_conv - 1)


def test_step_from_an_empty_cache():
    m = mixer(3)
    x = inputs()
    cache = m.new_cache(2, 11)
    with torch.no_grad():
        got = torch.cat([m(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(11)], dim=1)
    assert torch.allclose(got, reference(m, x, "plain"), atol=1e-12, rtol=1e-10)


def test_left_padding_is_transparent():
    m = mixer(4)
    x = inputs(1, 7)
    padded = torch.cat([torch.randn(1, 3, D, dtype=torch.float64), x], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 7])
    with torch.no_grad():
        assert torch.allclose(m(padded, padding_mask=mask)[:, 3:], m(x), atol=1e-12, rtol=1e-10)


def test_large_decays_do_not_overflow_in_float32():
    """dt |A| summed over a chunk far beyond float32's exp range: the scan multiplies decays <= 1 only."""
    m = mixer(64).float()
    with torch.no_grad():
        m.A_log.fill_(math.log(50.0))
        m.dt_proj.bias.fill_(5.0)
        y = m(inputs(1, 64).float())
    assert torch.isfinite(y).all()


def test_scan_runs_in_float32_for_bf16():
    m = mixer(4).to(torch.bfloat16)
    x = inputs(1, 8).to(torch.bfloat16)
    cache = m.new_cache(1, 8)
    with torch.no_grad():
        full = m(x)
        m(x[:, :5], cache=cache)
    assert full.dtype == torch.bfloat16 and torch.isfinite(full).all()
    assert cache.state["ssm"].dtype == torch.float32 and cache.state["conv"].dtype == torch.bfloat16


class _Model:  # the model-level sizes the declaration reads
    hidden_size, bias = D, False


@pytest.mark.slow
@pytest.mark.parametrize("jamba", [False, True], ids=["mamba", "jamba"])
def test_transformers_mixers_agree(jamba):
    """transformers' MambaMixer / JambaMambaMixer (pure-PyTorch sequential path) with our weights."""
    transformers = pytest.importorskip("transformers")
    if jamba:
        from transformers.models.jamba.modeling_jamba import JambaMambaMixer as Mixer

        cfg = transformers.JambaConfig(hidden_size=D, mamba_d_state=3, mamba_d_conv=4, mamba_expand=2,
                                       mamba_dt_rank=3, rms_norm_eps=1e-6, num_hidden_layers=1, vocab_size=10)
    else:
        from transformers.models.mamba.modeling_mamba import MambaMixer as Mixer

        cfg = transformers.MambaConfig(hidden_size=D, state_size=3, conv_kernel=4, expand=2, time_step_rank=3,
                                       num_hidden_layers=1, vocab_size=10, use_associative_scan=False)
    m = mixer(5, dt_rank=3, bc_norm=jamba)
    ref = Mixer(cfg, layer_idx=0).double()
    n = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for p in ref.parameters()) == n
    assert ATTENTION["mamba"].param_count(_Model, {"d_state": 3, "d_conv": 4, "expand": 2, "dt_rank": 3,
                                                   "bc_norm": jamba, "chunk_size": 5}, causal=True) == n
    ref.load_state_dict(m.state_dict(), strict=True)
    x = inputs(2, 12)
    with torch.no_grad():
        ours, theirs = m(x), ref(x)
    # transformers runs its scan (and Jamba's norms) in float32 even for float64 inputs
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (ours - theirs).abs().max()


def test_flops_closed_form_terms():
    """2 per MAC: in_proj D 2E, conv E K, x_proj E (R + 2N), dt_proj R E, read-out E N, out_proj E D."""
    cfg = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 0, "bc_norm": False, "chunk_size": 64}

    class Model:
        hidden_size, bias = 768, False

    E, N, R = 1536, 16, 48
    per_token = 768 * 2 * E + E * 4 + E * (R + 2 * N) + R * E + E * N + E * 768
    assert ATTENTION["mamba"].flops(Model, cfg, 2, 100, causal=True) == (2.0 * 2 * 100 * per_token,) * 2
