"""Qwen3-Next (``qwen3_next``): Gated DeltaNet layers, gated softmax attention, a shared-expert MoE.

Qwen3-Next-80B-A3B (Qwen team 2025): ``layer_types`` (or ``full_attention_interval``,
default 4) makes three Gated DeltaNet (``linear_attention``) layers to one
softmax-attention (``full_attention``) layer; the attention layer has QK-norm and
an output gate from a doubled q_proj; MoE layers (every ``decoder_sparse_step``-th,
less ``mlp_only_layers``) route top-k of ``num_experts`` SwiGLU experts of
``moe_intermediate_size`` and add a shared SwiGLU expert of
``shared_expert_intermediate_size`` scaled by ``sigmoid(shared_expert_gate(x))``.

Norms: Qwen3-Next's RMSNorm computes ``x_hat * (1 + w)`` (Gemma style; zero
init), ours ``x_hat * w``: the same function, so ``map_weights`` adds 1 to
those gains (the model's norms and q_norm / k_norm). The Gated DeltaNet's own
gated norm multiplies by ``w`` and is copied unchanged.

The hub's checkpoints also hold a multi-token-prediction head (``mtp.*``),
which transformers' ``Qwen3NextForCausalLM`` does not build
(``_keys_to_ignore_on_load_unexpected``); ``map_weights`` skips it likewise, so
parameter counts are those of transformers' model (the published 80B / ~81.3B
totals of the checkpoint include the MTP layer).
"""
from __future__ import annotations

from typing import Any

from ..errors import DesignError
from ..registry import REGISTRIES
from .common import INERT, bad, integer, kind_for
from .decoders import _rope
from .llama import _map_experts

MODEL_TYPES = ("qwen3_next",)

_SIZES = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "n_layers": "num_hidden_layers",
          "n_heads": "num_attention_heads", "mlp_hidden": "intermediate_size",
          "max_seq_len": "max_position_embeddings"}
_GDN = {"num_key_heads": "linear_num_key_heads", "num_value_heads": "linear_num_value_heads",
        "key_head_dim": "linear_key_head_dim", "value_head_dim": "linear_value_head_dim",
        "conv_kernel": "linear_conv_kernel_dim"}
_MAPPED = set(_SIZES.values()) | set(_GDN.values()) | {
    "rms_norm_eps", "hidden_act", "attention_bias", "decoder_sparse_step", "moe_intermediate_size",
    "shared_expert_intermediate_size", "num_experts_per_tok", "num_experts", "norm_topk_prob", "mlp_only_layers",
    "full_attention_interval", "partial_rotary_factor", "layer_types"}
