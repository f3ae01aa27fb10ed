"""Training-plan check on a CUDA machine (run by hand; never in CI).

    python benchmarks/training_check.py [--preset gpt2_small] [--seq-len 1024] [--batch 8] [--steps 5]

Builds a small preset on CUDA in fp32 (the planner's fp32 recipe: 4 + 4 + 8
bytes per parameter for weights, gradients and Adam moments), runs a few
AdamW training steps (forward, cross-entropy, backward, step) and prints,
beside the planner's prediction for the same shape on one GPU (dp = tp = pp =
1, ZeRO-0, no recompute, no allocator overhead):

* ``torch.cuda.max_memory_allocated`` vs predicted weights + gradients +
  optimizer state + activations (the prediction adds all four; in the real
  step gradients do not exist yet while the forward's activations peak, so
  the ratio is expected below 1);
* the measured step time and the MFU it implies under each FLOP convention.

Results go to ``benchmarks/results/training_check_<gpu>_<date>.log`` by
redirecting stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.build import build_model  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.training.plan import plan_training  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2_small")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gpu", default="h200", help="catalogue entry for the prediction")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    plan = resolve_plan(args.preset)
    d = plan.design
    s, b = args.seq_len, args.batch
    pred = plan_training(plan, gpu=args.gpu, gpus=1, tp=1, pp=1, zero=0, recompute="none", seq_len=s, micro_batch=b,
                         global_batch=b, tokens=1e9, dtype="fp32", overhead_gib=0.0, overhead_fraction=0.0,
                         fit_table=False)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    for label, dtype, p in (("fp32", torch.float32, pred),):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = build_model(plan, device=dev, dtype=dtype)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
        x = torch.randint(0, d.vocab_size, (b, s), device=dev)
        y = torch.randint(0, d.vocab_size, (b * s,), device=dev)
        times = []
        for _ in range(args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(x).output
            loss = F.cross_entropy(out.float().view(-1, out.shape[-1]), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated()
        m = p["memory"]
        act = p["activations"]
        predicted = m["weights_bytes"] + m["grads_bytes"] + m["optimizer_bytes"] + m["activations_bytes"]
        step = min(times[1:] or times)
        tokens_per_s = b * s / step
        print(f"{args.preset} {label}: batch {b} x seq {s} on {torch.cuda.get_device_name()}")
        print(f"  max_memory_allocated {peak / 2**30:.3f} GiB; predicted {predicted / 2**30:.3f} GiB "
              f"(weights {m['weights_bytes'] / 2**30:.3f}, grads {m['grads_bytes'] / 2**30:.3f}, "
              f"optimizer {m['optimizer_bytes'] / 2**30:.3f}, activations {m['activations_bytes'] / 2**30:.3f}; "
              f"as built no recompute {act['as_built_bytes']['none'] / 2**30:.3f}); ratio {peak / predicted:.3f}")
        print(f"  step {step * 1e3:.1f} ms ({tokens_per_s:,.0f} tokens/s); MFU under each convention: "
              + ", ".join(f"{k} {v['per_token'] * tokens_per_s / p['time']['peak_flops_per_gpu']:.1%}"
                          for k, v in p["flops"].items()))
        del model, opt, out, loss
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
