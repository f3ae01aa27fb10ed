"""Training FLOPs per token under the published conventions, side by side, and MFU under each.

Dashboards disagree because the conventions do. Each one below is computed
from the design (the analysis report's parameter and per-layer figures, and
the real meta modules for facts such as a layer's window or an MoE's active
experts), at sequence length ``S``, per token of training (forward +
backward); per step multiplies by the tokens of a step.

``kaplan``       6 N, N = non-embedding parameters with every vocabulary
                 matrix excluded (an untied head too) -- Kaplan et al. 2020,
                 arXiv 2001.08361, section 2.1 (the 2 n_layer n_ctx d_attn
                 context term is dropped, as in their C = 6 N B S).
``chinchilla``   Hoffmann et al. 2022, arXiv 2203.15556, appendix F: every
                 matmul at full S x S attention (the measured forward), plus
                 the embedding as a matmul (2 S V D), plus 3 H S^2 for each
                 softmax; backward = 2 x forward.
``palm``         6 N + 12 L H Q T -- Chowdhery et al. 2022 (PaLM), arXiv
                 2204.02311, appendix B, as torchtitan computes it
                 (``get_nparams_and_flops``: N = parameters minus the token
                 embedding): the attention term is summed only over softmax
                 layers, with T = min(S, window) for sliding-window layers;
                 MoE layers count their active parameters.
``megatron``     Megatron-LM ``num_floating_point_operations`` (Narayanan et
                 al. 2021, arXiv 2104.04473, appendix): 3 GEMMs per weight
                 (forward, wgrad, dgrad) x 2 FLOPs per MAC over the GEMM
                 weights a token touches (attention and active MLP weights,
                 the logit layer even when tied; no norms, no embedding), plus
                 the attention core with half of the causal S x S matrix:
                 6 S H Dh per softmax layer and token.
``moe_active``   6 N_active: Kaplan's 6 N with each MoE layer's routed
                 experts counted top_k / E (plus shared experts and router).
``exact``        this project's count (``analyze``): every matmul traced on
                 the real modules, full S x S, x 3; ``exact_causal`` with only
                 the (query, key) pairs the mask allows.

Where they diverge: for a dense causal decoder without windows ``palm`` and
``chinchilla`` count the full S x S matrix and ``megatron`` half of it; for
a hybrid stack the S x S terms exist only in softmax layers (Megatron-LM's
formula would give every layer one); spectral / linear mixers' own
S-dependent work (FFTs, feature maps) appears only in ``exact``; for MoE
``kaplan`` counts every expert, the others the active ones.

MFU (Chowdhery et al. 2022, appendix B) = model FLOPs per second achieved /
peak FLOPs per second: for one measured throughput, each convention gives its
own MFU (:func:`mfu`).
"""
from __future__ import annotations

from typing import Any

CONVENTIONS = ("kaplan", "chinchilla", "palm", "megatron", "moe_active", "exact", "exact_causal")

CITATIONS = {
    "kaplan": "Kaplan et al. 2020, arXiv 2001.08361, section 2.1: 6 N (non-embedding)",
    "chinchilla": "Hoffmann et al. 2022, arXiv 2203.15556, appendix F",
    "palm": "Chowdhery et al. 2022, arXiv 2204.02311, appendix B; torchtitan get_nparams_and_flops (window-aware here)",
    "megatron": "Megatron-LM num_floating_point_operations; Narayanan et al. 2021, arXiv 2104.04473, appendix",
    "moe_active": "6 N_active: routed experts x top_k / E + shared (Mixtral, arXiv 2401.04088, section 2.1)",
    "exact": "this project: every matmul traced on the real modules, full S x S, x 3",
    "exact_causal": "this project: as exact, only the (query, key) pairs the mask allows",
}


def _distinct_blocks(plan: Any) -> list[Any]:
    """The real meta Block of every executed layer (one object per distinct layer)."""
    from ..analysis import parts

    cfg = parts.config_of(plan)
    out = []
    for name, sp in plan.stacks.items():
        blocks = parts.stack_blocks(cfg, name)
        out.extend(blocks[layer.unique_index] for layer in sp.executed)
    return out


