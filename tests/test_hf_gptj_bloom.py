"""gptj / bloom import (backend/hf/gptj_bloom.py) against transformers' own models.

Public config values (model cards / config.json; the hub is unreachable) are built with transformers on the
meta device: parameter counts equal exactly, forward FLOPs (FlopCounterMode, eager attention) within 0.5%;
tiny random configs load HF's weights through ``map_state_dict`` strictly and give the same float32 logits
(GPT-J with a partial interleaved rotary, BLOOM with head counts that are not powers of two).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

ROOT = Path(__file__).resolve().parents[1]

REAL = {
    "GPT-J-6B": ("gptj", dict(
        n_embd=4096, n_layer=28, n_head=16, rotary_dim=64, n_positions=2048, vocab_size=50400, n_inner=None,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=False)),
    "BLOOM-560M": ("bloom", dict(hidden_size=1024, n_layer=24, n_head=16, vocab_size=250880, layer_norm_epsilon=1e-5)),
    "BLOOM-7B1": ("bloom", dict(hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880, layer_norm_epsilon=1e-5)),
}
# model cards: bigscience/bloom-560m and bloom-7b1 give transformers' counts; EleutherAI/gpt-j-6b's card says
# 6,053,381,344, 2,498,560 (= 610 * 4096) more than transformers' GPTJForCausalLM holds (checked below)
PUBLISHED = {"BLOOM-560M": 559_214_592, "BLOOM-7B1": 7_069_016_064}
GPTJ_CARD, GPTJ_HF = 6_053_381_344, 6_050_882_784


def hf_config(model_type: str, **kw):
    return CONFIG_MAPPING[model_type](**kw)


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


@pytest.mark.parametrize("label", list(REAL))
def test_counts_and_flops_equal_transformers_own_model(label):
    model_type, kw = REAL[label]
    cfg = hf_config(model_type, **kw)
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg)
    hf_params = sum(p.numel() for p in hf.parameters())
    if label in PUBLISHED:
        assert hf_params == PUBLISHED[label]
    if model_type == "gptj":
        assert hf_params == GPTJ_HF and GPTJ_CARD - GPTJ_HF == 610 * 4096
    plan = resolve_plan(load_design(import_hf(as_file_dict(cfg))))
    ours = param_stats(plan)["total"]
    print(f"{label}: ours {ours:,} transformers {hf_params:,}")
    assert ours == hf_params
    from torch.utils.flop_counter import FlopCounterMode

    s = 32
    ids = torch.zeros(1, s, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        hf(input_ids=ids)
    ref = counter.get_total_flops()
    got = flop_stats(plan, s, 1)["forward"]
    print(f"{label}: FLOP ratio {got / ref:.5f}")
    assert abs(got - ref) / ref < 0.005, (got, ref)
    # K and V of every head: 2 tensors x layers x hidden_size x 2 bytes
    assert kv_cache(plan, "bf16")["bytes_per_token"] == 2 * cfg.num_hidden_layers * cfg.hidden_size * 2


LOGIT_CASES = {
    # head_dim 16, rotary on the first 6 channels (pairs (0,1), (2,3), (4,5)), the tanh GELU
    "gptj": dict(vocab_size=61, n_embd=64, n_layer=2, n_head=4, rotary_dim=6, n_positions=64, n_inner=96,
                 bos_token_id=1, eos_token_id=2),
    "gptj-full-rotary": dict(vocab_size=61, n_embd=64, n_layer=2, n_head=4, rotary_dim=16, n_positions=64, bos_token_id=1,
                             eos_token_id=2,
                             activation_function="gelu", tie_word_embeddings=True),
    "bloom": dict(vocab_size=61, hidden_size=72, n_layer=2, n_head=6),  # 6 heads: ALiBi slopes of 4 + 2 of 8
    "bloom-12": dict(vocab_size=61, hidden_size=96, n_layer=2, n_head=12, tie_word_embeddings=False),
}


@pytest.mark.parametrize("case", list(LOGIT_CASES))
def test_logits_equal_with_hf_weights(case):
    model_type = case.split("-")[0]
    torch.manual_seed(0)
    cfg = hf_config(model_type, **LOGIT_CASES[case])
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
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
    with torch.no_grad():  # cached decoding gives the same logits as the full forward
        cache = model.new_cache(2, 16)
        steps = [model.forward_one_step(tokens[:, :5], cache)] + [model.forward_one_step(tokens[:, i:i + 1], cache)
                                                                   for i in range(5, 9)]
    assert (torch.cat(steps, dim=1) - got).abs().max().item() < 1e-5 * got.abs().max().item()


@pytest.mark.parametrize("heads", [1, 2, 6, 8, 12, 16, 20, 112])
def test_alibi_slopes_equal_bloom_build_alibi_tensor(heads):
    """Our per-head slopes are HF BLOOM's (its alibi is slope * key position; ours -slope * |i - j|)."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    from backend.nn.common import alibi_slopes

    mask = torch.ones(1, 5)
    theirs = build_alibi_tensor(mask, heads, torch.float32)[:, 0, 1]  # (B*H, 1, S): slope * position 1
    assert torch.allclose(alibi_slopes(heads), theirs.view(heads), rtol=1e-6, atol=0)  # HF: float32 powers


