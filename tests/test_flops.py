"""FLOPs: measured on meta vs the closed-form reference (``backend.analysis.closed_form``).

Parametrised over the registry, so a new attention or MLP kind is checked the
day it is registered (it must count non-zero and match its formula).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backend.analysis import closed_form as cf
from backend.analysis.counting import count, meta_input
from backend.analysis.flops import flop_stats, flops_curve
from backend.plan import resolve_plan
from backend.presets import find_preset
from backend.registry import ATTENTION, CROSS, MLP


def _loads(info) -> bool:
    info.load()  # every registered kind must import; an error here fails the run
    return True


def preset(name: str):
    if find_preset(name) is None:
        pytest.fail(f"preset {name!r} is not in presets/ (added by the model issue)")
    return resolve_plan(name)


def kind_design(attention: str = "self_sdpa", mlp: str = "swiglu", **over) -> dict:
    """A tiny design for one kind, in a stack where the kind may run."""
    info = ATTENTION[attention]
    arch = "decoder" if info.causal else "encoder"
    d = {
        "name": f"k-{attention}-{mlp}", "architecture": arch, "task": "lm" if arch == "decoder" else "mlm",
        "vocab_size": 97, "hidden_size": 64, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 128,
        "tie_embeddings": False, "layers": {"n_layers": 2, "attention": attention, "mlp": mlp},
    }
    d.update(over)
    return d


def need(category: str, name: str) -> None:
    info = CROSS if category == "cross" else (ATTENTION if category == "attention" else MLP)[name]
    if not _loads(info):
        pytest.fail(f"{category} kind {name!r}: module {info.module} not importable yet")


def close(measured: float, reference: float, rel: float = 0.005) -> bool:
    return abs(measured - reference) <= rel * max(abs(reference), 1.0)


# ---------------------------------------------------------------------------
# The counter itself


def test_fft_formulas_count_5nlogn():
    x = meta_input(2, 128, 8)
    assert count(lambda: torch.fft.rfft(x, dim=1))[0] == int(2 * 8 * 2.5 * 128 * 7)
    assert count(lambda: torch.fft.fft(x.to(torch.complex64), dim=1))[0] == int(2 * 8 * 5 * 128 * 7)
    total, ops = count(lambda: torch.fft.irfft(torch.fft.rfft(x, n=256, dim=1), n=256, dim=1))
    assert ops == {"aten._fft_r2c": 2 * 8 * 2.5 * 256 * 8, "aten._fft_c2r": 2 * 8 * 2.5 * 256 * 8}
    assert cf.fft_flops(256, 16, real=True) * 2 == total


def test_sdpa_on_meta_counts_full_matrix_even_when_causal():
    q = meta_input(2, 4, 64, 16)
    for kw in ({"is_causal": True}, {"attn_mask": torch.ones(64, 64, dtype=torch.bool, device="meta")}, {}):
        assert count(F.scaled_dot_product_attention, q, q, q, **kw)[0] == 4 * 2 * 4 * 64 * 64 * 16


def test_linear_counts_two_per_mac():
    lin = torch.nn.Linear(32, 16, device="meta")
    assert count(lin, meta_input(3, 5, 32))[0] == 2 * 3 * 5 * 32 * 16


@pytest.mark.parametrize("s", [1, 2, 7, 64])
@pytest.mark.parametrize("window", [0, 1, 3, 16, 100])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("prefix", [0, 5])
def test_attention_pairs_brute_force(s, window, causal, prefix):
    if prefix and not causal:
        return
    n = 0
    for i in range(s):
        for j in range(s):
            ok = (j <= i) if causal else True
            if window:
                ok = ok and (i - j < window) and (causal or j - i < window)
            if prefix and j < prefix:
                ok = True
            n += ok
    assert cf.attention_pairs(s, s, causal=causal, window=window, prefix=prefix) == n


# ---------------------------------------------------------------------------
# Real models: the Findings' numbers, exactly


def test_gpt2_small_forward_exact():
    plan = preset("gpt2_small")
    need("attention", "self_sdpa")
    r = flop_stats(plan, 1024)
    assert r["forward"] == 291_648_307_200
    assert cf.model_flops(plan, 1, 1024)["forward"] == 291_648_307_200
    # causal-aware: the S x S work over S(S+1)/2 pairs
    assert r["forward_causal"] == 291_648_307_200 - 12 * 4 * 768 * (1024 * 1024 - 1024 * 1025 // 2)
    assert r["training"] == 3 * r["forward"]


def test_llama2_7b_forward_exact():
    plan = preset("llama2_7b")
    need("attention", "self_sdpa")
    r = flop_stats(plan, 4096)
    assert r["forward"] == 62_921_270_886_400
    assert cf.model_flops(plan, 1, 4096)["forward"] == 62_921_270_886_400
    assert r["components"]["embeddings"] == 0 and r["components"]["head"] == 2 * 4096 * 4096 * 32000


@pytest.mark.parametrize("name,seq", [("mistral_7b", 4096), ("mixtral_8x7b", 1000), ("encdec_kv_cache", 256),
                                      ("gemma2_style", 8192)])
def test_presets_match_closed_form(name, seq):
    plan = preset(name)
    for layer in plan.layers:
        need("attention", layer.attention)
    r = flop_stats(plan, seq, batch=2)
    ref = cf.model_flops(plan, 2, seq)
    assert close(r["forward"], ref["forward"]) and close(r["forward_causal"], ref["forward_causal"])


def test_gqa_and_window_causal_count():
    need("attention", "self_sdpa")
    d = kind_design(n_heads=8, n_kv_heads=2, layers={"n_layers": 3, "attention": "self_sdpa", "mlp": "swiglu",
                                                     "params": {"attention": {"window": 16}}})
    plan = resolve_plan(d)
    r = flop_stats(plan, 100)
    ref = cf.model_flops(plan, 1, 100)
    assert r["forward"] == ref["forward"]
    assert r["forward_causal"] == ref["forward_causal"]
    assert r["forward_causal"] < r["forward"]


def test_moe_counts_only_active_experts():
    need("mlp", "moe")
    base = kind_design(layers={"n_layers": 1, "attention": "self_sdpa", "mlp": "swiglu"})
    moe = kind_design(layers={"n_layers": 1, "attention": "self_sdpa", "mlp": "moe",
                              "params": {"mlp": {"num_experts": 8, "top_k": 2, "shared_experts": 1}}})
    s = 37  # N * k / E not an integer: the module's meta path would round up
    f_base = flop_stats(resolve_plan(base), s)["components"]["mlp"]
    f_moe = flop_stats(resolve_plan(moe), s)["components"]["mlp"]
    assert f_moe == 3 * f_base + 2 * s * 64 * 8  # (top_k + shared) experts + the router
    assert close(f_moe, cf.mlp_flops(resolve_plan(moe).design, "moe", resolve_plan(moe).layers[0].config["mlp"], 1, s))


# ---------------------------------------------------------------------------
# Every kind: non-zero, and equal to its closed form


@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_attention_kind_nonzero_and_matches_closed_form(attention):
    need("attention", attention)
    plan = resolve_plan(kind_design(attention))
    r = flop_stats(plan, 64)
    for layer in r["per_executed_layer"]:
        # an empty sublayer (attention: none) is the one kind that counts zero, by declaration
        assert (layer["components"]["attention"] > 0) != ATTENTION[attention].identity, f"{attention}: FLOPs"
        assert layer["components"]["mlp"] > 0
    ref = cf.model_flops(plan, 1, 64)
    assert close(r["forward"], ref["forward"]), (attention, r["forward"], ref["forward"])
    assert close(r["forward_causal"], ref["forward_causal"]), (attention, r["forward_causal"], ref["forward_causal"])


def test_cross_attention_nonzero_and_matches_closed_form():
    need("cross", "cross")
    d = kind_design()
    stack = d.pop("layers")
    d.update(architecture="encoder_decoder", task="seq2seq", encoder=stack, decoder=stack)
    plan = resolve_plan(d)
    r = flop_stats(plan, 48)
    ref = cf.model_flops(plan, 1, 48)
    assert r["forward"] == ref["forward"] and r["forward_causal"] == ref["forward_causal"]


@pytest.mark.parametrize("mlp", sorted(MLP))
def test_mlp_kind_nonzero_and_matches_closed_form(mlp):
    need("mlp", mlp)
    need("attention", "self_sdpa")
    plan = resolve_plan(kind_design("self_sdpa", mlp))
    r = flop_stats(plan, 64)
    for layer in r["per_executed_layer"]:
        assert (layer["components"]["mlp"] > 0) != MLP[mlp].identity, f"{mlp}: FLOPs"
    assert close(r["components"]["mlp"], sum(cf.mlp_flops(plan.design, x.mlp, x.config["mlp"], 1, 64) for x in plan.layers))


def test_adaptive_norm_counts_its_modulation():
    need("attention", "self_sdpa")
    plan = resolve_plan(kind_design(norm="adaptive", final_norm=False))
    r = flop_stats(plan, 16)
    assert r["components"]["norm"] == 2 * 2 * (2 * 16 * 64 * 128)  # 2 layers x 2 norms x Linear(D, 2D)


def test_sharing_counts_every_execution():
    need("attention", "self_sdpa")
    one = kind_design(layers={"n_layers": 2, "attention": "self_sdpa", "mlp": "swiglu"})
    cyc = kind_design(layers={"n_layers": 2, "attention": "self_sdpa", "mlp": "swiglu", "repeat": {"mode": "cycle", "factor": 4}})
    a, b = flop_stats(resolve_plan(one), 32), flop_stats(resolve_plan(cyc), 32)
    assert b["components"]["attention"] == 4 * a["components"]["attention"]
    assert len(b["per_executed_layer"]) == 8


def test_batch_scales_linearly_and_curve_grows():
    need("attention", "self_sdpa")
    plan = resolve_plan(kind_design())
    assert flop_stats(plan, 32, 3)["forward"] == 3 * flop_stats(plan, 32, 1)["forward"]
    curve = flops_curve(plan, [16, 32, 64, 128])
    assert [c["seq_len"] for c in curve] == [16, 32, 64, 128]
    assert all(a["forward"] < b["forward"] for a, b in zip(curve, curve[1:]))


def test_fvcore_cross_check_on_real_weights():
    pytest.importorskip("fvcore")
    need("attention", "self_sdpa")
    from backend.analysis.crosscheck import fvcore_forward_flops, whole_model_meta_flops
    from backend.build import build_model

    d = kind_design(positional="learned", norm="layer", bias=True, mlp="mlp")
    d["layers"]["mlp"] = "mlp"
    model = build_model(d).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x).output

    x = torch.randint(0, 97, (1, 64))
    ours = flop_stats(resolve_plan(d), 64)["forward"]
    assert fvcore_forward_flops(Logits(model), (x,)) == ours
    assert whole_model_meta_flops(d, 64) == ours


# ---------------------------------------------------------------------------
# The newer kinds under their settings: lengths that are not powers of two or
# span several Performer chunks, batch > 1, GQA, encoder and decoder stacks.

def _enc(**over):
    return {"architecture": "encoder", "task": "mlm", **over}


KIND_VARIANTS = [
    ("diff_attn", {}, {}, 100, 2),
    ("diff_attn", {}, {"n_heads": 4, "n_kv_heads": 4}, 37, 1),
    ("token_param", {"num_param_tokens": 16, "normalization": "softmax"}, {}, 50, 3),
    ("token_param", {}, _enc(), 64, 1),
    ("spectral", {}, {}, 100, 2),  # causal: n = next_pow2(200) = 256, kernel rFFT once per call
    ("spectral", {"adaptive": True}, {}, 64, 3),
    ("spectral", {}, _enc(), 100, 2),  # bidirectional: transforms at L = max_seq_len
    ("spectral", {"adaptive": True}, _enc(hidden_size=96, n_heads=6, n_kv_heads=6), 17, 1),
    ("frequency", {"modes": 8}, {}, 100, 2),
    ("frequency", {"modes": 20, "mode_select": "random", "seed": 3}, {}, 30, 1),  # some modes absent at S=30
    ("linear", {"nb_features": 32}, {"n_heads": 8, "n_kv_heads": 2}, 100, 2),
    ("causal_linear", {}, {}, 100, 1),  # chunks of 64 + 36
    ("causal_linear", {"nb_features": 48}, {"n_heads": 8, "n_kv_heads": 1}, 130, 2),
    ("self_flex", {"window": 16, "prefix_len": 5, "softcap": 30.0}, {}, 100, 2),
    ("self_flex", {"window": 8}, _enc(), 40, 1),
]


@pytest.mark.parametrize("attention,params,over,seq,batch", KIND_VARIANTS,
                         ids=[f"{a}-{i}" for i, (a, *_rest) in enumerate(KIND_VARIANTS)])
def test_kind_variants_match_closed_form(attention, params, over, seq, batch):
    need("attention", attention)
    d = kind_design(attention, **over)
    if params:
        d["layers"]["params"] = {"attention": params}
    plan = resolve_plan(d)
    r = flop_stats(plan, seq, batch)
    ref = cf.model_flops(plan, batch, seq)
    assert all(layer["components"]["attention"] > 0 for layer in r["per_executed_layer"])
    assert close(r["forward"], ref["forward"]), (r["forward"], ref["forward"])
    assert close(r["forward_causal"], ref["forward_causal"]), (r["forward_causal"], ref["forward_causal"])
    if attention not in ("self_sdpa", "self_flex", "diff_attn"):
        assert r["forward_causal"] == r["forward"]  # no S x S score matrix: nothing to halve
    elif plan.layers[0].causal:
        assert r["forward_causal"] < r["forward"]


def test_causal_linear_chunk_constant_matches_module():
    need("attention", "causal_linear")
    from backend.nn.performer import CausalPerformerAttention

    assert CausalPerformerAttention.chunk == cf.CAUSAL_LINEAR_CHUNK


def test_causal_linear_closed_form_by_hand():
    """D=64, H=4, KV=2, Dh=16, m=256, S=64 (one chunk), batch 1: every matmul written out."""
    need("attention", "causal_linear")
    plan = resolve_plan(kind_design("causal_linear"))
    s, D, H, KV, Dh, m = 64, 64, 4, 2, 16, 256
    proj = 2 * s * D * (H + 2 * KV) * Dh + 2 * s * H * Dh * D
    feats = 2 * s * Dh * m * (H + KV)  # phi(q) on H heads, phi(k) on KV heads (before repeat_kv)
    chunk = 2 * H * (s * s * m + s * m * Dh + s * s * Dh + s * m + m * s * Dh)  # qk^T, qS, av, q.z, S += k^T v
    att = proj + feats + chunk
    assert att == 17_956_864
    assert cf.attention_flops(plan.design, "causal_linear", plan.layers[0].config["attention"], 1, s, causal=True) == (att, att)
    assert flop_stats(plan, s)["components"]["attention"] == 2 * att


def test_complex_matmul_counts_four_real_macs():
    a = meta_input(3, 5, 7).to(torch.complex64)
    b = meta_input(3, 7, 2).to(torch.complex64)
    assert count(torch.bmm, a, b)[0] == 4 * 2 * 3 * 5 * 7 * 2
    assert count(torch.bmm, a.real, b.real)[0] == 2 * 3 * 5 * 7 * 2


def test_spectral_kernel_fft_is_counted_once_per_call():
    need("attention", "spectral")
    plan = resolve_plan(kind_design("spectral"))
    one, three = flop_stats(plan, 64, 1), flop_stats(plan, 64, 3)
    kernel_fft = cf.fft_flops(128, 4, real=True)  # H = 4 kernels, n = next_pow2(128)
    assert three["components"]["attention"] == 3 * one["components"]["attention"] - 2 * 2 * kernel_fft
