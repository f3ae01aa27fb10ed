"""``analyze(design)``: parameters, FLOPs and memory in one dict (DESIGN.md section 6).

Shape of the result (every number an int; bytes for ``dtype``)::

    name, architecture, task, seq_len, batch, dtype, distinct_layers, warnings
    params:  total, unique, executed, embedding, non_embedding, head, tied_head,
             components {attention, mlp, norm, embeddings, head, other}
    flops:   forward, forward_causal, training, training_causal,
             attention_matrix (the S x S part of forward), components, components_causal
    memory:  dtype, weights_bytes, weights_bytes_by_dtype {fp32, bf16, fp16, int8},
             training {weights_bytes, grads_bytes, master_weights_bytes, optimizer_bytes, total_bytes},
             kv_cache_bytes_per_token, kv_cache_bytes_at_seq_len, kv_cache_bytes_at_max_seq_len,
             kv_cache {...}, activations_bytes (as built: what autograd saves, no recompute),
             activations {layers_bytes, embedding_bytes, head_bytes, encoder_output_bytes, loss_bytes, ...}
    layers:  one per executed layer: stack, index, unique_index, attention, mlp, norm,
             params, flops, flops_causal, params_components, flops_components, activations_bytes

Importing this module is cheap (no torch); :func:`analyze` imports the
measuring modules on first use.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

DTYPES = ("fp32", "bf16", "fp16", "int8")


def _plan(design_or_plan: Any):
    from ..plan import Plan, resolve_plan

    return design_or_plan if isinstance(design_or_plan, Plan) else resolve_plan(design_or_plan)


def analyze(design_or_plan: Any, *, seq_len: int | None = None, batch: int = 1, dtype: str = "bf16") -> dict[str, Any]:
    """Parameters, FLOPs and memory of a design, plan, design dict, file or preset name."""
    from ..plan import length_warning
    from . import memory
    from .flops import flop_stats
    from .params import param_stats

    if dtype not in DTYPES:
        from ..errors import DesignError

        raise DesignError("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    plan = _plan(design_or_plan)
    d = plan.design
    s = int(seq_len or d.max_seq_len)
    if s < 1 or batch < 1:
        from ..errors import DesignError

        raise DesignError("seq_len" if s < 1 else "batch", f"must be >= 1, got {s if s < 1 else batch}")
    length_note = length_warning(plan, s)  # before measuring: a layer that cannot run s is refused here
    ps = param_stats(plan)
    fs = flop_stats(plan, s, batch)
    kv = memory.kv_cache(plan, dtype, s, batch)
    from ..training.activations import as_built

    act = as_built(plan, s, batch, dtype)  # measured with saved-tensor hooks (backend/training/activations.py)
    total = ps["total"]

    layers = []
    for layer, p, f, a in zip(plan.layers, ps["per_executed_layer"], fs["per_executed_layer"], act["per_layer"]):
        layers.append({
            "stack": layer.stack,
            "index": layer.index,
            "unique_index": layer.unique_index,
            "attention": layer.attention,
            "mlp": layer.mlp,
            "norm": layer.norm,
            "params": p["total"],
            "flops": f["forward"],
            "flops_causal": f["forward_causal"],
            "params_components": {k: p[k] for k in ("attention", "mlp", "norm", "other")},
            "flops_components": f["components"],
            "activations_bytes": a["bytes"],
        })
    distinct = {(layer.stack, layer.unique_index) for layer in plan.layers}
    signatures = {layer.signature() for layer in plan.layers}
    return {
        "name": d.name,
        "architecture": d.architecture,
        "task": d.task,
        "seq_len": s,
        "batch": batch,
        "dtype": dtype,
        "unique_layers": len(distinct),
        "distinct_layers": len(signatures),
        "executed_layers": len(plan.layers),
        "warnings": list(plan.warnings) + ([length_note] if length_note else []),
        "params": {k: ps[k] for k in ("total", "unique", "executed", "embedding", "non_embedding", "head", "tied_head", "components")},
        "flops": {k: fs[k] for k in ("forward", "forward_causal", "training", "training_causal", "attention_matrix",
                                     "components", "components_causal")},
        "memory": {
            "dtype": dtype,
            "weights_bytes": memory.weights_bytes(total, dtype),
            "weights_bytes_by_dtype": {t: memory.weights_bytes(total, t) for t in DTYPES},
            "training": memory.training_bytes(total, dtype),
            "kv_cache_bytes_per_token": kv["bytes_per_token"],
            "kv_cache_bytes_at_seq_len": kv["at_seq_len_bytes"],
            "kv_cache_bytes_at_max_seq_len": kv["at_max_seq_len_bytes"],
            "kv_cache": kv,
            "activations_bytes": act["total_bytes"],
            "activations": {k: v for k, v in act.items() if k != "per_layer"},
        },
        "layers": layers,
    }


# ---------------------------------------------------------------------------
# Human-readable output


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (SI prefixes; bytes use binary prefixes: 'B')."""
    if unit == "B":
        for p in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
            if abs(n) < 1024 or p == "PiB":
                return f"{n:.0f} {p}" if p == "B" else f"{n:.2f} {p}"
            n /= 1024
    for p in ("", "K", "M", "G", "T", "P", "E"):
        if abs(n) < 1000 or p == "E":
            return f"{n:.0f}{p}" if p == "" else f"{n:.2f}{p}{unit}"
        n /= 1000
    return str(n)


