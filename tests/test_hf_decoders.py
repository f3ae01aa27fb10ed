"""olmo2 / gpt_neox / gemma / phi3 / gemma3_text import (backend/hf/decoders.py) against transformers' own models.

Public config values (model cards / config.json; the hub is unreachable) are built with transformers on the
meta device: parameter counts equal exactly, forward FLOPs (FlopCounterMode, eager attention) within 0.5%;
tiny random configs load HF's weights through ``map_state_dict`` strictly and give the same float32 logits.
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
from backend.hf import import_hf, import_hf_notes, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design  # noqa: E402

REAL = {
    "OLMo-2-7B": ("olmo2", dict(
        vocab_size=100352, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=11008, rope_theta=500000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
        tie_word_embeddings=False)),
    "Pythia-1.4B": ("gpt_neox", dict(
        vocab_size=50304, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192,
        max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
        layer_norm_eps=1e-5, hidden_act="gelu", tie_word_embeddings=False)),
    "Gemma-2B": ("gemma", dict(
        vocab_size=256000, hidden_size=2048, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
        head_dim=256, intermediate_size=16384, max_position_embeddings=8192, rms_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh")),
    "Phi-3-mini-4k": ("phi3", dict(
        vocab_size=32064, hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=8192, max_position_embeddings=4096, original_max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=2047, tie_word_embeddings=False)),
    "Gemma-3-1B": ("gemma3_text", dict(
        vocab_size=262144, hidden_size=1152, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, intermediate_size=6912, max_position_embeddings=32768, rms_norm_eps=1e-6,
        query_pre_attn_scalar=256, sliding_window=512, rope_theta=1000000.0, rope_local_base_freq=10000.0,
        final_logit_softcapping=None, attn_logit_softcapping=None)),
    "Falcon-7B": ("falcon", dict(
        vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71, multi_query=True,
        parallel_attn=True, bias=False, alibi=False, new_decoder_architecture=False, layer_norm_epsilon=1e-5,
        max_position_embeddings=2048, rope_theta=10000.0)),
    "Falcon-40B": ("falcon", dict(
        vocab_size=65024, hidden_size=8192, num_hidden_layers=60, num_attention_heads=128, num_kv_heads=8,
        new_decoder_architecture=True, parallel_attn=True, bias=False, alibi=False, layer_norm_epsilon=1e-5,
        max_position_embeddings=2048, rope_theta=10000.0)),
}
PUBLISHED = {"Pythia-1.4B": 1_414_647_808, "Gemma-2B": 2_506_172_416, "Phi-3-mini-4k": 3_821_079_552,
             "Gemma-3-1B": 999_885_952, "Falcon-7B": 6_921_720_704}


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def causal_lm(cfg):
    """transformers' causal LM for ``cfg``. Gemma 3's module cannot be imported here as it stands: its docstring
    generation looks up processor classes, which fail without the ``tokenizers`` package (a TypeError, not the
    ImportError transformers catches); the placeholders are docstring text only, so they are skipped for it."""
    if cfg.model_type != "gemma3_text":
        return AutoModelForCausalLM.from_config(cfg)
    import sys

    doc = sys.modules["transformers.utils.auto_docstring"]
    orig = doc.get_placeholders_dict
    doc.get_placeholders_dict = lambda placeholders, model_name: {p: p for p in placeholders}
    try:
        from transformers.models.gemma3.modeling_gemma3 import Gemma3ForCausalLM
    finally:
        doc.get_placeholders_dict = orig
    return Gemma3ForCausalLM(cfg)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


@pytest.mark.parametrize("label", list(REAL))
def test_counts_and_flops_equal_transformers_own_model(label):
    model_type, kw = REAL[label]
    cfg = hf_config(model_type, **kw)
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        hf = causal_lm(cfg)
    hf_params = sum(p.numel() for p in hf.parameters())
    if label in PUBLISHED:
        assert hf_params == PUBLISHED[label]
    plan = resolve_plan(load_design(import_hf(as_file_dict(cfg))))
    assert param_stats(plan)["total"] == hf_params
    from torch.utils.flop_counter import FlopCounterMode

    s = 32
    ids = torch.zeros(1, s, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        hf(input_ids=ids)
    ref = counter.get_total_flops()
    got = flop_stats(plan, s, 1)["forward"]
    assert abs(got - ref) / ref < 0.005, (got, ref)
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    if model_type == "falcon":  # transformers' FalconAttention: one K/V head for multi-query, else num_kv_heads
        kv = 1 if cfg.multi_query and not cfg.new_decoder_architecture else cfg.num_kv_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert kv_cache(plan, "bf16")["bytes_per_token"] == 2 * cfg.num_hidden_layers * kv * head_dim * 2


TINY = dict(vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=0,
            bos_token_id=1, eos_token_id=2)
LOGIT_CASES = {
    "olmo2": dict(TINY, rope_theta=500000.0, rms_norm_eps=1e-6),
    "gpt_neox": dict(vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=64, rotary_pct=0.25, rotary_emb_base=10000, tie_word_embeddings=False),
    "gpt_neox-sequential": dict(vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5,
                                use_parallel_residual=False, tie_word_embeddings=False),
    "gemma": dict(TINY, head_dim=24, tie_word_embeddings=True),
    "phi3": dict(TINY, sliding_window=5),
    "gemma3_text": dict(TINY, head_dim=24, query_pre_attn_scalar=20, sliding_window=4, tie_word_embeddings=True,
                        layer_types=["sliding_attention", "full_attention"], rope_theta=1000000.0,
                        rope_local_base_freq=10000.0, final_logit_softcapping=4.0),
    "falcon": dict(vocab_size=61, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                   ffn_hidden_size=96, max_position_embeddings=64, tie_word_embeddings=False),  # MQA, one shared norm
    "falcon-new": dict(vocab_size=61, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                       new_decoder_architecture=True, bias=True, max_position_embeddings=64),  # GQA groups, two norms
    "falcon-sequential": dict(vocab_size=61, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              multi_query=False, parallel_attn=False, max_position_embeddings=64),
}


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_logits_equal_with_hf_weights(case):
    model_type = case.split("-")[0]
    torch.manual_seed(0)
    cfg = hf_config(model_type, **LOGIT_CASES[case])
    cfg._attn_implementation = "eager"
    hf = causal_lm(cfg).float().eval()
    with torch.no_grad():  # weights well away from the init (norm gains, biases too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    file = as_file_dict(cfg)
    design = import_hf(file)
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict(model_type, hf.state_dict(), file), strict=True)
    tokens = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = model(tokens).output
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    print(f"{case}: logits max abs diff {diff:.2e}")
    assert diff < 1e-4, diff
    # cached decoding gives the same logits as the full forward (relative: Gemma's logits reach ~10)
    with torch.no_grad():
        cache = model.new_cache(2, 16)
        steps = [model.forward_one_step(tokens[:, :5], cache)] + [model.forward_one_step(tokens[:, i:i + 1], cache)
                                                                   for i in range(5, 9)]
    assert (torch.cat(steps, dim=1) - got).abs().max().item() < 1e-5 * got.abs().max().item()


def test_design_fields():
    olmo = import_hf(as_file_dict(hf_config("olmo2", **REAL["OLMo-2-7B"][1])))
    assert olmo["norm_placement"] == "post_sublayer"
    assert olmo["layers"]["params"]["attention"] == {"qk_norm": True, "qk_norm_over": "projection"}
    neox = import_hf(as_file_dict(hf_config("gpt_neox", **REAL["Pythia-1.4B"][1])))
    assert neox["parallel_residual"] and neox["layers"]["params"]["attention"] == {"rotary_fraction": 0.25}
    gemma = import_hf(as_file_dict(hf_config("gemma", **REAL["Gemma-2B"][1])))
    assert gemma["embed_scale"] and gemma["layers"]["params"]["mlp"] == {"gelu_approximate": "tanh"}
    g3 = import_hf(as_file_dict(hf_config("gemma3_text", **REAL["Gemma-3-1B"][1])))
    rule = g3["layers"]["rules"][0]
    assert rule["params"]["attention"] == {"window": 512, "rope_theta": 10000.0} and g3["rope_theta"] == 1e6
    assert rule["when"]["layer_idx"] == [i for i in range(26) if (i + 1) % 6]
    _, notes = import_hf_notes(as_file_dict(hf_config("gemma3_text", **REAL["Gemma-3-1B"][1])))
    assert notes == []


@pytest.mark.parametrize("model_type, field, value, match", [
    ("olmo2", "attention_bias", True, "attention_bias"),
    ("gpt_neox", "attention_bias", False, "attention_bias"),
    ("gpt_neox", "rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}, "rope_type"),
    ("gemma3_text", "attn_logit_softcapping", 50.0, "attn_logit_softcapping"),
    ("phi3", "some_new_feature", 1, "some_new_feature"),
    ("falcon", "alibi", True, "alibi"),
    ("falcon", "num_ln_in_parallel_attn", 2, "num_ln_in_parallel_attn"),
])
def test_unmappable_fields_are_errors_naming_the_field(model_type, field, value, match):
    label = {"olmo2": "OLMo-2-7B", "gpt_neox": "Pythia-1.4B", "gemma3_text": "Gemma-3-1B", "phi3": "Phi-3-mini-4k",
             "falcon": "Falcon-7B"}[model_type]
    d = as_file_dict(hf_config(model_type, **REAL[label][1]))
    d[field] = value
    with pytest.raises(DesignError, match=match):
        load_design(import_hf(d))


def test_shared_norm_and_norm_bias_counts():
    """One LayerNorm per parallel block, with a shift although the linear layers have none (Falcon-7B's layout)."""
    base = {"hidden_size": 32, "n_heads": 4, "vocab_size": 50, "norm": "layer", "parallel_residual": True,
            "layers": {"n_layers": 2, "mlp": "mlp"}}
    two = param_stats(resolve_plan(load_design(base)))["total"]
    one = param_stats(resolve_plan(load_design({**base, "parallel_shared_norm": True, "norm_bias": True})))["total"]
    assert one == two - 2 * 32 + (2 + 1) * 32  # a gain less per layer; a shift per remaining norm (2 layers + final)


def test_gpt_neox_weights_need_the_config():
    with pytest.raises(DesignError, match="num_attention_heads"):
        map_state_dict("gpt_neox", {"gpt_neox.layers.0.attention.query_key_value.weight": torch.zeros(12, 4)})


@pytest.mark.parametrize("field, value, match", [
    ({"parallel_residual": True, "norm_placement": "post"}, None, "parallel_residual"),
    ({"embed_scale": True, "vocab_size": None, "input_dim": 4, "task": "regression", "output_dim": 1}, None, "embed_scale"),
    ({"norm_placement": "sideways"}, None, "norm_placement"),
    ({"parallel_shared_norm": True}, None, "parallel_shared_norm"),
    ({"parallel_shared_norm": True, "parallel_residual": True, "norm_placement": "pre_post"}, None, "parallel_shared_norm"),
    ({"norm_bias": "yes"}, None, "norm_bias"),
    ({"logit_softcap": 30.0, "task": "regression", "output_dim": 1, "tie_embeddings": False}, None, "logit_softcap"),
    ({"logit_softcap": -1.0}, None, "logit_softcap"),
    # ReZero normalises nothing: as the embedding norm or the head transform's norm its gate would get no
    # gradient (found by the accepted-runs soak: smoke's gradient check failed on embed_norm.alpha)
    ({"norm": "rezero", "embed_norm": True}, None, "embed_norm"),
    ({"norm": "rezero", "head_transform": True}, None, "head_transform"),
    ({"layers": {"n_layers": 1, "params": {"attention": {"rotary_fraction": 0.4}}}}, None, "rotary_fraction"),
    ({"positional": "none", "layers": {"n_layers": 1, "params": {"attention": {"rope_theta": 5.0}}}}, None, "rope_theta"),
    ({"layers": {"n_layers": 1, "params": {"attention": {"qk_norm_over": "both"}}}}, None, "qk_norm_over"),
])
def test_bad_values_are_one_line_errors_naming_the_field(field, value, match):
    base = {"hidden_size": 32, "n_heads": 4, "vocab_size": 50, "layers": {"n_layers": 1}}
    with pytest.raises(DesignError, match=match) as err:
        resolve_plan(load_design({**base, **field}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("preset, label", [("olmo2_7b", "OLMo-2-7B"), ("pythia_1_4b", "Pythia-1.4B"),
                                           ("gemma3_1b", "Gemma-3-1B")])
def test_preset_counts_equal_transformers(preset, label):
    """presets/<preset>.yaml (written from the import of the public config) = transformers' own model."""
    model_type, kw = REAL[label]
    with torch.device("meta"):
        hf = causal_lm(hf_config(model_type, **kw))
    assert param_stats(resolve_plan(load_design(preset)))["total"] == sum(p.numel() for p in hf.parameters())