def _numel(m: Any) -> int:
    return sum(p.numel() for p in m.parameters()) if m is not None else 0


def _active_mlp(blk: Any) -> int:
    """Parameters of the block's MLP one token uses (a kind with routing says so via ``active_params``)."""
    f = getattr(blk.mlp, "active_params", None)
    return int(f()) if callable(f) else _numel(blk.mlp)


def active_params(plan: Any, report: dict[str, Any]) -> dict[str, int]:
    """Total and active (per token) parameters; unique weights once, like ``params.total``."""
    from ..analysis import parts

    cfg = parts.config_of(plan)
    inactive = 0
    for name in plan.stacks:
        for blk in parts.stack_blocks(cfg, name):  # unique layers: shared weights once
            inactive += _numel(blk.mlp) - _active_mlp(blk)
    p = report["params"]
    return {"total": p["total"], "active": p["total"] - inactive,
            "non_embedding": p["non_embedding"], "active_non_embedding": p["non_embedding"] - inactive}


def _softmax(kind: str) -> bool:
    from ..registry import ATTENTION

    return bool(ATTENTION[kind].softmax) if kind in ATTENTION else False


def flops_per_token(plan: Any, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Training FLOPs per token under each convention at the report's sequence length (module docstring)."""
    d = plan.design
    s = report["seq_len"]
    tokens = s * report["batch"]
    p, f = report["params"], report["flops"]
    h, dh = d.n_heads, d.attn_head_dim
    vocab = d.vocab_size or 0
    token_head = d.task in ("lm", "mlm", "seq2seq") and vocab > 0
    act = active_params(plan, report)
    blocks = _distinct_blocks(plan)
    softmax_layers = [(layer, blk) for layer, blk in zip(plan.layers, blocks) if _softmax(layer.attention)]

    untied_head = p["head"] if token_head else 0
    kaplan = 6 * (p["non_embedding"] - untied_head)

    # Chinchilla appendix F: forward = matmuls (full S x S) + embedding matmul + softmax 3 H S^2 per layer
    fwd_seq = f["forward"] / report["batch"]
    fwd_seq += 2 * s * vocab * d.hidden_size if vocab else 0
    fwd_seq += sum(3 * h * s * s for _ in softmax_layers)
    chinchilla = 3 * fwd_seq / s

    # PaLM / torchtitan: 6 N + 12 L H Q T, T window-limited per layer
    def span(blk: Any) -> int:
        w = int(getattr(blk, "window", 0) or 0)
        return min(s, w) if w else s

    palm = 6 * act["active_non_embedding"] + sum(12 * h * dh * span(blk) for _, blk in softmax_layers)

    # Megatron-LM: 6 x GEMM weights per token + causal-halved attention core 6 S H Dh per softmax layer
    gemm = sum(_numel(blk.attn) + _numel(blk.cross) + _active_mlp(blk) for blk in blocks)
    gemm += vocab * d.hidden_size if token_head else 0
    megatron = 6 * gemm + sum(6 * s * h * dh for _ in softmax_layers)

    values = {
        "kaplan": kaplan,
        "chinchilla": chinchilla,
        "palm": palm,
        "megatron": megatron,
        "moe_active": 6 * (act["active_non_embedding"] - untied_head),
        "exact": f["training"] / tokens,
        "exact_causal": f["training_causal"] / tokens,
    }
    return {k: {"per_token": float(v), "citation": CITATIONS[k]} for k, v in values.items()}


def per_step(table: dict[str, dict[str, Any]], tokens_per_step: float) -> dict[str, float]:
    return {k: v["per_token"] * tokens_per_step for k, v in table.items()}


def mfu(table: dict[str, dict[str, Any]], tokens_per_s: float, peak_flops_total: float) -> dict[str, float]:
    """MFU each convention reports for one achieved throughput (tokens/s over all GPUs, peak of all GPUs)."""
    return {k: v["per_token"] * tokens_per_s / peak_flops_total for k, v in table.items()}
