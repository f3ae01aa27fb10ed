"""Hugging Face import of the encoder-decoder models t5 and bart (backend/hf/encdec.py).

The independent references are transformers' own models: built on the meta device from
public config values for the counts and FLOPs (``FlopCounterMode``, eager attention),
and from tiny random configs for the logits (our model loaded through ``map_state_dict``).
T5's bucket function is checked against transformers' ``T5Attention._relative_position_bucket``.
"""
from __future__ import annotations

import json

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
