"""``export --format hf`` (backend/export/hf.py): the config transformers builds is our model.

References: transformers' own model built from the exported config (parameter count on the meta
device; logits with its random weights mapped onto ours), and the importer's round trip
(``import-hf(export(d))`` has d's numbers). Designs no HF architecture holds are refused, naming
the field.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from backend.analysis import analyze  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.errors import DesignError  # noqa: E402
from backend.export import export_text  # noqa: E402
from backend.export.hf import hf_config  # noqa: E402
from backend.hf import import_hf, map_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw):
    d = {"name": "tiny-hf", "vocab_size": 61, "hidden_size": 32, "n_heads": 4, "n_kv_heads": 2, "mlp_hidden": 48,
         "max_seq_len": 32, "layers": {"n_layers": 2}}
    layers = kw.pop("layers", {})
    d.update(kw)
    d["layers"].update(layers)
    return d


TINY = {
    "llama": tiny(),
    "mistral": tiny(layers={"params": {"attention": {"window": 3}}}),
    "qwen2": tiny(qkv_bias=True),
    "qwen3": tiny(layers={"n_layers": 3, "params": {"attention": {"qk_norm": True}},
                          "rules": [{"when": {"layer_idx": [1]}, "params": {"attention": {"window": 4}}}]}),
    "mixtral": tiny(layers={"mlp": "moe", "params": {"mlp": {"num_experts": 4, "top_k": 2}}}),
    "gpt2": tiny(n_kv_heads=None, positional="learned", norm="layer", bias=True, qkv_bias=True,
                 layers={"mlp": "mlp"}),
    "gpt_neox": tiny(n_kv_heads=None, norm="layer", bias=True, qkv_bias=True, parallel_residual=True,
                     layers={"mlp": "mlp", "params": {"attention": {"rotary_fraction": 0.5}}}),
    "olmo2": tiny(norm_placement="post_sublayer", rope_theta=500000.0,
                  layers={"params": {"attention": {"qk_norm": True, "qk_norm_over": "projection"}}}),
    "gemma": tiny(embed_scale=True, head_dim=16, tie_embeddings=True,
                  layers={"mlp": "geglu", "params": {"mlp": {"gelu_approximate": "tanh"}}}),
    "gemma3_text": tiny(embed_scale=True, head_dim=16, tie_embeddings=True, norm_placement="pre_post",
                        logit_softcap=3.0, rope_theta=1e6, layers={
                            "n_layers": 3, "mlp": "geglu", "params": {"attention": {"qk_norm": True, "scale": 0.2},
                                                                      "mlp": {"gelu_approximate": "tanh"}},
                            "rules": [{"when": {"layer_idx": [0, 1]},
                                       "params": {"attention": {"window": 4, "rope_theta": 10000.0}}}]}),
}


def hf_model(cfg: dict, device: str = "cpu"):
    from test_hf_decoders import causal_lm  # Gemma 3's module needs a docstring workaround here

    conf = AutoConfig.for_model(**cfg)
    conf._attn_implementation = "eager"
    with torch.device(device):
        return causal_lm(conf)


@pytest.mark.parametrize("preset", ["llama2_7b", "mistral_7b", "mixtral_8x7b", "gpt2_small", "olmo2_7b",
                                    "pythia_1_4b", "gemma3_1b"])
def test_presets_export_to_transformers_own_model_with_equal_counts(preset):
    cfg = json.loads(export_text(preset, "hf"))
    theirs = sum(p.numel() for p in hf_model(cfg, "meta").parameters())
    ours = sum(p.numel() for p in build_model(preset, device="meta").parameters())
    assert theirs == ours
    # the round trip through the importer keeps every figure
    a, b = analyze(preset, seq_len=256), analyze(import_hf(cfg), seq_len=256)
    for key in ("params", "flops"):
        assert a[key] == b[key], key
    assert a["memory"]["kv_cache_bytes_per_token"] == b["memory"]["kv_cache_bytes_per_token"]


@pytest.mark.parametrize("model_type", list(TINY))
def test_tiny_designs_give_the_same_logits_in_transformers(model_type):
    design = TINY[model_type]
    cfg = hf_config(design)
    assert cfg["model_type"] == model_type
    torch.manual_seed(0)
    hf = hf_model(cfg).float().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    model = build_model(design, device="cpu").eval()
    model.load_state_dict(map_state_dict(model_type, hf.state_dict(), cfg), strict=True)
    tokens = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        ref, got = hf(tokens).logits, model(tokens).output
    assert (got - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("design, field", [
    ("hybrid", "layers[0].attention"),  # a spectral layer
    ("t5_small", "architecture"),
    (tiny(layers={"repeat": {"mode": "cycle", "factor": 2}}), "layers.repeat.mode"),
    (tiny(layers={"rules": [{"when": {"layer_idx": [0]}, "params": {"attention": {"window": 4}}}]}),
     "layers.params.attention.window"),  # per-layer windows need qwen2 / qwen3
    (tiny(rope_theta=10000.0, norm_placement="post"), "norm_placement"),
    (tiny(layers={"params": {"attention": {"sinks": True}}}), "layers[0].attention.sinks"),
    (tiny(layers={"mlp": "mlp"}), "norm"),  # a dense MLP with RMSNorm: neither gpt2 nor gpt_neox
    (tiny(embed_scale=True, norm_placement="pre_post", layers={"mlp": "geglu", "params": {
        "attention": {"qk_norm": True, "scale": 0.3}}}), "layers.params.attention.scale"),  # 0.3**-2 not an integer
    (tiny(n_kv_heads=None, norm="layer", bias=True, qkv_bias=True, layers={"mlp": "mlp", "params": {"attention": {"qk_norm": True}}}),
     "layers[0].attention.qk_norm"),  # GPT-NeoX has no QK-norm
])
def test_designs_hf_cannot_hold_are_refused_naming_the_field(design, field):
    with pytest.raises(DesignError) as exc:
        hf_config(design)
    assert str(exc.value).startswith(field), str(exc.value)


def test_cli_export_hf_writes_a_config_and_refuses_with_exit_2(tmp_path):
    out = tmp_path / "m.config.json"
    r = subprocess.run([sys.executable, "-m", "backend", "export", "mistral_7b", "--format", "hf", "-o", str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["sliding_window"] == 4096
    bad = tmp_path / "h.config.json"
    r = subprocess.run([sys.executable, "-m", "backend", "export", "hybrid", "--format", "hf", "-o", str(bad)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "layers[0].attention" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not bad.exists()


def _tiny_checkpoint(tmp_path, model_type: str, shard: bool = False):
    """A tiny random HF model saved the way the hub stores checkpoints (config.json + safetensors)."""
    from test_hf import LOGIT_CASES, hf_config as hf_cfg

    torch.manual_seed(0)
    cfg = hf_cfg(model_type, **LOGIT_CASES[model_type])
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    hf.save_pretrained(tmp_path, max_shard_size="20KB" if shard else "5GB")
    return hf


@pytest.mark.parametrize("model_type, shard", [("llama", False), ("gpt2", True), ("mixtral", True)])
def test_import_hf_weights_load_strictly_and_give_hf_logits(tmp_path, model_type, shard):
    """`import-hf config.json --weights ...` writes our state dict: it loads strictly into the design's model
    and into the standalone export, and both give the HF model's logits."""
    import runpy

    from safetensors.torch import load_file

    hf = _tiny_checkpoint(tmp_path, model_type, shard)
    weights = [str(tmp_path / "model.safetensors.index.json")] if shard else [str(tmp_path / "model.safetensors")]
    assert Path(weights[0]).exists()
    design_path = tmp_path / "d.yaml"
    r = subprocess.run([sys.executable, "-m", "backend", "import-hf", str(tmp_path / "config.json"), "-o",
                        str(design_path), "--weights", *weights], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    state = load_file(str(tmp_path / "d.safetensors"))
    model = build_model(str(design_path), device="cpu").eval()
    model.load_state_dict(state, strict=True)
    py = tmp_path / "exported.py"
    py.write_text(export_text(str(design_path), "python"), encoding="utf-8")
    theirs = runpy.run_path(str(py), run_name="exported")["build_model"](device="cpu").eval()
    theirs.load_state_dict(state, strict=True)
    tokens = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        ref = hf(tokens).logits
        assert (model(tokens).output - ref).abs().max().item() < 1e-4
        assert (theirs(tokens).output - ref).abs().max().item() < 1e-4


def test_import_hf_weights_refuses_a_mismatched_checkpoint_and_writes_nothing(tmp_path):
    from safetensors.torch import save_file

    _tiny_checkpoint(tmp_path, "llama")
    bad = tmp_path / "bad.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(7, 3)}, str(bad))  # wrong shape, and most tensors missing
    out = tmp_path / "d.yaml"
    r = subprocess.run([sys.executable, "-m", "backend", "import-hf", str(tmp_path / "config.json"), "-o", str(out),
                        "--weights", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: --weights:") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "d.safetensors").exists()
    r = subprocess.run([sys.executable, "-m", "backend", "import-hf", str(tmp_path / "config.json"), "--weights",
                        str(tmp_path / "model.safetensors")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--weights-out" in r.stderr
