"""Mixture of experts (backend/nn/moe.py): routing, capacity, overflow, aux loss, experts."""
from __future__ import annotations

import math

import pytest
import torch

from backend.nn.common import LayerContext
from backend.nn.mlp import DenseMLP, GatedMLP
from backend.nn.moe import MoE

D = 16


def moe(**params) -> MoE:
    p = {"num_experts": 4, "top_k": 2, "expert": "swiglu", "capacity_factor": 0.0, "overflow": "drop",
         "aux_loss_weight": 1.0, "shared_experts": 0, "hidden": 24, "kind": "moe", **params}
    torch.manual_seed(0)
    return MoE(LayerContext(hidden_size=D, n_heads=2, n_kv_heads=2, head_dim=8, ffn_hidden=32, params=p)).double()


def skewed_input(m: MoE, n: int = 40) -> torch.Tensor:
    """Tokens that mostly prefer expert 0, so capacity binds."""
    torch.manual_seed(1)
    with torch.no_grad():
        m.router.weight[0] += 2.0 * m.router.weight[1:].abs().max()
    return torch.randn(2, n // 2, D, dtype=torch.float64).abs()


def test_parameters_and_expert_kinds():
    m = moe(num_experts=3, shared_experts=1, expert="mlp")
    assert isinstance(m.experts, torch.nn.ModuleList) and len(m.experts) == 3
    assert all(isinstance(e, DenseMLP) for e in m.experts) and len(m.shared) == 1
    assert m.router.bias is None and m.router.weight.shape == (3, D)
    n = sum(p.numel() for p in m.parameters())
    assert n == 3 * D + 4 * (2 * D * 24)  # router + (3 + 1 shared) two-layer experts, no bias
    for kind in ("swiglu", "geglu", "reglu"):
        g = moe(expert=kind)
        assert all(isinstance(e, GatedMLP) and e.kind == kind for e in g.experts)
        assert g.experts[0].w1.weight.shape == (24, D)


def test_top_k_all_experts_without_capacity_is_the_dense_weighted_sum():
    m = moe(num_experts=4, top_k=4)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    h = x.reshape(-1, D)
    w = torch.softmax(m.router(h), dim=-1)  # (N, E)
    ref = sum(w[:, e : e + 1] * m.experts[e](h) for e in range(4)).view_as(x)
    assert torch.allclose(m(x), ref, atol=1e-12)


def test_top_2_reference_loop():
    m = moe(num_experts=5, top_k=2, shared_experts=1)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    h = x.reshape(-1, D)
    logits = m.router(h)
    ref = torch.zeros_like(h)
    for t in range(h.shape[0]):
        vals, idx = logits[t].topk(2)
        w = torch.softmax(vals, -1)
        for j in range(2):
            ref[t] += w[j] * m.experts[int(idx[j])](h[t : t + 1])[0]
        ref[t] += m.shared[0](h[t : t + 1])[0]
    assert torch.allclose(m(x), ref.view_as(x), atol=1e-12)


def test_aux_loss_matches_switch_formula():
    m = moe(num_experts=4, top_k=2, aux_loss_weight=0.5)
    x = torch.randn(3, 7, D, dtype=torch.float64)
    m(x)
    logits = m.router(x.reshape(-1, D))
    n, e = logits.shape
    probs = torch.softmax(logits, -1)
    chosen = logits.topk(2, dim=-1).indices
    f = torch.stack([(chosen == i).sum() for i in range(e)]).double() / (n * 2)
    p = probs.mean(0)
    expected = 0.5 * e * (f * p).sum()
    assert m.aux_loss.dim() == 0
    assert torch.allclose(m.aux_loss, expected, atol=1e-12)
    # uniform router probabilities give exactly 1 (times the weight), whatever the tie-breaking
    with torch.no_grad():
        m.router.weight.zero_()
    m(x)
    assert math.isclose(m.aux_loss.item(), 0.5, rel_tol=1e-12)


def test_aux_loss_gets_gradient_to_router():
    m = moe()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    m(x)
    m.aux_loss.backward()
    assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("overflow", ["drop", "reroute"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_capacity_is_respected(overflow, top_k):
    m = moe(num_experts=4, top_k=top_k, capacity_factor=1.0, overflow=overflow)
    x = skewed_input(m)
    n = x.shape[0] * x.shape[1]
    m(x)
    cap = math.ceil(1.0 * n * top_k / 4)
    assert m.capacity(n) == cap
    assert int(m.last_counts.max()) <= cap
    experts, weights, kept = m.route(m.router(x.reshape(-1, D)))
    for e in range(4):
        assert int(((experts == e) & kept).sum()) <= cap
    # a token never uses the same expert twice
    for t in range(n):
        used = experts[t][kept[t]].tolist()
        assert len(used) == len(set(used))


def test_drop_zeroes_overflowing_tokens_and_reroute_serves_them():
    drop = moe(num_experts=4, top_k=1, capacity_factor=1.0, overflow="drop")
    reroute = moe(num_experts=4, top_k=1, capacity_factor=1.0, overflow="reroute")
    x = skewed_input(drop)
    skewed_input(reroute)
    h = x.reshape(-1, D)
    _, _, kept_d = drop.route(drop.router(h))
    experts_r, _, kept_r = reroute.route(reroute.router(h))
    dropped = ~kept_d[:, 0]
    assert dropped.any(), "the skewed router should overflow expert 0"
    y = drop(x).reshape(-1, D)
    assert torch.all(y[dropped] == 0) and torch.all(y[~dropped].abs().sum(-1) > 0)
    # capacity 1.0 * N * 1 / 4 per expert holds every token exactly: reroute serves all
    assert kept_r.all()
    first = drop.router(h).argmax(-1)
    moved = experts_r[:, 0] != first
    assert torch.equal(moved, dropped)  # exactly the dropped tokens were rerouted
    # rerouted tokens went to their next-best expert that had room (here: their second choice or later)
    order = drop.router(h).argsort(-1, descending=True)
    for t in torch.nonzero(moved).flatten().tolist():
        rank = order[t].tolist().index(int(experts_r[t, 0]))
        assert rank >= 1
    yr = reroute(x).reshape(-1, D)
    assert torch.all(yr.abs().sum(-1) > 0)
    # with k=1 the weight of a sole expert is 1
    assert torch.allclose(yr[moved], torch.stack([reroute.experts[int(experts_r[t, 0])](h[t : t + 1])[0] for t in torch.nonzero(moved).flatten().tolist()]))


def test_first_choices_have_priority_over_second_choices():
    m = moe(num_experts=2, top_k=2, capacity_factor=0.5, overflow="drop")  # cap = ceil(0.5*N*2/2) = N/2
    x = torch.randn(1, 8, D, dtype=torch.float64)
    experts, _, kept = m.route(m.router(x.reshape(-1, D)))
    # every expert is full with cap slots; first-choice slots are placed before any second-choice slot
    for e in range(2):
        first = ((experts[:, 0] == e)).sum()
        placed_first = ((experts[:, 0] == e) & kept[:, 0]).sum()
        assert placed_first == min(int(first), 4)


def test_meta_forward_is_data_free():
    ctx = LayerContext(hidden_size=D, n_heads=2, n_kv_heads=2, head_dim=8, ffn_hidden=32,
                       params={"num_experts": 4, "top_k": 2, "expert": "swiglu"})
    with torch.device("meta"):
        m = MoE(ctx)
        y = m(torch.empty(2, 10, D))
    assert y.shape == (2, 10, D) and y.is_meta and m.aux_loss.shape == ()


def test_many_experts_are_counted_from_two_probes_exactly():
    """A MoE's parameters, FLOPs and saved bytes are affine in num_experts: the analysis measures the layer
    at top_k and top_k + 1 experts and extrapolates. Equal to building every expert, here at 40 experts."""
    from backend.analysis import analyze, parts
    from backend.build import build_model
    from backend.plan import resolve_plan

    d = {"name": "moe40", "vocab_size": 64, "hidden_size": 32, "n_heads": 4, "max_seq_len": 16,
         "layers": {"n_layers": 2, "mlp": "moe", "params": {"mlp": {"num_experts": 40, "top_k": 2, "shared_experts": 1}}}}
    r = analyze(d, seq_len=16, batch=2, dtype="fp32")
    assert r["params"]["total"] == sum(p.numel() for p in build_model(d, device="meta").parameters())
    # the same layer measured directly (no probe): FLOPs and saved bytes
    from backend.analysis.flops import block_flops
    from backend.training.activations import layer_saved

    cfg = parts.config_of(resolve_plan(d))
    mkey, lkey = parts.model_key(cfg), parts.layer_key(cfg["stacks"]["layers"]["layers"][0])
    assert parts.affine_probes(lkey)
    assert parts.per_layer(block_flops, mkey, lkey, True, False, 16) == block_flops(mkey, lkey, True, False, 16)
    import json

    fkey = json.dumps({**cfg["stacks"]["layers"]["flow"], "per_layer": False}, sort_keys=True)
    args = (True, False, fkey, 2, 16, "fp32", False)
    assert parts.per_layer(layer_saved, mkey, lkey, *args) == layer_saved(mkey, lkey, *args)


@pytest.mark.slow
def test_analysis_cost_does_not_grow_with_experts():
    """Distinct layers x 1,024 experts (issue: hardening, finding 1): analysed from two small probes each, so
    neither memory nor time follows the expert count (was 1.1 GB / 25 s for 64 such layers)."""
    import resource
    import time

    from backend.analysis import analyze

    design = {"name": "wide", "vocab_size": 1000, "hidden_size": 64, "n_heads": 4, "max_seq_len": 64,
              "layers": {"n_layers": 8, "mlp": "moe", "params": {"mlp": {"num_experts": 1024, "top_k": 2}},
                         "rules": [{"when": {"layer_idx": [i]}, "params": {"mlp": {"hidden": 64 + i}}} for i in range(8)]}}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    r = analyze(design, seq_len=64)
    assert time.process_time() - t0 < 120  # generous: about 8 s here, the attention traces, not the experts
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 * 1024  # KiB
    per_layer = 64 * 1024 + 1024 * 3 * 64 * (64 + 0)  # router + experts of layer 0 (hidden 64)
    assert r["layers"][0]["params"] > per_layer


# ---------------------------------------------------------------------------
# Routing options against transformers' own routers (the independent reference)


def _hf_router(model_type: str, **kw):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CONFIG_MAPPING[model_type](hidden_size=D, num_attention_heads=2, **kw)
    mod = {"deepseek_v2": "transformers.models.deepseek_v2.modeling_deepseek_v2",
           "deepseek_v3": "transformers.models.deepseek_v3.modeling_deepseek_v3",
           "qwen2_moe": "transformers.models.qwen2_moe.modeling_qwen2_moe"}[model_type]
    import importlib

    module = importlib.import_module(mod)
    cls = {"deepseek_v2": "DeepseekV2TopkRouter", "deepseek_v3": "DeepseekV3TopkRouter",
           "qwen2_moe": "Qwen2MoeTopKRouter"}[model_type]
    return getattr(module, cls)(cfg).double()


def _dense_weights(experts: torch.Tensor, weights: torch.Tensor, e: int) -> torch.Tensor:
    """(N, E) weight of every expert (0 where not selected): independent of the order of the top-k."""
    return torch.zeros(experts.shape[0], e, dtype=weights.dtype).scatter_add(1, experts, weights)


@pytest.mark.parametrize("model_type, ours, theirs", [
    ("qwen2_moe", dict(norm_topk_prob=False), dict(num_experts=8, num_experts_per_tok=3, norm_topk_prob=False)),
    ("qwen2_moe", dict(norm_topk_prob=True), dict(num_experts=8, num_experts_per_tok=3, norm_topk_prob=True)),
    ("deepseek_v2", dict(norm_topk_prob=False, routed_scale=2.5, n_group=4, topk_group=2),
     dict(n_routed_experts=8, num_experts_per_tok=3, routed_scaling_factor=2.5, n_group=4, topk_group=2,
          topk_method="group_limited_greedy")),
    ("deepseek_v2", dict(norm_topk_prob=False, routed_scale=1.5),
     dict(n_routed_experts=8, num_experts_per_tok=3, routed_scaling_factor=1.5, topk_method="greedy")),
    ("deepseek_v3", dict(scoring="sigmoid", score_bias=True, routed_scale=2.5, n_group=4, topk_group=2),
     dict(n_routed_experts=8, num_experts_per_tok=3, routed_scaling_factor=2.5, n_group=4, topk_group=2,
          norm_topk_prob=True)),
    ("deepseek_v3", dict(scoring="sigmoid", score_bias=True, norm_topk_prob=False, n_group=2, topk_group=1),
     dict(n_routed_experts=8, num_experts_per_tok=2, routed_scaling_factor=1.0, n_group=2, topk_group=1,
          norm_topk_prob=False)),
])
def test_routing_options_equal_transformers_routers(model_type, ours, theirs):
    ref = _hf_router(model_type, **theirs)
    m = moe(num_experts=8, top_k=theirs["num_experts_per_tok"], **ours)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(ref.weight.shape, generator=g, dtype=torch.float64))
        m.router.weight.copy_(ref.weight)
        if ours.get("score_bias"):
            ref.e_score_correction_bias.copy_(0.3 * torch.randn(8, generator=g, dtype=torch.float64))
            m.score_bias.copy_(ref.e_score_correction_bias)
    h = torch.randn(40, D, generator=g, dtype=torch.float64)
    _, w_ref, idx_ref = ref(h)
    experts, weights, kept = m.route(m.router(h))
    assert kept.all()
    assert torch.allclose(_dense_weights(experts, weights, 8), _dense_weights(idx_ref, w_ref.to(weights.dtype), 8), atol=1e-12)
    if model_type == "deepseek_v3":  # a buffer, as in Hugging Face: in the state dict, not a parameter
        assert "score_bias" in m.state_dict() and all("score_bias" not in n for n, _ in m.named_parameters())


def test_shared_gate_and_widths():
    m = moe(num_experts=3, shared_experts=2, shared_hidden=10, shared_gate=True, router_bias=True, expert_bias=True)
    assert m.shared[0].w1.weight.shape == (10, D) and m.experts[0].w1.weight.shape == (24, D)
    assert m.router.bias.shape == (3,) and m.experts[0].w2.bias.shape == (D,) and m.shared[1].w1.bias.shape == (10,)
    assert m.shared_gate.weight.shape == (1, D) and m.shared_gate.bias is None
    x = torch.randn(2, 5, D, dtype=torch.float64)
    h = x.reshape(-1, D)
    experts, weights, _ = m.route(m.router(h))
    ref = torch.zeros_like(h)
    for t in range(h.shape[0]):
        for j in range(2):
            ref[t] += weights[t, j] * m.experts[int(experts[t, j])](h[t])
    ref += torch.sigmoid(m.shared_gate(h)) * (m.shared[0](h) + m.shared[1](h))
    assert torch.allclose(m(x), ref.view_as(x), atol=1e-12)


def test_layers_differing_in_width_share_their_probes():
    """Widths and expert counts are declared affine (``MlpKind.affine_probes``): layers that differ only in
    ``hidden`` are measured at the same corners (widths 1 and 2), and the interpolation equals the real model
    (parameters by numel of the meta-built model; FLOPs and saved bytes measured layer by layer directly)."""
    import json

    from backend.analysis import analyze, flops, parts
    from backend.analysis.flops import block_flops
    from backend.build import build_model
    from backend.plan import resolve_plan
    from backend.training.activations import layer_saved

    def design(n, experts):
        return {"name": "widths", "vocab_size": 64, "hidden_size": 32, "n_heads": 4, "max_seq_len": 16,
                "layers": {"n_layers": n, "mlp": "moe", "params": {"mlp": {"num_experts": experts, "top_k": 2}},
                           "explicit": [{"params": {"mlp": {"hidden": 8 + 3 * i}}} for i in range(n)]}}

    small = design(5, 14)
    r = analyze(small, seq_len=16, batch=2, dtype="fp32")
    assert r["params"]["total"] == sum(p.numel() for p in build_model(small, device="meta").parameters())
    cfg = parts.config_of(resolve_plan(small))
    mkey = parts.model_key(cfg)
    fkey = json.dumps({**cfg["stacks"]["layers"]["flow"], "per_layer": False}, sort_keys=True)
    for layer in cfg["stacks"]["layers"]["layers"]:
        lkey = parts.layer_key(layer)
        assert len(parts.affine_probes(lkey)) == 2
        assert parts.per_layer(block_flops, mkey, lkey, True, False, 16) == block_flops(mkey, lkey, True, False, 16)
        args = (True, False, fkey, 2, 16, "fp32", False)
        assert parts.per_layer(layer_saved, mkey, lkey, *args) == layer_saved(mkey, lkey, *args)

    # the hostile shape: 1,024 distinct layers x 1,024 experts -> four measured blocks in all
    parts.block.cache_clear()
    flops.block_flops.cache_clear()
    big = analyze(design(1024, 1024), seq_len=16)
    assert parts.block.cache_info().misses <= 4
    assert len(big["layers"]) == 1024
    h0, h1 = 8, 8 + 3 * 1023  # q/k/v/o 4*32*32, router 32*E, E SwiGLU experts of 3*32*h, two norms of 32
    assert big["layers"][0]["params"] == 4 * 32 * 32 + 32 * 1024 + 1024 * 3 * 32 * h0 + 2 * 32
    assert big["layers"][-1]["params"] == 4 * 32 * 32 + 32 * 1024 + 1024 * 3 * 32 * h1 + 2 * 32
