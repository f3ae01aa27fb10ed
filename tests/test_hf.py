"""Hugging Face import (backend/hf.py) against transformers' own models (the independent reference).

Configs are written from public values (the hub is unreachable): each is built with
transformers on the meta device and counted; tiny random configs check that our model,
loaded with the HF model's weights through ``map_state_dict``, computes the same logits.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import CONFIG_MAPPING, AutoModelForCausalLM  # noqa: E402

from backend.analysis.memory import kv_cache  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, import_hf_notes, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Public config values (model cards / config.json of each checkpoint), with the published size.
REAL = {
    "Llama-3-8B": ("llama", 8_030_261_248, dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
        tie_word_embeddings=False)),
    "Mistral-7B-v0.1": ("mistral", 7_241_732_096, dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=10000.0,
        sliding_window=4096, tie_word_embeddings=False)),
    "Qwen2.5-7B": ("qwen2", 7_615_616_512, dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
        sliding_window=131072, use_sliding_window=False, max_window_layers=28, tie_word_embeddings=False)),
    "Qwen3-8B": ("qwen3", 8_190_735_360, dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
        attention_bias=False, tie_word_embeddings=False)),
    "Mixtral-8x7B": ("mixtral", 46_702_792_704, dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1000000.0,
        num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False)),
    "GPT-2": ("gpt2", 124_439_808, dict(
        vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024, n_inner=None,
        activation_function="gelu_new", layer_norm_epsilon=1e-5)),
    "Gemma-2-2B": ("gemma2", 2_614_341_888, dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0,
        sliding_window=4096, query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        hidden_activation="gelu_pytorch_tanh")),
}


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def as_file_dict(cfg) -> dict:
    """The config as its config.json would hold it (transformers-5 field names)."""
    return json.loads(cfg.to_json_string())


def ours(design: dict):
    return resolve_plan(load_design(design))


@pytest.mark.parametrize("label", list(REAL))
def test_counts_equal_transformers_own_model(label):
    model_type, published, kw = REAL[label]
    cfg = hf_config(model_type, **kw)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    hf_params = sum(p.numel() for p in hf.parameters())
    assert hf_params == published
    plan = ours(import_hf(as_file_dict(cfg)))
    assert param_stats(plan)["total"] == hf_params
    # KV cache: K and V of kv_heads x head_dim per layer per token (bf16), whatever the window
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    expect = 2 * cfg.num_hidden_layers * kv_heads * head_dim * 2
    assert kv_cache(plan, "bf16")["bytes_per_token"] == expect
    if model_type == "mixtral":
        return  # routed experts: HF's trace on meta is not meaningful (test_mixtral_flops_on_a_tiny_config)
    assert forward_flops_ratio(cfg, plan) == pytest.approx(1.0, abs=0.005)


def forward_flops_ratio(cfg, plan, s: int = 32, device: str = "meta") -> float:
    """Our forward FLOPs over FlopCounterMode's on transformers' eager model, batch 1, s tokens."""
    from torch.utils.flop_counter import FlopCounterMode

    from backend.analysis.flops import flop_stats

    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"  # the per-expert loop (FlopCounterMode does not count grouped_mm)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        hf(input_ids=torch.zeros(1, s, dtype=torch.long, device=device))
    return flop_stats(plan, s, 1)["forward"] / counter.get_total_flops()


def test_mixtral_flops_on_a_tiny_config():
    """Every token runs top_k experts whatever the routing, so real (random) routing on CPU gives the
    data-free count exactly (the convention of tests/test_hf_moe.py)."""
    cfg = hf_config("mixtral", **{**LOGIT_CASES["mixtral"], "vocab_size": 61})
    torch.manual_seed(0)
    assert forward_flops_ratio(cfg, ours(import_hf(as_file_dict(cfg))), s=16, device="cpu") == pytest.approx(1.0, abs=1e-9)


def test_transformers_4_field_names_import_the_same_design():
    v5 = as_file_dict(hf_config("llama", **REAL["Llama-3-8B"][2]))
    v4 = {k: v for k, v in v5.items() if k not in ("rope_parameters", "dtype")}
    v4.update(rope_theta=500000.0, rope_scaling=None, torch_dtype="bfloat16", transformers_version="4.40.0")
    assert import_hf(v4) == import_hf(v5)
    assert import_hf(v5)["rope_theta"] == 500000.0


def test_gemma2_v4_alternation_matches_layer_types():
    v5 = as_file_dict(hf_config("gemma2", **REAL["Gemma-2-2B"][2]))
    assert v5["layer_types"][:2] == ["sliding_attention", "full_attention"]
    v4 = {k: v for k, v in v5.items() if k != "layer_types"}
    assert import_hf(v4) == import_hf(v5)
    windows = {r["params"]["attention"]["window"]: r["when"]["layer_idx"] for r in import_hf(v5)["layers"]["rules"]}
    assert windows == {4096: list(range(0, 26, 2))}
    design, notes = import_hf_notes(v5)  # embedding scale, logit soft-cap and tanh GeGLU are all modelled
    assert notes == [] and import_hf(v5, exact=True) == design
    assert design["embed_scale"] and design["logit_softcap"] == 30.0
    assert design["layers"]["params"]["mlp"] == {"gelu_approximate": "tanh"}


@pytest.mark.parametrize("field, value, match", [
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}, "rope_type"),
    ("attention_bias", True, "attention_bias"),
    ("mlp_bias", True, "mlp_bias"),
    ("num_key_value_heads", "8", "num_key_value_heads"),
    ("some_new_feature", 3, "some_new_feature"),
    ("hidden_act", "tanh", "hidden_act"),
    ("is_encoder_decoder", True, "is_encoder_decoder"),
])
def test_unmappable_fields_are_errors_naming_the_field(field, value, match):
    d = as_file_dict(hf_config("llama", **REAL["Llama-3-8B"][2]))
    d[field] = value
    with pytest.raises(DesignError, match=match):
        load_design(import_hf(d))


def test_app_text_path_takes_a_config_json():
    """The app parses uploads with parse_design_text: a config.json is recognised there too."""
    from backend.spec import parse_design_text

    text = json.dumps(as_file_dict(hf_config("mistral", **REAL["Mistral-7B-v0.1"][2])))
    design = parse_design_text(text, "yaml", source="upload")
    assert param_stats(resolve_plan(design))["total"] == REAL["Mistral-7B-v0.1"][1]
    with pytest.raises(DesignError, match="max_seq_len"):  # too long for a design: an error, not clamped
        parse_design_text(json.dumps({**json.loads(text), "max_position_embeddings": 1 << 24}), "yaml")


def test_inert_fields_change_nothing():
    d = as_file_dict(hf_config("llama", **REAL["Llama-3-8B"][2]))
    other = {**d, "bos_token_id": 7, "attention_dropout": 0.3, "initializer_range": 0.5, "use_cache": False}
    assert import_hf(other) == import_hf(d)


def test_cli_import_hf_and_config_as_design(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(as_file_dict(hf_config("qwen3", **REAL["Qwen3-8B"][2]))))
    out = tmp_path / "qwen3.yaml"
    run = lambda *a: subprocess.run([sys.executable, "-m", "backend", *a], cwd=ROOT, capture_output=True, text=True)
    r = run("import-hf", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert param_stats(resolve_plan(load_design(out)))["total"] == REAL["Qwen3-8B"][1]
    r = run("validate", str(path))  # a config.json wherever a DESIGN is taken
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
                               "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 16, "max_position_embeddings": 32}))
    for args in (("import-hf", str(bad)), ("analyze", str(bad)), ("import-hf", str(tmp_path / "missing.json"))):
        r = run(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "rope_scaling" in run("import-hf", str(bad)).stderr


# ---------------------------------------------------------------------------
# Logits: our model with the HF model's (random) weights


TINY = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=False)
LOGIT_CASES = {
    "llama": dict(TINY),
    "mistral": dict(TINY, sliding_window=3),  # window shorter than the sequence: HF's window meaning
    "qwen2": dict(TINY, tie_word_embeddings=True),  # q/k/v biases, tied head
    "qwen3": dict(TINY, head_dim=16),  # QK-norm, head_dim != hidden / heads
    "mixtral": dict(TINY, num_local_experts=4, num_experts_per_tok=2),
    "gpt2": dict(vocab_size=61, n_embd=32, n_layer=2, n_head=4, n_positions=64, activation_function="gelu",
                 bos_token_id=0, eos_token_id=0),
    "gpt2-gelu_new": dict(vocab_size=61, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                          activation_function="gelu_new", bos_token_id=0, eos_token_id=0),  # GPT-2's own tanh GELU
    # sandwich norms with 1 + w gains, sqrt(D) embedding scale, attention and final-logit soft-caps (small, so
    # they bite), tanh GeGLU, sliding layers shorter than the sequence, head_dim != hidden / heads
    "gemma2": dict(TINY, head_dim=16, sliding_window=3, query_pre_attn_scalar=16, attn_logit_softcapping=2.0,
                   final_logit_softcapping=3.0, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
}


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_logits_equal_with_hf_weights(case):
    model_type = case.split("-")[0]
    torch.manual_seed(0)
    cfg = hf_config(model_type, **LOGIT_CASES[case])
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights well away from the init (norm gains, biases too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    design = import_hf(as_file_dict(cfg))
    model = build_model(design, device="cpu").eval()
    state = map_state_dict(model_type, hf.state_dict())
    model.load_state_dict(state, strict=True)
    tokens = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = model(tokens).output
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4, (got - ref).abs().max().item()
    # KV cache bytes per token: HF's own cache after the forward, against our prediction (fp32)
    if model_type not in ("mistral", "gemma2"):  # a sliding cache keeps only the window
        with torch.no_grad():
            cache = hf(tokens, use_cache=True).past_key_values
        held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        assert kv_cache(resolve_plan(load_design(design)), "fp32")["bytes_per_token"] == held // (2 * 9)


def test_mixtral_transformers_4_weight_names_map_the_same():
    """transformers 4 kept Mixtral's experts apart, under ``block_sparse_moe`` (w1 gate, w3 up, w2 down)."""
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config("mixtral", **LOGIT_CASES["mixtral"]))
    v5 = hf.state_dict()
    v4 = {}
    for name, t in v5.items():
        pre, _, rest = name.partition(".mlp.")
        if not rest:
            v4[name] = t
        elif rest == "gate.weight":
            v4[f"{pre}.block_sparse_moe.gate.weight"] = t
        elif rest == "experts.gate_up_proj":
            for e in range(t.shape[0]):
                gate, up = t[e].chunk(2, dim=0)
                v4[f"{pre}.block_sparse_moe.experts.{e}.w1.weight"], v4[f"{pre}.block_sparse_moe.experts.{e}.w3.weight"] = gate, up
        else:
            for e in range(t.shape[0]):
                v4[f"{pre}.block_sparse_moe.experts.{e}.w2.weight"] = t[e]
    a, b = map_state_dict("mixtral", v5), map_state_dict("mixtral", v4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_weight_names_are_errors():
    with pytest.raises(DesignError, match="model.layers.0.self_attn.rotary"):
        map_state_dict("llama", {"model.layers.0.self_attn.rotary.weight": torch.zeros(2)})


def test_preset_qwen3_8b_count():
    """presets/qwen3_8b.yaml (written from the import of the public config) = the published count = transformers'."""
    assert param_stats(resolve_plan(load_design("qwen3_8b")))["total"] == REAL["Qwen3-8B"][1]
