"""Nemotron-H import (backend/hf/nemotron_h.py) against transformers' own NemotronHForCausalLM.

Public config values of nvidia/Nemotron-H-8B-Base-8K (its config.json: the 52-character pattern of 24
Mamba-2, 4 attention and 24 MLP layers) built by transformers on meta and counted, and the shipped
preset against the same count; tiny random configs (hub pattern and transformers-5 ``layers_block_type``)
check logits (weights through ``map_state_dict``, HF's pure-PyTorch path on CPU) and the cache bytes
(K/V of the attention layers, constant Mamba-2 state) against transformers' real cache.
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

PATTERN_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
NEMOTRON_H_8B = dict(
    vocab_size=131072, hidden_size=4096, num_hidden_layers=52, hybrid_override_pattern=PATTERN_8B,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=21504, mamba_num_heads=128,
    mamba_head_dim=64, ssm_state_size=128, n_groups=8, conv_kernel=4, expand=2, mlp_hidden_act="relu2",
    max_position_embeddings=8192, layer_norm_epsilon=1e-5, tie_word_embeddings=False)
NEMOTRON_H_8B_PARAMS = 8_100_852_736
TINY = dict(vocab_size=61, hidden_size=32, hybrid_override_pattern="M-M*-M*", num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, intermediate_size=48, mamba_num_heads=8, mamba_head_dim=8,
            ssm_state_size=8, n_groups=2, conv_kernel=4, chunk_size=4, tie_word_embeddings=False)


def hf_config(**kw):
    return CONFIG_MAPPING["nemotron_h"](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def test_pattern_is_52_layers():
    assert len(PATTERN_8B) == 52 and (PATTERN_8B.count("M"), PATTERN_8B.count("*"), PATTERN_8B.count("-")) == (24, 4, 24)


def test_nemotron_h_8b_count_and_preset_equal_transformers():
    cfg = hf_config(**NEMOTRON_H_8B)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in hf.parameters()) == NEMOTRON_H_8B_PARAMS
    d = as_file_dict(cfg)
    assert "layers_block_type" in d  # transformers 5 writes the list
    plan = resolve_plan(load_design(import_hf(d)))
    assert param_stats(plan)["total"] == NEMOTRON_H_8B_PARAMS
    hub = {k: v for k, v in d.items() if k != "layers_block_type"} | {"hybrid_override_pattern": PATTERN_8B}
    assert param_stats(resolve_plan(load_design(import_hf(hub))))["total"] == NEMOTRON_H_8B_PARAMS
    layers = plan.stacks["layers"].executed
    assert [(la.attention, la.mlp) for la in layers[6:8]] == [("mamba2", "none"), ("self_sdpa", "none")]
    assert (layers[1].attention, layers[1].mlp) == ("none", "relu2")
    assert param_stats(resolve_plan(load_preset("nemotron_h_8b")))["total"] == NEMOTRON_H_8B_PARAMS


def test_hub_file_of_nemotron_h_8b():
    """The hub's config.json (transformers-4 remote code): attention_head_dim, hidden_act, rms_norm_eps, auto_map."""
    hub = {"architectures": ["NemotronHForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
           "attention_head_dim": 128, "auto_map": {"AutoConfig": "configuration_nemotron_h.NemotronHConfig"},
           "bos_token_id": 1, "chunk_size": 128, "conv_kernel": 4, "eos_token_id": 2, "expand": 2,
           "hidden_act": "relu2", "hidden_dropout": 0.0, "hidden_size": 4096, "hybrid_override_pattern": PATTERN_8B,
           "initializer_range": 0.02, "intermediate_size": 21504, "layer_norm_epsilon": 1e-05, "mamba_head_dim": 64,
           "mamba_hidden_act": "silu", "mamba_num_heads": 128, "mamba_proj_bias": False,
           "max_position_embeddings": 8192, "mlp_bias": False, "mlp_hidden_act": "relu2", "model_type": "nemotron_h",
           "n_groups": 8, "num_attention_heads": 32, "num_hidden_layers": 52, "num_key_value_heads": 8,
           "num_logits_to_keep": 1, "pad_token_id": 0, "rescale_prenorm_residual": True, "residual_in_fp32": False,
           "rms_norm_eps": 1e-05, "ssm_state_size": 128, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "use_bias": False, "use_cache": True, "use_conv_bias": True, "use_mamba_kernels": True, "vocab_size": 131072}
    assert param_stats(resolve_plan(load_design(import_hf(hub))))["total"] == NEMOTRON_H_8B_PARAMS
    with pytest.raises(DesignError, match="attention_head_dim"):
        import_hf(hub | {"head_dim": 64})


def test_tiny_count_logits_and_cache_bytes_equal_transformers():
    torch.manual_seed(0)
    cfg = hf_config(**TINY)
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights away from the init (norm gains, dt_bias, A_log, D too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    design = import_hf(as_file_dict(cfg))
    plan = resolve_plan(load_design(design))
    assert param_stats(plan)["total"] == sum(p.numel() for p in hf.parameters())
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict("nemotron_h", hf.state_dict()), strict=True)
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
    K = TINY["conv_kernel"]
    ours = kv_cache(plan, "fp32", seq_len=11, batch=2)
    assert ours["bytes_per_token"] * 11 * 2 == kv
    assert ours["at_seq_len_bytes"] == kv + rec + conv * (K - 1) // K


@pytest.mark.parametrize("field, value", [
    ("layers_block_type", ["linear_attention", "mamba3", "full_attention"]), ("mlp_hidden_act", "silu"),
    ("use_bias", True), ("mlp_bias", True), ("sliding_window", 8), ("mamba_num_heads", 7), ("some_new_feature", 1),
])
def test_unmappable_fields_are_errors(field, value):
    d = as_file_dict(hf_config(**TINY))
    d[field] = value
    with pytest.raises(DesignError, match=field):
        resolve_plan(load_design(import_hf(d)))


TINY_MOE = TINY | dict(hybrid_override_pattern="ME*E-", n_routed_experts=8, num_experts_per_tok=2,
                       moe_intermediate_size=24, moe_shared_expert_intermediate_size=40, n_group=2, topk_group=1,
                       routed_scaling_factor=2.5, norm_topk_prob=True)


def test_moe_layers_count_and_logits_equal_transformers():
    """E layers: sigmoid scores + selection bias, group-limited top-k, relu2 experts, one shared relu2 MLP."""
    big = hf_config(**(NEMOTRON_H_8B | dict(hybrid_override_pattern="ME*E-", num_hidden_layers=5)))
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(big).parameters())
    assert param_stats(resolve_plan(load_design(import_hf(as_file_dict(big)))))["total"] == n
    torch.manual_seed(0)
    cfg = hf_config(**TINY_MOE)
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
        for name, b in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn_like(b) * 0.1)
    design = import_hf(as_file_dict(cfg))
    assert param_stats(resolve_plan(load_design(design)))["total"] == sum(p.numel() for p in hf.parameters())
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict("nemotron_h", hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(tokens).output - hf(tokens).logits).abs().max().item()
    assert diff < 1e-4, diff
    with pytest.raises(DesignError, match="moe_latent_size"):
        import_hf(as_file_dict(cfg) | {"moe_latent_size": 16})


def test_hub_pattern_errors_and_weight_names():
    d = {k: v for k, v in as_file_dict(hf_config(**TINY)).items() if k != "layers_block_type"}
    with pytest.raises(DesignError, match="hybrid_override_pattern"):
        import_hf(d | {"hybrid_override_pattern": "M-X"})
    with pytest.raises(DesignError, match="num_hidden_layers"):
        import_hf(d | {"hybrid_override_pattern": "M-M", "num_hidden_layers": 4})
    assert map_state_dict("nemotron_h", {"mtp.layers.0.norm.weight": torch.zeros(2)}) == {}
    with pytest.raises(DesignError, match="model.layers.0.mixer.extra"):
        map_state_dict("nemotron_h", {"model.layers.0.mixer.extra": torch.zeros(2)})
