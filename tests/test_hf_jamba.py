"""Jamba import (backend/hf/jamba.py) against transformers' own JambaForCausalLM.

Public config values of ai21labs/Jamba-v0.1 built by transformers on meta and counted (and the shipped
preset, written with period / offset rules, against the same count and layer kinds); a tiny random
config checks logits (weights through ``map_state_dict``, HF's pure-PyTorch path on CPU) and the cache
bytes (K/V of the attention layers, constant Mamba state) against transformers' real cache.
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import CONFIG_MAPPING, AutoModelForCausalLM  # noqa: E402

from backend.analysis.memory import kv_cache  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design, load_preset  # noqa: E402

JAMBA_V0_1 = dict(
    vocab_size=65536, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    intermediate_size=14336, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=256,
    attn_layer_period=8, attn_layer_offset=4, expert_layer_period=2, expert_layer_offset=1, num_experts=16,
    num_experts_per_tok=2, rms_norm_eps=1e-6, max_position_embeddings=262144, tie_word_embeddings=False)
JAMBA_V0_1_PARAMS = 51_570_323_328
TINY = dict(vocab_size=61, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4,
            attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=0, num_experts=4,
            num_experts_per_tok=2)


def hf_config(**kw):
    return CONFIG_MAPPING["jamba"](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def test_jamba_v0_1_count_and_preset_equal_transformers():
    cfg = hf_config(**JAMBA_V0_1)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in hf.parameters()) == JAMBA_V0_1_PARAMS
    plan = resolve_plan(load_design(import_hf(as_file_dict(cfg))))
    assert param_stats(plan)["total"] == JAMBA_V0_1_PARAMS
    kinds = [(la.attention, la.mlp) for la in plan.stacks["layers"].executed]
    preset = resolve_plan(load_preset("jamba_v0_1"))
    assert [(la.attention, la.mlp) for la in preset.stacks["layers"].executed] == kinds
    assert kinds[4][0] == "self_sdpa" and kinds[12][0] == "self_sdpa" and kinds[0] == ("mamba", "swiglu")
    assert [k[1] for k in kinds[:4]] == ["swiglu", "moe"] * 2
    assert [type(la).__name__ for la in hf.model.layers][4] == "JambaAttentionDecoderLayer"
    assert param_stats(preset)["total"] == JAMBA_V0_1_PARAMS


def test_tiny_count_logits_and_cache_bytes_equal_transformers():
    torch.manual_seed(0)
    cfg = hf_config(**TINY)
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights away from the init (norm gains, A_log, D too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    design = import_hf(as_file_dict(cfg))
    plan = resolve_plan(load_design(design))
    assert param_stats(plan)["total"] == sum(p.numel() for p in hf.parameters())
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict("jamba", hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = model(tokens).output
        cache = hf(tokens, use_cache=True).past_key_values
    assert (got - ref).abs().max().item() < 1e-4, (got - ref).abs().max().item()
    kv = rec = conv = 0
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            kv += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values))
        rec += sum(t.numel() * t.element_size() for t in (getattr(layer, "recurrent_states", None) or {}).values()
                   if isinstance(t, torch.Tensor))
        conv += sum(t.numel() * t.element_size() for t in (getattr(layer, "conv_states", None) or {}).values()
                    if isinstance(t, torch.Tensor))
    assert kv and rec and conv
    K = TINY["mamba_d_conv"]
    ours = kv_cache(plan, "fp32", seq_len=11, batch=2)
    assert ours["bytes_per_token"] * 11 * 2 == kv
    assert ours["at_seq_len_bytes"] == kv + rec + conv * (K - 1) // K


@pytest.mark.parametrize("field, value", [
    ("hidden_act", "gelu"), ("mamba_conv_bias", False), ("mamba_proj_bias", True), ("attn_layer_offset", 2),
    ("some_new_feature", 1),
])
def test_unmappable_fields_are_errors(field, value):
    d = as_file_dict(hf_config(**TINY))
    d[field] = value
    with pytest.raises(DesignError, match=field):
        resolve_plan(load_design(import_hf(d)))


def test_single_expert_is_dense_and_unknown_weights_refused():
    d = as_file_dict(hf_config(**TINY)) | {"num_experts": 1}
    plan = resolve_plan(load_design(import_hf(d)))
    assert all(la.mlp == "swiglu" for la in plan.stacks["layers"].executed)
    with pytest.raises(DesignError, match="model.layers.0.mamba.extra"):
        map_state_dict("jamba", {"model.layers.0.mamba.extra": torch.zeros(2)})
