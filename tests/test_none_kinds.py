"""Empty sublayers (`attention: none`, `mlp: none`): a block keeps only the other branch (Nemotron-H style)."""
from __future__ import annotations

import pytest
import torch

from backend.analysis import analyze
from backend.analysis.memory import _layer_activation_elems, activations
from backend.build import build_model
from backend.plan import parse_string, resolve_plan
from backend.registry import ATTENTION, MLP

D = 16


def design(string: str, n_layers: int, **extra) -> dict:
    return {"name": "h", "vocab_size": 30, "hidden_size": D, "n_heads": 2, "max_seq_len": 16, **extra,
            "layers": {"n_layers": n_layers, "string": string,
                       "params": {"attention": {"d_state": 4, "head_dim": 8, "chunk_size": 4}}}}


def test_string_notation_maps_one_block_to_one_layer():
    assert parse_string("MAMBA2:NONE,NONE:SWIGLU,NONE:NONE", 3) == [("mamba2", "none"), ("none", "swiglu"),
                                                                      ("none", "none")]


def test_blocks_hold_only_their_branch_and_compute_it():
    """A mixer-only block is x + mixer(norm(x)); an MLP-only block is x + mlp(norm(x)); both empty is x."""
    torch.manual_seed(0)
    model = build_model(design("MAMBA2:NONE,NONE:SWIGLU,NONE:NONE", 3)).double().eval()
    b0, b1, b2 = model.stacks["layers"].blocks
    assert b0.mlp_norm is None and b0.attn_norm is not None and sum(p.numel() for p in b0.mlp.parameters()) == 0
    assert b1.attn_norm is None and b1.mlp_norm is not None and sum(p.numel() for p in b1.attn.parameters()) == 0
    assert b2.attn_norm is None and b2.mlp_norm is None and sum(p.numel() for p in b2.parameters()) == 0
    x = torch.randn(2, 5, D, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(b0(x)[0], x + b0.attn(b0.attn_norm(x)))
        assert torch.equal(b1(x)[0], x + b1.mlp(b1.mlp_norm(x)))
        assert torch.equal(b2(x)[0], x)


def test_counts_drop_exactly_the_missing_branches():
    full, hybrid = design("MAMBA2:SWIGLU,SDPA:SWIGLU", 2), design("MAMBA2:NONE,NONE:SWIGLU", 2)
    a, h = analyze(full), analyze(hybrid)
    torch.manual_seed(0)
    model, ref = build_model(hybrid, device="meta"), build_model(full, device="meta")
    assert h["params"]["total"] == sum(p.numel() for p in model.parameters())
    blocks = ref.stacks["layers"].blocks
    gone = sum(p.numel() for m in (blocks[0].mlp, blocks[0].mlp_norm, blocks[1].attn, blocks[1].attn_norm)
               for p in m.parameters())
    assert a["params"]["total"] - h["params"]["total"] == gone
    # activations: each missing branch saves neither its norm input (D) nor its own elements
    pa, ph = resolve_plan(full), resolve_plan(hybrid)
    (ea0, _), (ea1, _) = (_layer_activation_elems(pa.design, x, 16, fused_attention=True) for x in pa.layers)
    (eh0, _), (eh1, _) = (_layer_activation_elems(ph.design, x, 16, fused_attention=True) for x in ph.layers)
    swiglu = MLP["swiglu"].activation_elems(pa.design, pa.layers[0].config["mlp"])
    sdpa = ATTENTION["self_sdpa"].activation_elems(pa.design, pa.layers[1].config["attention"], 16, fused=True)[0]
    assert ea0 - eh0 == D + swiglu and ea1 - eh1 == D + sdpa
    assert activations(ph, 16)["total_bytes"] < activations(pa, 16)["total_bytes"]


def test_pre_post_placement_has_no_post_norm_for_an_empty_branch():
    model = build_model(design("MAMBA2:NONE,NONE:SWIGLU", 2, norm_placement="pre_post"), device="meta")
    b0, b1 = model.stacks["layers"].blocks
    assert b0.mlp_post_norm is None and b0.attn_post_norm is not None
    assert b1.attn_post_norm is None and b1.mlp_post_norm is not None


def test_cached_decoding_of_a_nemotron_style_pattern_equals_full_forward():
    torch.manual_seed(0)
    model = build_model(design("MAMBA2:NONE,NONE:SWIGLU,SDPA:NONE,NONE:SWIGLU", 4)).double().eval()
    seq = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(1))
    cache = model.new_cache(2, 9)
    with torch.no_grad():
        full = model(seq).output
        outs = [model.forward_one_step(seq[:, :4], cache, 0)] + [model.forward_one_step(seq[:, i:i + 1], cache, i)
                                                                 for i in range(4, 9)]
    assert not cache.recompute
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-10)


def test_megatron_hybrid_override_pattern():
    """Megatron-LM / Nemotron-H pattern: M Mamba, * attention, - MLP, E MoE, one block per character."""
    import pytest

    from backend.errors import DesignError

    d = design("SDPA", 6)
    del d["layers"]["string"]
    d["layers"]["hybrid_override_pattern"] = "M-M*-E"
    plan = resolve_plan(d)
    assert [(x.attention, x.mlp) for x in plan.layers] == [
        ("mamba2", "none"), ("none", "swiglu"), ("mamba2", "none"), ("self_sdpa", "none"), ("none", "swiglu"),
        ("none", "moe")]
    same = design("MAMBA2:NONE,NONE:SWIGLU,MAMBA2:NONE,SDPA:NONE,NONE:SWIGLU,NONE:MOE", 6)
    assert analyze(d)["params"] == analyze(same)["params"]
    for bad, msg in (("M-M*-X", "character 6 'X'"), ("M-M", "has 3 characters but n_layers is 6")):
        d["layers"]["hybrid_override_pattern"] = bad
        with pytest.raises(DesignError, match=msg):
            resolve_plan(d)
    d["layers"]["string"] = "SDPA"
    with pytest.raises(DesignError, match="mutually exclusive"):
        resolve_plan(d)


def test_a_flow_speed_over_empty_layers_is_refused():
    """Found by the accepted-runs soak (seeds 101, 103, 104, 106, 108): a learned speed over a stack of empty
    layers was accepted and then failed the smoke test's gradient check (the speed scales nothing)."""
    from backend.errors import DesignError
    from backend.plan import resolve_plan

    d = {"vocab_size": 5, "hidden_size": 8, "n_heads": 1,
         "layers": {"n_layers": 2, "attention": "none", "mlp": "none", "flow": {"mode": "learned"}}}
    with pytest.raises(DesignError, match=r"layers\.flow\.mode: 'learned' scales residual branches"):
        resolve_plan(d)
    d["layers"]["rules"] = [{"when": {"layer_idx": [1]}, "mlp": "swiglu"}]  # one real branch: accepted, and it learns
    from backend.analysis import smoke_test

    assert smoke_test(d).passed
