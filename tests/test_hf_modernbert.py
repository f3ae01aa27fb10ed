"""Hugging Face import of ModernBERT (backend/hf/modernbert.py) and the `first_attn_norm` option it needs.

The independent references are transformers' own ModernBertForMaskedLM: built on the meta device from the
public config values for the counts and FLOPs (``FlopCounterMode``, eager attention), and from tiny random
configs for the logits (our model loaded through ``map_state_dict``) and for the sliding-window mask.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForMaskedLM, ModernBertConfig  # noqa: E402

from backend.analysis.flops import flop_stats  # noqa: E402
from backend.analysis.params import param_stats  # noqa: E402
from backend.analysis.smoke import closed_form_params, smoke_test  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.hf import import_hf, map_state_dict  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Public config values (answerdotai/ModernBERT-base and -large config.json), with the hub files' flat keys
# (transformers 4 wrote them; transformers 5 reads them on load).
BASE = dict(vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
            max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=128,
            global_rope_theta=160000.0, local_rope_theta=10000.0, hidden_activation="gelu", norm_eps=1e-5,
            norm_bias=False, attention_bias=False, mlp_bias=False, classifier_bias=False, decoder_bias=True,
            tie_word_embeddings=True)
REAL = {"ModernBERT-base": BASE,
        "ModernBERT-large": {**BASE, "hidden_size": 1024, "intermediate_size": 2624, "num_hidden_layers": 28,
                             "num_attention_heads": 16}}
PUBLISHED = {"ModernBERT-base": 149e6, "ModernBERT-large": 395e6}


def as_file_dict(cfg) -> dict:
    return json.loads(cfg.to_json_string())


def hf_meta(cfg):
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        return AutoModelForMaskedLM.from_config(cfg)


def hf_flops(hf, s: int = 32) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.full((1, s), 5, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        hf(input_ids=ids)
    return counter.get_total_flops()


@pytest.mark.parametrize("label", list(REAL))
def test_counts_and_flops_equal_transformers_own_model(label):
    cfg = ModernBertConfig(**REAL[label])
    hf = hf_meta(cfg)
    hf_params = sum(p.numel() for p in hf.parameters())
    plan = resolve_plan(load_design(import_hf(as_file_dict(cfg))))
    ours = param_stats(plan)["total"]
    s = 32
    ref, got = hf_flops(hf, s), flop_stats(plan, s, 1)["forward"]
    print(f"{label}: ours {ours:,} HF {hf_params:,} (published ~{PUBLISHED[label] / 1e6:.0f}M); "
          f"FLOPs ours {got:,.0f} HF {ref:,} ratio {got / ref:.6f}")
    assert ours == hf_params
    assert sum(p.numel() for p in build_model(plan, device="meta").parameters()) == hf_params
    assert closed_form_params(plan) == hf_params  # the kinds' closed forms agree too
    assert abs(got - ref) / ref < 0.005, (got, ref)
    # longer than the local window (65): HF's eager attention still computes every score, as the dense count
    ref, got = hf_flops(hf, 256), flop_stats(plan, 256, 1)["forward"]
    print(f"{label} at 256 tokens: FLOP ratio {got / ref:.6f}")
    assert abs(got - ref) / ref < 0.005, (got, ref)
    assert abs(hf_params - PUBLISHED[label]) / PUBLISHED[label] < 0.01


def test_transformers5_config_imports_as_the_flat_keys():
    """transformers 5 keeps the thetas in ``rope_parameters`` per layer type and writes ``layer_types``."""
    v4 = dict(BASE, model_type="modernbert")
    v5 = as_file_dict(ModernBertConfig(**BASE))
    assert "rope_parameters" in v5 and "layer_types" in v5 and "global_rope_theta" not in v5
    assert import_hf(v4) == import_hf(v5)
    d = import_hf(v5)
    assert d["rope_theta"] == 160000.0 and d["first_attn_norm"] is False
    (rule,) = d["layers"]["rules"]
    assert rule["params"]["attention"] == {"window": 65, "rope_theta": 10000.0}
    assert rule["when"]["layer_idx"] == [i for i in range(22) if i % 3]
    partial = {**v5, "rope_parameters": {"full_attention": {"rope_type": "default"}}, "local_rope_theta": 5.0}
    hf_cfg = ModernBertConfig(**{k: v for k, v in partial.items() if k not in ("model_type", "transformers_version")})
    assert hf_cfg.rope_parameters["sliding_attention"]["rope_theta"] == 5.0  # transformers' own reading
    thetas = import_hf(partial)
    assert thetas["rope_theta"] == hf_cfg.rope_parameters["full_attention"]["rope_theta"] == 160000.0
    assert thetas["layers"]["rules"][0]["params"]["attention"]["rope_theta"] == 5.0
    assert import_hf({**v4, "local_rope_theta": None})["layers"]["rules"][0]["params"]["attention"] == {"window": 65}


# ---------------------------------------------------------------------------
# Tiny random models: logits and the sliding-window mask

TINY = dict(vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            max_position_embeddings=64, global_attn_every_n_layers=3, local_attention=8, global_rope_theta=160000.0,
            local_rope_theta=10.0, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
CASES = {
    "plain": TINY,  # layers 0, 3 global; 1, 2 local (window 8 // 2 + 1 = 5)
    "biases_odd_window": dict(TINY, local_attention=9, norm_bias=True, attention_bias=True, mlp_bias=True,
                              classifier_bias=True, decoder_bias=True, hidden_activation="gelu_pytorch_tanh",
                              classifier_activation="silu", num_hidden_layers=5),
    "no_decoder_bias": dict(TINY, decoder_bias=False, global_attn_every_n_layers=2),
}
SEQ = 20  # longer than every local window


def _random_hf(kw: dict):
    torch.manual_seed(0)
    cfg = ModernBertConfig(**kw)
    cfg._attn_implementation = "eager"
    hf = AutoModelForMaskedLM.from_config(cfg).float().eval()
    with torch.no_grad():  # weights well away from the init (norm gains, biases too), so every map matters
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return cfg, hf


def _ours_with(design: dict, hf) -> torch.nn.Module:
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict("modernbert", hf.state_dict()), strict=True)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_mlm_logits_equal_with_hf_weights(case):
    cfg, hf = _random_hf(CASES[case])
    design = import_hf(as_file_dict(cfg))
    model = _ours_with(design, hf)
    assert isinstance(model.stacks["layers"].blocks[0].attn_norm, torch.nn.Identity)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 61, (2, SEQ), generator=g)
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        got = model(ids).output
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    print(f"{case}: max |logit diff| {diff:.2e}")
    assert diff < 1e-4, diff
    mask = torch.ones(2, SEQ, dtype=torch.bool)
    mask[1, 14:] = False  # right padding (masked keys)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).logits
        got = model(ids, mask=mask).output
    assert (got - ref)[mask].abs().max().item() < 1e-4


def test_sliding_window_matches_hf_mask():
    """HF keeps |i - j| <= local_attention // 2; the imported `window` keeps the same pairs, and only there."""
    from backend.nn.common import attention_mask

    for local_attention in (8, 9, 128):
        kw = dict(TINY, local_attention=local_attention, max_position_embeddings=300)
        cfg, hf = _random_hf(kw)
        seen: dict[int, torch.Tensor] = {}

        def grab(i):
            def hook(module, args, kwargs):
                seen[i] = kwargs["attention_mask"]
            return hook

        handles = [layer.attn.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(hf.model.layers)]
        s = 2 * local_attention + 5
        with torch.no_grad():
            hf(input_ids=torch.randint(3, 61, (1, s)))
        for h in handles:
            h.remove()
        design = import_hf(as_file_dict(cfg))
        plan = resolve_plan(load_design(design))
        pos = torch.arange(s)
        for layer in plan.stacks["layers"].unique:
            hf_mask = seen[layer.unique_index]
            hf_keep = torch.ones(s, s, dtype=torch.bool) if hf_mask is None else (hf_mask[0, 0] == 0)
            w = layer.config["attention"].get("window", 0)
            ours = attention_mask(pos, pos, causal=False, window=w)
            ours = torch.ones(s, s, dtype=torch.bool) if ours is None else ours[0, 0]
            assert torch.equal(ours, hf_keep), (local_attention, layer.unique_index, w)
            assert bool(w) == (layer.unique_index % 3 != 0)


