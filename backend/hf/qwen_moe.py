"""Qwen's mixtures of experts: qwen2_moe (Qwen1.5-MoE / Qwen2-MoE) and qwen3_moe (Qwen3-30B-A3B, 235B-A22B).

Each is its dense sibling (qwen2: q/k/v biases; qwen3: per-head QK-norm,
``backend/hf/llama.py`` reads those keys) with a MoE FFN:

* routing (transformers' ``Qwen2MoeTopKRouter`` / ``Qwen3MoeTopKRouter``): a
  softmax over all ``num_experts`` router logits, the ``num_experts_per_tok``
  largest probabilities, renormalised only with ``norm_topk_prob`` (the MoE
  kind's option of that name);
* ``moe_intermediate_size``: the routed experts' width; ``intermediate_size``
  is the width of the dense layers (``mlp_only_layers``, and every layer
  ``i`` with ``(i + 1) % decoder_sparse_step != 0``);
* qwen2_moe only: one always-on shared expert of width
  ``shared_expert_intermediate_size`` whose output is scaled by
  ``sigmoid(shared_expert_gate(x))`` (the MoE kind's ``shared_gate``).

Sliding windows: transformers-5 files list ``layer_types``; a transformers-4
qwen2_moe file with ``use_sliding_window`` slides the even layers below
``max_window_layers`` (its configuration's rule); qwen3_moe slides every
layer when ``use_sliding_window`` (its attention reads one ``sliding_window``).
"""
from __future__ import annotations

from typing import Any

from . import llama
from .common import bad, integer, kind_for

# model_type -> (the dense sibling whose importer reads the shared keys, the MoE keys read here)
_TYPES = {
    "qwen2_moe": ("qwen2", {"decoder_sparse_step", "moe_intermediate_size", "shared_expert_intermediate_size",
                            "num_experts_per_tok", "num_experts", "norm_topk_prob", "mlp_only_layers", "qkv_bias"}),
    "qwen3_moe": ("qwen3", {"decoder_sparse_step", "moe_intermediate_size", "num_experts_per_tok", "num_experts",
                            "num_local_experts", "norm_topk_prob", "mlp_only_layers"}),
}
MODEL_TYPES = tuple(_TYPES)


def _layer_types(cfg: dict[str, Any], mt: str, n: int) -> list[str] | None:
    """transformers 4 files carry no ``layer_types``: each configuration class's own rule."""
    if cfg.get("layer_types") is not None or not cfg.get("use_sliding_window"):
        return cfg.get("layer_types")
    if mt == "qwen2_moe":  # Qwen2MoeConfig: (i + 1) % 2 and i < max_window_layers
        first = integer(cfg, "max_window_layers", default=28, lo=0)
        return ["sliding_attention" if (i + 1) % 2 and i < first else "full_attention" for i in range(n)]
    return ["sliding_attention"] * n  # Qwen3MoeConfig: one sliding window for every layer


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations): the dense sibling's design with MoE layers."""
    mt = config["model_type"]
    dense_type, moe_keys = _TYPES[mt]
    cfg = dict(config)
    n = integer(cfg, "num_hidden_layers")
    types = _layer_types(cfg, mt, n)
    base = {k: v for k, v in cfg.items() if k not in moe_keys}
    base["model_type"] = dense_type
    if types is not None:
        base["layer_types"] = types
    base.pop("use_sliding_window", None)  # read above (layer_types carries it)
    base.pop("max_window_layers", None)
    qkv_bias = cfg.get("qkv_bias", True) if mt == "qwen2_moe" else None
    if qkv_bias is not None and not isinstance(qkv_bias, bool):
        raise bad("qkv_bias", qkv_bias, "must be true or false")
    design, notes = llama.import_config(base)
    design["name"] = str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}"
    if qkv_bias is not None:
        design["qkv_bias"] = qkv_bias

    stack = design["layers"]
    dense_kind = stack["mlp"]
    if "num_local_experts" in cfg:  # transformers 5 writes Qwen3-MoE's num_experts under its attribute_map name
        if cfg.get("num_experts", cfg["num_local_experts"]) != cfg["num_local_experts"]:
            raise bad("num_local_experts", cfg["num_local_experts"], f"must equal num_experts {cfg['num_experts']}")
        cfg["num_experts"] = cfg["num_local_experts"]
    experts = integer(cfg, "num_experts", default=60 if mt == "qwen2_moe" else 128, lo=0)
    step = integer(cfg, "decoder_sparse_step", default=1)
    only = cfg.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in only):
        raise bad("mlp_only_layers", only, f"must be a list of layer indices in [0, {n})")
    sparse = [i for i in range(n) if i not in only and experts > 0 and (i + 1) % step == 0]
    if not sparse:
        return design, notes  # every layer dense: the sibling's design as it is
    norm_topk = cfg.get("norm_topk_prob", False)
    if not isinstance(norm_topk, bool):
        raise bad("norm_topk_prob", norm_topk, "must be true or false")
    moe: dict[str, Any] = {
        "num_experts": experts, "top_k": integer(cfg, "num_experts_per_tok", default=4 if mt == "qwen2_moe" else 8),
        "expert": dense_kind, "hidden": integer(cfg, "moe_intermediate_size", default=1408 if mt == "qwen2_moe" else 768),
        "norm_topk_prob": norm_topk,
    }
    if mt == "qwen2_moe":
        moe.update(shared_experts=1, shared_hidden=integer(cfg, "shared_expert_intermediate_size", default=5632),
                   shared_gate=True)
    stack.setdefault("params", {})["mlp"] = moe
    stack["mlp"] = kind_for("mlp", "experts")
    dense = [i for i in range(n) if i not in sparse]
    if dense:  # the stack's `hidden` default would reach these layers too: give them their own width
        stack.setdefault("rules", []).append({"when": {"layer_idx": dense}, "mlp": dense_kind,
                                              "params": {"mlp": {"hidden": design["mlp_hidden"]}}})
    return design, notes


# ---------------------------------------------------------------------------
# Weights: the MoE tensors here, everything else through the dense sibling's map

_DENSE_MLP = {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}
_FFN = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Hugging Face qwen2_moe / qwen3_moe one (transformers 4 or 5 expert names)."""
    dense: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("model."):] if orig.startswith("model.") else orig
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() and parts[2].startswith("mlp.") \
                and parts[2] not in _DENSE_MLP:
            _map_moe(out, f"stacks.layers.blocks.{parts[1]}.", parts[2], t, orig)
        else:
            dense[orig] = t
    return {**llama.map_weights(_TYPES[model_type][0], dense), **out}


def _map_moe(out: dict[str, Any], pre: str, rest: str, t: Any, orig: str) -> None:
    p = rest.split(".")
    if rest == "mlp.gate.weight":
        out[pre + "mlp.router.weight"] = t
    elif rest == "mlp.shared_expert_gate.weight":
        out[pre + "mlp.shared_gate.weight"] = t
    elif len(p) == 4 and p[1] == "shared_expert" and p[2] in _FFN and p[3] == "weight":
        out[f"{pre}mlp.shared.0.{_FFN[p[2]]}.weight"] = t
    elif len(p) == 5 and p[1] == "experts" and p[2].isdigit() and p[3] in _FFN and p[4] == "weight":  # transformers 4
        out[f"{pre}mlp.experts.{p[2]}.{_FFN[p[3]]}.weight"] = t
    elif rest in ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"):  # transformers 5: fused (E, 2F, D), (E, D, F)
        llama._map_experts(out, pre, rest, t, orig)
    else:
        raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
