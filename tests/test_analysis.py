"""analyze(): exact parameters (published totals, sharing, tying), the dict shape, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from backend.analysis.params import param_stats
from backend.analysis.report import analyze, format_report
from backend.plan import resolve_plan
from backend.presets import find_preset
from backend.registry import ATTENTION, CROSS


def _loads(info) -> bool:
    info.load()  # every registered kind must import; an error here fails the run
    return True


def preset(name: str):
    if find_preset(name) is None:
        pytest.fail(f"preset {name!r} is not in presets/ (added by the model issue)")
    plan = resolve_plan(name)
    for layer in plan.layers:
        info = ATTENTION[layer.attention]
        if not _loads(info) or (layer.cross and not _loads(CROSS)):
            pytest.fail(f"{info.module} not importable yet")
    return plan


PUBLISHED = {
    "gpt2_small": 124_439_808,
    "llama2_7b": 6_738_415_616,
    "mistral_7b": 7_241_732_096,
    "mixtral_8x7b": 46_702_792_704,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_totals(name):
    p = param_stats(preset(name))
    assert p["total"] == PUBLISHED[name]
    assert p["total"] == sum(p["components"].values())


def test_gpt2_embedding_split():
    p = param_stats(preset("gpt2_small"))
    assert p["embedding"] == 50257 * 768 + 1024 * 768  # tokens + learned positions
    assert p["tied_head"] and p["head"] == 0
    assert p["non_embedding"] == 124_439_808 - p["embedding"]


@pytest.mark.parametrize("name", ["gpt2_small", "medium_cycle", "encdec_kv_cache", "tiny", "medium_flow", "hybrid",
                                  "autoregressive_moe", "t5_style"])
def test_params_equal_whole_model_on_meta(name):
    """Per-distinct-layer assembly == sum(p.numel()) of the whole model built on meta."""
    from backend.build import build_model

    plan = preset(name)
    model = build_model(plan, device="meta")
    assert param_stats(plan)["total"] == sum(p.numel() for p in model.parameters())


def test_sharing_unique_vs_executed():
    plan = preset("medium_cycle")
    p = param_stats(plan)
    per_layer = p["per_executed_layer"]
    assert len(per_layer) == len(plan.layers) > len({(x.stack, x.unique_index) for x in plan.layers})
    layers = sum(x["total"] for x in per_layer)
    assert p["executed"] - layers == p["total"] - sum(sum(x["total"] for x in v) for v in p["per_unique_layer"].values())
    assert p["executed"] > p["total"]


KEYS = ["params.total", "params.unique", "params.embedding", "flops.forward", "flops.forward_causal", "flops.training",
        "memory.weights_bytes", "memory.kv_cache_bytes_per_token"]


def _get(d, dotted):
    for k in dotted.split("."):
        d = d[k]
    return d


def test_analyze_dict_shape():
    plan = preset("llama2_7b")
    r = analyze(plan, seq_len=2048, batch=2, dtype="fp16")
    for key in KEYS:
        assert isinstance(_get(r, key), int), key
    assert len(r["layers"]) == 32 and r["distinct_layers"] == 1
    e = r["layers"][5]
    assert {"stack", "index", "unique_index", "attention", "mlp", "params", "flops"} <= set(e)
    assert e["index"] == 5 and e["attention"] == "self_sdpa" and e["mlp"] == "swiglu"
    assert r["memory"]["weights_bytes"] == 2 * 6_738_415_616
    assert r["flops"]["forward"] == sum(x["flops"] for x in r["layers"]) + r["flops"]["components"]["head"]
    assert "llama2_7b" in format_report(r)
    json.dumps(r)  # serialisable


def test_cli_analyze_json_keys(repo_root):
    preset("gpt2_small")
    out = subprocess.run([sys.executable, "-m", "backend", "analyze", "gpt2_small", "--json", "--seq-len", "1024"],
                         cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in KEYS:
        _get(r, key)
    assert r["flops"]["forward"] == 291_648_307_200
    assert len(r["layers"]) == 12


def test_cli_analyze_bad_input_exit_2(repo_root):
    out = subprocess.run([sys.executable, "-m", "backend", "analyze", "no_such_design_xyz"], cwd=repo_root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_import_is_cheap():
    code = "import sys, backend.analysis.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("positional, attention, refuses", [
    ("learned", "self_sdpa", True),  # a table of max_seq_len rows
    ("rope", "spectral", True),  # one filter tap per position
    ("rope", "self_sdpa", False),  # runs past max_seq_len: only extrapolated
])
def test_seq_len_past_what_the_model_accepts_warns(positional, attention, refuses):
    """Issue 12, item 5: analyze / plan-training warn when the length exceeds what the model accepts; the
    reference is the real model, which refuses (or runs) that length."""
    import torch

    from backend.analysis import analyze
    from backend.build import build_model
    from backend.errors import DesignError
    from backend.training.plan import plan_training

    d = {"name": "len", "vocab_size": 50, "hidden_size": 16, "n_heads": 2, "max_seq_len": 8, "positional": positional,
         "layers": {"n_layers": 1, "attention": attention}}
    m = build_model(d).eval()
    ran = True
    try:
        with torch.no_grad():
            m(torch.zeros(1, 12, dtype=torch.long))
    except ValueError:
        ran = False
    assert ran is not refuses
    assert not [x for x in analyze(d, seq_len=8)["warnings"] if "seq_len" in x]
    if attention == "spectral":  # the layer itself cannot run 12 positions: nothing to count, a one-line refusal
        with pytest.raises(DesignError, match=r"seq_len: 12 exceeds 8.*spectral"):
            analyze(d, seq_len=12)
        with pytest.raises(DesignError, match="seq_len"):
            plan_training(d, gpus=1, seq_len=12, global_batch=8, fit_table=False)
        return
    w = [x for x in analyze(d, seq_len=12)["warnings"] if "seq_len 12" in x]
    assert len(w) == 1 and (("refuses" in w[0]) is refuses) and "max_seq_len" in w[0]
    p = plan_training(d, gpus=1, seq_len=12, global_batch=8, fit_table=False)
    assert p["warnings"] == analyze(d, seq_len=12)["warnings"]
