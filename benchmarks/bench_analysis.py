"""Benchmark: ``analyze`` (per distinct layer, cached) vs a whole-model trace and fvcore.

Run from the repo root: ``python benchmarks/bench_analysis.py``. Prints, for
GPT-2 small (S=1024), Llama-2-7B (S=4096) and a Llama-2-70B-shaped design
(S=4096):

* ``cold``: first ``analyze()`` in a process that already imported torch and
  the backend (all analysis caches cleared);
* ``warm``: ``analyze()`` again (best of 5);
* ``trace``: the whole model built on meta and traced once with
  ``FlopCounterMode`` (the straightforward way);
* ``fvcore``: fvcore's JIT counter on the real model with real weights (GPT-2
  only; 7B in fp32 needs ~27 GB), with an SDPA handle;

then the cold CLI ``python -m backend analyze <70B> --json``: wall time and
peak RSS of the child (``resource.getrusage(RUSAGE_CHILDREN)``).
Targets (issue 4): 7B warm <= 50 ms, 70B warm <= 100 ms, cold CLI 70B <= 6 s
and <= 800 MiB.
"""
from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend.analysis import flops, parts  # noqa: E402
from backend.analysis.crosscheck import fvcore_forward_flops, whole_model_meta_flops  # noqa: E402
from backend.analysis.report import analyze  # noqa: E402

SEVENTY_B = "llama2_70b"
CASES = [("gpt2_small", 1024), ("llama2_7b", 4096), (SEVENTY_B, 4096)]


def clear_caches() -> None:
    for f in (parts.block, parts._skeleton, flops.block_flops, flops._model_level):
        f.cache_clear()
    parts._CONFIGS.clear()


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def fvcore_gpt2() -> tuple[float, int, float]:
    from backend.build import build_model

    model = build_model("gpt2_small").eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x).output

    x = torch.randint(0, 50257, (1, 1024))
    t, n = timed(lambda: fvcore_forward_flops(Logits(model), (x,)))
    return t, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# A small launcher measures the CLI: a child forked from this (large) process would
# report this process's pages in its ru_maxrss before exec.
_LAUNCHER = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
out = subprocess.run([sys.executable, "-m", "backend", "analyze", sys.argv[1], "--json"], capture_output=True, text=True)
wall = time.perf_counter() - t0
assert out.returncode == 0, out.stderr
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def cold_cli() -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, SEVENTY_B], cwd=ROOT, capture_output=True, text=True, check=True)
    wall, rss = out.stdout.split()
    return float(wall), float(rss)


def main() -> None:
    print(f"# bench_analysis  {datetime.date.today()}  torch {torch.__version__}  {platform.machine()}  "
          f"{os.cpu_count()} CPUs  (python benchmarks/bench_analysis.py)")
    rows = []
    for name, seq in CASES:
        clear_caches()
        cold, r = timed(lambda: analyze(name, seq_len=seq))
        warm, _ = timed(lambda: analyze(name, seq_len=seq), repeat=5)
        trace, n_trace = timed(lambda: whole_model_meta_flops(name, seq))
        assert n_trace == r["flops"]["forward"], (name, n_trace, r["flops"]["forward"])
        rows.append((name, seq, r["params"]["total"], r["flops"]["forward"], cold, warm, trace))
    fv_t, fv_n, fv_rss = fvcore_gpt2()
    gpt2 = rows[0]
    assert fv_n == gpt2[3], (fv_n, gpt2[3])

    print()
    print(f"{'design':<12} {'seq':>5} {'params':>15} {'fwd FLOPs':>20} {'cold ms':>8} {'warm ms':>8} "
          f"{'trace ms':>9} {'trace/warm':>10} {'fvcore ms':>10} {'fvcore/warm':>11}")
    for name, seq, p, f, cold, warm, trace in rows:
        fv = f"{fv_t * 1e3:10.0f} {fv_t / warm:10.0f}x" if name == "gpt2_small" else f"{'-':>10} {'-':>11}"
        print(f"{name:<12} {seq:>5} {p:>15,} {f:>20,} {cold * 1e3:8.1f} {warm * 1e3:8.2f} {trace * 1e3:9.0f} "
              f"{trace / warm:9.0f}x {fv}")
    print(f"fvcore on real GPT-2 weights: same count ({fv_n:,}); process peak RSS after it {fv_rss:.0f} MiB")

    wall, rss = cold_cli()
    print(f"cold CLI `python -m backend analyze {SEVENTY_B} --json`: {wall:.2f} s wall, peak RSS {rss:.0f} MiB "
          f"(targets <= 6 s, <= 800 MiB)")
    w7, w70 = rows[1][5], rows[2][5]
    ok = w7 <= 0.05 and w70 <= 0.1 and wall <= 6 and rss <= 800
    print(f"targets: 7B warm {w7 * 1e3:.1f} ms (<= 50), 70B warm {w70 * 1e3:.1f} ms (<= 100): {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
