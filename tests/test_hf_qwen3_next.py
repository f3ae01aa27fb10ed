"""Qwen3-Next import (backend/hf/qwen3_next.py) against transformers' own Qwen3NextForCausalLM.

Public config values of Qwen/Qwen3-Next-80B-A3B (its config.json), built by transformers on meta and
counted; tiny random configs check logits (weights through ``map_state_dict``) and the recurrent-state /
KV bytes against transformers' real cache.
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
from backend.registry import REGISTRIES  # noqa: E402
from backend.spec import load_design  # noqa: E402

# Qwen/Qwen3-Next-80B-A3B-Instruct config.json (public values)
QWEN3_NEXT_80B = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=5120, num_hidden_layers=48, num_attention_heads=16,
    num_key_value_heads=2, head_dim=256, hidden_act="silu", max_position_embeddings=262144, rms_norm_eps=1e-6,
    rope_theta=10000000, partial_rotary_factor=0.25, attention_bias=False, full_attention_interval=4,
    linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_num_key_heads=16, linear_num_value_heads=32,
    linear_value_head_dim=128, decoder_sparse_step=1, moe_intermediate_size=512, shared_expert_intermediate_size=512,
    num_experts=512, num_experts_per_tok=10, norm_topk_prob=True, mlp_only_layers=[], tie_word_embeddings=False)
# transformers' Qwen3NextForCausalLM (the published 80B / ~81.3B of the checkpoint adds the MTP head)
QWEN3_NEXT_80B_PARAMS = 79_674_391_296

# What this build can express without the MoE shared-expert gate and partial rotary
TINY_DENSE = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
                  partial_rotary_factor=1.0, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                  linear_value_head_dim=6, linear_conv_kernel_dim=4, num_experts=0, tie_word_embeddings=False)


def hf_config(**kw):
    return CONFIG_MAPPING["qwen3_next"](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def _moe_has(*options: str) -> bool:
    from backend.hf.common import kind_for

    return all(o in REGISTRIES["mlp"][kind_for("mlp", "experts")].params for o in options)


def _has_partial_rotary() -> bool:
    from backend.spec import Design

    from backend.hf.common import kind_for

    return (any("rotary" in f and "fraction" in f for f in Design.model_fields)
            or "rotary_fraction" in REGISTRIES["attention"][kind_for("attention", "full")].params)


def test_layer_pattern_and_kinds():
    d = import_hf(as_file_dict(hf_config(**TINY_DENSE)))
    plan = resolve_plan(load_design(d))
    layers = plan.stacks["layers"].executed
    kinds = [layer.attention for layer in layers]
    assert kinds[3] == REGISTRIES["attention"][kinds[3]].name and kinds[:3] == [kinds[0]] * 3 and kinds[0] != kinds[3]
    assert "gated_delta" in REGISTRIES["attention"][kinds[0]].roles
    assert layers[3].config["attention"]["output_gate"] and layers[3].config["attention"]["qk_norm"]
    assert layers[0].config["attention"]["num_value_heads"] == 4


# the 80B's features at tiny size: partial rotary 0.25 of head_dim 16, 4 routed experts top-2 with a gated
# shared expert of its own width, normalised top-k
TINY_MOE = dict(TINY_DENSE, head_dim=16, partial_rotary_factor=0.25, num_experts=4, num_experts_per_tok=2,
                moe_intermediate_size=12, shared_expert_intermediate_size=20, norm_topk_prob=True,
                decoder_sparse_step=1, mlp_only_layers=[1])


@pytest.mark.parametrize("tiny", [TINY_DENSE, TINY_MOE], ids=["dense", "moe-partial-rotary"])
def test_tiny_dense_count_logits_and_cache_bytes_equal_transformers(tiny):
    torch.manual_seed(0)
    cfg = hf_config(**tiny)
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights away from the init (norm gains, dt_bias, A_log too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    design = import_hf(as_file_dict(cfg))
    plan = resolve_plan(load_design(design))
    assert param_stats(plan)["total"] == sum(p.numel() for p in hf.parameters())
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict("qwen3_next", hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = model(tokens).output
    # float32: 1e-4 absolute for the dense case; the MoE case sums experts in another order (HF's grouped_mm)
    # at logits of magnitude ~12 and is held to 1e-4 relative to the largest logit (measured 4.7e-4 = 3.8e-5 rel)
    tol = 1e-4 if tiny is TINY_DENSE else 1e-4 * ref.abs().max().item()
    assert (got - ref).abs().max().item() < tol, (got - ref).abs().max().item()
    # transformers' cache after the prompt: K/V of the attention layer per token; per Gated DeltaNet layer a
    # recurrent state (Hv, dk, dv) and a conv window of K columns (ours keeps the K - 1 the next step reads)
    with torch.no_grad():
        cache = hf(tokens, use_cache=True).past_key_values
    kv = rec = conv = 0
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            kv += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values))
        rec += sum(t.numel() * t.element_size() for t in (getattr(layer, "recurrent_states", None) or {}).values()
                   if isinstance(t, torch.Tensor))
        conv += sum(t.numel() * t.element_size() for t in (getattr(layer, "conv_states", None) or {}).values()
                    if isinstance(t, torch.Tensor))
    assert rec and conv
    K = tiny["linear_conv_kernel_dim"]
    ours = kv_cache(plan, "fp32", seq_len=9, batch=2)
    assert ours["bytes_per_token"] * 9 * 2 == kv
    assert ours["at_seq_len_bytes"] == kv + rec + conv * (K - 1) // K
    # (our own model's cache == this prediction: tests/test_kind_contract.py, for every cacheable kind)


@pytest.mark.skipif(not _moe_has("shared_gate") or not _has_partial_rotary(),
                    reason="needs the MoE shared_gate option (s2-22) and partial rotary (s2-21)")
def test_qwen3_next_80b_count_equals_transformers():
    cfg = hf_config(**QWEN3_NEXT_80B)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in hf.parameters()) == QWEN3_NEXT_80B_PARAMS
    assert param_stats(resolve_plan(load_design(import_hf(as_file_dict(cfg)))))["total"] == QWEN3_NEXT_80B_PARAMS


def test_what_is_missing_is_an_error_naming_the_field():
    d = as_file_dict(hf_config(**QWEN3_NEXT_80B))
    if not _has_partial_rotary():
        with pytest.raises(DesignError, match="partial_rotary_factor"):
            import_hf(d)
        d["rope_parameters"]["partial_rotary_factor"] = 1.0
    if not _moe_has("shared_gate"):
        with pytest.raises(DesignError, match="shared_expert_intermediate_size"):
            import_hf(d)


@pytest.mark.parametrize("field, value", [
    ("layer_types", ["full_attention", "sliding_attention", "linear_attention", "full_attention"]),
    ("hidden_act", "gelu"), ("attention_bias", True), ("some_new_feature", 1), ("linear_num_value_heads", 3),
])
def test_unmappable_fields_are_errors(field, value):
    d = as_file_dict(hf_config(**TINY_DENSE))
    d[field] = value
    with pytest.raises(DesignError, match=field if field != "linear_num_value_heads" else "num_value_heads"):
        resolve_plan(load_design(import_hf(d)))


def test_mtp_weights_are_skipped_and_unknown_names_refused():
    assert map_state_dict("qwen3_next", {"mtp.fc.weight": torch.zeros(2, 2)}) == {}
    with pytest.raises(DesignError, match="model.layers.0.linear_attn.extra"):
        map_state_dict("qwen3_next", {"model.layers.0.linear_attn.extra": torch.zeros(2)})


def test_preset_qwen3_next_80b_a3b_count():
    """presets/qwen3_next_80b_a3b.yaml (written from the import of the public config) = transformers' model."""
    assert param_stats(resolve_plan(load_design("qwen3_next_80b_a3b")))["total"] == QWEN3_NEXT_80B_PARAMS