def format_report(r: dict[str, Any]) -> str:
    p, f, m = r["params"], r["flops"], r["memory"]
    lines = [
        f"{r['name']}: {r['architecture']}, task {r['task']}; {r['executed_layers']} executed layers "
        f"({r['unique_layers']} unique, {r['distinct_layers']} distinct); seq {r['seq_len']}, batch {r['batch']}",
        "",
        f"parameters   total {p['total']:,} ({human(p['total'])})   executed {p['executed']:,}",
        f"             embedding {p['embedding']:,}   non-embedding {p['non_embedding']:,}"
        f"   head {'tied' if p['tied_head'] else format(p['head'], ',')}",
        "             " + "   ".join(f"{k} {v:,}" for k, v in p["components"].items()),
        f"FLOPs        forward {f['forward']:,} ({human(f['forward'])})   causal-aware {f['forward_causal']:,} ({human(f['forward_causal'])})",
        f"             training {f['training']:,} ({human(f['training'])})   attention matrix {human(f['attention_matrix'])}",
        "             " + "   ".join(f"{k} {human(v)}" for k, v in f["components"].items()),
        f"memory       weights {human(m['weights_bytes'], 'B')} ({m['dtype']})   "
        + "   ".join(f"{t} {human(v, 'B')}" for t, v in m["weights_bytes_by_dtype"].items()),
        f"             training (Adam) {human(m['training']['total_bytes'], 'B')}   "
        f"activations {human(m['activations_bytes'], 'B')}",
        f"             KV cache {human(m['kv_cache_bytes_per_token'], 'B')}/token   "
        f"at seq {r['seq_len']}: {human(m['kv_cache_bytes_at_seq_len'], 'B')}   "
        f"at max_seq_len: {human(m['kv_cache_bytes_at_max_seq_len'], 'B')}",
        "",
        f"{'stack':<8} {'layers':>9}  {'attention':<14} {'mlp':<8} {'norm':<9} {'params':>16} {'fwd FLOPs':>12} {'causal':>12}",
    ]
    # consecutive identical layers collapse into one row
    rows: list[list[Any]] = []
    for e in r["layers"]:
        key = (e["stack"], e["attention"], e["mlp"], e["norm"], e["params"], e["flops"], e["flops_causal"])
        if rows and rows[-1][0] == key and rows[-1][2] == e["index"] - 1:
            rows[-1][2] = e["index"]
        else:
            rows.append([key, e["index"], e["index"]])
    for key, a, b in rows:
        span = f"{a}" if a == b else f"{a}-{b}"
        stack, att, mlp, norm, prm, fl, flc = key
        lines.append(f"{stack:<8} {span:>9}  {att:<14} {mlp:<8} {norm:<9} {prm:>16,} {human(fl):>12} {human(flc):>12}")
    for w in r["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def cli_analyze(args: argparse.Namespace) -> int:
    r = analyze(args.design, seq_len=args.seq_len, batch=args.batch, dtype=args.dtype)
    if args.json:
        print(json.dumps(r))
    else:
        print(format_report(r))
    return 0
