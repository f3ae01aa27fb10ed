"""Mamba-2 import (backend/hf/mamba2.py) against transformers' own Mamba2ForCausalLM.

Public config values of mamba2-130m built by transformers on meta and counted (and the shipped preset
against the same count); a tiny random config checks logits (weights through ``map_state_dict``, HF's
pure-PyTorch path on CPU) and the recurrent-state bytes against transformers' real cache.
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

# state-spaces/mamba2-130m (its HF conversion's config.json: public values)
MAMBA2_130M = dict(vocab_size=50288, hidden_size=768, num_hidden_layers=24, state_size=128, expand=2, head_dim=64,
                   num_heads=24, n_groups=1, conv_kernel=4, chunk_size=256, use_bias=False, use_conv_bias=True,
                   layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=True)
TINY = dict(vocab_size=61, hidden_size=32, num_hidden_layers=3, state_size=8, expand=2, head_dim=8, num_heads=8,
            n_groups=2, conv_kernel=4, chunk_size=4, tie_word_embeddings=False)


def hf_config(**kw):
    return CONFIG_MAPPING["mamba2"](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def _meta_count(cfg) -> int:
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in hf.parameters())


def test_mamba2_130m_count_and_preset_equal_transformers():
    cfg = hf_config(**MAMBA2_130M)
    n = _meta_count(cfg)
    assert n == 128_989_632
    plan = resolve_plan(load_design(import_hf(as_file_dict(cfg))))
    assert param_stats(plan)["total"] == n
    assert all(layer.mlp == "none" and layer.attention == "mamba2" for layer in plan.stacks["layers"].executed)
    assert param_stats(resolve_plan(load_preset("mamba2_130m")))["total"] == n


def test_tiny_count_logits_and_state_bytes_equal_transformers():
    torch.manual_seed(0)
    cfg = hf_config(**TINY)
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights away from the init (norm gains, dt_bias, A_log, D too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    design = import_hf(as_file_dict(cfg))
    plan = resolve_plan(load_design(design))
    assert param_stats(plan)["total"] == sum(p.numel() for p in hf.parameters())
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict("mamba2", hf.state_dict()), strict=True)
    tokens = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = model(tokens).output
        cache = hf(tokens, use_cache=True).cache_params
    assert (got - ref).abs().max().item() < 1e-4, (got - ref).abs().max().item()
    # transformers keeps a conv window of K columns per layer (ours the K - 1 the next step reads) and the
    # (H, P, N) state; no K/V anywhere
    rec = conv = 0
    for layer in cache.layers:
        rec += sum(t.numel() * t.element_size() for t in layer.recurrent_states.values() if isinstance(t, torch.Tensor))
        conv += sum(t.numel() * t.element_size() for t in layer.conv_states.values() if isinstance(t, torch.Tensor))
    assert rec and conv
    K = TINY["conv_kernel"]
    ours = kv_cache(plan, "fp32", seq_len=11, batch=2)
    assert ours["bytes_per_token"] == 0
    assert ours["at_seq_len_bytes"] == rec + conv * (K - 1) // K


@pytest.mark.parametrize("field, value", [
    ("use_conv_bias", False), ("hidden_act", "gelu"), ("time_step_limit", [0.0, 1.0]), ("num_heads", 7),
    ("rms_norm", False), ("some_new_feature", 1),
])
def test_unmappable_fields_are_errors(field, value):
    d = as_file_dict(hf_config(**TINY))
    d[field] = value
    with pytest.raises(DesignError, match=field):
        resolve_plan(load_design(import_hf(d)))


def test_inert_fields_and_unknown_weights():
    d = as_file_dict(hf_config(**TINY))
    d.update(norm_before_gate=True, time_step_min=0.01, rescale_prenorm_residual=True, residual_in_fp32=False,
             time_step_limit=[0.0, float("inf")])
    assert param_stats(resolve_plan(load_design(import_hf(d))))["total"] > 0
    with pytest.raises(DesignError, match="backbone.layers.0.mixer.extra"):
        map_state_dict("mamba2", {"backbone.layers.0.mixer.extra": torch.zeros(2)})
