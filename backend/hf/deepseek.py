"""DeepSeek-V2 / V3 (``deepseek_v2``, ``deepseek_v3``): Multi-head Latent Attention and DeepSeekMoE.

DeepSeek-V2 (arXiv 2405.04434) and DeepSeek-V3 (arXiv 2412.19437), as
transformers' ``modeling_deepseek_v2`` / ``modeling_deepseek_v3`` compute them:

* every layer's mixer is MLA (the kind with the registry role ``latent``):
  ``q_lora_rank`` (null = a plain q projection, V2-Lite), ``kv_lora_rank``,
  ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``; rotary on
  interleaved pairs (V2 always, V3 unless ``rope_interleave`` is false); YaRN
  ``rope_scaling`` / ``rope_parameters`` onto the kind's ``yarn_*`` options
  (the frequency blend, the cos/sin attention factor and the mscale of the
  softmax scale); the latent RMSNorms keep DeepSeek's fixed eps 1e-6;
* the first ``first_k_dense_replace`` layers have a SwiGLU of
  ``intermediate_size``; the others are MoE layers (a rule over the layer
  range): ``n_routed_experts`` SwiGLU experts of ``moe_intermediate_size``,
  ``num_experts_per_tok`` per token, one always-on shared expert of width
  ``n_shared_experts * moe_intermediate_size`` (transformers builds the shared
  experts as one MLP of that width: the same function and count as
  ``n_shared_experts`` of them); ``routed_scaling_factor`` scales the routed
  output; V2 scores with a softmax over the experts and top-k without
  renormalisation (``topk_method`` greedy, or ``group_limited_greedy`` over
  ``n_group`` groups of which ``topk_group`` are kept); V3 scores with
  sigmoids, selects with the ``e_score_correction_bias`` buffer (the MoE's
  ``score_bias``) within ``topk_group`` of ``n_group`` groups, renormalises
  when ``norm_topk_prob``.

Keys of the hub's original (remote-code) config files that transformers' model
does not read are accepted only at values that change nothing:
``moe_layer_freq`` must be 1, ``scoring_func`` must be the family's own
(softmax for V2, sigmoid for V3), ``topk_method`` of V3 ``noaux_tc``.
``num_nextn_predict_layers`` (V3's multi-token-prediction module, 14B of the
published 685B) is ignored: transformers' model has no MTP layer, and neither
does the imported design (the main model's 671B). Training-only keys
(``aux_loss_alpha``, ``seq_aux``, ``ep_size``) change nothing.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for

MODEL_TYPES = ("deepseek_v2", "deepseek_v3")

_SIZES = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "n_layers": "num_hidden_layers",
          "n_heads": "num_attention_heads", "mlp_hidden": "intermediate_size", "max_seq_len": "max_position_embeddings"}
_MAPPED = {
    "rms_norm_eps", "hidden_act", "attention_bias", "mlp_bias", "first_k_dense_replace", "kv_lora_rank", "q_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "qk_head_dim", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "moe_intermediate_size", "routed_scaling_factor", "topk_method", "n_group", "topk_group",
    "norm_topk_prob", "scoring_func", "moe_layer_freq", "rope_interleave",
    # the hub's remote-code files: training / parallelism only, or checked below
    "aux_loss_alpha", "seq_aux", "ep_size", "num_nextn_predict_layers", "num_mtp_layers", "auto_map",
}
_YARN_KEYS = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
              "mscale", "mscale_all_dim", "truncate", "attention_factor"}
LATENT_EPS = 1e-6  # DeepseekV2RMSNorm(q_lora_rank) / (kv_lora_rank): the class default, not rms_norm_eps


def _number(value: Any, key: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise bad(key, value, "must be a positive number" if positive else "must be a number")
    return float(value)


def _rope(cfg: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(rope_theta, the MLA kind's yarn_* params) from ``rope_parameters`` (transformers 5) or
    ``rope_theta`` + ``rope_scaling`` (transformers 4)."""
    params = cfg.get("rope_parameters")
    where = "rope_parameters"
    if params is None:
        params, where = dict(cfg.get("rope_scaling") or {}), "rope_scaling"
        params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    if not isinstance(params, dict):
        raise bad(where, params, "must be a mapping")
    kind = params.get("rope_type", params.get("type", "default"))
    theta = _number(params.get("rope_theta", cfg.get("rope_theta", 10000.0)), "rope_theta")
    if kind == "default":
        extra = set(params) - {"rope_type", "type", "rope_theta"}
        if extra:
            raise bad(f"{where}.{sorted(extra)[0]}", params[sorted(extra)[0]], "is not understood for default rotary")
        return theta, {}
    if kind != "yarn":
        raise bad(f"{where}.rope_type", kind, "RoPE scaling other than yarn is not supported")
    for key in params:
        if key not in _YARN_KEYS:
            raise bad(f"{where}.{key}", params[key], "is not understood for yarn")
    if params.get("truncate", True) is not True:
        raise bad(f"{where}.truncate", params["truncate"], "only the truncated YaRN correction range is supported")
    if params.get("attention_factor") is not None:
        raise bad(f"{where}.attention_factor", params["attention_factor"], "an explicit YaRN attention factor is not supported")
    max_pos = integer(cfg, "max_position_embeddings")
    original = integer(params, "original_max_position_embeddings", default=max_pos)
    factor = params.get("factor")
    factor = max_pos / original if factor is None else _number(factor, f"{where}.factor")
    if factor < 1:
        raise bad(f"{where}.factor", factor, "must be >= 1")
    out = {"yarn_factor": float(factor), "yarn_original_max": original,
           "yarn_beta_fast": _number(params.get("beta_fast") or 32, f"{where}.beta_fast"),  # HF: `or 32`, `or 1`
           "yarn_beta_slow": _number(params.get("beta_slow") or 1, f"{where}.beta_slow")}
    for key in ("mscale", "mscale_all_dim"):
        value = params.get(key)
        out[f"yarn_{key}"] = 0.0 if value in (None, 0) else _number(value, f"{where}.{key}")
    return theta, out


