"""Nemotron-H (``nemotron_h``, NVIDIA 2025, arXiv 2504.03624): Mamba-2, attention and MLP as separate layers.

Each layer is ``x + mixer(RMSNorm(x))`` with one mixer: a Mamba-2 layer (``M``,
transformers' ``linear_attention``), softmax attention without positions
(``*``, ``full_attention``), or a squared-ReLU MLP (``-``, ``mlp``). The design
carries the same Megatron ``hybrid_override_pattern`` string
(``backend/kinds/empty.py``: each block has an empty MLP or an empty mixer),
read from the hub's ``hybrid_override_pattern`` (transformers-4 files) or
transformers 5's ``layers_block_type`` list. MoE layers (``E`` / ``moe``,
Nemotron-3 Nano) map onto the MoE kind (``_moe_params``); latent MoE
projections (``moe_latent_size``) are an error.

Mamba-2 layers: the inner width is ``mamba_num_heads * mamba_head_dim`` (as in
transformers' mixer; ``expand`` is not read by it), state ``ssm_state_size``,
``n_groups``, ``conv_kernel``, ``chunk_size``; the gated RMSNorm normalises
each group's channels (the ``mamba2`` kind's). Attention: ``num_attention_heads``
/ ``num_key_value_heads`` of ``head_dim``, scale ``head_dim ** -0.5``, no
biases, no RoPE (``positional: none``). MLP: ``up_proj`` -> relu(.)^2 ->
``down_proj`` of ``intermediate_size`` (``mlp_hidden_act`` must be relu2).
The transformers-4 ``mamba_*`` spellings (``mamba_n_groups``, ``mamba_d_conv``,
``mamba_chunk_size``, ``mamba_conv_bias``, ``mamba_dt_limit``...) are read as
transformers reads them. ``num_nextn_predict_layers`` / ``mtp_*``: transformers
builds no MTP head (its weights are ignored on load), ``map_weights`` skips
``mtp.*`` likewise.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for
from .mamba2 import SSM_INERT, check_time_step_limit, eps_of, flag, mamba2_params

MODEL_TYPES = ("nemotron_h",)

# transformers' layer types -> Megatron characters (as its NemotronHConfig converts them)
_BLOCK = dict(linear_attention="M", full_attention="*", mlp="-", moe="E")
_ALIASES = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand",
            "mamba_chunk_size": "chunk_size", "mamba_conv_bias": "use_conv_bias", "mamba_dt_limit": "time_step_limit"}
# read only by MoE layers (transformers-5 files write them for every model): mapped when the pattern has one
_MOE = {"n_routed_experts", "num_local_experts", "n_shared_experts", "moe_intermediate_size",
        "moe_shared_expert_intermediate_size", "moe_latent_size", "moe_shared_expert_overlap", "num_experts_per_tok",
        "routed_scaling_factor", "n_group", "topk_group", "norm_topk_prob"}
# hidden_act: the hub's files write relu2 beside mlp_hidden_act; neither transformers' nor the hub's code reads it
_OTHER_INERT = {"hidden_act", "auto_map", "use_mamba_kernels", "mamba_ssm_cache_dtype", "num_logits_to_keep", "num_nextn_predict_layers",
                "mtp_layers_block_type", "mtp_hybrid_override_pattern", "mamba_proj_bias", "expand", "mamba_expand"}
_MAPPED = {"vocab_size", "hidden_size", "num_hidden_layers", "hybrid_override_pattern", "layers_block_type",
           "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "attention_bias",
           "sliding_window", "intermediate_size", "mlp_hidden_act", "mlp_bias", "ssm_state_size", "mamba_num_heads",
           "mamba_head_dim", "mamba_hidden_act", "n_groups", "conv_kernel", "use_conv_bias", "chunk_size",
           "time_step_limit", "use_bias", "layer_norm_epsilon", "tie_word_embeddings", "rms_norm_eps", "attention_head_dim"} | set(_ALIASES)


def pattern(cfg: dict[str, Any]) -> str:
    """The Megatron pattern string, from ``layers_block_type`` (transformers 5) or ``hybrid_override_pattern``."""
    types = cfg.get("layers_block_type")
    if types is not None:
        if not isinstance(types, list) or not types:
            raise bad("layers_block_type", types, "must be a non-empty list of layer types")
        for t in types:
            if t not in _BLOCK:
                raise bad("layers_block_type", t, f"layer types are {', '.join(sorted(_BLOCK))}")
        text = "".join(_BLOCK[t] for t in types)
        if "hybrid_override_pattern" in cfg and cfg["hybrid_override_pattern"] != text:
            raise bad("hybrid_override_pattern", cfg["hybrid_override_pattern"], f"disagrees with layers_block_type {text!r}")
    else:
        text = cfg.get("hybrid_override_pattern")
        if not isinstance(text, str) or not text or set(text) - set("M*-E"):
            raise bad("hybrid_override_pattern", text, "must be a non-empty string of M, *, - and E")
    n = cfg.get("num_hidden_layers")
    if types is None and n is not None and n != len(text):
        raise bad("num_hidden_layers", n, f"disagrees with the {len(text)} characters of hybrid_override_pattern")
    return text


def _head_dim(cfg: dict[str, Any]) -> int:
    """``head_dim`` (transformers 5) or the hub files' ``attention_head_dim`` (its remote code's name)."""
    if "attention_head_dim" in cfg:
        hd = integer(cfg, "attention_head_dim")
        if "head_dim" in cfg and integer(cfg, "head_dim") != hd:
            raise bad("attention_head_dim", hd, f"disagrees with head_dim {cfg['head_dim']}")
        return hd
    return integer(cfg, "head_dim", default=128)


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a nemotron_h config."""
    known = INERT | SSM_INERT | _MAPPED | _MOE | _OTHER_INERT
    for key in config:
        if key not in known:
            raise bad(key, config[key], "is not understood for model_type 'nemotron_h' (it may change the architecture)")
    cfg = dict(config)
    for old, new in _ALIASES.items():
        if old in cfg:
            cfg[new] = cfg.pop(old)
    text = pattern(cfg)
    for key in ("mamba_hidden_act",):
        if cfg.get(key, "silu") not in ("silu", "swish"):
            raise bad(key, cfg[key], "only silu (the conv activation of Mamba-2) is supported")
    relu2 = kind_for("mlp", "squared_relu")  # transformers' ACT2FN name of relu(x)^2 is the same word
    if cfg.get("mlp_hidden_act", relu2) != relu2:
        raise bad("mlp_hidden_act", cfg["mlp_hidden_act"], "only relu2 (squared ReLU) MLPs are supported")
    for key in ("use_bias", "mlp_bias", "attention_bias"):
        if flag(cfg, key, False):
            raise bad(key, True, "biases are not supported for Nemotron-H")
    if not flag(cfg, "use_conv_bias", True):
        raise bad("use_conv_bias", False, "a Mamba-2 conv without bias is not supported")
    if cfg.get("sliding_window") is not None:
        raise bad("sliding_window", cfg["sliding_window"], "sliding-window attention is not supported for Nemotron-H")
    check_time_step_limit(cfg)
    D = integer(cfg, "hidden_size", default=4096)
    H = integer(cfg, "num_attention_heads", default=32)
    ssm = mamba2_params(cfg, hidden=D, keys={"d_state": "ssm_state_size", "d_conv": "conv_kernel",
                                             "head_dim": "mamba_head_dim", "n_groups": "n_groups",
                                             "chunk_size": "chunk_size", "num_heads": "mamba_num_heads"},
                        defaults={"ssm_state_size": 128, "conv_kernel": 4, "mamba_head_dim": 64, "n_groups": 8,
                                  "chunk_size": 128, "mamba_num_heads": 128})
    Hm = ssm["expand"] * D // ssm["head_dim"]
    if Hm % ssm["n_groups"]:
        raise bad("n_groups", ssm["n_groups"], f"must divide the {Hm} Mamba heads")
    eps_key = "layer_norm_epsilon" if "layer_norm_epsilon" in cfg or "rms_norm_eps" not in cfg else "rms_norm_eps"
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or "hf_nemotron_h")[:200] or "hf_nemotron_h",
        "architecture": "decoder", "task": "lm", "vocab_size": integer(cfg, "vocab_size", default=131072),
        "hidden_size": D, "n_heads": H, "n_kv_heads": integer(cfg, "num_key_value_heads", default=8),
        "head_dim": _head_dim(cfg), "mlp_hidden": integer(cfg, "intermediate_size", default=21504),
        "max_seq_len": integer(cfg, "max_position_embeddings", default=4096),
        "norm_eps": eps_of(cfg, eps_key, 1e-5), "tie_embeddings": flag(cfg, "tie_word_embeddings", False),
        "final_norm": True, "dropout": 0.0, "positional": "none", "norm": kind_for("norm", "rms_norm"),
        "bias": False, "qkv_bias": False,
        "layers": {"n_layers": len(text), "hybrid_override_pattern": text, "mlp": relu2,
                   "params": {"attention": ssm}},
    }
    if "E" in text:
        design["layers"]["rules"] = [{"when": {"layer_idx": [i for i, c in enumerate(text) if c == "E"]},
                                      "params": {"mlp": _moe_params(cfg, relu2)}}]
    return design, []


