"""Forward / training FLOPs measured on the real modules (meta device).

Conventions (DESIGN.md section 5, formulas in ``closed_form``): 2 FLOPs per
multiply-accumulate; ``forward`` counts attention scores and values over the
full ``S x S`` matrix (PaLM / Megatron / Chinchilla), ``forward_causal`` only
the (query, key) pairs the mask allows (``S(S+1)/2`` causal, window-limited
for sliding windows); ``training = 3 x forward`` (backward = 2 x forward for
matmuls, Kaplan et al. 2020, section 2.1). The embedding lookup is 0 FLOPs,
the head matmul counts.

How it is measured, per *distinct* layer (``parts.block``), batch 1:

* every sublayer of the real Block is run under ``FlopCounterMode`` on meta
  tensors (``counting.count``: FFT formulas registered, SDPA decomposes into
  counted ``bmm`` there);
* kinds with a softmax score matrix (the declaration's ``softmax`` flag, and
  cross-attention) are traced at ``S`` and ``2S``; their FLOPs are
  ``a S + c S^2`` exactly (projections + pairs), which separates the pair
  term ``c`` without knowing the kernel, and ``forward_causal`` replaces
  ``c S^2`` by ``c * pairs``, with ``pairs`` what the kind's own mask allows
  (``AttentionKind.pairs``: causal, its window, a prefix-LM prefix);
* MoE: data-dependent routing cannot run on meta, and the module's meta path
  (perfect balance, ``ceil(N k / E)`` tokens per expert) rounds up; the
  count is the router on all ``N`` tokens plus one expert traced on ``N``
  tokens times ``top_k``, plus each shared expert on all tokens -- exactly the
  active experts;
* batch ``B`` multiplies everything (no op couples sequences) except
  weights-only work done once per call, which non-softmax kinds separate by
  tracing at batch 1 and 2 (today: the rFFT of the causal spectral kernel);
* what the tracer cannot see is added by formula in ``counting`` (FFTs,
  complex matmuls at 4 real MACs each); reductions and element-wise ops
  count zero on both sides (``closed_form`` lists them per kind).

Causal-aware count per kind: score-matrix kinds count the pairs their mask
allows; cross-attention all source tokens; kinds without an S x S score
matrix count the same in both figures (their cost is what runs).

Results are cached per (model settings, layer config, S), so a 70B design
traces its one distinct layer once and sums 80 executed layers.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from . import parts
from .counting import count, meta_input
from ..plan import Plan
from ..registry import ATTENTION, CROSS

NORM_ATTRS = ("attn_norm", "attn_post_norm", "cross_norm", "cross_post_norm", "mlp_norm", "mlp_post_norm")


def _is_moe(m: torch.nn.Module) -> bool:
    return hasattr(m, "router") and hasattr(m, "experts") and hasattr(m, "top_k")


def mlp_flops_traced(mlp: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of an MLP sublayer on ``x``; MoE counts only active experts (module docstring)."""
    if not _is_moe(mlp):
        return count(mlp, x)[0]
    h = x.reshape(-1, x.shape[-1])
    total = count(mlp.router, h)[0]
    if len(mlp.experts):
        total += mlp.top_k * count(mlp.experts[0], h)[0]
    for shared in getattr(mlp, "shared", []):
        total += count(shared, h)[0]
    if getattr(mlp, "shared_gate", None) is not None:  # Qwen2-MoE's Linear(D, 1) on every token
        total += count(mlp.shared_gate, h)[0]
    return total


def _attention(fn, d: int, s: int, softmax: bool) -> tuple[float, float, float]:
    """(per-sequence FLOPs at s, pair coefficient c, batch-independent FLOPs) of an attention sublayer.

    Softmax kinds: FLOPs(s) = a s + c s^2, traced at s and 2s; every matmul of
    theirs involves activations, so nothing is batch-independent. Other kinds:
    traced at batch 1 and 2, FLOPs(B) = fixed + B * per_sequence, which
    separates weights-only work done once per call (the spectral causal
    kernel's rFFT) from per-sequence work.
    """
    f1 = count(fn, meta_input(1, s, d))[0]
    if softmax:
        f2 = count(fn, meta_input(1, 2 * s, d))[0]
        return f1, max(0.0, (f2 - 2 * f1) / (2.0 * s * s)), 0.0
    fb = count(fn, meta_input(2, s, d))[0]
    fixed = max(0, 2 * f1 - fb)
    return f1 - fixed, 0.0, fixed


