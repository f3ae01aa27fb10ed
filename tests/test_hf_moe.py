"""Hugging Face import of the MoE families (backend/hf/qwen_moe.py, backend/hf/gpt_oss.py) against transformers.

As tests/test_hf.py: public config values built with transformers on the meta device (exact parameter
counts, forward FLOPs with FlopCounterMode, KV bytes per token), and tiny random configs whose weights,
mapped with ``map_state_dict``, give our model the same logits in float32.

MoE FLOPs depend on the routing. Ours are data-free (every token runs ``top_k`` routed experts: the
module deals the N * top_k slots evenly on meta); transformers' experts loop over the experts a real
router picks, so on meta (no data) its trace is not meaningful. Its count is measured here on real
(random) weights on CPU for a tiny config with the same convention's total: every token runs exactly
``top_k`` experts whatever the routing, so the expert FLOPs are routing-independent and the two
counts must agree exactly.
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import CONFIG_MAPPING, AutoModelForCausalLM  # noqa: E402

from backend.analysis.flops import flop_stats  # noqa: E402
from backend.analysis.memory import kv_cache  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design  # noqa: E402

# Public config values (each checkpoint's config.json), with the published / HF-reported size.
REAL = {
    "Qwen1.5-MoE-A2.7B": ("qwen2_moe", 14_315_784_192, dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=16, max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=1000000.0,
        moe_intermediate_size=1408, shared_expert_intermediate_size=5632, num_experts_per_tok=4, num_experts=60,
        norm_topk_prob=False, decoder_sparse_step=1, tie_word_embeddings=False)),
    "gpt-oss-20b": ("gpt_oss", 20_914_757_184, dict(
        num_hidden_layers=24, num_local_experts=32, num_experts_per_tok=4, vocab_size=201088, hidden_size=2880,
        intermediate_size=2880, head_dim=64, num_attention_heads=64, num_key_value_heads=8, sliding_window=128,
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False, swiglu_limit=7.0,
        attention_bias=True, rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                              "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                                              "original_max_position_embeddings": 4096})),
    "Qwen3-30B-A3B": ("qwen3_moe", 30_532_122_624, dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=48, num_attention_heads=32,
        num_key_value_heads=4, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
        moe_intermediate_size=768, num_experts_per_tok=8, num_experts=128, norm_topk_prob=True,
        decoder_sparse_step=1, tie_word_embeddings=False)),
}


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def plan_of(design: dict):
    return resolve_plan(load_design(design))


@pytest.mark.parametrize("label", list(REAL))
def test_counts_equal_transformers_own_model(label):
    model_type, published, kw = REAL[label]
    cfg = hf_config(model_type, **kw)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in hf.parameters()) == published
    plan = plan_of(import_hf(as_file_dict(cfg)))
    assert param_stats(plan)["total"] == published
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert kv_cache(plan, "bf16")["bytes_per_token"] == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 2
    # at full size: the traced count (meta, data-free routing) == the kinds' closed forms
    from backend.analysis import closed_form as cf

    assert flop_stats(plan, 256)["forward"] == cf.model_flops(plan, 1, 256)["forward"]


def test_transformers_4_qwen3_moe_file_names_num_experts():
    """transformers 5 writes Qwen3-MoE's ``num_experts`` as ``num_local_experts`` (its attribute map); hub files
    (transformers 4) say ``num_experts``: both import the same design."""
    v5 = as_file_dict(hf_config("qwen3_moe", **REAL["Qwen3-30B-A3B"][2]))
    v4 = {k: v for k, v in v5.items() if k not in ("num_local_experts", "rope_parameters")}
    v4.update(num_experts=128, rope_theta=1000000.0)
    assert import_hf(v4) == import_hf(v5)
    with pytest.raises(DesignError, match="num_local_experts"):
        import_hf({**v5, "num_experts": 64})


# ---------------------------------------------------------------------------
# Tiny random configs: logits, FLOPs, KV cache

TINY = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=False)
LOGIT_CASES = {
    # Qwen2-MoE: shared expert of its own width behind a sigmoid gate; raw top-k probabilities; layer 1 dense
    "qwen2_moe": dict(TINY, moe_intermediate_size=20, shared_expert_intermediate_size=36, num_experts=6,
                      num_experts_per_tok=2, norm_topk_prob=False, mlp_only_layers=[1]),
    "qwen2_moe-renorm": dict(TINY, moe_intermediate_size=20, shared_expert_intermediate_size=36, num_experts=6,
                             num_experts_per_tok=3, norm_topk_prob=True, decoder_sparse_step=2),
    "qwen3_moe": dict(TINY, head_dim=16, moe_intermediate_size=20, num_experts=6, num_experts_per_tok=2,
                      norm_topk_prob=True),
    # gpt-oss: sinks, q/k/v/o biases, window 3 on the even layers, biased router and experts, a clamp that binds
    "gpt_oss": dict(vocab_size=61, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-6,
                    num_local_experts=4, num_experts_per_tok=2, sliding_window=3, swiglu_limit=1.5,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False),
}
# YaRN as in gpt-oss's files (truncate false), over a short "original" context so the ramp covers dims
LOGIT_CASES["gpt_oss-yarn"] = dict(LOGIT_CASES["gpt_oss"], rope_parameters={
    "rope_type": "yarn", "rope_theta": 1000.0, "factor": 8.0, "beta_fast": 8.0, "beta_slow": 1.0, "truncate": False,
    "original_max_position_embeddings": 16})
LOGIT_CASES["gpt_oss-yarn-truncated"] = dict(LOGIT_CASES["gpt_oss"], rope_parameters={
    "rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0, "original_max_position_embeddings": 8})


def _hf_tiny(case: str):
    model_type = case.split("-")[0]
    torch.manual_seed(0)
    cfg = hf_config(model_type, **LOGIT_CASES[case])
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"  # the per-expert loop (FlopCounterMode does not count grouped_mm)
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights away from the init (gains, biases, sinks too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return model_type, cfg, hf


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_logits_equal_with_hf_weights(case):
    model_type, cfg, hf = _hf_tiny(case)
    design = import_hf(as_file_dict(cfg))
    assert ("rope_scaling" in design) == ("yarn" in case)
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict(model_type, hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = model(tokens).output
        cache = hf(tokens, use_cache=True).past_key_values
    assert (got - ref).abs().max().item() < 1e-4, (got - ref).abs().max().item()
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (getattr(cfg, "head_dim", None) or 8) * 4
    assert kv_cache(plan_of(design), "fp32")["bytes_per_token"] == per_token
    if model_type == "gpt_oss":
        return  # Hugging Face's sliding layers keep only the window in their cache
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert kv_cache(plan_of(design), "fp32")["bytes_per_token"] == held // (2 * 9)


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_forward_flops_equal_transformers_trace(case):
    """FlopCounterMode on transformers' model with real weights (eager attention) == our analysis: every token
    runs top_k experts in both, so the count is routing-independent (module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    model_type, cfg, hf = _hf_tiny(case)
    s = 16
    tokens = torch.randint(0, 61, (1, s), generator=torch.Generator().manual_seed(2))
    with FlopCounterMode(display=False) as mode, torch.no_grad():
        hf(tokens)
    ours, theirs = flop_stats(plan_of(import_hf(as_file_dict(cfg))), s, 1)["forward"], mode.get_total_flops()
    # attention sinks run as one extra zero key (backend/nn/attention.py): 4 H Dh FLOPs per query and layer
    # that Hugging Face's eager path (the sink concatenated after Q K^T) does not spend
    sinks = 4 * cfg.num_attention_heads * cfg.head_dim * s * cfg.num_hidden_layers if model_type == "gpt_oss" else 0
    assert ours - sinks == theirs


def test_qwen2_moe_transformers_4_weight_names_map_the_same():
    """transformers 4 kept every expert apart (``experts.{e}.gate_proj/up_proj/down_proj``)."""
    _, _, hf = _hf_tiny("qwen2_moe")
    v5 = hf.state_dict()
    v4 = {}
    for name, t in v5.items():
        pre, _, rest = name.partition(".mlp.experts.")
        if not rest:
            v4[name] = t
        elif rest == "gate_up_proj":
            for e in range(t.shape[0]):
                v4[f"{pre}.mlp.experts.{e}.gate_proj.weight"], v4[f"{pre}.mlp.experts.{e}.up_proj.weight"] = t[e].chunk(2)
        else:
            for e in range(t.shape[0]):
                v4[f"{pre}.mlp.experts.{e}.down_proj.weight"] = t[e]
    a, b = map_state_dict("qwen2_moe", v5), map_state_dict("qwen2_moe", v4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("field, value", [
    ("mlp_only_layers", [99]), ("norm_topk_prob", "yes"), ("qkv_bias", 1), ("some_new_feature", 1),
])
def test_unmappable_qwen_moe_fields_are_errors(field, value):
    d = as_file_dict(hf_config("qwen2_moe", **REAL["Qwen1.5-MoE-A2.7B"][2]))
    d[field] = value
    with pytest.raises(DesignError, match=field):
        load_design(import_hf(d))


def test_gpt_oss_windows_yarn_and_transformers_4_file():
    v5 = as_file_dict(hf_config("gpt_oss", **REAL["gpt-oss-20b"][2]))
    d = import_hf(v5)
    assert d["layers"]["rules"] == [{"when": {"layer_idx": list(range(0, 24, 2))}, "params": {"attention": {"window": 128}}}]
    assert d["rope_theta"] == 150000.0 and d["rope_scaling"] == {
        "type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
        "truncate": False, "attention_factor": None}
    yarn = {k: v for k, v in v5["rope_parameters"].items() if k != "rope_theta"}
    v4 = {k: v for k, v in v5.items() if k not in ("rope_parameters", "layer_types", "dtype")}
    v4.update(rope_theta=150000.0, rope_scaling=yarn, torch_dtype="bfloat16")
    assert import_hf(v4) == d
    with pytest.raises(DesignError, match="mscale"):
        import_hf({**v5, "rope_parameters": {**v5["rope_parameters"], "mscale": 1.0}})
    with pytest.raises(DesignError, match="rope_scaling"):  # YaRN needs rotary positions
        load_design({**d, "positional": "learned"})


def test_gpt_oss_20b_preset_has_the_published_count_and_the_imported_numbers():
    from backend.analysis import analyze
    from backend.spec import load_preset

    preset = analyze(load_preset("gpt_oss_20b"), seq_len=4096)
    imported = analyze(import_hf(as_file_dict(hf_config("gpt_oss", **REAL["gpt-oss-20b"][2]))), seq_len=4096)
    assert preset["params"]["total"] == REAL["gpt-oss-20b"][1]
    for key in ("params", "flops"):
        assert preset[key] == imported[key]
    assert preset["memory"]["kv_cache_bytes_per_token"] == imported["memory"]["kv_cache_bytes_per_token"] == 24 * 2 * 8 * 64 * 2


def test_standalone_export_of_an_imported_gpt_oss_reproduces_hf_logits(tmp_path):
    """The standalone file (torch + stdlib only) carries YaRN, sinks and the clamped experts too."""
    import runpy

    from backend.export import export_text

    model_type, cfg, hf = _hf_tiny("gpt_oss-yarn")
    design = import_hf(as_file_dict(cfg))
    path = tmp_path / "gpt_oss.py"
    path.write_text(export_text(design, "python"), encoding="utf-8")
    exported = runpy.run_path(str(path), run_name="exported")["build_model"](device="cpu").float().eval()
    exported.load_state_dict(map_state_dict(model_type, hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (exported(tokens).output - hf(tokens).logits).abs().max().item() < 1e-4


def test_qwen2_moe_transformers_4_file_and_its_sliding_rule():
    v5 = as_file_dict(hf_config("qwen2_moe", **REAL["Qwen1.5-MoE-A2.7B"][2]))
    v4 = {k: v for k, v in v5.items() if k not in ("rope_parameters", "layer_types", "dtype", "qkv_bias")}
    v4.update(rope_theta=1000000.0, torch_dtype="bfloat16")
    assert import_hf(v4) == import_hf(v5)
    # transformers 4 with use_sliding_window: Qwen2MoeConfig slides the even layers below max_window_layers
    slid = import_hf({**v4, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 6})
    assert slid["layers"]["rules"][0] == {"when": {"layer_idx": [0, 2, 4]}, "params": {"attention": {"window": 4096}}}