def _moe(cfg: dict[str, Any], mt: str) -> dict[str, Any]:
    """The MoE layers' params (the ``experts``-role MLP kind's options)."""
    e = integer(cfg, "n_routed_experts")
    inter = integer(cfg, "moe_intermediate_size")
    shared = integer(cfg, "n_shared_experts", default=0, lo=0)
    k = integer(cfg, "num_experts_per_tok")
    scale = _number(cfg.get("routed_scaling_factor", 1.0), "routed_scaling_factor")
    p: dict[str, Any] = {"num_experts": e, "top_k": k, "hidden": inter, "expert": kind_for("mlp", "gated_silu"),
                         "routed_scale": scale}
    if shared:
        p.update(shared_experts=1, shared_hidden=shared * inter)
    method = cfg.get("topk_method", "greedy" if mt == "deepseek_v2" else "noaux_tc")
    scoring = cfg.get("scoring_func", "softmax" if mt == "deepseek_v2" else "sigmoid")
    if mt == "deepseek_v2":
        if scoring != "softmax":
            raise bad("scoring_func", scoring, "deepseek_v2 scores experts with a softmax (transformers' model)")
        norm = False  # transformers' DeepseekV2TopkRouter never renormalises the top-k weights
        if method == "group_limited_greedy":
            p.update(n_group=integer(cfg, "n_group"), topk_group=integer(cfg, "topk_group"))
        elif method != "greedy":
            raise bad("topk_method", method, "deepseek_v2 supports greedy and group_limited_greedy")
    else:
        if scoring != "sigmoid":
            raise bad("scoring_func", scoring, "deepseek_v3 scores experts with sigmoids (transformers' model)")
        if method != "noaux_tc":
            raise bad("topk_method", method, "deepseek_v3 routes with noaux_tc (transformers' model)")
        norm = cfg.get("norm_topk_prob", True)
        if not isinstance(norm, bool):
            raise bad("norm_topk_prob", norm, "must be true or false")
        p.update(scoring="sigmoid", score_bias=True, n_group=integer(cfg, "n_group"), topk_group=integer(cfg, "topk_group"))
    p["norm_topk_prob"] = norm
    return p


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations: none) for a DeepSeek-V2 / V3 config."""
    mt = config["model_type"]
    known = INERT | set(_SIZES.values()) | _MAPPED
    for key in config:
        if key not in known:
            raise bad(key, config[key], f"is not understood for model_type {mt!r} (it may change the architecture)")
    cfg = dict(config)
    for key in ("is_encoder_decoder", "use_bidirectional_attention", "attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise bad(key, cfg[key], "is not supported for DeepSeek models (causal, bias-free)")
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise bad("hidden_act", cfg["hidden_act"], "DeepSeek MLPs are SwiGLU (silu)")
    if cfg.get("moe_layer_freq", 1) != 1:
        raise bad("moe_layer_freq", cfg["moe_layer_freq"], "only 1 (every layer after the dense ones is MoE) is supported")
    size = {field: integer(cfg, key) for field, key in _SIZES.items()}
    D, H, n = size["hidden_size"], size["n_heads"], size["n_layers"]
    if cfg.get("num_key_value_heads") not in (None, H):
        raise bad("num_key_value_heads", cfg["num_key_value_heads"], f"MLA expands the latent to all {H} heads; must equal "
                  "num_attention_heads")
    if D % H:
        raise bad("num_attention_heads", H, f"must divide hidden_size {D}")
    eps = _number(cfg.get("rms_norm_eps", 1e-6), "rms_norm_eps")
    tie = cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise bad("tie_word_embeddings", tie, "must be true or false")
    theta, yarn = _rope(cfg)
    nope, rope, v = (integer(cfg, key) for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
    if cfg.get("qk_head_dim") not in (None, nope + rope):
        raise bad("qk_head_dim", cfg["qk_head_dim"], f"must be qk_nope_head_dim + qk_rope_head_dim = {nope + rope}")
    attn: dict[str, Any] = {
        "q_lora_rank": integer(cfg, "q_lora_rank") if cfg.get("q_lora_rank") is not None else 0,
        "kv_lora_rank": integer(cfg, "kv_lora_rank"), "qk_nope_head_dim": nope, "qk_rope_head_dim": rope, "v_head_dim": v,
        **yarn,
    }
    interleave = cfg.get("rope_interleave", True) if mt == "deepseek_v3" else True
    if not isinstance(interleave, bool):
        raise bad("rope_interleave", interleave, "must be true or false")
    if not interleave:
        attn["rope_interleave"] = False
    if eps != LATENT_EPS:
        attn["latent_norm_eps"] = LATENT_EPS
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}",
        "architecture": "decoder", "task": "lm", "vocab_size": size["vocab_size"], "hidden_size": D, "n_heads": H,
        "mlp_hidden": size["mlp_hidden"], "max_seq_len": size["max_seq_len"], "norm_eps": eps, "tie_embeddings": tie,
        "final_norm": True, "dropout": 0.0, "positional": kind_for("positional", "rotary"), "rope_theta": theta,
        "norm": kind_for("norm", "rms_norm"), "bias": False, "qkv_bias": False,
    }
    stack: dict[str, Any] = {"n_layers": n, "attention": kind_for("attention", "latent"),
                             "mlp": kind_for("mlp", "gated_silu"), "params": {"attention": attn}}
    dense = integer(cfg, "first_k_dense_replace", default=0, lo=0)
    if cfg.get("n_routed_experts") is not None and dense < n:
        moe = {"when": {"range": [dense, n]}, "mlp": kind_for("mlp", "experts"), "params": {"mlp": _moe(cfg, mt)}}
        stack["rules"] = [moe]
    design["layers"] = stack
    return design, []


# ---------------------------------------------------------------------------
# Weights: transformers' state-dict names -> this project's (backend/nn/model.py, backend/nn/mla.py, moe.py).

_ATTN = ("q_proj", "q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj")
_MLP = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a transformers DeepSeek-V2 / V3 one (every name must map; see ``backend.hf.map_state_dict``)."""
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("model."):] if orig.startswith("model.") else orig
        if name == "embed_tokens.weight":
            out["embed.weight"] = t
        elif name == "norm.weight":
            out["stacks.layers.final_norm.weight"] = t
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.startswith("layers.") and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if not _map_layer(out, pre, rest, t):
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: transformers leaves lm_head out of the state dict
    return out