def test_design_fields():
    gptj = import_hf(as_file_dict(hf_config("gptj", **REAL["GPT-J-6B"][1])))
    assert gptj["parallel_residual"] and gptj["parallel_shared_norm"] and gptj["head_bias"]
    assert (gptj["bias"], gptj["qkv_bias"], gptj["norm_bias"]) == (False, False, True)
    assert gptj["layers"]["params"] == {"attention": {"rotary_interleaved": True, "rotary_fraction": 0.25},
                                        "mlp": {"bias": True, "gelu_approximate": "tanh"}}
    bloom = import_hf(as_file_dict(hf_config("bloom", **REAL["BLOOM-560M"][1])))
    assert bloom["embed_norm"] and bloom["tie_embeddings"] and bloom["positional"] == "alibi"
    assert bloom["layers"]["params"] == {"mlp": {"gelu_approximate": "tanh"}}
    for label in REAL:
        assert import_hf_notes(as_file_dict(hf_config(REAL[label][0], **REAL[label][1])))[1] == []  # exact


@pytest.mark.parametrize("model_type, field, value, match", [
    ("bloom", "apply_residual_connection_post_layernorm", True, "apply_residual_connection_post_layernorm"),
    ("bloom", "n_inner", 1000, "n_inner"),
    ("bloom", "slow_but_exact", True, "slow_but_exact"),  # with pretraining_tp 4 (set below)
    ("bloom", "some_new_feature", 1, "some_new_feature"),
    ("gptj", "rotary_dim", None, "rotary_dim"),
    ("gptj", "rotary_dim", 7, "rotary_dim"),
    ("gptj", "activation_function", "relu", "activation_function"),
])
def test_unmappable_fields_are_errors_naming_the_field(model_type, field, value, match):
    label = "GPT-J-6B" if model_type == "gptj" else "BLOOM-560M"
    d = as_file_dict(hf_config(model_type, **REAL[label][1]))
    d[field] = value
    if field == "slow_but_exact":
        d["pretraining_tp"] = 4
    with pytest.raises(DesignError, match=match):
        load_design(import_hf(d))


@pytest.mark.parametrize("model_type, field, value", [
    ("bloom", "apply_residual_connection_post_layernorm", True), ("gptj", "rotary_dim", None)])
