"""gpt-oss (OpenAI 2025, gpt-oss-120b & gpt-oss-20b Model Card, arXiv 2508.10925): model type gpt_oss.

A Llama-shaped decoder (RMSNorm, rotary, GQA) with, read from transformers'
``modeling_gpt_oss``:

* attention sinks: a learned logit per head (``self_attn.sinks``, (H,)) in
  every softmax denominator (the attention kind's ``sinks``);
* ``attention_bias``: biases on q, k, v *and* o (the design's ``bias``: its
  RMSNorms have no bias, and nothing else in this design reads it);
* alternating ``layer_types`` (``sliding_attention`` / ``full_attention``,
  the even layers sliding when a file has none) with ``sliding_window`` 128
  in Hugging Face's meaning (``backend/hf/llama.py``);
* every layer a MoE: a router with a bias, ``num_local_experts`` experts of
  width ``intermediate_size`` with biases, softmax over the top-k logits
  (the MoE kind's default routing), and the clamped SwiGLU expert
  (``swiglu_limit``, ``swiglu_alpha``; ``hidden_act`` is not read by
  transformers' experts and changes nothing).

RoPE: the released checkpoints use YaRN (``rope_type: yarn``, factor 32 over
``original_max_position_embeddings`` 4096, ``beta_fast`` 32, ``beta_slow``
1, ``truncate: false``; Peng et al. 2023, arXiv 2309.00071): the design's
``rope_scaling`` (``backend/nn/common.rope_cos_sin``), read by
:func:`yarn_rope` from transformers-5 ``rope_parameters`` or transformers-4
``rope_scaling`` + ``rope_theta``. DeepSeek's ``mscale`` / ``mscale_all_dim``
are refused (they also rescale the softmax in its attention).
"""
from __future__ import annotations

from typing import Any

from . import llama
from .common import INERT, bad, integer, kind_for, layer_windows, put_windows, rope_theta

MODEL_TYPES = ("gpt_oss",)
_KEYS = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "max_position_embeddings", "rms_norm_eps", "num_local_experts", "num_experts_per_tok", "swiglu_alpha",
         "swiglu_limit", "attention_bias", "hidden_act"}