def _map_layer(out: dict[str, Any], pre: str, rest: str, t: Any) -> bool:
    parts = rest.split(".")
    if rest == "input_layernorm.weight":
        out[pre + "attn_norm.weight"] = t
    elif rest == "post_attention_layernorm.weight":
        out[pre + "mlp_norm.weight"] = t
    elif parts[0] == "self_attn" and len(parts) == 3 and parts[1] in _ATTN:
        out[f"{pre}attn.{parts[1]}.{parts[2]}"] = t
    elif parts[0] == "mlp" and len(parts) == 3 and parts[1] in _MLP:  # a dense layer's SwiGLU
        out[f"{pre}mlp.{_MLP[parts[1]]}.{parts[2]}"] = t
    elif rest == "mlp.gate.weight":
        out[pre + "mlp.router.weight"] = t
    elif rest == "mlp.gate.e_score_correction_bias":
        out[pre + "mlp.score_bias"] = t
    elif parts[:2] == ["mlp", "shared_experts"] and len(parts) == 4 and parts[2] in _MLP:
        out[f"{pre}mlp.shared.0.{_MLP[parts[2]]}.{parts[3]}"] = t
    elif rest == "mlp.experts.gate_up_proj":  # (E, 2F, D): gate rows then up rows
        for e in range(t.shape[0]):
            out[f"{pre}mlp.experts.{e}.w1.weight"], out[f"{pre}mlp.experts.{e}.w3.weight"] = t[e].chunk(2, dim=0)
    elif rest == "mlp.experts.down_proj":  # (E, D, F)
        for e in range(t.shape[0]):
            out[f"{pre}mlp.experts.{e}.w2.weight"] = t[e]
    elif parts[:2] == ["mlp", "experts"] and len(parts) == 5 and parts[2].isdigit() and parts[3] in _MLP:
        out[f"{pre}mlp.experts.{parts[2]}.{_MLP[parts[3]]}.{parts[4]}"] = t  # the hub's per-expert names
    else:
        return False
    return True
