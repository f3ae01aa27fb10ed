"""Hugging Face import of the encoder-decoder models t5 and bart (backend/hf/encdec.py).

The independent references are transformers' own models: built on the meta device from
public config values for the counts and FLOPs (``FlopCounterMode``, eager attention),
and from tiny random configs for the logits (our model loaded through ``map_state_dict``).
T5's bucket function is checked against transformers' ``T5Attention._relative_position_bucket``.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import CONFIG_MAPPING, AutoModelForSeq2SeqLM  # noqa: E402

from backend.analysis.flops import flop_stats  # noqa: E402
from backend.analysis.memory import kv_cache  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, import_hf_notes, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design  # noqa: E402

# Public config values (config.json of each checkpoint) and the published parameter count.
REAL = {
    "t5-small": ("t5", 60_506_624, dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                                        num_heads=8, feed_forward_proj="relu", n_positions=512)),
    "t5-base": ("t5", 222_903_552, dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                                        num_heads=12, feed_forward_proj="relu", n_positions=512)),
}


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def ours(design: dict):
    return resolve_plan(load_design(design))


def hf_meta(cfg):
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        return AutoModelForSeq2SeqLM.from_config(cfg)


@pytest.mark.parametrize("label", list(REAL))
def test_counts_equal_transformers_own_model(label):
    model_type, published, kw = REAL[label]
    cfg = hf_config(model_type, **kw)
    hf = hf_meta(cfg)
    hf_params = sum(p.numel() for p in hf.parameters())
    assert hf_params == published
    plan = ours(import_hf(as_file_dict(cfg)))
    assert param_stats(plan)["total"] == hf_params
    # forward FLOPs: transformers' own model under FlopCounterMode (eager attention), batch 1,
    # source and target of the same length (the analysis' enc-dec convention)
    from torch.utils.flop_counter import FlopCounterMode

    s = 32
    ids = torch.zeros(1, s, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        hf(input_ids=ids, decoder_input_ids=ids)
    ref = counter.get_total_flops()
    got = flop_stats(plan, s, 1)["forward"]
    assert abs(got - ref) / ref < 0.005, (got, ref)
    # KV cache per token (bf16): decoder self K/V per target token + cross K/V per source token, every layer
    n_dec = cfg.num_decoder_layers
    inner = cfg.num_heads * cfg.d_kv
    kv = kv_cache(plan, "bf16")
    assert kv["self_bytes_per_token"] == n_dec * 2 * inner * 2
    assert kv["cross_bytes_per_source_token"] == n_dec * 2 * inner * 2


# ---------------------------------------------------------------------------
# Logits: our model with the HF model's (random) weights

T5_TINY = dict(vocab_size=61, d_model=32, d_kv=6, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=7, decoder_start_token_id=0)
LOGIT_CASES = {
    "t5": dict(T5_TINY),  # relu FFN, tied head rescaled by d_model**-0.5, H * d_kv != d_model
    # gated layout (wi_0 / wi_1); transformers 5 ties the head anyway but drops the rescale
    "t5-gated": dict(T5_TINY, feed_forward_proj="gated-silu", tie_word_embeddings=False),
}


def _random_hf(model_type: str, kw: dict):
    torch.manual_seed(0)
    cfg = hf_config(model_type, **kw)
    cfg._attn_implementation = "eager"
    hf = AutoModelForSeq2SeqLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights well away from the init (norm gains, biases too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return cfg, hf


def _ours_with(model_type: str, design: dict, hf) -> torch.nn.Module:
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict(model_type, hf.state_dict()), strict=True)
    return model


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_logits_equal_with_hf_weights(case):
    model_type = case.split("-")[0]
    cfg, hf = _random_hf(model_type, LOGIT_CASES[case])
    design = import_hf(as_file_dict(cfg))
    model = _ours_with(model_type, design, hf)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(0, 61, (2, 11), generator=g), torch.randint(0, 61, (2, 9), generator=g)
    src_mask = torch.ones(2, 11, dtype=torch.bool)
    src_mask[1, 8:] = False  # padded source tokens
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt).logits
        got = model(src, tgt, mask=src_mask).output
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4, (got - ref).abs().max().item()
    # cached decoding (the bias of the step's absolute position) equals the full forward
    with torch.no_grad():
        cache = model.new_cache(2, 9)
        memory = model.encode(src, src_mask)
        steps = [model.forward_one_step(tgt[:, :4], cache, memory=memory, memory_mask=src_mask)]
        steps += [model.forward_one_step(tgt[:, i:i + 1], cache) for i in range(4, 9)]
    assert (torch.cat(steps, 1) - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 7), (6, 20), (64, 300)])
def test_t5_buckets_equal_transformers(num_buckets, max_distance):
    """Every relative position in [-600, 600], both directions, against T5Attention's own bucket function."""
    from transformers.models.t5.modeling_t5 import T5Attention

    from backend.nn.common import LayerContext
    from backend.nn.positional import RelativePositionBias

    ctx = LayerContext(hidden_size=8, n_heads=2, n_kv_heads=2, head_dim=4, ffn_hidden=8,
                       params={"num_buckets": num_buckets, "max_distance": max_distance})
    with torch.device("meta"):
        bias = RelativePositionBias(ctx)
    rel = torch.arange(-600, 601)
    for causal in (False, True):
        ref = T5Attention._relative_position_bucket(rel, bidirectional=not causal, num_buckets=num_buckets,
                                                    max_distance=max_distance)
        assert torch.equal(bias.buckets(rel, causal=causal), ref)


