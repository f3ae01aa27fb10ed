"""Per-GPU memory of a parallel training layout, fit, the layouts that fit, and time.

``plan_training(design, gpu=..., gpus=..., tp=..., pp=..., zero=..., ...)``
returns one JSON-serialisable dict (``backend plan-training`` prints it).

Per-GPU memory, for the pipeline stage that holds the most (assumptions
stated once; each number is reported on its own):

* **Layout**: ``gpus = dp x tp x pp``. Pipeline stages take contiguous runs
  of ``ceil(L / pp)`` executed layers; the first stage also holds the
  embedding, the last one the head (a tied head is a second copy there when
  ``pp > 1``, as Megatron-LM keeps it), the final norms and flow. Tensor
  parallelism divides every weight of a stage by ``tp`` (Megatron-style
  column/row splits; norms are replicated in reality, a rounding error).
* **Weights / gradients / optimizer state** (mixed precision, Adam; ZeRO,
  Rajbhandari et al. 2019, arXiv 1910.02054, section 5): 2 bytes weight, 2
  bytes gradient, 12 bytes optimizer state (fp32 master copy + two moments)
  per parameter; fp32 training 4 + 4 + 8. ZeRO-1 divides the optimizer state
  by ``dp``, ZeRO-2 the gradients too, ZeRO-3 (= FSDP full sharding) the
  weights as well, plus two gathered layers' weights (the one computing and
  the one prefetched).
* **Activations**: the *as-built* bytes of ``activations.as_built`` for one
  micro-batch, per layer after recompute and ``tp`` / sequence parallelism
  (``activations.layer_bytes``); stage ``k`` of a 1F1B pipeline keeps
  ``min(pp - k, m)`` micro-batches in flight (Narayanan et al. 2021, arXiv
  2104.04473, section 2.2.1; ``m`` micro-batches per step per data-parallel
  rank); the first stage adds the embedding's saved tensors, the last the
  head's and the loss's (vocab-parallel: / ``tp``). Korthikanti et al.'s
  table 2 for the same shape is reported beside it.
* **Overhead**: ``overhead_gib`` fixed (CUDA context, cuBLAS workspace, NCCL
  buffers; 1 GiB by default) plus ``overhead_fraction`` of the rest for the
  caching allocator's fragmentation (5 % by default).

Time, at a stated MFU (default 40 %) on the reference convention
(``exact_causal``: the FLOPs a causal kernel really performs, without
recompute): step time = FLOPs per step / (gpus x dense peak x MFU); time to
train T tokens, GPU-hours. Recompute adds hardware FLOPs, reported as HFU.
The same step time read under each convention gives each convention's MFU.

Inference (one replica on ``tp`` GPUs, bf16 weights): prefill time of one
``seq_len`` prompt at the same MFU; decode tokens/s bound at batch 1 =
``tp x bandwidth / (active weight bytes + KV cache bytes at seq_len)``
(every weight and the whole cache read once per token); the largest batch
whose KV caches fit beside the weights at ``seq_len``.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import DesignError
from . import activations as acts
from .conventions import flops_per_token, mfu as mfu_under, active_params
from .hardware import GPU, gpu as gpu_entry

ZERO_STAGES = (0, 1, 2, 3)
REFERENCE = "exact_causal"


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise DesignError(field, message)


def _stages(n_layers: int, pp: int) -> list[range]:
    per = math.ceil(n_layers / pp)
    return [range(k * per, min(n_layers, (k + 1) * per)) for k in range(pp)]


def _state_bytes(params: float, *, dp: int, zero: int, dtype: str) -> dict[str, float]:
    w, g, o = (4, 4, 8) if dtype == "fp32" else (2, 2, 12)
    return {
        "weights_bytes": params * w / (dp if zero >= 3 else 1),
        "grads_bytes": params * g / (dp if zero >= 2 else 1),
        "optimizer_bytes": params * o / (dp if zero >= 1 else 1),
    }


def _context(plan: Any, seq_len: int, micro_batch: int, dtype: str, selective: bool) -> dict[str, Any]:
    """Everything a layout needs, measured once (analysis report, as-built activations)."""
    from ..analysis.report import analyze

    report = analyze(plan, seq_len=seq_len, batch=1, dtype="bf16" if dtype == "int8" else dtype)
    ab = acts.as_built(plan, seq_len, micro_batch, dtype, quadratic=selective)
    layer_params = [e["params"] for e in report["layers"]]
    unique_ids = [(e["stack"], e["unique_index"]) for e in report["layers"]]
    p = report["params"]
    in_layers = sum({u: n for u, n in zip(unique_ids, layer_params)}.values())
    return {"report": report, "as_built": ab, "layer_params": layer_params, "unique_ids": unique_ids,
            "embedding": p["embedding"], "head": p["head"] or (p["embedding"] if p["tied_head"] else 0),
            "tied": p["tied_head"], "rest": p["total"] - p["embedding"] - p["head"] - in_layers}


def layout_memory(ctx: dict[str, Any], *, tp: int, pp: int, dp: int, zero: int, sp: bool, recompute: str,
                  micro_batches: int, dtype: str, overhead_gib: float, overhead_fraction: float) -> dict[str, Any]:
    """Per-GPU bytes of the heaviest pipeline stage (module docstring)."""
    ab = ctx["as_built"]
    per_layer = ab["per_layer"]
    n = len(per_layer)
    stages = _stages(n, pp)
    worst: dict[str, Any] | None = None
    for k, rng in enumerate(stages):
        uniq = {ctx["unique_ids"][i]: ctx["layer_params"][i] for i in rng}
        params = sum(uniq.values())
        first, last = k == 0, k == len(stages) - 1
        if first:
            params += ctx["embedding"]
        if last:
            params += ctx["rest"] + (ctx["head"] if (not ctx["tied"] or pp > 1) else 0)
        params /= tp
        state = _state_bytes(params, dp=dp, zero=zero, dtype=dtype)
        gathered = 0.0
        if zero >= 3 and rng:
            gathered = 2 * max(ctx["layer_params"][i] for i in rng) / tp * (4 if dtype == "fp32" else 2)
        in_flight = min(pp - k, micro_batches)
        layers = sum(acts.layer_bytes(per_layer[i], recompute=recompute, tp=tp, sp=sp) for i in rng)
        working = 0.0
        if recompute == "full" and rng:  # one layer's full set while it is recomputed
            working = max(acts.layer_bytes(per_layer[i], tp=tp, sp=sp) for i in rng)
        act = layers * in_flight + working
        if first:
            act += ab["embedding_bytes"] * in_flight / (tp if sp else 1)
        if last:
            act += (ab["head_bytes"] + ab["loss_bytes"]) / tp + ab["encoder_output_bytes"] / (tp if sp else 1)
        subtotal = sum(state.values()) + gathered + act
        overhead = overhead_gib * 2**30 + overhead_fraction * subtotal
        entry = {"stage": k, "layers": [rng.start, rng.stop], "params_per_gpu": params, **state,
                 "gathered_weights_bytes": gathered, "activations_bytes": act, "micro_batches_in_flight": in_flight,
                 "overhead_bytes": overhead, "total_bytes": subtotal + overhead}
        if worst is None or entry["total_bytes"] > worst["total_bytes"]:
            worst = entry
    return {k: (int(v) if isinstance(v, float) else v) for k, v in worst.items()}


def _validate(d: Any, n_layers: int, *, gpus: int, tp: int, pp: int, zero: int, recompute: str, seq_len: int,
              micro_batch: int, global_batch: int, tokens: float, mfu: float) -> int:
    for name, v in (("gpus", gpus), ("tp", tp), ("pp", pp), ("seq_len", seq_len), ("micro_batch", micro_batch),
                    ("global_batch", global_batch)):
        _check(isinstance(v, int) and v >= 1, name, f"must be an integer >= 1, got {v!r}")
    _check(zero in ZERO_STAGES, "zero", f"must be one of 0, 1, 2, 3, got {zero!r}")
    _check(recompute in acts.RECOMPUTE, "recompute", f"must be one of {', '.join(acts.RECOMPUTE)}, got {recompute!r}")
    _check(gpus % (tp * pp) == 0, "gpus", f"must be a multiple of tp x pp = {tp * pp}, got {gpus}")
    _check(d.n_heads % tp == 0, "tp", f"must divide n_heads = {d.n_heads}, got {tp}")
    _check(pp <= n_layers, "pp", f"must be <= the {n_layers} executed layers, got {pp}")
    dp = gpus // (tp * pp)
    _check(global_batch % (micro_batch * dp) == 0, "global_batch",
           f"must be a multiple of micro_batch x dp = {micro_batch} x {dp}, got {global_batch}")
    _check(tokens > 0 and math.isfinite(tokens), "tokens", f"must be a positive number, got {tokens!r}")
    _check(0 < mfu <= 1, "mfu", f"must be in (0, 1], got {mfu!r}")
    _check(seq_len <= 1 << 22, "seq_len", f"must be <= {1 << 22}, got {seq_len}")
    return dp


def _inference(report: dict[str, Any], act: dict[str, int], g: GPU, tp: int, mfu: float, overhead_gib: float) -> dict[str, Any]:
    m = report["memory"]
    peak = g.peak_flops("bf16")
    prefill_s = report["flops"]["forward_causal"] / (tp * peak * mfu)
    weight_read = act["active"] * 2  # bf16; at batch 1 a token reads only its experts
    kv_seq = m["kv_cache_bytes_at_seq_len"]
    free = tp * (g.memory_bytes - overhead_gib * 2**30) - m["weights_bytes_by_dtype"]["bf16"]
    return {
        "replica_gpus": tp,
        "prefill_s": prefill_s,
        "decode_bytes_per_token": weight_read + kv_seq,
        "decode_tokens_per_s_bound": tp * g.bandwidth_gbs * 1e9 / (weight_read + kv_seq),
        "kv_cache_bytes_per_sequence": kv_seq,
        "max_batch_at_seq_len": (max(0, int(free // kv_seq)) if kv_seq else None),
        "weights_fit": free > 0,
    }


def plan_training(design: Any, *, gpu: str = "h100-sxm", gpus: int = 8, tp: int = 1, pp: int = 1, zero: int = 1,
                  sp: bool = False, recompute: str = "selective", seq_len: int | None = None, micro_batch: int = 1,
                  global_batch: int = 1024, tokens: float = 1e12, mfu: float = 0.4, dtype: str = "bf16",
                  overhead_gib: float = 1.0, overhead_fraction: float = 0.05, fit_table: bool = True) -> dict[str, Any]:
    """Memory, fit, FLOP conventions, time and inference figures of one layout (module docstring)."""
    from ..plan import Plan, resolve_plan

    plan = design if isinstance(design, Plan) else resolve_plan(design)
    d = plan.design
    g = gpu_entry(gpu)
    s = int(seq_len or d.max_seq_len)
    n_layers = len(plan.layers)
    dp = _validate(d, n_layers, gpus=gpus, tp=tp, pp=pp, zero=zero, recompute=recompute, seq_len=s,
                   micro_batch=micro_batch, global_batch=global_batch, tokens=tokens, mfu=mfu)
    sp = bool(sp and tp > 1)
    ctx = _context(plan, s, micro_batch, dtype, selective=True)
    m_batches = global_batch // (micro_batch * dp)
    common = dict(dtype=dtype, overhead_gib=overhead_gib, overhead_fraction=overhead_fraction)
    mem = layout_memory(ctx, tp=tp, pp=pp, dp=dp, zero=zero, sp=sp, recompute=recompute, micro_batches=m_batches, **common)
    mem["capacity_bytes"] = g.memory_bytes
    mem["fits"] = mem["total_bytes"] <= g.memory_bytes

    report = ctx["report"]
    table = flops_per_token(plan, report)
    tokens_per_step = global_batch * s
    peak = g.peak_flops("bf16")  # dense BF16 tensor-core peak, whatever the training dtype (stated in assumptions)
    step_s = table[REFERENCE]["per_token"] * tokens_per_step / (gpus * peak * mfu)
    per_conv_mfu = mfu_under(table, tokens_per_step / step_s, gpus * peak)
    fwd_causal = report["flops"]["forward_causal"] / s
    pairs_causal = (report["flops"]["attention_matrix"] - (report["flops"]["forward"] - report["flops"]["forward_causal"])) / s
    # selective recompute redoes the attention core only where the kernel saved its S x S maps
    quadratic = any(e["quadratic_bytes"] for e in ctx["as_built"]["per_layer"])
    extra = {"none": 0.0, "selective": max(0.0, pairs_causal) if quadratic else 0.0, "full": fwd_causal}[recompute]
    hw_per_token = table[REFERENCE]["per_token"] + extra
    train_s = tokens / tokens_per_step * step_s
    ab = ctx["as_built"]
    act_params = active_params(plan, report)
    out = {
        "design": d.name,
        "gpu": g.to_dict(),
        "layout": {"gpus": gpus, "dp": dp, "tp": tp, "pp": pp, "sp": sp, "zero": zero, "recompute": recompute,
                   "seq_len": s, "micro_batch": micro_batch, "global_batch": global_batch,
                   "micro_batches_per_step": m_batches, "dtype": dtype},
        "params": act_params,
        "memory": mem,
        "activations": {
            "as_built_bytes": {k: acts.recompute_total(ab, k) for k in acts.RECOMPUTE},
            "as_built_loss_bytes": ab["loss_bytes"],
            "korthikanti": {
                "per_layer_bytes": acts.korthikanti_layer_bytes(s, micro_batch, d.hidden_size, d.n_heads, t=tp, sp=sp,
                                                                recompute=recompute),
                "layers_bytes_first_stage": acts.korthikanti_total_bytes(s, micro_batch, d.hidden_size, d.n_heads,
                                                                         n_layers, t=tp, sp=sp, recompute=recompute, p=pp),
                "citation": "Korthikanti et al. 2022, arXiv 2205.05198, table 2 (GPT layer of this width and heads)",
            },
        },
        "flops": {k: {**v, "per_step": v["per_token"] * tokens_per_step, "mfu": per_conv_mfu[k]} for k, v in table.items()},
        "reference_convention": REFERENCE,
        "time": {
            "mfu": mfu,
            "hfu": mfu * hw_per_token / table[REFERENCE]["per_token"],
            "peak_flops_per_gpu": peak,
            "tokens_per_step": tokens_per_step,
            "step_s": step_s,
            "tokens_per_s": tokens_per_step / step_s,
            "tokens": tokens,
            "steps": tokens / tokens_per_step,
            "time_to_train_s": train_s,
            "time_to_train_days": train_s / 86400,
            "gpu_hours": gpus * train_s / 3600,
            "pipeline_bubble": (pp - 1) / m_batches if pp > 1 else 0.0,
        },
        "inference": _inference(report, act_params, g, tp, mfu, overhead_gib),
        "assumptions": {"overhead_gib": overhead_gib, "overhead_fraction": overhead_fraction,
                        "peak": "dense BF16 tensor-core peak of the catalogue entry, for every training dtype",
                        "state_bytes_per_param": "4 + 4 + 8 (fp32)" if dtype == "fp32" else "2 + 2 + 12 (bf16 mixed precision, Adam)"},
        "warnings": list(report["warnings"]),  # the plan's, and a seq_len past what the model accepts
    }
    if fit_table:
        out["fit_table"] = layouts_that_fit(ctx, d, g, gpus=gpus, micro_batch=micro_batch, global_batch=global_batch,
                                            n_layers=n_layers, **common)
    return out


def layouts_that_fit(ctx: dict[str, Any], d: Any, g: GPU, *, gpus: int, micro_batch: int, global_batch: int,
                     n_layers: int, dtype: str, overhead_gib: float, overhead_fraction: float,
                     limit: int = 24) -> dict[str, Any]:
    """Every (tp <= 8, pp, ZeRO, recompute) on ``gpus`` GPUs that fits, least recompute and sharding first."""
    rows = []
    tried = 0
    for tp in (t for t in (1, 2, 4, 8) if gpus % t == 0 and d.n_heads % t == 0):
        for pp in (p for p in range(1, min(gpus // tp, n_layers) + 1) if (gpus // tp) % p == 0):
            dp = gpus // (tp * pp)
            if global_batch % (micro_batch * dp):
                continue
            m = global_batch // (micro_batch * dp)
            for zero in ZERO_STAGES:
                for rc in acts.RECOMPUTE:
                    tried += 1
                    mem = layout_memory(ctx, tp=tp, pp=pp, dp=dp, zero=zero, sp=tp > 1, recompute=rc, micro_batches=m,
                                        dtype=dtype, overhead_gib=overhead_gib, overhead_fraction=overhead_fraction)
                    if mem["total_bytes"] <= g.memory_bytes:
                        rows.append({"tp": tp, "pp": pp, "dp": dp, "sp": tp > 1, "zero": zero, "recompute": rc,
                                     "total_bytes": mem["total_bytes"], "activations_bytes": mem["activations_bytes"],
                                     "headroom_bytes": g.memory_bytes - mem["total_bytes"]})
    order = {r: i for i, r in enumerate(acts.RECOMPUTE)}
    rows.sort(key=lambda r: (order[r["recompute"]], r["tp"] * r["pp"], r["zero"], r["total_bytes"]))
    return {"gpus": gpus, "tried": tried, "fitting": len(rows), "rows": rows[:limit]}
