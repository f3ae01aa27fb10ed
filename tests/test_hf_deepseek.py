"""DeepSeek-V2 / V3 import (backend/hf/deepseek.py) and the MLA kind against transformers' own models.

Configs are written from the public config.json values of each checkpoint (the hub is unreachable), built
with transformers on the meta device and counted; tiny random configs check that our model, loaded with
the HF model's weights through ``map_state_dict``, computes the same logits and caches the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import CONFIG_MAPPING, AutoModelForCausalLM  # noqa: E402

from backend.analysis.flops import flop_stats  # noqa: E402
from backend.analysis.memory import kv_cache  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design, load_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# deepseek-ai/DeepSeek-V2-Lite config.json (transformers-4 names: rope_theta + rope_scaling)
V2_LITE = dict(
    vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408, num_hidden_layers=27,
    num_attention_heads=16, num_key_value_heads=16, n_shared_experts=2, n_routed_experts=64, routed_scaling_factor=1.0,
    kv_lora_rank=512, q_lora_rank=None, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128,
    topk_method="greedy", n_group=1, topk_group=1, num_experts_per_tok=6, first_k_dense_replace=1, norm_topk_prob=False,
    hidden_act="silu", max_position_embeddings=163840, rms_norm_eps=1e-6, rope_theta=10000.0,
    rope_scaling={"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                  "original_max_position_embeddings": 4096, "type": "yarn"},
    tie_word_embeddings=False, attention_bias=False)
# deepseek-ai/DeepSeek-V3 config.json (less quantization_config)
V3 = dict(
    vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
    num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1, n_routed_experts=256, routed_scaling_factor=2.5,
    kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8,
    topk_group=4, num_experts_per_tok=8, first_k_dense_replace=3, norm_topk_prob=True, hidden_act="silu",
    max_position_embeddings=163840, rms_norm_eps=1e-6, rope_theta=10000.0,
    rope_scaling={"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                  "original_max_position_embeddings": 4096, "type": "yarn"},
    tie_word_embeddings=False, attention_bias=False, num_nextn_predict_layers=1)
# The hub files' remote-code keys transformers does not read (accepted at these values)
HUB_EXTRA = {"deepseek_v2": dict(moe_layer_freq=1, scoring_func="softmax", aux_loss_alpha=0.001, seq_aux=True),
             "deepseek_v3": dict(moe_layer_freq=1, scoring_func="sigmoid", topk_method="noaux_tc", aux_loss_alpha=0.001,
                                 seq_aux=True, ep_size=1)}


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def hf_params(model_type: str, kw: dict) -> int:
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(hf_config(model_type, **kw))
    return sum(p.numel() for p in hf.parameters())


def test_deepseek_v2_lite_count_equals_transformers_and_published():
    published = 15_706_484_224  # DeepSeek-V2-Lite model card: 15.7B total
    assert hf_params("deepseek_v2", V2_LITE) == published
    file = {**as_file_dict(hf_config("deepseek_v2", **V2_LITE)), **HUB_EXTRA["deepseek_v2"]}
    plan = resolve_plan(load_design(import_hf(file)))
    assert param_stats(plan)["total"] == published
    # the latent cache: kv_lora_rank + qk_rope_head_dim values per token per layer (bf16)
    assert kv_cache(plan, "bf16")["bytes_per_token"] == 27 * (512 + 64) * 2
    # the preset is the same model
    assert param_stats(resolve_plan(load_preset("deepseek_v2_lite")))["total"] == published


@pytest.mark.slow
def test_deepseek_v3_count_equals_transformers():
    """671,026,404,352 = the published 671B of the main model; the published 685B adds the 14B multi-token-
    prediction module, which transformers' DeepseekV3ForCausalLM does not build (nor does the import)."""
    n = hf_params("deepseek_v3", V3)
    assert n == 671_026_404_352
    file = {**as_file_dict(hf_config("deepseek_v3", **V3)), **HUB_EXTRA["deepseek_v3"]}
    plan = resolve_plan(load_design(import_hf(file)))
    assert param_stats(plan)["total"] == n
    assert kv_cache(plan, "bf16")["bytes_per_token"] == 61 * (512 + 64) * 2


def test_transformers_4_and_5_files_import_the_same_design():
    v5 = as_file_dict(hf_config("deepseek_v2", **V2_LITE))
    assert v5["rope_parameters"]["rope_type"] == "yarn"
    v4 = {k: v for k, v in v5.items() if k not in ("rope_parameters", "dtype")}
    v4.update(rope_theta=10000.0, rope_scaling=V2_LITE["rope_scaling"], torch_dtype="bfloat16")
    assert import_hf(v4) == import_hf(v5)


@pytest.mark.parametrize("model_type, kw", [("deepseek_v2", V2_LITE), ("deepseek_v3", V3)], ids=["v2_lite", "v3"])
def test_forward_flops_equal_flop_counter_on_transformers_model(model_type, kw):
    """Dense layers only (MoE routing is data-dependent: transformers' experts cannot run on meta), 2 layers."""
    kw = dict(kw, num_hidden_layers=2, first_k_dense_replace=2)
    cfg = hf_config(model_type, **kw)
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    s = 64
    with FlopCounterMode(display=False) as counter:
        hf(torch.zeros(1, s, dtype=torch.long, device="meta"))
    theirs = counter.get_total_flops()
    ours = flop_stats(resolve_plan(load_design(import_hf(as_file_dict(cfg)))), s, 1)["forward"]
    assert ours == pytest.approx(theirs, rel=0.005), (ours, theirs)