# ---------------------------------------------------------------------------
# The CLI: refused fields, --weights, analyze and smoke


def run(*args):
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("key, value", [
    ("attention_bias", True), ("classifier_bias", True), ("tie_word_embeddings", False), ("hidden_activation", "relu"),
    ("classifier_activation", "tanh"), ("is_decoder", True), ("rope_scaling", {"rope_type": "linear", "factor": 2.0}),
    ("layer_types", ["full_attention", "chunked_attention", "sliding_attention", "full_attention"]),
    ("num_key_value_heads", 2), ("fancy_new_thing", 3)])
def test_refused_fields_exit_2_with_one_line(tmp_path, key, value):
    cfg = as_file_dict(ModernBertConfig(**TINY))
    if key == "rope_scaling":
        cfg = dict(TINY, model_type="modernbert")
    cfg[key] = value
    with pytest.raises(DesignError) as exc:
        import_hf(cfg)
    assert key in str(exc.value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = run("import-hf", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and key in r.stderr, r.stderr


def test_import_hf_weights_load_strictly_and_give_hf_logits(tmp_path):
    import runpy

    from safetensors.torch import load_file

    from backend.export import export_text

    _, hf = _random_hf(CASES["biases_odd_window"])
    hf.save_pretrained(tmp_path)
    design_path = tmp_path / "d.yaml"
    r = run("import-hf", str(tmp_path / "config.json"), "-o", str(design_path), "--weights", str(tmp_path / "model.safetensors"))
    assert r.returncode == 0, r.stderr
    state = load_file(str(tmp_path / "d.safetensors"))
    model = build_model(str(design_path), device="cpu").eval()
    model.load_state_dict(state, strict=True)
    py = tmp_path / "exported.py"
    py.write_text(export_text(str(design_path), "python"), encoding="utf-8")
    theirs = runpy.run_path(str(py), run_name="exported")["build_model"](device="cpu").eval()
    theirs.load_state_dict(state, strict=True)
    tokens = torch.randint(3, 61, (2, SEQ))
    with torch.no_grad():
        ref = hf(input_ids=tokens).logits
        assert (model(tokens).output - ref).abs().max().item() < 1e-4
        assert (theirs(tokens).output - ref).abs().max().item() < 1e-4
    r = run("analyze", str(design_path), "--seq-len", "32", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"]["total"] == sum(p.numel() for p in hf.parameters())


def test_cli_analyzes_modernbert_base_and_smoke_runs(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(BASE, model_type="modernbert", architectures=["ModernBertForMaskedLM"])))
    r = run("analyze", str(path), "--seq-len", "256", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"]["total"] == 149_655_232
    result = smoke_test(import_hf(json.loads(path.read_text())), scaled=True)
    assert result.passed, [(c.name, c.message) for c in result.checks if not c.passed]


# ---------------------------------------------------------------------------
# first_attn_norm: validation, counts, and the standalone export


_ENC = {"architecture": "encoder", "task": "mlm", "vocab_size": 50, "hidden_size": 32, "n_heads": 2, "max_seq_len": 16,
        "norm": "layer", "first_attn_norm": False, "layers": {"n_layers": 3}}


@pytest.mark.parametrize("extra, value", [({"norm_placement": "post"}, "post"), ({"norm_placement": "pre_post"}, "pre_post"),
                                          ({"parallel_residual": True}, "parallel_residual"),
                                          ({"first_attn_norm": "no"}, "no")])
def test_first_attn_norm_refusals_are_one_line_naming_field_and_value(extra, value):
    with pytest.raises(DesignError) as exc:
        load_design({**_ENC, **extra})
    text = str(exc.value)
    assert "\n" not in text and "first_attn_norm" in text and value in text, text


@pytest.mark.parametrize("norm", ["layer", "rms", "rezero"])
def test_first_attn_norm_drops_exactly_one_norm(norm):
    on, off = ({**_ENC, "norm": norm, "first_attn_norm": v} for v in (True, False))
    built = [sum(p.numel() for p in build_model(d, device="meta").parameters()) for d in (on, off)]
    per_norm = built[0] - built[1]
    assert per_norm == {"layer": 32, "rms": 32, "rezero": 1}[norm]
    for d, n in zip((on, off), built):
        plan = resolve_plan(d)
        assert param_stats(plan)["total"] == n
    model = build_model(off, device="cpu")
    blocks = model.stacks["layers"].blocks
    assert isinstance(blocks[0].attn_norm, torch.nn.Identity) and not isinstance(blocks[1].attn_norm, torch.nn.Identity)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(0, 50, (2, 8))).output).all()


def test_standalone_export_runs_a_modernbert_like_design(tmp_path):
    import runpy

    from backend.export import export_text

    design = load_design(import_hf(as_file_dict(ModernBertConfig(**CASES["biases_odd_window"]))))
    py = tmp_path / "exported.py"
    py.write_text(export_text(design, "python"), encoding="utf-8")
    torch.manual_seed(0)
    ref = build_model(design, device="cpu").eval()
    with torch.no_grad():
        ref.head.bias.normal_()
    model = runpy.run_path(str(py), run_name="exported")["build_model"](device="cpu").eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randint(0, 61, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x).output, ref(x).output, atol=1e-6)


def test_preset_equals_the_import_and_transformers_count():
    from backend.spec import load_preset

    preset = load_preset("modernbert_base")
    imported = load_design(import_hf(dict(BASE, model_type="modernbert")))
    assert preset.model_copy(update={"name": imported.name, "description": imported.description}) == imported
    hf = hf_meta(ModernBertConfig(**BASE))
    assert param_stats(resolve_plan(preset))["total"] == sum(p.numel() for p in hf.parameters()) == 149_655_232
