"""Exact parameter counts from the real modules built on meta (``parts``).

* ``total`` / ``unique``: every parameter tensor once (weight-shared layers and
  a tied head counted once) -- what ``sum(p.numel() for p in
  model.parameters())`` gives for the whole model.
* ``executed``: a shared layer counted every time it runs (the weights a
  forward pass touches, summed per executed layer).
* ``embedding``: token embedding (or the feature input projection), token-type embeddings, plus
  learned positions and score-bias tables (T5's), the model's or each stack's; a tied head is the same tensor and is not counted again.
  ``non_embedding = total - embedding`` (Kaplan et al. 2020, arXiv 2001.08361,
  section 2.1), which includes an untied output head.
* ``components``: attention (self + cross), mlp, norm (per-layer and final
  norms, embedding norms), embeddings, head (untied weight, logit bias, head transform), other (flow-speed parameters and
  anything a block holds outside its sublayers).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from . import parts
from ..plan import Plan

COMPONENTS = ("attention", "mlp", "norm", "embeddings", "head", "other")


def block_params(blk: Any) -> dict[str, int]:
    """Per component parameters of one Block (each tensor once)."""
    groups = {
        "attention": [blk.attn, getattr(blk, "cross", None)],
        "mlp": [blk.mlp],
        "norm": [getattr(blk, n, None) for n in ("attn_norm", "attn_post_norm", "cross_norm", "cross_post_norm",
                                                 "mlp_norm", "mlp_post_norm")],
    }
    out = {k: parts.unique_numel([m for m in v if m is not None]) for k, v in groups.items()}
    out["other"] = parts.unique_numel(blk) - sum(out.values())
    out["total"] = parts.unique_numel(blk)
    return out


def _layer_params(mkey: str, lkey: str, causal: bool, cross: bool) -> dict[str, int]:
    return dict(_block_params(mkey, lkey, causal, cross))


@lru_cache(maxsize=4096)
def _block_params(mkey: str, lkey: str, causal: bool, cross: bool) -> dict[str, int]:
    return block_params(parts.block(mkey, lkey, causal, cross))


def param_stats(plan: Plan) -> dict[str, Any]:
    cfg = parts.config_of(plan)
    skel = parts.skeleton(cfg)
    embed_ids = {id(p) for p in skel.embed.parameters()}
    # positions: the model's module, or one per stack (positional_per_stack)
    embedding = parts.unique_numel([skel.embed, skel.pos, skel.type_embed] + [st.pos for st in skel.stacks.values()])
    # the head: its untied weight, a logit bias and BERT's head transform (encoder models, issue 12)
    head = sum(p.numel() for m in (skel.head, skel.head_transform) if m is not None
               for p in m.parameters() if id(p) not in embed_ids)
    # final norms and the norms on the input embeddings (embed_norm)
    final_norm = sum(parts.unique_numel([st.final_norm, st.embed_norm]) for st in skel.stacks.values())
    flow = sum(parts.unique_numel(st.flow) for st in skel.stacks.values())

    comp = {k: 0 for k in COMPONENTS}
    comp["embeddings"], comp["head"], comp["norm"], comp["other"] = embedding, head, final_norm, flow
    executed_total = embedding + head + final_norm + flow
    per_executed: list[dict[str, int]] = []
    per_unique: dict[str, list[dict[str, int]]] = {}
    for name, sp in plan.stacks.items():
        st = cfg["stacks"][name]
        stats = [parts.per_layer(_layer_params, parts.layer_model_key(cfg, u), parts.layer_key(layer), bool(st["causal"]),
                                 bool(st.get("cross"))) for u, layer in enumerate(st["layers"])]
        per_unique[name] = stats
        for s in stats:
            for k in ("attention", "mlp", "norm", "other"):
                comp[k] += s[k]
        for layer in sp.executed:
            per_executed.append(stats[layer.unique_index])
            executed_total += stats[layer.unique_index]["total"]
    total = sum(comp.values())
    return {
        "total": total,
        "unique": total,
        "executed": executed_total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "head": head,
        "tied_head": bool(cfg["tie_embeddings"]) and cfg["task"] in ("lm", "mlm", "seq2seq"),
        "components": comp,
        "per_unique_layer": per_unique,
        "per_executed_layer": per_executed,
    }
