"""Memory figures: weights per dtype, training state, KV cache per kind, activations."""
from __future__ import annotations

import pytest

from backend.analysis import memory
from backend.plan import resolve_plan
from backend.presets import find_preset


def preset(name: str):
    if find_preset(name) is None:
        pytest.fail(f"preset {name!r} is not in presets/")
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


@pytest.mark.parametrize("kind,arch", [("token_param", "decoder"), ("spectral", "encoder"), ("frequency", "encoder")])
def test_cacheless_kinds_cache_nothing(kind, arch):
    kv = memory.kv_cache(small(kind, arch=arch), "bf16")
    assert kv["bytes_per_token"] == 0 and kv["at_max_seq_len_bytes"] == 0


def test_causal_linear_state_is_constant_per_sequence():
    kv = memory.kv_cache(small("causal_linear"), "bf16")
    assert kv["bytes_per_token"] == 0
    assert kv["state_bytes"] == 4 * 8 * 256 * (8 + 1) * 4  # S and z per head, float32 (the module's work dtype)
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


# ---------------------------------------------------------------------------
# The closed-form cache against the tensors a real cache holds after decoding.

def _held_bytes(obj) -> int:
    """numel * element_size of every tensor a cache object holds (attributes and state dicts)."""
    import torch

    n, seen = 0, set()
    for value in vars(obj).values():
        for t in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                n += t.numel() * t.element_size()
    return n


def _decode(design: dict, dtype: str, batch: int, prompt: int, steps: int, src_len: int = 0):
    """Build the real (tiny) model, prefill ``prompt`` tokens, decode ``steps`` more; return its cache."""
    import torch

    from backend.build import build_model

    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    torch.manual_seed(0)
    model = build_model(design, dtype=tdt).eval()
    g = torch.Generator().manual_seed(0)
    memory = None
    if src_len:
        memory = model.encode(torch.randint(0, 100, (batch, src_len), generator=g))
    cache = model.new_cache(batch, prompt + steps)
    with torch.no_grad():
        model.forward_one_step(torch.randint(0, 100, (batch, prompt), generator=g), cache, 0, memory=memory)
        for i in range(steps):
            model.forward_one_step(torch.randint(0, 100, (batch, 1), generator=g), cache, prompt + i)
    assert not cache.recompute, "every layer of these designs keeps a real cache"
    return cache


