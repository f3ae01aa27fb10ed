"""Text form of :func:`backend.training.plan.plan_training` and the ``plan-training`` command."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..analysis.report import human

MEMORY_TERMS = (
    ("weights_bytes", "weights"),
    ("grads_bytes", "gradients"),
    ("optimizer_bytes", "optimizer state"),
    ("gathered_weights_bytes", "gathered layers (ZeRO-3)"),
    ("activations_bytes", "activations"),
    ("overhead_bytes", "overhead"),
)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:,.1f} days" if seconds >= 86400 else f"{seconds / 3600:,.2f} h"


def format_plan(r: dict[str, Any]) -> str:
    lay, m, t, g = r["layout"], r["memory"], r["time"], r["gpu"]
    inf = r["inference"]
    lines = [
        f"{r['design']} on {lay['gpus']} x {g['name']}: dp {lay['dp']} x tp {lay['tp']}{' (SP)' if lay['sp'] else ''}"
        f" x pp {lay['pp']}, ZeRO-{lay['zero']}, recompute {lay['recompute']}, {lay['dtype']}",
        f"seq {lay['seq_len']}, micro-batch {lay['micro_batch']}, global batch {lay['global_batch']} "
        f"({lay['micro_batches_per_step']} micro-batches per step per data-parallel rank)",
        f"parameters {r['params']['total']:,} ({human(r['params']['total'])}), active per token {human(r['params']['active'])}",
        "",
        f"per-GPU memory (pipeline stage {m['stage']}, layers {m['layers'][0]}-{m['layers'][1] - 1}, "
        f"{m['micro_batches_in_flight']} micro-batch(es) in flight):",
    ]
    for key, label in MEMORY_TERMS:
        lines.append(f"  {label:<26} {human(m[key], 'B'):>12}")
    verdict = "fits" if m["fits"] else "DOES NOT FIT"
    lines.append(f"  {'total':<26} {human(m['total_bytes'], 'B'):>12}   of {human(m['capacity_bytes'], 'B')}: {verdict}")
    a = r["activations"]
    lines += [
        "",
        "activations, whole model, one micro-batch, no parallelism: as built "
        + ", ".join(f"{k} {human(v, 'B')}" for k, v in a["as_built_bytes"].items())
        + f"; loss {human(a['as_built_loss_bytes'], 'B')}",
        f"  Korthikanti et al. 2022 for this layout: {human(a['korthikanti']['per_layer_bytes'], 'B')} per layer, "
        f"{human(a['korthikanti']['layers_bytes_first_stage'], 'B')} on the first stage",
        "",
        f"training FLOPs per token (reference: {r['reference_convention']}) and the MFU each convention reports:",
    ]
    for k, v in r["flops"].items():
        lines.append(f"  {k:<13} {human(v['per_token'])}FLOP/token  {human(v['per_step'])}FLOP/step  MFU {100 * v['mfu']:5.1f} %")
    lines += [
        "",
        f"time at MFU {100 * t['mfu']:.0f} % (HFU {100 * t['hfu']:.1f} %): step {t['step_s']:,.2f} s, "
        f"{t['tokens_per_s']:,.0f} tokens/s; {t['tokens']:.3g} tokens = {t['steps']:,.0f} steps = "
        f"{_days(t['time_to_train_s'])}, {t['gpu_hours']:,.0f} GPU-hours",
        f"inference on {inf['replica_gpus']} GPU(s): prefill {inf['prefill_s'] * 1e3:,.1f} ms for {lay['seq_len']} tokens; "
        f"decode <= {inf['decode_tokens_per_s_bound']:,.1f} tokens/s at batch 1; largest batch at {lay['seq_len']} tokens: "
        f"{inf['max_batch_at_seq_len'] if inf['max_batch_at_seq_len'] is not None else 'not bounded by a KV cache'}",
    ]
    ft = r.get("fit_table")
    if ft:
        lines += ["", f"layouts that fit on {ft['gpus']} GPUs: {ft['fitting']} of {ft['tried']} (first {len(ft['rows'])}):",
                  f"  {'tp':>3} {'pp':>3} {'dp':>4} {'sp':>3} {'zero':>4} {'recompute':<10} {'per GPU':>12} {'headroom':>12}"]
        for row in ft["rows"]:
            lines.append(f"  {row['tp']:>3} {row['pp']:>3} {row['dp']:>4} {'y' if row['sp'] else 'n':>3} {row['zero']:>4} "
                         f"{row['recompute']:<10} {human(row['total_bytes'], 'B'):>12} {human(row['headroom_bytes'], 'B'):>12}")
    lines += [f"warning: {w}" for w in r.get("warnings", ())]
    return "\n".join(lines)


def cli_plan_training(args: argparse.Namespace) -> int:
    from .plan import plan_training

    r = plan_training(args.design, gpu=args.gpu, gpus=args.gpus, tp=args.tp, pp=args.pp, zero=args.zero, sp=args.sp,
                      recompute=args.recompute, seq_len=args.seq_len, micro_batch=args.micro_batch,
                      global_batch=args.global_batch, tokens=args.tokens, mfu=args.mfu, dtype=args.dtype)
    print(json.dumps(r) if args.json else format_plan(r))
    return 0
