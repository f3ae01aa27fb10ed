"""Mamba-2 (Dao & Gu 2024, arXiv 2405.21060): the chunked SSD form and the decode step against references.

The reference here is the paper's recurrence written out one token at a time,
one head at a time, in float64, with plain Python loops over the conv taps --
nothing shared with the module but its parameters. A second reference is
transformers' own ``Mamba2Mixer`` (its pure-PyTorch path) with the same weights.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backend.build import build_model
from backend.nn.common import LayerContext
from backend.nn.mamba2 import Mamba2
from backend.registry import ATTENTION

D = 16


def mixer(chunk: int = 5, *, d_state: int = 3, head_dim: int = 8, n_groups: int = 2, d_conv: int = 4,
          expand: int = 2, seed: int = 0) -> Mamba2:
    torch.manual_seed(seed)
    params = {"d_state": d_state, "d_conv": d_conv, "expand": expand, "head_dim": head_dim, "n_groups": n_groups,
              "chunk_size": chunk, "kind": "mamba2"}
    ctx = LayerContext(hidden_size=D, n_heads=2, n_kv_heads=2, head_dim=8, ffn_hidden=32, params=params)
    m = Mamba2(ctx).double()
    g = torch.Generator().manual_seed(seed + 1)
    m.requires_grad_(False)
    with torch.no_grad():  # generic values: move the identity-ish starts (D = 1, gains = 1, zero biases)
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def sequential(m: Mamba2, x: torch.Tensor) -> torch.Tensor:
    """The Mamba-2 layer token by token (the recurrence of section 3 of the paper), float64."""
    b, S, _ = x.shape
    E, H, P, G, N, K = m.d_inner, m.n_heads, m.head_dim, m.n_groups, m.d_state, m.d_conv
    W_in, W_out = m.in_proj.weight.double(), m.out_proj.weight.double()
    cw, cb = m.conv1d.weight.double()[:, 0], m.conv1d.bias.double()  # (conv_dim, K), (conv_dim,)
    A = [-math.exp(a) for a in m.A_log.tolist()]
    out = torch.zeros(b, S, D, dtype=torch.float64)
    for n in range(b):
        proj = x[n] @ W_in.T  # (S, 2E + 2GN + H)
        z, xbc, dt_raw = proj[:, :E], proj[:, E:E + m.conv_dim], proj[:, E + m.conv_dim:]
        conv = torch.zeros(S, m.conv_dim, dtype=torch.float64)
        for t in range(S):  # causal depthwise conv: tap K-1 is the current token
            acc = cb.clone()
            for k in range(K):
                src = t - (K - 1) + k
                if src >= 0:
                    acc = acc + cw[:, k] * xbc[src]
            conv[t] = F.silu(acc)
        xs, Bm, Cm = conv[:, :E], conv[:, E:E + G * N], conv[:, E + G * N:]
        state = [torch.zeros(P, N, dtype=torch.float64) for _ in range(H)]
        y = torch.zeros(S, E, dtype=torch.float64)
        for t in range(S):
            for h in range(H):
                g = h // (H // G)
                dt = F.softplus(dt_raw[t, h] + m.dt_bias[h].double())
                xh = xs[t, h * P:(h + 1) * P]
                Bt, Ct = Bm[t, g * N:(g + 1) * N], Cm[t, g * N:(g + 1) * N]
                state[h] = math.exp(dt.item() * A[h]) * state[h] + dt * torch.outer(xh, Bt)
                y[t, h * P:(h + 1) * P] = state[h] @ Ct + m.D[h].double() * xh
        gated = y * F.silu(z)
        width = E // G
        for g in range(G):
            part = gated[:, g * width:(g + 1) * width]
            gated[:, g * width:(g + 1) * width] = part / torch.sqrt(part.pow(2).mean(-1, keepdim=True) + m.norm.eps)
        out[n] = (gated * m.norm.weight.double()) @ W_out.T
    return out


def inputs(b: int = 2, s: int = 13, seed: int = 7) -> torch.Tensor:
    return torch.randn(b, s, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chunk", [1, 4, 5, 13, 64])
def test_chunked_form_equals_sequential_recurrence(chunk):
    m = mixer(chunk)
    x = inputs()
    with torch.no_grad():
        got = m(x)
    ref = sequential(m, x)
    assert (got - ref).abs().max() < 1e-5
    assert torch.allclose(got, ref, atol=1e-11, rtol=1e-9)  # in float64 it is exact up to rounding


def test_single_group_and_wide_state():
    m = mixer(4, d_state=6, head_dim=4, n_groups=1, d_conv=2, expand=1)
    x = inputs(1, 9)
    with torch.no_grad():
        assert torch.allclose(m(x), sequential(m, x), atol=1e-11, rtol=1e-9)


def test_decode_step_equals_sequential_recurrence():
    """Token-by-token decoding with the cache (the recurrent step) == the reference; a prompt through the
    chunked form with a cached state == the reference too."""
    m = mixer(4)
    x = inputs(2, 11)
    ref = sequential(m, x)
    cache = m.new_cache(2, 11)
    with torch.no_grad():
        outs = [m(x[:, :6], cache=cache)]  # prompt: chunked form, state and conv inputs cached
        outs += [m(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(6, 9)]  # recurrent steps
        outs.append(m(x[:, 9:], cache=cache, start_pos=9))  # a 2-token block from the cached state: chunked
    got = torch.cat(outs, dim=1)
    assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10), (got - ref).abs().max()
    assert cache.length == 11
    assert cache.state["ssm"].shape == (2, m.n_heads, m.head_dim, m.d_state)
    assert cache.state["conv"].shape == (2, m.conv_dim, m.d_conv - 1)


def test_step_from_an_empty_cache():
    m = mixer(3)
    x = inputs(1, 5)
    cache = m.new_cache(1, 5)
    with torch.no_grad():
        got = torch.cat([m(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(5)], dim=1)
    assert torch.allclose(got, sequential(m, x), atol=1e-12, rtol=1e-10)


def test_scan_runs_in_float32_for_bf16_and_matches():
    m = mixer(4).to(torch.bfloat16)
    x = inputs(1, 8).to(torch.bfloat16)
    cache = m.new_cache(1, 8)
    with torch.no_grad():
        full = m(x)
        m(x[:, :5], cache=cache)
    assert full.dtype == torch.bfloat16 and torch.isfinite(full).all()
    assert cache.state["ssm"].dtype == torch.float32 and cache.state["conv"].dtype == torch.bfloat16


@pytest.mark.slow
def test_transformers_mamba2_mixer_agrees():
    """transformers' Mamba2Mixer (pure-PyTorch path) with our weights: same parameter count, same output."""
    mod = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")
    from transformers import Mamba2Config

    m = mixer(5, d_state=3, head_dim=8, n_groups=2)
    cfg = Mamba2Config(hidden_size=D, num_heads=m.n_heads, head_dim=m.head_dim, expand=2, n_groups=2, state_size=3,
                       conv_kernel=4, chunk_size=5, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5,
                       num_hidden_layers=1, vocab_size=10)
    ref = mod.Mamba2Mixer(cfg, layer_idx=0).double()
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in m.parameters())
    info = ATTENTION["mamba2"]

    class Model:  # the model-level sizes the declaration reads
        hidden_size, bias = D, False

    assert info.param_count(Model, {"d_state": 3, "d_conv": 4, "expand": 2, "head_dim": 8, "n_groups": 2,
                                    "chunk_size": 5}, causal=True) == sum(p.numel() for p in m.parameters())
    ref.load_state_dict(m.state_dict(), strict=True)
    x = inputs(2, 12)
    with torch.no_grad():
        ours, theirs = m(x), ref(x)
    # transformers runs its gated RMSNorm in float32 even for float64 inputs: agreement to ~1e-7
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (ours - theirs).abs().max()


