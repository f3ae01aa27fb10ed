"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, arXiv 2412.06464): chunked form and decode step vs references.

The reference here is the paper's recurrence S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,
o_t = S_t^T q_t, written out one token at a time and one head at a time in float64 with explicit matrices,
plain Python loops over the conv taps and the projections' rows regrouped by hand from Qwen3-Next's layout
-- nothing shared with the module but its parameters. A second reference is transformers' own
``Qwen3NextGatedDeltaNet`` (its pure-PyTorch path) with the same weights.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backend.analysis.counting import count, meta_input
from backend.nn.common import LayerContext
from backend.nn.gated_deltanet import GatedDeltaNet
from backend.registry import ATTENTION

D = 16


def params(chunk: int = 5, *, hk: int = 2, hv: int = 4, dk: int = 4, dv: int = 3, conv: int = 4) -> dict:
    return {"num_key_heads": hk, "num_value_heads": hv, "key_head_dim": dk, "value_head_dim": dv,
            "conv_kernel": conv, "chunk_size": chunk}


def mixer(chunk: int = 5, *, seed: int = 0, **kw) -> GatedDeltaNet:
    torch.manual_seed(seed)
    ctx = LayerContext(hidden_size=D, n_heads=2, n_kv_heads=2, head_dim=8, ffn_hidden=32, params=params(chunk, **kw))
    m = GatedDeltaNet(ctx).double()
    g = torch.Generator().manual_seed(seed + 1)
    m.requires_grad_(False)
    with torch.no_grad():  # generic values: move the identity-ish starts (gains = 1, dt_bias = 1)
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        m.in_proj_qkvz.weight.mul_(3.0)  # large enough that beta, the decays and the corrections all matter
    return m


def sequential(m: GatedDeltaNet, x: torch.Tensor) -> torch.Tensor:
    """The layer token by token, head by head (the paper's recurrence in matrix form), float64."""
    b, S, _ = x.shape
    Hk, Hv, dk, dv, K = m.n_k, m.n_v, m.dk, m.dv, m.d_conv
    r = Hv // Hk
    Wqkvz, Wba, Wout = m.in_proj_qkvz.weight.double(), m.in_proj_ba.weight.double(), m.out_proj.weight.double()
    cw = m.conv1d.weight.double()[:, 0]  # (conv_dim, K)
    per = 2 * dk + 2 * r * dv
    rows = {name: [] for name in "qkvz"}  # Qwen3-Next's in_proj_qkvz: per key head [q | k | v (r dv) | z (r dv)]
    for g in range(Hk):
        base = g * per
        rows["q"] += range(base, base + dk)
        rows["k"] += range(base + dk, base + 2 * dk)
        rows["v"] += range(base + 2 * dk, base + 2 * dk + r * dv)
        rows["z"] += range(base + 2 * dk + r * dv, base + per)
    b_rows = [g * 2 * r + j for g in range(Hk) for j in range(r)]
    a_rows = [g * 2 * r + r + j for g in range(Hk) for j in range(r)]
    out = torch.zeros(b, S, D, dtype=torch.float64)
    for n in range(b):
        proj = {name: x[n] @ Wqkvz[idx].T for name, idx in rows.items()}
        bb, aa = x[n] @ Wba[b_rows].T, x[n] @ Wba[a_rows].T  # (S, Hv)
        mixed = torch.cat([proj["q"], proj["k"], proj["v"]], dim=-1)
        conv = torch.zeros_like(mixed)
        for t in range(S):  # causal depthwise conv, no bias: tap K-1 is the current token
            acc = torch.zeros(mixed.shape[1], dtype=torch.float64)
            for j in range(K):
                src = t - (K - 1) + j
                if src >= 0:
                    acc = acc + cw[:, j] * mixed[src]
            conv[t] = F.silu(acc)
        qs, ks, vs = conv[:, :Hk * dk], conv[:, Hk * dk:2 * Hk * dk], conv[:, 2 * Hk * dk:]
        y = torch.zeros(S, Hv * dv, dtype=torch.float64)
        for h in range(Hv):
            g = h // r  # the key head this value head reads
            S_h = torch.zeros(dk, dv, dtype=torch.float64)
            A = -math.exp(m.A_log[h].item())
            for t in range(S):
                q = qs[t, g * dk:(g + 1) * dk]
                k = ks[t, g * dk:(g + 1) * dk]
                q = q / torch.sqrt(q @ q + 1e-6) / math.sqrt(dk)
                k = k / torch.sqrt(k @ k + 1e-6)
                v = vs[t, h * dv:(h + 1) * dv]
                beta = torch.sigmoid(bb[t, h])
                alpha = math.exp(A * F.softplus(aa[t, h] + m.dt_bias[h].double()).item())
                S_h = alpha * (torch.eye(dk, dtype=torch.float64) - beta * torch.outer(k, k)) @ S_h + beta * torch.outer(k, v)
                o = S_h.T @ q
                z = proj["z"][t, h * dv:(h + 1) * dv]
                o = o / torch.sqrt(o.pow(2).mean() + m.norm.eps) * m.norm.weight.double() * F.silu(z)
                y[t, h * dv:(h + 1) * dv] = o
        out[n] = y @ Wout.T
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


