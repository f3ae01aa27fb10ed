"""``export --format train``: the standalone train.py under one process and under torchrun.

The exported file runs in a fresh interpreter (``python -I``, cwd a temporary
folder: the project is not importable there). Checks:

* it imports only torch and the standard library, and ``--help`` works;
* ``torchrun --nproc-per-node 2`` (gloo, CPU) with DDP logs the same losses
  as one process with the same global batch (<= 1e-5, float32), and so does
  FSDP2 (``fully_shard`` per block);
* a checkpoint written by the 2-rank FSDP2 run after step 2 resumes in one
  process with the losses the uninterrupted run logged for steps 3-4;
* the baked FLOP count matches Kaplan et al. 2020 (arXiv 2001.08361, table 1:
  ``C_forward = 2 N + 2 n_layer n_ctx d_attn``) with the attention term over
  the full S x S matrix (PaLM appendix B), times 3 for training;
* bad input (a design that is no token LM) exits 2 with one line.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from backend.analysis.params import param_stats  # noqa: E402
from backend.export.train import baked_flops, render_train  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.spec import load_design  # noqa: E402

HYBRID = {
    "name": "train-hybrid", "architecture": "decoder", "task": "lm", "vocab_size": 128, "hidden_size": 32,
    "n_heads": 4, "max_seq_len": 64, "positional": "rope",
    "layers": {"n_layers": 2, "string": "CAUSAL_LINEAR,SDPA", "mlp": "swiglu"},
}
DENSE = {
    "name": "train-dense", "architecture": "decoder", "task": "lm", "vocab_size": 100, "hidden_size": 48,
    "n_heads": 4, "max_seq_len": 128, "positional": "rope", "tie_embeddings": False, "mlp_hidden": 96,
    "layers": {"n_layers": 3, "attention": "self_sdpa", "mlp": "mlp"},
}
STEPS = ["--task", "mqar", "--steps", "4", "--global-batch", "8", "--log-every", "1", "--lr", "3e-3"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train") / "train_hybrid_train.py"
    path.write_text(render_train(load_design(HYBRID)))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def _losses(path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def test_imports_only_torch_and_stdlib(script):
    tree = ast.parse(script.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots - {"torch"} <= set(sys.stdlib_module_names), roots


@pytest.mark.slow
def test_help_in_a_fresh_interpreter(script):
    p = _run([sys.executable, "-I", str(script), "--help"], script.parent, timeout=60)
    assert "--parallel" in p.stdout and "--resume" in p.stdout and "--checkpointing" in p.stdout


def test_flop_count_is_kaplan_with_full_attention():
    """Per-token training FLOPs = 3 * (2 * matmul weights + 2 * L * S * d_attn * 2) for a dense softmax stack."""
    plan = resolve_plan(load_design(DENSE))
    d, L, V, f = 48, 3, 100, 96
    matmul = L * (4 * d * d + 2 * d * f) + d * V  # q k v o, fc1 fc2, the (untied) head; embeddings are lookups
    flops = baked_flops(plan)["per_token"]
    assert [s for s, _ in flops] == [128, 64]
    assert param_stats(plan)["total"] == matmul + V * d + (2 * L + 1) * d  # + embedding + rms gains: nothing hidden
    for s, per_token in flops:
        kaplan = 3 * (2 * matmul + 2 * 2 * L * s * d)  # QK^T and AV: 2 FLOPs/MAC each over S keys
        assert per_token == pytest.approx(kaplan, rel=1e-3), (s, per_token, kaplan)


@pytest.mark.slow
def test_torchrun_ddp_fsdp_and_resume_match_one_process(script, tmp_path):
    cwd = script.parent
    one = tmp_path / "one.jsonl"
    _run([sys.executable, "-I", str(script), *STEPS, "--log-json", str(one)], cwd)
    ref = _losses(one)
    assert len(ref) == 4 and all(v == v for v in ref)

    ddp = tmp_path / "ddp.jsonl"
    p = _run([*TORCHRUN, str(script), *STEPS, "--parallel", "ddp", "--log-json", str(ddp)], cwd)
    assert "DDP x 2" in p.stdout
    assert _losses(ddp) == pytest.approx(ref, abs=1e-5)

    fsdp = tmp_path / "fsdp.jsonl"
    ck = tmp_path / "ck.pt"
    p = _run([*TORCHRUN, str(script), *STEPS, "--parallel", "fsdp", "--stop-at", "2", "--save", str(ck),
              "--log-json", str(fsdp)], cwd)
    assert "FSDP2 x 2 (2 block units + root)" in p.stdout
    assert _losses(fsdp) == pytest.approx(ref[:2], abs=1e-5)

    resumed = tmp_path / "resumed.jsonl"
    p = _run([sys.executable, "-I", str(script), *STEPS, "--resume", str(ck), "--log-json", str(resumed)], cwd)
    assert "steps 2..4 of 4" in p.stdout
    assert _losses(resumed) == pytest.approx(ref[2:], abs=1e-5)


@pytest.mark.slow
def test_single_process_resume_is_exact(script, tmp_path):
    cwd = script.parent
    full, part, ck = tmp_path / "full.jsonl", tmp_path / "part.jsonl", tmp_path / "ck.pt"
    args = ["--task", "copy", "--steps", "3", "--global-batch", "4", "--log-every", "1", "--checkpointing"]
    _run([sys.executable, "-I", str(script), *args, "--log-json", str(full)], cwd)
    _run([sys.executable, "-I", str(script), *args, "--stop-at", "1", "--save", str(ck), "--log-json", str(part)], cwd)
    _run([sys.executable, "-I", str(script), *args, "--resume", str(ck), "--log-json", str(part)], cwd)
    assert _losses(part) == _losses(full)


def test_cli_refuses_a_design_that_is_no_token_lm(tmp_path):
    out = tmp_path / "x_train.py"
    p = subprocess.run([sys.executable, "-m", "backend", "export", "tiny", "--format", "train", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: architecture:"), p.stderr
    assert not out.exists()