def test_model_refuses_mamba2_in_an_encoder_with_one_line():
    from backend.errors import DesignError
    from backend.plan import resolve_plan

    d = {"name": "enc", "architecture": "encoder", "task": "mlm", "vocab_size": 20, "hidden_size": D, "n_heads": 2,
         "max_seq_len": 16, "layers": {"n_layers": 1, "attention": "mamba2"}}
    with pytest.raises(DesignError):
        resolve_plan(d)


def test_model_with_mamba2_generates():
    d = {"name": "dec", "vocab_size": 20, "hidden_size": D, "n_heads": 2, "max_seq_len": 16,
         "layers": {"n_layers": 2, "attention": "mamba2",
                    "params": {"attention": {"d_state": 4, "head_dim": 8, "chunk_size": 4}}}}
    torch.manual_seed(0)
    model = build_model(d).eval()
    out = model.generate(torch.randint(0, 20, (1, 3)), max_new_tokens=4)
    assert out.shape == (1, 7)


def test_left_padding_is_transparent():
    """Padded tokens feed neither the conv nor the state: left-padded real tokens give the unpadded outputs."""
    m = mixer(4)
    x = inputs(1, 7)
    padded = torch.cat([torch.randn(1, 3, D, dtype=torch.float64), x], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 7])
    with torch.no_grad():
        assert torch.allclose(m(padded, padding_mask=mask)[:, 3:], m(x), atol=1e-12, rtol=1e-10)


def test_flops_against_megatron_hybrid_formula():
    """Megatron-LM's ``mamba_layer_flops`` (megatron/training/training.py, hybrid FLOPs): in_proj
    2 b s D (2 d_in + 2 G N + H) + scan 7 b s d_in N + out_proj 2 b s d_in D, with d_in = 2 D. Our
    projections are the same numbers exactly; the rest is counted differently: Megatron's scan is a fixed
    7 d_in N per token, ours is the depthwise conv plus the four SSD matmuls of the chunked form."""
    class Model:
        hidden_size, bias = 512, False

    cfg = {"d_state": 128, "d_conv": 4, "expand": 2, "head_dim": 64, "n_groups": 8, "chunk_size": 256}
    b, s, Dm, N, G = 2, 4096, 512, 128, 8
    d_in, H = 2 * Dm, 2 * Dm // 64
    megatron_proj = 2 * b * s * Dm * (2 * d_in + 2 * G * N + H) + 2 * b * s * d_in * Dm
    megatron = megatron_proj + 7 * b * s * d_in * N
    ours, causal = ATTENTION["mamba2"].flops(Model, cfg, b, s, causal=True)
    conv = 2 * b * s * (d_in + 2 * G * N) * 4
    Q = 256
    ssd = 2 * b * s * (G * Q * N + H * Q * 64 + 2 * H * 64 * N)  # per token: Q-wide intra-chunk blocks + states
    assert ours == causal == megatron_proj + conv + ssd
    assert 1.0 < ours / megatron < 1.5  # same order: the projections dominate both