_DEFAULTS = {"linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
             "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4}


def _layer_types(cfg: dict[str, Any], n: int) -> list[str]:
    types = cfg.get("layer_types")
    if types is None:
        every = integer(cfg, "full_attention_interval", default=4)
        types = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
    if not isinstance(types, list) or len(types) != n:
        raise bad("layer_types", types, f"must be a list of {n} layer types")
    for t in types:
        if t not in ("full_attention", "linear_attention"):
            raise bad("layer_types", t, "only full_attention and linear_attention layers are supported")
    return types


def _moe_layers(cfg: dict[str, Any], n: int) -> list[bool]:
    """transformers' rule: MoE where num_experts > 0, (i + 1) % decoder_sparse_step == 0 and i not in mlp_only_layers."""
    e = integer(cfg, "num_experts", default=512, lo=0)
    step = integer(cfg, "decoder_sparse_step", default=1)
    only = cfg.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise bad("mlp_only_layers", only, "must be a list of layer indices")
    return [e > 0 and (i + 1) % step == 0 and i not in only for i in range(n)]


def _moe_params(cfg: dict[str, Any], expert: str) -> dict[str, Any]:
    """The MoE kind's params for Qwen3-Next's sparse block; a feature the kind does not declare is an error."""
    moe = REGISTRIES["mlp"][kind_for("mlp", "experts")].params
    width = integer(cfg, "moe_intermediate_size", default=512)
    shared = integer(cfg, "shared_expert_intermediate_size", default=512, lo=0)
    out: dict[str, Any] = {"num_experts": integer(cfg, "num_experts", default=512),
                           "top_k": integer(cfg, "num_experts_per_tok", default=10), "expert": expert, "hidden": width}
    norm_topk = cfg.get("norm_topk_prob", True)
    if not isinstance(norm_topk, bool):
        raise bad("norm_topk_prob", norm_topk, "must be true or false")
    if "norm_topk_prob" in moe:
        out["norm_topk_prob"] = norm_topk
    elif not norm_topk:  # our router's top-k weights are a softmax over the chosen logits: normalised
        raise bad("norm_topk_prob", norm_topk, "un-normalised top-k routing weights are not supported")
    # transformers always builds the shared expert and its gate (a width of 0 still leaves the gate's D weights)
    if "shared_gate" not in moe:
        raise DesignError("shared_expert_intermediate_size",
                          "Qwen3-Next's sigmoid-gated shared expert needs the MoE option shared_gate, which this "
                          "build's MoE kind does not declare")
    out["shared_experts"] = 1
    out["shared_gate"] = True
    if shared != width:
        if "shared_hidden" not in moe:
            raise bad("shared_expert_intermediate_size", shared,
                      f"a shared expert wider than the routed ones ({width}) needs the MoE option shared_hidden")
        out["shared_hidden"] = shared
    return out


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a qwen3_next config."""
    known = INERT | _MAPPED
    for key in config:
        if key not in known:
            raise bad(key, config[key], "is not understood for model_type 'qwen3_next' (it may change the architecture)")
    cfg = dict(config)
    for key in ("is_encoder_decoder", "use_bidirectional_attention", "use_sliding_window"):
        if cfg.get(key):
            raise bad(key, cfg[key], "only causal full-attention decoder layers are imported")
    if cfg.get("attention_bias"):
        raise bad("attention_bias", cfg["attention_bias"], "biases on the attention projections are not supported")
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise bad("hidden_act", cfg["hidden_act"], "only silu (SwiGLU experts, silu conv) is supported")
    theta, frac = _rope(cfg)  # partial rotary (0.25 in the 80B): on the first int(head_dim * frac) channels
    size = {field: integer(cfg, key) for field, key in _SIZES.items()}
    D, H, n = size["hidden_size"], size["n_heads"], size["n_layers"]
    head_dim = integer(cfg, "head_dim", default=256)
    eps = cfg.get("rms_norm_eps", 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad("rms_norm_eps", eps, "must be a number in (0, 1)")
    tie = cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise bad("tie_word_embeddings", tie, "must be true or false")

    types = _layer_types(cfg, n)
    moe = _moe_layers(cfg, n)
    full, gated = kind_for("attention", "full"), kind_for("attention", "gated_delta")
    dense, experts = kind_for("mlp", "gated_silu"), kind_for("mlp", "experts")
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or "hf_qwen3_next")[:200] or "hf_qwen3_next",
        "architecture": "decoder", "task": "lm", "vocab_size": size["vocab_size"], "hidden_size": D, "n_heads": H,
        "n_kv_heads": integer(cfg, "num_key_value_heads", default=H), "head_dim": head_dim,
        "mlp_hidden": size["mlp_hidden"], "max_seq_len": size["max_seq_len"], "norm_eps": float(eps),
        "tie_embeddings": tie, "final_norm": True, "dropout": 0.0,
        "positional": kind_for("positional", "rotary"), "rope_theta": theta,
        "norm": kind_for("norm", "rms_norm"), "bias": False, "qkv_bias": False,
    }
    attn_params: dict[str, Any] = {"qk_norm": True, "output_gate": True}
    if frac != 1.0:
        attn_params["rotary_fraction"] = frac
    attn_params.update({ours: integer({**_DEFAULTS, **cfg}, theirs) for ours, theirs in _GDN.items()})
    stack: dict[str, Any] = {"n_layers": n, "attention": gated, "mlp": experts if any(moe) else dense,
                             "params": {"attention": attn_params}}
    if any(moe):
        stack["params"]["mlp"] = _moe_params(cfg, dense)
    rules: list[dict[str, Any]] = []
    full_idx = [i for i, t in enumerate(types) if t == "full_attention"]
    if full_idx:
        rules.append({"when": {"layer_idx": full_idx}, "attention": full})
    dense_idx = [i for i, m in enumerate(moe) if not m]
    if any(moe) and dense_idx:
        # the stack's MoE params (hidden = moe_intermediate_size) would reach the dense SwiGLU too
        rules.append({"when": {"layer_idx": dense_idx}, "mlp": dense, "params": {"mlp": {"hidden": size["mlp_hidden"]}}})
    if rules:
        stack["rules"] = rules
    design["layers"] = stack
    return design, []


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_ONE_PLUS = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "mlp_norm.weight",
             "self_attn.q_norm.weight": "attn.q_norm.weight", "self_attn.k_norm.weight": "attn.k_norm.weight"}
_SAME = {f"self_attn.{p}_proj.weight": f"attn.{p}_proj.weight" for p in "qkvo"}
_SAME.update({f"linear_attn.{n}": f"attn.{n}" for n in (
    "in_proj_qkvz.weight", "in_proj_ba.weight", "conv1d.weight", "dt_bias", "A_log", "norm.weight", "out_proj.weight")})
_SAME.update({"mlp.gate_proj.weight": "mlp.w1.weight", "mlp.up_proj.weight": "mlp.w3.weight",
              "mlp.down_proj.weight": "mlp.w2.weight", "mlp.gate.weight": "mlp.router.weight",
              "mlp.shared_expert.gate_proj.weight": "mlp.shared.0.w1.weight",
              "mlp.shared_expert.up_proj.weight": "mlp.shared.0.w3.weight",
              "mlp.shared_expert.down_proj.weight": "mlp.shared.0.w2.weight",
              "mlp.shared_expert_gate.weight": "mlp.shared_gate.weight"})


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Qwen3-Next one (module docstring: 1 + w gains, ``mtp.*`` skipped).

    Every other input name must map (an unknown name is a DesignError), so nothing is silently dropped.
    """
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("model."):] if orig.startswith("model.") else orig
        if name.startswith("mtp."):
            continue
        if name == "embed_tokens.weight":
            out["embed.weight"] = t
        elif name == "norm.weight":
            out["stacks.layers.final_norm.weight"] = t + 1
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.startswith("layers.") and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if rest in _ONE_PLUS:
                out[pre + _ONE_PLUS[rest]] = t + 1
            elif rest in _SAME:
                out[pre + _SAME[rest]] = t
            elif rest.startswith("mlp.experts."):
                _map_experts(out, pre, rest, t, orig)
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF leaves lm_head out of the state dict
    return out