def test_cli_refuses_with_exit_2_and_one_line(tmp_path, model_type, field, value):
    label = "GPT-J-6B" if model_type == "gptj" else "BLOOM-560M"
    d = as_file_dict(hf_config(model_type, **REAL[label][1]))
    d[field] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    r = subprocess.run([sys.executable, "-m", "backend", "import-hf", str(path)], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and field in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_inert_keys_of_the_public_files_are_accepted():
    """The keys of bigscience/bloom-560m's and EleutherAI/gpt-j-6b's config.json that transformers' models
    do not read (Megatron-DeepSpeed kernel switches, GPT-2 summary heads) change nothing."""
    d = as_file_dict(hf_config("bloom", **REAL["BLOOM-560M"][1]))
    d.update(attention_softmax_in_fp32=True, masked_softmax_fusion=True, slow_but_exact=False, pretraining_tp=4,
             bias_dropout_fusion=True, skip_bias_add=True, skip_bias_add_qkv=False, offset_alibi=100, unk_token_id=0,
             n_inner=None, pad_token_id=3)
    assert import_hf(d) == import_hf(as_file_dict(hf_config("bloom", **REAL["BLOOM-560M"][1])))
    d.update(slow_but_exact=True, pretraining_tp=1)  # the sliced path runs with pretraining_tp > 1 only
    assert import_hf(d) == import_hf(as_file_dict(hf_config("bloom", **REAL["BLOOM-560M"][1])))
    g = as_file_dict(hf_config("gptj", **REAL["GPT-J-6B"][1]))
    g.update(rotary=True, scale_attn_weights=True, gradient_checkpointing=False, summary_activation=None,
             summary_first_dropout=0.1, summary_proj_to_labels=True, summary_type="cls_index", summary_use_proj=True,
             tokenizer_class="GPT2Tokenizer", task_specific_params={"text-generation": {"do_sample": True}})
    assert import_hf(g) == import_hf(as_file_dict(hf_config("gptj", **REAL["GPT-J-6B"][1])))


def test_bloom_weights_need_the_config():
    with pytest.raises(DesignError, match="n_head"):
        map_state_dict("bloom", {"transformer.h.0.self_attention.query_key_value.weight": torch.zeros(12, 4)})


@pytest.mark.parametrize("case", ["gptj", "bloom"])
def test_import_hf_weights_analyze_and_smoke(tmp_path, case):
    """`import-hf config.json --weights model.safetensors` writes a state dict that loads strictly into the
    design's model and gives HF's logits; the design passes `analyze` and `smoke`."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    cfg = hf_config(case, **LOGIT_CASES[case])
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    hf.save_pretrained(tmp_path)
    design = tmp_path / "d.yaml"
    r = subprocess.run([sys.executable, "-m", "backend", "import-hf", str(tmp_path / "config.json"), "-o", str(design),
                        "--weights", str(tmp_path / "model.safetensors")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    model = build_model(str(design), device="cpu").eval()
    model.load_state_dict(load_file(str(tmp_path / "d.safetensors")), strict=True)
    tokens = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        assert (model(tokens).output - hf(tokens).logits).abs().max().item() < 1e-4
    for cmd in ("analyze", "smoke"):
        r = subprocess.run([sys.executable, "-m", "backend", cmd, str(design)], cwd=ROOT, capture_output=True,
                           text=True)
        assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-2000:])



@pytest.mark.parametrize("field, match", [
    ({"activation": "relu", "layers": {"n_layers": 1, "mlp": "mlp", "params": {"mlp": {"gelu_approximate": "tanh"}}}},
     "gelu_approximate"),
    ({"layers": {"n_layers": 1, "mlp": "mlp", "params": {"mlp": {"activation": "silu", "gelu_approximate": "tanh"}}}},
     "gelu_approximate"),
    ({"layers": {"n_layers": 1, "mlp": "mlp", "params": {"mlp": {"bias": "yes"}}}}, "bias"),
    ({"positional": "alibi", "layers": {"n_layers": 1, "params": {"attention": {"rotary_interleaved": True}}}},
     "rotary_interleaved"),
])
def test_bad_values_are_one_line_errors_naming_the_field(field, match):
    base = {"hidden_size": 32, "n_heads": 4, "vocab_size": 50, "layers": {"n_layers": 1}}
    with pytest.raises(DesignError, match=match) as err:
        resolve_plan(load_design({**base, **field}))
    assert "\n" not in str(err.value)


def test_mlp_bias_alone_counts():
    """The dense MLP's own `bias` adds fc1 / fc2 biases only (GPT-J): F + D per layer, nothing elsewhere."""
    base = {"hidden_size": 32, "n_heads": 4, "vocab_size": 50, "mlp_hidden": 48, "layers": {"n_layers": 2, "mlp": "mlp"}}
    plain = param_stats(resolve_plan(load_design(base)))["total"]
    biased = param_stats(resolve_plan(load_design({**base, "layers": {**base["layers"], "params": {"mlp": {"bias": True}}}})))
    assert biased["total"] == plain + 2 * (48 + 32)
    model = build_model({**base, "layers": {**base["layers"], "params": {"mlp": {"bias": True}}}}, device="meta")
    block = model.stacks["layers"].blocks[0]
    assert block.mlp.fc1.bias is not None and block.attn.o_proj.bias is None and block.attn.q_proj.bias is None