def test_equal_key_and_value_heads_and_short_kernel():
    m = mixer(3, hk=3, hv=3, dk=5, dv=2, conv=1)
    x = inputs(1, 8)
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
    assert cache.state["state"].shape == (2, m.n_v, m.dk, m.dv)
    assert cache.state["conv"].shape == (2, m.conv_dim, m.d_conv - 1)


def test_step_from_an_empty_cache():
    m = mixer(3)
    x = inputs(1, 5)
    cache = m.new_cache(1, 5)
    with torch.no_grad():
        got = torch.cat([m(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(5)], dim=1)
    assert torch.allclose(got, sequential(m, x), atol=1e-12, rtol=1e-10)


def test_rule_runs_in_float32_for_bf16():
    m = mixer(4).to(torch.bfloat16)
    x = inputs(1, 8).to(torch.bfloat16)
    cache = m.new_cache(1, 8)
    with torch.no_grad():
        full = m(x)
        m(x[:, :5], cache=cache)
    assert full.dtype == torch.bfloat16 and torch.isfinite(full).all()
    assert cache.state["state"].dtype == torch.float32 and cache.state["conv"].dtype == torch.bfloat16


def test_left_padding_is_transparent():
    """Padded tokens feed neither the conv nor the state: left-padded real tokens give the unpadded outputs."""
    m = mixer(4)
    x = inputs(1, 7)
    padded = torch.cat([torch.randn(1, 3, D, dtype=torch.float64), x], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 7])
    with torch.no_grad():
        assert torch.allclose(m(padded, padding_mask=mask)[:, 3:], m(x), atol=1e-12, rtol=1e-10)


def test_flops_closed_form_equals_trace_including_the_solves():
    """The declaration's count == the meta trace, whose triangular solves are counted by forward substitution."""
    cfg = params(5)
    ctx = LayerContext(hidden_size=D, n_heads=2, n_kv_heads=2, head_dim=8, ffn_hidden=32, params=cfg)
    with torch.device("meta"):
        m = GatedDeltaNet(ctx)

    class Model:
        hidden_size, bias = D, False

    for b, s in ((1, 12), (2, 7), (1, 3)):
        total, per_op = count(lambda h: m(h), meta_input(b, s, D))
        assert ATTENTION["gated_deltanet"].flops(Model, cfg, b, s, causal=True)[0] == total
        Q = min(5, s)
        c = -(-s // Q)
        assert per_op["aten.linalg_solve_triangular"] == b * c * m.n_v * Q * (Q - 1) * (m.dv + m.dk)


@pytest.mark.slow
def test_transformers_qwen3_next_gated_deltanet_agrees():
    """transformers' Qwen3NextGatedDeltaNet (pure-PyTorch chunked path) with our weights: same count, same output."""
    mod = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    from transformers import Qwen3NextConfig

    m = mixer(4).float()
    cfg = Qwen3NextConfig(hidden_size=D, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=4,
                          linear_value_head_dim=3, linear_conv_kernel_dim=4, rms_norm_eps=m.norm.eps,
                          num_hidden_layers=1, vocab_size=10, layer_types=["linear_attention"])
    ref = mod.Qwen3NextGatedDeltaNet(cfg, layer_idx=0).float()
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in m.parameters())
    ref.load_state_dict(m.state_dict(), strict=True)
    x = inputs(2, 12).float()
    with torch.no_grad():
        ours, theirs = m(x), ref(x)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (ours - theirs).abs().max()


def test_refused_in_an_encoder_and_with_uneven_heads():
    from backend.errors import DesignError
    from backend.plan import resolve_plan

    base = {"name": "gdn", "vocab_size": 20, "hidden_size": D, "n_heads": 2, "max_seq_len": 16}
    with pytest.raises(DesignError):
        resolve_plan({**base, "architecture": "encoder", "task": "mlm",
                      "layers": {"n_layers": 1, "attention": "gated_deltanet"}})
    with pytest.raises(DesignError, match="num_value_heads"):
        resolve_plan({**base, "layers": {"n_layers": 1, "attention": "gated_deltanet",
                                         "params": {"attention": params(4, hk=2, hv=3)}}})


def test_scaled_design_shrinks_gated_deltanet_heads():
    """The smoke test's width-scaled copy of a Qwen3-Next-sized Gated DeltaNet layer keeps the kind and the
    key/value head ratio, with at most 2 key heads of 16 channels (counted on the real module)."""
    from backend.analysis.smoke import scaled_design
    from backend.build import build_model
    from backend.spec import load_design

    big = {"name": "gdn-big", "vocab_size": 1000, "hidden_size": 2048, "n_heads": 16, "max_seq_len": 64,
           "layers": {"n_layers": 2, "attention": "gated_deltanet",
                      "params": {"attention": {"num_key_heads": 16, "num_value_heads": 32, "key_head_dim": 128,
                                               "value_head_dim": 128}}}}
    small = scaled_design(load_design(big))
    a = small["layers"]["params"]["attention"]
    assert (a["num_key_heads"], a["num_value_heads"], a["key_head_dim"], a["value_head_dim"]) == (2, 4, 16, 16)
    n = sum(p.numel() for p in build_model(small, device="meta").parameters())
    assert n < 2_000_000, n
