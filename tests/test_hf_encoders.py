"""Hugging Face import of encoder models (bert, roberta: backend/hf/encoders.py) and bart (backend/hf/encdec.py).

The independent references are transformers' own models: built on the meta device from
public config values for the counts and FLOPs (``FlopCounterMode``, eager attention),
and from tiny random configs for the logits (our model loaded through ``map_state_dict``).
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import CONFIG_MAPPING, AutoModelForMaskedLM, AutoModelForSeq2SeqLM  # noqa: E402

from backend.analysis.flops import flop_stats  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design, load_preset  # noqa: E402

# Public config values (config.json of each checkpoint).
REAL = {
    "bert-base-uncased": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                       intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                                       hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)),
    "roberta-base": ("roberta", dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                                     hidden_act="gelu", layer_norm_eps=1e-5, pad_token_id=1)),
    "bart-base": ("bart", dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                               decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                               max_position_embeddings=1024, activation_function="gelu", scale_embedding=False)),
}
SEQ2SEQ = ("bart",)


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def _auto(model_type: str):
    return AutoModelForSeq2SeqLM if model_type in SEQ2SEQ else AutoModelForMaskedLM


def hf_meta(model_type: str, cfg):
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        return _auto(model_type).from_config(cfg)


def hf_flops(model_type: str, hf, s: int = 32) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.full((1, s), 5, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        if model_type in SEQ2SEQ:
            hf(input_ids=ids, decoder_input_ids=ids)
        else:
            hf(input_ids=ids)
    return counter.get_total_flops()


@pytest.mark.parametrize("label", list(REAL))
def test_counts_equal_transformers_own_model(label):
    model_type, kw = REAL[label]
    cfg = hf_config(model_type, **kw)
    hf = hf_meta(model_type, cfg)
    hf_params = sum(p.numel() for p in hf.parameters())
    design = import_hf(as_file_dict(cfg))
    plan = resolve_plan(load_design(design))
    assert param_stats(plan)["total"] == hf_params
    assert sum(p.numel() for p in build_model(plan, device="meta").parameters()) == hf_params
    from backend.analysis.smoke import closed_form_params

    assert closed_form_params(plan) == hf_params  # the kinds' closed forms agree too
    s = 32
    ref = hf_flops(model_type, hf, s)
    got = flop_stats(plan, s, 1)["forward"]
    assert abs(got - ref) / ref < 0.005, (got, ref)


# ---------------------------------------------------------------------------
# Logits: our model with the HF model's (random) weights

TINY = dict(vocab_size=61, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
LOGIT_CASES = {
    "bert": dict(TINY, max_position_embeddings=40, type_vocab_size=3),
    "roberta": dict(TINY, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
}


def _random_hf(model_type: str, kw: dict):
    torch.manual_seed(0)
    cfg = hf_config(model_type, **kw)
    cfg._attn_implementation = "eager"
    hf = _auto(model_type).from_config(cfg).float().eval()
    with torch.no_grad():  # weights well away from the init (norm gains, biases too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
        for name, b in hf.named_buffers():
            if name.endswith("final_logits_bias"):
                b.zero_()
    return cfg, hf


def _ours_with(model_type: str, design: dict, hf) -> torch.nn.Module:
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict(model_type, hf.state_dict()), strict=True)
    return model


BART_TINY = dict(vocab_size=61, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=80, max_position_embeddings=24)


@pytest.mark.parametrize("case", ["bert", "roberta"])
def test_mlm_scores_equal_with_hf_weights(case):
    cfg, hf = _random_hf(case, LOGIT_CASES[case])
    design = import_hf(as_file_dict(cfg))
    model = _ours_with(case, design, hf)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 61, (2, 13), generator=g)  # no padding id: RoBERTa numbers only real tokens
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 9:] = False  # right padding (masked keys)
    types = torch.randint(0, cfg.type_vocab_size, (2, 13), generator=g)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).logits
        got = model(ids, mask=mask, token_types=types).output
    assert got.shape == ref.shape
    diff = (got - ref)[mask].abs().max().item()
    assert diff < 1e-4, diff
    with torch.no_grad():  # token types default to 0, as transformers' buffered ids
        assert (model(ids).output - hf(input_ids=ids).logits).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------
# Errors and validation


@pytest.mark.parametrize("key, value", [("position_embedding_type", "relative_key"), ("add_cross_attention", True),
                                        ("hidden_act", "tanh"), ("tie_word_embeddings", False), ("is_decoder", True)])
def test_unmappable_bert_fields_are_errors_naming_them(key, value):
    cfg = as_file_dict(hf_config("bert", **TINY))
    cfg[key] = value
    with pytest.raises(DesignError) as exc:
        import_hf(cfg)
    assert key in str(exc.value)


def test_unknown_key_is_an_error():
    cfg = as_file_dict(hf_config("roberta", **TINY))
    cfg["fancy_new_thing"] = 3
    with pytest.raises(DesignError, match="fancy_new_thing"):
        import_hf(cfg)


_ENC = {"architecture": "encoder", "task": "mlm", "vocab_size": 50, "hidden_size": 32, "n_heads": 2, "max_seq_len": 16,
        "positional": "learned", "layers": {"n_layers": 1}}


@pytest.mark.parametrize("extra, field, value", [
    ({"position_offset": 2, "positional": "rope"}, "position_offset", "2"),
    ({"head_bias": True, "task": "regression", "output_dim": 1}, "head_bias", "regression"),
    ({"head_transform": True, "task": "classification", "output_dim": 3}, "head_transform", "classification"),
    ({"type_vocab_size": 2, "vocab_size": None, "input_dim": 4, "task": "regression", "output_dim": 1}, "type_vocab_size", "2"),
    ({"type_vocab_size": -1}, "type_vocab_size", "-1"),
    ({"position_offset": -2}, "position_offset", "-2"),
    ({"embed_norm": "yes"}, "embed_norm", "yes"),
])
def test_bad_values_are_one_line_errors_naming_field_and_value(extra, field, value):
    with pytest.raises(DesignError) as exc:
        load_design({**_ENC, **extra})
    text = str(exc.value)
    assert "\n" not in text and field in text and value in text, text


def test_standalone_export_runs_a_bert_like_design(tmp_path):
    import importlib.util
    import sys

    from backend.export.standalone import render

    def _load_exported(text, tmp_path, name):
        path = tmp_path / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"_export_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[spec.name]
        return module

    design = load_design({**_ENC, "norm": "layer", "bias": True, "norm_placement": "post", "final_norm": False,
                          "embed_norm": True, "type_vocab_size": 2, "position_offset": 2, "head_transform": True,
                          "head_bias": True, "layers": {"n_layers": 2, "mlp": "mlp"}})
    module = _load_exported(render(design), tmp_path, "bert_like")
    torch.manual_seed(0)
    ref = build_model(design, device="cpu").eval()
    with torch.no_grad():
        ref.head.bias.normal_()
    model = module.build_model(device="cpu").eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    types = torch.randint(0, 2, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model(x, token_types=types).output, ref(x, token_types=types).output, atol=1e-6)


# ---------------------------------------------------------------------------
# Presets with the published counts


@pytest.mark.parametrize("preset, label", [("bert_base", "bert-base-uncased"), ("bart_base", "bart-base")])
def test_preset_counts_equal_transformers(preset, label):
    model_type, kw = REAL[label]
    hf = hf_meta(model_type, hf_config(model_type, **kw))
    plan = resolve_plan(load_preset(preset))
    assert param_stats(plan)["total"] == sum(p.numel() for p in hf.parameters())


def test_bart_logits_equal_with_hf_weights():
    cfg, hf = _random_hf("bart", BART_TINY)
    design = import_hf(as_file_dict(cfg))
    model = _ours_with("bart", design, hf)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(3, 61, (2, 11), generator=g), torch.randint(3, 61, (2, 9), generator=g)
    src_mask = torch.ones(2, 11, dtype=torch.bool)
    src_mask[1, 8:] = False  # padded source tokens
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt).logits
        got = model(src, tgt, mask=src_mask).output
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4, (got - ref).abs().max().item()
    # cached decoding (positions from the offset at the step's absolute position) equals the full forward
    with torch.no_grad():
        cache = model.new_cache(2, 9)
        memory = model.encode(src, src_mask)
        steps = [model.forward_one_step(tgt[:, :4], cache, memory=memory, memory_mask=src_mask)]
        steps += [model.forward_one_step(tgt[:, i:i + 1], cache) for i in range(4, 9)]
    assert (torch.cat(steps, 1) - ref).abs().max().item() < 1e-4


def test_bart_nonzero_final_logits_bias_is_refused():
    cfg, hf = _random_hf("bart", BART_TINY)
    state = dict(hf.state_dict())
    state["final_logits_bias"] = torch.ones_like(state["final_logits_bias"])
    with pytest.raises(DesignError, match="final_logits_bias"):
        map_state_dict("bart", state)


@pytest.mark.parametrize("key, value", [("scale_embedding", True), ("normalize_before", True), ("decoder_attention_heads", 2),
                                        ("activation_function", "tanh"), ("add_final_layer_norm", True)])
def test_unmappable_bart_fields_are_errors_naming_them(key, value):
    cfg = as_file_dict(hf_config("bart", **BART_TINY))
    cfg[key] = value
    with pytest.raises(DesignError) as exc:
        import_hf(cfg)
    assert key in str(exc.value)