@lru_cache(maxsize=4096)
def block_flops(mkey: str, lkey: str, causal: bool, cross: bool, seq: int) -> dict[str, Any]:
    """Per component forward FLOPs of one distinct layer at batch 1: dense and causal-aware."""
    import json

    blk = parts.block(mkey, lkey, causal, cross)
    layer = json.loads(lkey)
    d = json.loads(mkey)["hidden_size"]
    acfg = layer.get("config", {}).get("attention", {})
    x = meta_input(1, seq, d)
    info = ATTENTION[layer["attention"]]

    att, c, fixed = _attention(lambda h: blk.attn(h), d, seq, info.softmax)
    pairs = info.pairs(acfg, seq, causal=causal) if info.softmax else seq * seq
    att_causal = att - c * (seq * seq - pairs)
    pair_flops = c * seq * seq

    cross_f = cross_c = 0.0
    if cross and blk.cross is not None:
        cross_f, cc, _ = _attention(lambda h: blk.cross(h, h), d, seq, True)
        ccfg = layer.get("config", {}).get("cross", {})
        cross_c = cross_f - cc * (seq * seq - CROSS.pairs(ccfg, seq, causal=False))
        pair_flops += cc * seq * seq

    mlp = mlp_flops_traced(blk.mlp, x)
    norm = 0
    for name in NORM_ATTRS:
        m = getattr(blk, name, None)
        if m is not None and not blk.scales_branch:
            norm += count(m, x)[0]
    dense = {"attention": att + cross_f, "mlp": mlp, "norm": norm}
    causal_aware = {"attention": att_causal + cross_c, "mlp": mlp, "norm": norm}
    return {
        "forward": dense,  # per sequence (times the batch)
        "forward_causal": causal_aware,
        "fixed": {"attention": fixed},  # batch-independent, once per call (both figures)
        "attention_pairs_flops": pair_flops,  # the S x S part of the dense count
        "total": sum(dense.values()),  # per sequence, without "fixed"
        "total_causal": sum(causal_aware.values()),
    }


@lru_cache(maxsize=1024)
def _model_level(mkey: str, skey: str, seq: int) -> dict[str, int]:
    """Embedding, head and flow FLOPs at batch 1 (measured on the skeleton)."""
    import json

    cfg = {**json.loads(mkey), "stacks": json.loads(skey)}
    skel = parts.skeleton(cfg)
    d = cfg["hidden_size"]
    # A token embedding is a lookup (0 FLOPs by convention) and is not traced: an
    # embedding call under a dispatch mode imports torch._dynamo (~1 s). Feature
    # inputs go through a Linear, which is traced.
    embed = 0 if cfg.get("vocab_size") else count(skel.embed, meta_input(1, seq, cfg["input_dim"]))[0]
    h = meta_input(1, seq, d)
    head = count(lambda t: skel._head(t, None), h)[0]
    other = 0
    for name, st in skel.stacks.items():
        per = count(lambda t: st.flow(t, 0), h)[0]
        other += per * st.depth
    return {"embeddings": embed, "head": head, "other": other}


def _scale(d: dict[str, Any], b: int) -> dict[str, Any]:
    return {k: v * b for k, v in d.items()}


def flop_stats(plan: Plan, seq_len: int | None = None, batch: int = 1) -> dict[str, Any]:
    """Forward (dense and causal-aware) and training FLOPs, per component and per executed layer."""
    cfg = parts.config_of(plan)
    s = seq_len or plan.design.max_seq_len
    b = batch
    mkey = parts.model_key(cfg)
    top = _model_level(mkey, parts.skeleton_stacks(cfg), s)

    comp = {"attention": 0.0, "mlp": 0.0, "norm": 0.0, "embeddings": 0.0, "head": 0.0, "other": 0.0}
    comp_causal = dict(comp)
    for k in ("embeddings", "head", "other"):
        comp[k] = comp_causal[k] = top[k] * b
    per_layer: list[dict[str, Any]] = []
    pairs_total = 0.0
    for name, sp in plan.stacks.items():
        st = cfg["stacks"][name]
        keys = [parts.layer_key(layer) for layer in st["layers"]]
        for layer in sp.executed:
            r = parts.per_layer(block_flops, parts.layer_model_key(cfg, layer.unique_index), keys[layer.unique_index],
                                bool(st["causal"]), bool(st.get("cross")), s)
            fixed = r["fixed"]
            for k, v in r["forward"].items():
                comp[k] += v * b + fixed.get(k, 0)
            for k, v in r["forward_causal"].items():
                comp_causal[k] += v * b + fixed.get(k, 0)
            pairs_total += r["attention_pairs_flops"] * b
            extra = sum(fixed.values())
            per_layer.append({
                "forward": r["total"] * b + extra,
                "forward_causal": r["total_causal"] * b + extra,
                "components": {k: v * b + fixed.get(k, 0) for k, v in r["forward"].items()},
            })
    fwd = sum(comp.values())
    fwd_c = sum(comp_causal.values())
    return {
        "forward": _int(fwd),
        "forward_causal": _int(fwd_c),
        "training": _int(3 * fwd),
        "training_causal": _int(3 * fwd_c),
        "attention_matrix": _int(pairs_total),
        "components": {k: _int(v) for k, v in comp.items()},
        "components_causal": {k: _int(v) for k, v in comp_causal.items()},
        "per_executed_layer": [{k: (_int(v) if not isinstance(v, dict) else {a: _int(c) for a, c in v.items()})
                                for k, v in e.items()} for e in per_layer],
        "seq_len": s,
        "batch": b,
    }


def _int(x: float) -> int:
    return int(round(x))


def flops_curve(design: Any, seq_lens: list[int], batch: int = 1) -> list[dict[str, int]]:
    """Forward / causal / training FLOPs at each sequence length."""
    from ..plan import resolve_plan

    plan = design if isinstance(design, Plan) else resolve_plan(design)
    out = []
    for s in seq_lens:
        r = flop_stats(plan, s, batch)
        out.append({"seq_len": s, "forward": r["forward"], "forward_causal": r["forward_causal"], "training": r["training"]})
    return out