# ---------------------------------------------------------------------------
# Tiny random configs: logits and cache bytes against transformers' model

TINY = dict(vocab_size=61, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4,
            v_head_dim=6, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1,
            max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1,
        "mscale": 1.0, "mscale_all_dim": 0.707}
LOGIT_CASES = {
    "v2_plain_q": ("deepseek_v2", dict(TINY, q_lora_rank=None, routed_scaling_factor=1.5)),
    "v2_lora_q_yarn_groups": ("deepseek_v2", dict(TINY, q_lora_rank=10, rope_scaling=YARN, topk_method="group_limited_greedy",
                                                  n_group=4, topk_group=2)),
    "v2_dense_only": ("deepseek_v2", dict(TINY, q_lora_rank=None, first_k_dense_replace=3, tie_word_embeddings=True)),
    "v3_yarn": ("deepseek_v3", dict(TINY, q_lora_rank=10, n_group=4, topk_group=2, routed_scaling_factor=2.5,
                                    norm_topk_prob=True, rope_scaling=YARN)),
    "v3_half_split_rope": ("deepseek_v3", dict(TINY, q_lora_rank=None, n_group=2, topk_group=1, norm_topk_prob=False,
                                               rope_interleave=False)),
}


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_logits_and_latent_cache_equal_transformers(case):
    model_type, kw = LOGIT_CASES[case]
    torch.manual_seed(0)
    cfg = hf_config(model_type, **kw)
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights well away from the init (norm gains, the score bias too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
        for name, b in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn_like(b) * 0.5)
    design = import_hf(as_file_dict(cfg))
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict(model_type, hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 11))
    with torch.no_grad():
        out = hf(tokens, use_cache=True)
        got = model(tokens).output
    assert (got - out.logits).abs().max().item() < 1e-4, (got - out.logits).abs().max().item()
    # transformers' cache holds the same latent: kv_lora_rank + qk_rope_head_dim values per token per layer
    held = sum(t.numel() * t.element_size() for layer in out.past_key_values.layers for t in (layer.keys, layer.values))
    per_token = kv_cache(resolve_plan(load_design(design)), "fp32")["bytes_per_token"]
    assert per_token == held // (2 * 11) == kw["num_hidden_layers"] * (12 + 4) * 4
    # our cached (absorbed) decoding gives the same logits as transformers' full forward
    cache = model.new_cache(2, 11)
    with torch.no_grad():
        steps = [model.forward_one_step(tokens[:, :4], cache, 0)]
        steps += [model.forward_one_step(tokens[:, i:i + 1], cache, i) for i in range(4, 11)]
    assert (torch.cat(steps, dim=1) - out.logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("field, value, match", [
    ("moe_layer_freq", 2, "moe_layer_freq"),
    ("scoring_func", "sigmoid", "scoring_func"),
    ("topk_method", "noaux_tc", "topk_method"),
    ("num_key_value_heads", 8, "num_key_value_heads"),
    ("attention_bias", True, "attention_bias"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_type"),
    ("rope_scaling", {"type": "yarn", "factor": 4.0, "truncate": False}, "truncate"),
    ("some_new_feature", 1, "some_new_feature"),
])
def test_unmappable_fields_are_errors_naming_the_field(field, value, match):
    d = {k: v for k, v in as_file_dict(hf_config("deepseek_v2", **V2_LITE)).items() if k != "rope_parameters"}
    d.update(rope_theta=10000.0, rope_scaling=V2_LITE["rope_scaling"])
    d[field] = value
    with pytest.raises(DesignError, match=match):
        load_design(import_hf(d))


def test_unknown_weight_names_are_errors():
    with pytest.raises(DesignError, match="model.layers.0.self_attn.rotary"):
        map_state_dict("deepseek_v2", {"model.layers.0.self_attn.rotary.weight": torch.zeros(2)})


def test_hub_per_expert_weight_names_map_the_same():
    """The hub's remote-code checkpoints keep experts apart (``mlp.experts.{e}.gate_proj`` ...); transformers 5
    fuses them (``gate_up_proj`` (E, 2F, D), ``down_proj`` (E, D, F)): both map to the same state dict."""
    torch.manual_seed(0)
    model_type, kw = LOGIT_CASES["v3_yarn"]
    fused = AutoModelForCausalLM.from_config(hf_config(model_type, **kw)).state_dict()
    apart = {}
    for name, t in fused.items():
        pre, _, rest = name.partition(".mlp.experts.")
        if rest == "gate_up_proj":
            for e in range(t.shape[0]):
                apart[f"{pre}.mlp.experts.{e}.gate_proj.weight"], apart[f"{pre}.mlp.experts.{e}.up_proj.weight"] = t[e].chunk(2)
        elif rest == "down_proj":
            for e in range(t.shape[0]):
                apart[f"{pre}.mlp.experts.{e}.down_proj.weight"] = t[e]
        else:
            apart[name] = t
    a, b = map_state_dict("deepseek_v3", fused), map_state_dict("deepseek_v3", apart)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_imports_a_deepseek_config(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**as_file_dict(hf_config("deepseek_v2", **V2_LITE)), **HUB_EXTRA["deepseek_v2"]}))
    run = lambda *a: subprocess.run([sys.executable, "-m", "backend", *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    r = run("analyze", str(path), "--seq-len", "128", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"]["total"] == 15_706_484_224 and out["memory"]["kv_cache_bytes_per_token"] == 27 * 576 * 2
    path.write_text(json.dumps({**json.loads(path.read_text()), "moe_layer_freq": 2}))
    r = run("import-hf", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "moe_layer_freq" in r.stderr, r.stderr