def _tiny(attention, **params):
    layers = {"n_layers": 2, "attention": attention, "mlp": "swiglu"}
    if params:
        layers["params"] = {"attention": params}
    return {"name": "c", "architecture": "decoder", "task": "lm", "vocab_size": 100, "hidden_size": 32,
            "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64, "layers": layers}


CACHE_CASES = [
    ("self_sdpa", {}, "fp32"),
    ("self_sdpa", {"window": 4}, "bf16"),  # sliding: capped at 4 tokens
    ("self_flex", {"window": 4, "prefix_len": 3}, "fp32"),  # prefix-LM: never slides
    ("diff_attn", {}, "bf16"),
    ("causal_linear", {"nb_features": 12}, "fp32"),
    ("causal_linear", {"nb_features": 12}, "bf16"),  # state held in float32
    ("spectral", {}, "bf16"),  # past v per token
    ("spectral", {"adaptive": True}, "fp32"),
    ("token_param", {"num_param_tokens": 8}, "fp32"),  # nothing held
]


@pytest.mark.parametrize("attention,params,dtype", CACHE_CASES, ids=[f"{a}-{d}-{i}" for i, (a, _, d) in enumerate(CACHE_CASES)])
def test_kv_cache_matches_real_cache_tensors(attention, params, dtype):
    design = _tiny(attention, **params)
    batch, prompt, steps = 2, 5, 6
    cache = _decode(design, dtype, batch, prompt, steps)
    held = sum(_held_bytes(c) for entry in cache.layers for c in entry.values() if c is not None)
    predicted = memory.kv_cache(resolve_plan(design), dtype, seq_len=prompt + steps, batch=batch)["at_seq_len_bytes"]
    assert held == predicted, (held, predicted)
    if attention == "token_param":
        assert held == 0
    else:
        assert held > 0


def test_kv_cache_per_token_and_state_closed_form_for_new_kinds():
    d = small("diff_attn")
    assert memory.kv_cache(d, "bf16")["bytes_per_token"] == 4 * 2 * 2 * 8 * 2  # K and V of KV heads x Dh
    sp = memory.kv_cache(small("spectral"), "fp32", seq_len=10)
    assert sp["bytes_per_token"] == 4 * 8 * 8 * 4 and sp["at_seq_len_bytes"] == 10 * sp["bytes_per_token"]
    cl = memory.kv_cache(small("causal_linear"), "bf16")
    assert cl["state_bytes"] == 4 * 8 * 256 * (8 + 1) * 4  # float32 even in a bf16 model
    assert memory.kv_cache(small("frequency", arch="encoder"))["bytes_per_token"] == 0
    assert memory.kv_cache(small("linear", arch="encoder"))["at_max_seq_len_bytes"] == 0


def test_cross_attention_cache_matches_real_tensors():
    stack = {"n_layers": 2, "attention": "self_sdpa", "mlp": "swiglu"}
    design = {"name": "ed", "architecture": "encoder_decoder", "task": "seq2seq", "vocab_size": 100,
              "hidden_size": 32, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64, "encoder": stack, "decoder": stack}
    batch, prompt, steps, src = 2, 3, 4, 9
    cache = _decode(design, "fp32", batch, prompt, steps, src_len=src)
    self_held = sum(_held_bytes(e["self"]) for e in cache.layers)
    cross_held = sum(_held_bytes(e["cross"]) for e in cache.layers)
    kv = memory.kv_cache(resolve_plan(design), "fp32", batch=batch)
    assert self_held == batch * kv["self_bytes_per_token"] * (prompt + steps)
    assert cross_held == batch * kv["cross_bytes_per_source_token"] * src


def test_kv_cache_by_kind_matches_real_cache_tensors_of_each_kind():
    """Per-kind split (the Analysis page's one-curve-per-kind) against the bytes each kind's layers hold."""
    design = {"name": "mix", "architecture": "decoder", "task": "lm", "vocab_size": 100, "hidden_size": 32,
              "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64,
              "layers": {"n_layers": 6, "string": "SDPA,CAUSAL_LINEAR,SPECTRAL,DIFF_ATTN,TOKEN_PARAM,SDPA", "mlp": "swiglu",
                         "rules": [{"when": {"layer_idx": [5]}, "params": {"attention": {"window": 4}}}]}}
    plan = resolve_plan(design)
    assert [layer.attention for layer in plan.layers] == ["self_sdpa", "causal_linear", "spectral", "diff_attn",
                                                          "token_param", "self_sdpa"]
    batch, prompt, steps = 2, 5, 6
    cache = _decode(design, "fp32", batch, prompt, steps)
    held: dict[str, int] = {}
    for layer, entry in zip(plan.layers, cache.layers):
        held[layer.attention] = held.get(layer.attention, 0) + sum(_held_bytes(c) for c in entry.values() if c is not None)
    kv = memory.kv_cache(plan, "fp32", seq_len=prompt + steps, batch=batch)
    assert kv["by_kind_at_seq_len_bytes"] == {k: v for k, v in held.items() if v}
    assert "token_param" not in kv["by_kind_at_seq_len_bytes"]
    assert sum(kv["by_kind_at_seq_len_bytes"].values()) == kv["at_seq_len_bytes"]
    # closed form, fp32, batch 2, 11 tokens: SDPA full + SDPA window 4; K and V of 2 kv heads x Dh 8
    assert kv["by_kind_at_seq_len_bytes"]["self_sdpa"] == batch * 2 * 2 * 8 * 4 * (11 + 4)
    assert kv["by_kind_at_seq_len_bytes"]["spectral"] == batch * 4 * 8 * 4 * 11


@pytest.mark.parametrize("name", ["gemma2_style", "mixtral_8x7b", "performer_encdec", "t5_style", "encdec_kv_cache"])
def test_kv_cache_by_kind_sums_to_total(name):
    kv = memory.kv_cache(preset(name), "bf16", seq_len=1000, batch=2)
    assert sum(kv["by_kind_at_seq_len_bytes"].values()) == kv["at_seq_len_bytes"] > 0
    assert ("cross" in kv["by_kind_at_seq_len_bytes"]) == (kv["cross_bytes_per_source_token"] > 0)