def _moe_params(cfg: dict[str, Any], relu2: str) -> dict[str, Any]:
    """The MoE kind's params for transformers' NemotronHMoE: sigmoid scores, a selection bias
    (``e_score_correction_bias``), group-limited top-k (``n_group`` / ``topk_group``), optional
    renormalisation, ``routed_scaling_factor``, non-gated relu2 experts, and one always-built shared
    relu2 MLP of ``moe_shared_expert_intermediate_size`` (transformers ignores ``n_shared_experts``)."""
    if cfg.get("moe_latent_size") is not None:
        raise bad("moe_latent_size", cfg["moe_latent_size"], "latent MoE projections are not supported")
    scale = cfg.get("routed_scaling_factor", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
        raise bad("routed_scaling_factor", scale, "must be a number >= 0")
    return {"num_experts": integer(cfg, "n_routed_experts", default=8), "top_k": integer(cfg, "num_experts_per_tok", default=2),
            "expert": relu2, "hidden": integer(cfg, "moe_intermediate_size", default=7688), "shared_experts": 1,
            "shared_hidden": integer(cfg, "moe_shared_expert_intermediate_size", default=7688), "scoring": "sigmoid",
            "score_bias": True, "n_group": integer(cfg, "n_group", default=1), "topk_group": integer(cfg, "topk_group", default=1),
            "norm_topk_prob": flag(cfg, "norm_topk_prob", True), "routed_scale": float(scale)}


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_MAMBA = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight")
_ATTN = tuple(f"{p}_proj.weight" for p in "qkvo")
_MLP = {"up_proj.weight": "fc1.weight", "down_proj.weight": "fc2.weight"}
_MOE_NAMES = {"gate.weight": "mlp.router.weight", "gate.e_score_correction_bias": "mlp.score_bias",
              "shared_experts.up_proj.weight": "mlp.shared.0.fc1.weight",
              "shared_experts.down_proj.weight": "mlp.shared.0.fc2.weight"}


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a NemotronHForCausalLM one: the block's norm goes to ``attn_norm`` or ``mlp_norm``
    by its mixer's names; ``mtp.*`` is skipped; an unknown name is a DesignError."""
    out: dict[str, Any] = {}
    norms: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for orig, t in hf_state.items():
        name = orig.split(".", 1)[1] if orig.startswith(("model.", "backbone.")) else orig
        if name.startswith("mtp."):
            continue
        if name == "embeddings.weight":
            out["embed.weight"] = t
        elif name == "norm_f.weight":
            out["stacks.layers.final_norm.weight"] = t
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.startswith("layers.") and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            sub = rest[len("mixer."):] if rest.startswith("mixer.") else None
            if rest == "norm.weight":
                norms[i] = (orig, t)
            elif sub in _MAMBA or sub in _ATTN:
                out[pre + "attn." + sub] = t
                kinds[i] = "attn"
            elif sub in _MLP:
                out[pre + "mlp." + _MLP[sub]] = t
                kinds[i] = "mlp"
            elif sub in _MOE_NAMES:
                out[pre + _MOE_NAMES[sub]] = t
                kinds[i] = "mlp"
            elif sub in ("experts.up_proj", "experts.down_proj"):  # (E, F, D) / (E, D, F): non-gated experts
                for e in range(t.shape[0]):
                    out[f"{pre}mlp.experts.{e}.{'fc1' if sub.endswith('up_proj') else 'fc2'}.weight"] = t[e]
                kinds[i] = "mlp"
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    for i, (orig, t) in norms.items():
        if i not in kinds:
            raise bad(orig, tuple(t.shape), "belongs to a layer without mixer weights")
        out[f"stacks.layers.blocks.{i}.{kinds[i]}_norm.weight"] = t
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave lm_head out of the state dict
    return out
