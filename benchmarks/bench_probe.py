"""The README probe table: designs x tasks, held-out accuracy and wall time.

    python benchmarks/bench_probe.py [--steps 800] [--tasks mqar,copy,induction,text] [-o results.json]

Runs ``backend.probe.run_probe`` with its defaults (AdamW, lr 1e-3, batch 32,
seed 0) on the four probe designs in ``benchmarks/probe_designs/`` (2 layers,
hidden 128, 2 heads: softmax attention, causal Performer, causal spectral
filter, and a Performer + softmax hybrid), one after another, appending
each result to the JSON file as it finishes, then prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.probe import run_probe  # noqa: E402

DESIGNS = ["probe_softmax", "probe_performer", "probe_spectral", "probe_hybrid", "probe_hybrid_sdpa_first"]


def table(rows: list[dict], tasks: list[str]) -> str:
    head = "| design | params | " + " | ".join(f"{t} acc | {t} s" for t in tasks) + " |"
    out = [head, "|" + "---|" * (2 + 2 * len(tasks))]
    for d in DESIGNS:
        mine = {r["task"]: r for r in rows if r["file"] == d}
        if not mine:
            continue
        params = next(iter(mine.values()))["params"]
        cells = []
        for t in tasks:
            r = mine.get(t)
            cells += [f"{r['final_accuracy']:.1%}", f"{r['wall_s']:.0f}"] if r else ["-", "-"]
        out.append(f"| {d} | {params:,} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--tasks", default="mqar,copy,induction,text")
    p.add_argument("--designs", default=",".join(DESIGNS))
    p.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "probe_table.json"))
    args = p.parse_args()
    tasks = args.tasks.split(",")
    out = Path(args.output)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for t in tasks:
        for d in args.designs.split(","):
            if any(r["file"] == d and r["task"] == t and r["steps"] == args.steps for r in rows):
                continue
            r = run_probe(ROOT / "benchmarks" / "probe_designs" / f"{d}.yaml", task=t, steps=args.steps)
            row = {"file": d, **{k: v for k, v in r.to_dict().items() if k != "design"}}
            rows.append(row)
            print(f"{d:<16} {t:<10} acc {r.final_accuracy:6.1%}  loss {r.final_loss:.3f}  {r.wall_s:5.0f} s  "
                  f"{r.tokens_per_s:,.0f} tok/s", flush=True)
            out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1))
    print(table(rows, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
