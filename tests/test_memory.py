"""Memory figures: weights per dtype, training state, KV cache per kind, activations."""
from __future__ import annotations

import pytest

from backend.analysis import memory
from backend.plan import resolve_plan
from backend.presets import find_preset


def preset(name: str):
    if find_preset(name) is None:
        pytest.skip(f"preset {name!r} is not in presets/")
    return resolve_plan(name)


def small(attention="self_sdpa", arch="decoder", **over):
    d = {"name": "m", "architecture": arch, "task": "lm" if arch == "decoder" else "mlm", "vocab_size": 100,
         "hidden_size": 64, "n_heads": 8, "n_kv_heads": 2, "max_seq_len": 256,
         "layers": {"n_layers": 4, "attention": attention, "mlp": "swiglu"}}
    d.update(over)
    return resolve_plan(d)


def test_llama2_7b_kv_cache_closed_form():
    kv = memory.kv_cache(preset("llama2_7b"), "bf16")
    assert kv["bytes_per_token"] == 2 * 32 * 4096 * 2 == 524_288
    assert kv["at_max_seq_len_bytes"] == 524_288 * 4096
    assert memory.kv_cache(preset("llama2_7b"), "fp32", batch=3)["at_max_seq_len_bytes"] == 3 * 2 * 524_288 * 4096


def test_gqa_and_sliding_window_cap():
    kv = memory.kv_cache(preset("mistral_7b"), "bf16", seq_len=8192)
    assert kv["bytes_per_token"] == 2 * 32 * 8 * 128 * 2  # 8 kv heads
    assert kv["at_seq_len_bytes"] == kv["bytes_per_token"] * 4096  # window 4096 caps the cache
    assert kv["at_max_seq_len_bytes"] == kv["bytes_per_token"] * 4096


def test_weights_and_training_bytes():
    assert memory.weights_bytes(10, "fp32") == 40 and memory.weights_bytes(10, "int8") == 10
    assert memory.training_bytes(1000, "bf16")["total_bytes"] == 16_000
    assert memory.training_bytes(1000, "fp32")["total_bytes"] == 16_000
    with pytest.raises(ValueError):
        memory.weights_bytes(1, "fp8")


@pytest.mark.parametrize("kind", ["spectral", "token_param"])
def test_cacheless_kinds_cache_nothing(kind):
    kv = memory.kv_cache(small(kind), "bf16")
    assert kv["bytes_per_token"] == 0 and kv["at_max_seq_len_bytes"] == 0


def test_causal_linear_state_is_constant_per_sequence():
    kv = memory.kv_cache(small("causal_linear"), "bf16")
    assert kv["bytes_per_token"] == 0
    assert kv["state_bytes"] == 4 * 8 * 256 * (8 + 1) * 2
    assert kv["at_max_seq_len_bytes"] == kv["state_bytes"] == memory.kv_cache(small("causal_linear"), "bf16", seq_len=7)["at_seq_len_bytes"]


def test_shared_layers_have_their_own_caches():
    a = small(layers={"n_layers": 2, "attention": "self_sdpa", "mlp": "swiglu", "repeat": {"mode": "cycle", "factor": 3}})
    assert memory.kv_cache(a)["bytes_per_token"] == 6 * 2 * 2 * 8 * 2


def test_encoder_only_has_no_cache_and_cross_attention_caches_source():
    assert memory.kv_cache(small("self_sdpa", arch="encoder"))["bytes_per_token"] == 0
    stack = {"n_layers": 3, "attention": "self_sdpa", "mlp": "swiglu"}
    plan = resolve_plan({"name": "ed", "architecture": "encoder_decoder", "task": "seq2seq", "vocab_size": 100,
                         "hidden_size": 64, "n_heads": 8, "n_kv_heads": 2, "encoder": stack, "decoder": stack})
    kv = memory.kv_cache(plan, "bf16")
    assert kv["self_bytes_per_token"] == kv["cross_bytes_per_source_token"] == 3 * 2 * 2 * 8 * 2


def test_activations_flash_vs_materialised_attention():
    plan = small()
    fused = memory.activations(plan, 256, 2, "bf16", fused_attention=True)
    naive = memory.activations(plan, 256, 2, "bf16", fused_attention=False)
    assert 0 < fused["total_bytes"] < naive["total_bytes"]
    ckpt = memory.activations(plan, 256, 2, "bf16", checkpointing=True)
    assert ckpt["total_bytes"] < fused["total_bytes"]
    # per layer and token: D + (H + 2KV + H) Dh + D + 2F + F + 2D elements, bf16
    d, f = 64, 4 * 64
    per_tok = d + (8 + 2 * 2 + 8) * 8 + d + 3 * f + 2 * d
    assert fused["per_layer_bytes"][0] == 2 * 256 * per_tok * 2