def test_t5_transformers_4_file_with_an_untied_head_has_the_published_count():
    """flan-t5-small's config.json (transformers 4): gated-gelu, its own lm_head, no rescale: 76,961,152."""
    v4 = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": 32128, "d_model": 512,
          "d_kv": 64, "d_ff": 1024, "num_layers": 8, "num_decoder_layers": 8, "num_heads": 6,
          "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": True,
          "tie_word_embeddings": False, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
          "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1, "initializer_factor": 1.0, "n_positions": 512,
          "output_past": True, "is_encoder_decoder": True, "pad_token_id": 0, "eos_token_id": 1,
          "decoder_start_token_id": 0, "use_cache": True, "transformers_version": "4.23.1", "torch_dtype": "float32",
          "task_specific_params": {"summarization": {"prefix": "summarize: "}}}
    design, notes = import_hf_notes(v4)
    assert design["tie_embeddings"] is False and design["head_rescale"] is False
    assert any("gelu_new" in n for n in notes)
    assert param_stats(ours(design))["total"] == 76_961_152
    # transformers 5 ties T5's head whatever the file says: its count is one embedding matrix less
    hf = hf_meta(hf_config("t5", **{k: v for k, v in v4.items() if k not in (
        "model_type", "architectures", "transformers_version", "torch_dtype", "dense_act_fn", "is_gated_act")}))
    assert sum(p.numel() for p in hf.parameters()) == 76_961_152 - 32128 * 512


@pytest.mark.parametrize("model_type, field, value", [
    ("t5", "feed_forward_proj", "gated-tanh"),
    ("t5", "dense_act_fn", "gelu"),  # contradicts feed_forward_proj relu
    ("t5", "is_encoder_decoder", False),
    ("t5", "is_decoder", True),
    ("t5", "relative_attention_max_distance", 2),  # not beyond the exact buckets
    ("t5", "some_new_feature", 1),
    ("t5", "num_heads", "8"),
])
def test_unsupported_fields_are_errors_naming_field_and_value(model_type, field, value):
    d = as_file_dict(hf_config(model_type, **REAL["t5-small"][2]))
    d[field] = value
    with pytest.raises(DesignError) as err:
        load_design(import_hf(d))
    assert field in str(err.value) and repr(value) in str(err.value)


def test_t5_small_preset_has_the_published_count_and_matches_the_import():
    from backend.build import model_config

    preset = load_design("t5_small")
    assert param_stats(resolve_plan(preset))["total"] == 60_506_624
    imported = model_config(import_hf(as_file_dict(hf_config("t5", **REAL["t5-small"][2]))))
    mine = model_config(preset)
    skip = ("name", "dropout")
    assert {k: v for k, v in mine.items() if k not in skip} == {k: v for k, v in imported.items() if k not in skip}


def test_standalone_export_of_a_t5_design_reproduces_the_output(tmp_path):
    """The exported file (torch + stdlib only) builds the same model: same state dict, same logits."""
    import importlib.util

    from backend.export import export_text

    cfg, hf = _random_hf("t5", LOGIT_CASES["t5"])
    design = import_hf(as_file_dict(cfg))
    path = tmp_path / "t5_tiny.py"
    path.write_text(export_text(load_design(design), "python"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("t5_tiny", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in the file look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    theirs = mod.build_model().eval()
    theirs.load_state_dict(map_state_dict("t5", hf.state_dict()), strict=True)
    src, tgt = torch.randint(0, 61, (1, 7)), torch.randint(0, 61, (1, 5))
    with torch.no_grad():
        ref = hf(input_ids=src, decoder_input_ids=tgt).logits
        assert (theirs(src, tgt).output - ref).abs().max().item() < 1e-4


def test_t5_training_step_reaches_every_parameter_including_both_bias_tables():
    cfg, _ = _random_hf("t5", LOGIT_CASES["t5"])
    model = build_model(import_hf(as_file_dict(cfg)), device="cpu").train()
    src, tgt = torch.randint(0, 61, (2, 7)), torch.randint(0, 61, (2, 5))
    model(src, tgt).output.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert model.stacks["encoder"].pos.weight.shape == model.stacks["decoder"].pos.weight.shape == (8, 4)
