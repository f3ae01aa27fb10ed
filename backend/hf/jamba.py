"""Jamba (``jamba``, Lieber et al. 2024, arXiv 2403.19887): Mamba-1 layers with periodic attention and MoE.

Each layer is a pre-RMSNorm mixer plus a pre-RMSNorm FFN. The mixer is softmax
attention (no positions, no biases, scale ``head_dim ** -0.5``) where
``i % attn_layer_period == attn_layer_offset``, else a Mamba-1 selective scan
with RMSNorms on dt, B and C (the ``mamba`` kind with ``bc_norm``; its conv
activation is ``hidden_act``). The FFN is a MoE of ``num_experts`` SwiGLU
experts of ``intermediate_size`` where ``i % expert_layer_period ==
expert_layer_offset`` (and ``num_experts > 1``), else one SwiGLU MLP of the
same width. Routing (transformers' ``JambaTopKRouter``): a softmax over all
expert logits, the ``num_experts_per_tok`` largest kept *un-normalised* (the
MoE kind's ``norm_topk_prob: false``).

Mamba fields: ``mamba_d_state`` -> d_state, ``mamba_d_conv`` -> d_conv,
``mamba_expand`` -> expand, ``mamba_dt_rank`` -> dt_rank ("auto" = ceil(D / 16),
our 0); ``mamba_conv_bias`` must be true, ``mamba_proj_bias`` false.
``use_mamba_kernels`` / ``use_mambapy`` / ``use_associative_scan`` choose an
implementation only.
"""
from __future__ import annotations

from typing import Any

from ..registry import REGISTRIES
from .common import INERT, bad, integer, kind_for
from .llama import _map_experts
from .mamba2 import eps_of, flag

MODEL_TYPES = ("jamba",)

_MAPPED = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "num_key_value_heads", "hidden_act", "rms_norm_eps", "max_position_embeddings", "num_experts_per_tok",
           "num_experts", "num_local_experts", "expert_layer_period", "expert_layer_offset", "attn_layer_period",
           "attn_layer_offset", "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank", "mamba_conv_bias",
           "mamba_proj_bias", "tie_word_embeddings"}
_IMPL = {"use_mamba_kernels", "use_mambapy", "use_associative_scan", "num_logits_to_keep"}


def _period(cfg: dict[str, Any], period: str, offset: str, dp: int, do: int, n: int) -> list[bool]:
    p, o = integer(cfg, period, default=dp), integer(cfg, offset, default=do, lo=0)
    if o >= p:
        raise bad(offset, o, f"must be smaller than {period} ({p})")
    return [i % p == o for i in range(n)]


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a jamba config."""
    known = INERT | _MAPPED | _IMPL
    for key in config:
        if key not in known:
            raise bad(key, config[key], "is not understood for model_type 'jamba' (it may change the architecture)")
    cfg = dict(config)
    if "num_local_experts" in cfg:
        cfg.setdefault("num_experts", cfg.pop("num_local_experts"))
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise bad("hidden_act", cfg["hidden_act"], "only silu (SwiGLU FFNs, silu Mamba conv) is supported")
    if not flag(cfg, "mamba_conv_bias", True):
        raise bad("mamba_conv_bias", False, "a Mamba conv without bias is not supported")
    if flag(cfg, "mamba_proj_bias", False):
        raise bad("mamba_proj_bias", True, "biases on the Mamba projections are not supported")
    D, n = integer(cfg, "hidden_size", default=4096), integer(cfg, "num_hidden_layers", default=32)
    H = integer(cfg, "num_attention_heads", default=32)
    if D % H:
        raise bad("num_attention_heads", H, f"must divide hidden_size {D}")
    rank = cfg.get("mamba_dt_rank", "auto")
    rank = 0 if rank == "auto" else integer(cfg, "mamba_dt_rank")
    attn = _period(cfg, "attn_layer_period", "attn_layer_offset", 8, 4, n)
    E = integer(cfg, "num_experts", default=16)
    moe = [m and E > 1 for m in _period(cfg, "expert_layer_period", "expert_layer_offset", 2, 1, n)]
    dense, full = kind_for("mlp", "gated_silu"), kind_for("attention", "full")
    stack: dict[str, Any] = {
        "n_layers": n, "attention": kind_for("attention", "selective_scan"), "mlp": dense,
        "params": {"attention": {"d_state": integer(cfg, "mamba_d_state", default=16),
                                 "d_conv": integer(cfg, "mamba_d_conv", default=4),
                                 "expand": integer(cfg, "mamba_expand", default=2), "dt_rank": rank, "bc_norm": True}},
    }
    rules: list[dict[str, Any]] = []
    if any(attn):
        rules.append({"when": {"layer_idx": [i for i, a in enumerate(attn) if a]}, "attention": full})
    if any(moe):
        experts = kind_for("mlp", "experts")
        if "norm_topk_prob" not in REGISTRIES["mlp"][experts].params:
            raise bad("num_experts_per_tok", cfg.get("num_experts_per_tok"),
                      "Jamba's un-normalised top-k weights need the MoE option norm_topk_prob")
        rules.append({"when": {"layer_idx": [i for i, m in enumerate(moe) if m]}, "mlp": experts,
                      "params": {"mlp": {"num_experts": E, "top_k": integer(cfg, "num_experts_per_tok", default=2),
                                         "expert": dense, "hidden": integer(cfg, "intermediate_size", default=14336),
                                         "norm_topk_prob": False}}})
    if rules:
        stack["rules"] = rules
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or "hf_jamba")[:200] or "hf_jamba",
        "architecture": "decoder", "task": "lm", "vocab_size": integer(cfg, "vocab_size", default=65536),
        "hidden_size": D, "n_heads": H, "n_kv_heads": integer(cfg, "num_key_value_heads", default=8),
        "mlp_hidden": integer(cfg, "intermediate_size", default=14336),
        "max_seq_len": min(integer(cfg, "max_position_embeddings", default=262144), 1 << 20),
        "norm_eps": eps_of(cfg, "rms_norm_eps", 1e-6), "tie_embeddings": flag(cfg, "tie_word_embeddings", False),
        "final_norm": True, "dropout": 0.0, "positional": "none", "norm": kind_for("norm", "rms_norm"),
        "bias": False, "qkv_bias": False, "layers": stack,
    }
    return design, []


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_SAME = {f"self_attn.{p}_proj.weight": f"attn.{p}_proj.weight" for p in "qkvo"}
_SAME.update({f"mamba.{n}": f"attn.{n}" for n in (
    "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D",
    "out_proj.weight", "dt_layernorm.weight", "b_layernorm.weight", "c_layernorm.weight")})
_SAME.update({"input_layernorm.weight": "attn_norm.weight", "pre_ff_layernorm.weight": "mlp_norm.weight",
              "feed_forward.gate_proj.weight": "mlp.w1.weight", "feed_forward.up_proj.weight": "mlp.w3.weight",
              "feed_forward.down_proj.weight": "mlp.w2.weight", "feed_forward.router.weight": "mlp.router.weight"})


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a JambaForCausalLM one; an unknown name is a DesignError."""
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("model."):] if orig.startswith("model.") else orig
        if name == "embed_tokens.weight":
            out["embed.weight"] = t
        elif name == "final_layernorm.weight":
            out["stacks.layers.final_norm.weight"] = t
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.startswith("layers.") and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if rest in _SAME:
                out[pre + _SAME[rest]] = t
            elif rest.startswith("feed_forward.experts."):
                _map_experts(out, pre, "mlp." + rest[len("feed_forward."):], t, orig)
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave lm_head out of the state dict
    return out