def _number(cfg: dict[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise bad(key, value, "must be a positive number")
    return float(value)


_YARN_KEYS = {"rope_type", "type", "rope_theta", "factor", "beta_fast", "beta_slow", "truncate",
              "original_max_position_embeddings", "attention_factor"}


def yarn_rope(cfg: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, the design's ``rope_scaling`` or None) of a config; YaRN as transformers'
    ``_compute_yarn_parameters`` reads it (``factor`` null = max_position_embeddings / original)."""
    params = cfg.get("rope_parameters")
    key = "rope_parameters"
    if params is None and isinstance(cfg.get("rope_scaling"), dict):  # transformers 4
        params, key = {"rope_theta": cfg.get("rope_theta", 10000.0), **cfg["rope_scaling"]}, "rope_scaling"
    if not (isinstance(params, dict) and params.get("rope_type", params.get("type")) == "yarn"):
        return rope_theta(cfg), None
    for k in params:
        if k not in _YARN_KEYS:
            raise bad(f"{key}.{k}", params[k], "is not supported with YaRN rotary scaling")
    theta = rope_theta({"rope_parameters": {"rope_type": "default", "rope_theta": params.get("rope_theta", cfg.get("rope_theta", 10000.0))}})
    orig = integer(params, "original_max_position_embeddings")
    factor = params.get("factor")
    if factor is None:
        factor = integer(cfg, "max_position_embeddings") / orig
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool):
        raise bad(f"{key}.truncate", truncate, "must be true or false")
    scaling = {"type": "yarn", "factor": _number(params, "factor", factor), "original_max_position_embeddings": orig,
               "beta_fast": _number(params, "beta_fast", 32.0) if params.get("beta_fast") else 32.0,
               "beta_slow": _number(params, "beta_slow", 1.0) if params.get("beta_slow") else 1.0,
               "truncate": truncate, "attention_factor": None}
    if params.get("attention_factor") is not None:
        scaling["attention_factor"] = _number(params, "attention_factor", 1.0)
    return theta, scaling


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a gpt_oss config."""
    for key in config:
        if key not in INERT | _KEYS:
            raise bad(key, config[key], "is not understood for model_type 'gpt_oss' (it may change the architecture)")
    cfg = dict(config)
    for key in ("is_encoder_decoder", "use_bidirectional_attention"):
        if cfg.get(key):
            raise bad(key, cfg[key], "only causal decoder-only models are imported")
    D, n = integer(cfg, "hidden_size", default=2880), integer(cfg, "num_hidden_layers", default=36)
    H = integer(cfg, "num_attention_heads", default=64)
    head_dim = integer(cfg, "head_dim", default=64)
    eps = _number(cfg, "rms_norm_eps", 1e-5)
    if not eps < 1:
        raise bad("rms_norm_eps", eps, "must be a number in (0, 1)")
    attn_bias = cfg.get("attention_bias", True)
    tie = cfg.get("tie_word_embeddings", False)
    for key, value in (("attention_bias", attn_bias), ("tie_word_embeddings", tie)):
        if not isinstance(value, bool):
            raise bad(key, value, "must be true or false")
    if cfg.get("layer_types") is None:  # GptOssConfig: the even layers slide
        cfg["layer_types"] = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
        cfg.setdefault("sliding_window", 128)
    width = integer(cfg, "intermediate_size", default=2880)
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or "hf_gpt_oss")[:200] or "hf_gpt_oss",
        "architecture": "decoder", "task": "lm", "vocab_size": integer(cfg, "vocab_size", default=201088),
        "hidden_size": D, "n_heads": H, "n_kv_heads": integer(cfg, "num_key_value_heads", default=8),
        "head_dim": head_dim, "mlp_hidden": width,
        "max_seq_len": integer(cfg, "max_position_embeddings", default=131072), "norm_eps": eps,
        "tie_embeddings": tie, "final_norm": True, "dropout": 0.0,
        "positional": kind_for("positional", "rotary"),
        "norm": kind_for("norm", "rms_norm"), "bias": attn_bias, "qkv_bias": False,
    }
    design["rope_theta"], scaling = yarn_rope(cfg)
    if scaling is not None:
        design["rope_scaling"] = scaling
    stack: dict[str, Any] = {
        "n_layers": n, "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "experts"),
        "params": {
            "attention": {"sinks": True},
            "mlp": {"num_experts": integer(cfg, "num_local_experts", default=128),
                    "top_k": integer(cfg, "num_experts_per_tok", default=4),
                    "expert": kind_for("mlp", "clamped_swiglu"), "hidden": width, "router_bias": True,
                    "expert_bias": True, "swiglu_limit": _number(cfg, "swiglu_limit", 7.0),
                    "swiglu_alpha": _number(cfg, "swiglu_alpha", 1.702)},
        },
    }
    put_windows(stack, layer_windows(cfg, n, "gpt_oss"))
    design["layers"] = stack
    return design, []


# ---------------------------------------------------------------------------
# Weights (transformers 5 names; the hub's MXFP4 expert blocks are quantized and do not map)

_ATTN = {"self_attn.o_proj.bias": "attn.o_proj.bias", "self_attn.sinks": "attn.sinks",
         "mlp.router.weight": "mlp.router.weight", "mlp.router.bias": "mlp.router.bias"}


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Hugging Face gpt_oss one; the Llama names go through ``llama.map_weights``."""
    rest_state: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("model."):] if orig.startswith("model.") else orig
        parts = name.split(".", 2)
        if not (len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit()):
            rest_state[orig] = t
            continue
        pre, rest = f"stacks.layers.blocks.{parts[1]}.", parts[2]
        if rest in _ATTN:
            out[pre + _ATTN[rest]] = t
        elif rest.startswith("mlp.experts."):
            _map_experts(out, pre, rest, t, orig)
        else:
            rest_state[orig] = t
    return {**llama.map_weights("llama", rest_state), **out}


def _map_experts(out: dict[str, Any], pre: str, rest: str, t: Any, orig: str) -> None:
    """gate_up_proj (E, D, 2F) with gate / up interleaved (even / odd columns), its bias (E, 2F);
    down_proj (E, F, D) and its bias (E, D): stored for ``x @ W``, so transposed to ``Linear`` layout."""
    kind = rest[len("mlp.experts."):]
    for e in range(t.shape[0]):
        base = f"{pre}mlp.experts.{e}."
        if kind == "gate_up_proj":
            out[base + "w1.weight"], out[base + "w3.weight"] = t[e][:, 0::2].t(), t[e][:, 1::2].t()
        elif kind == "gate_up_proj_bias":
            out[base + "w1.bias"], out[base + "w3.bias"] = t[e][0::2], t[e][1::2]
        elif kind == "down_proj":
            out[base + "w2.weight"] = t[e].t()
        elif kind == "down_proj_bias":
            out[base + "w2.bias"] = t[e]
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
