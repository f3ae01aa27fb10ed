"""GPT-J and BLOOM configs -> designs, and their weight maps (issue 12). Torch-free.

* ``gptj`` (Wang & Komatsuzaki 2021, GPT-J-6B, mesh-transformer-jax; model card EleutherAI/gpt-j-6b):
  one LayerNorm (``ln_1``) feeds attention and MLP in parallel (``parallel_residual`` +
  ``parallel_shared_norm``); rotary on the first ``rotary_dim`` channels of each head (``rotary_fraction``)
  with adjacent channel pairs (``rotary_interleaved``, GPT-J's ``rotate_every_two``); q / k / v / out
  projections without biases while the MLP (``fc_in`` / ``fc_out``, the dense kind's own ``bias``), the
  LayerNorms (``norm_bias``) and the untied ``lm_head`` (``head_bias``) have them; ``gelu_new`` is
  the tanh GELU (``gelu_approximate: tanh``).
* ``bloom`` (BigScience 2022, BLOOM, arXiv 2211.05100): a LayerNorm on the token embeddings
  (``embed_norm``, ``word_embeddings_layernorm``), ALiBi positions (Press et al. 2021, arXiv 2108.12409;
  the positional kind with the ``linear_bias`` role), pre-norm sequential blocks, every linear layer and
  norm with a bias, a dense 4h MLP with BLOOM's tanh GELU, tied head. Hugging Face fuses q / k / v per
  head (``query_key_value`` rows (H, 3, Dh)). HF's ALiBi adds ``slope * j`` for key j; ours adds
  ``-slope * (i - j)``: they differ by ``slope * i``, constant along each softmax row, so the
  probabilities are the same.
"""
from __future__ import annotations

from typing import Any

from ..errors import DesignError
from .common import INERT, bad, integer, kind_for, split_per_head_qkv

MODEL_TYPES = ("gptj", "bloom")

_GPTJ_KEYS = {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner",
              "activation_function", "layer_norm_epsilon", "rotary", "scale_attn_weights",
              "gradient_checkpointing"}
_GPTJ_ALIASES = {"hidden_size": "n_embd", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer",
                 "max_position_embeddings": "n_positions"}
# BLOOM's Megatron-DeepSpeed training switches: fused kernels and bias-add placement, same function.
# slow_but_exact matters with pretraining_tp > 1 only, and is refused there (``_import_bloom``).
_BLOOM_INERT = {"attention_softmax_in_fp32", "masked_softmax_fusion", "bias_dropout_fusion", "skip_bias_add",
                "skip_bias_add_qkv", "slow_but_exact", "unk_token_id", "offset_alibi", "seq_length"}
_BLOOM_KEYS = {"vocab_size", "hidden_size", "n_layer", "n_head", "layer_norm_epsilon",
               "apply_residual_connection_post_layernorm", "n_inner"}
_BLOOM_ALIASES = {"num_attention_heads": "n_head", "num_hidden_layers": "n_layer", "n_embed": "hidden_size"}

# activation_function -> gelu_approximate of the dense MLP (exact GELU or its tanh approximation)
_GELU = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


def _eps(cfg: dict[str, Any]) -> float:
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad("layer_norm_epsilon", eps, "must be a number in (0, 1)")
    return float(eps)


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise bad(key, value, "must be true or false")
    return value


def _known(cfg: dict[str, Any], keys: set[str], mt: str) -> None:
    for key in cfg:
        if key not in INERT | keys:
            raise bad(key, cfg[key], f"is not understood for model_type {mt!r} (it may change the architecture)")
    for key in ("is_encoder_decoder", "use_bidirectional_attention"):
        if cfg.get(key):
            raise bad(key, cfg[key], "only causal decoder-only models are imported")


def _name(cfg: dict[str, Any], mt: str) -> str:
    return str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}"


def _import_gptj(config: dict[str, Any]) -> dict[str, Any]:
    cfg = {_GPTJ_ALIASES.get(k, k): v for k, v in config.items()}
    _known(cfg, _GPTJ_KEYS, "gptj")
    D, H, n = (integer(cfg, k) for k in ("n_embd", "n_head", "n_layer"))
    if D % H:
        raise bad("n_head", H, f"must divide n_embd {D}")
    Dh = D // H
    if cfg.get("rotary") is False or cfg.get("scale_attn_weights") is False:
        key = "rotary" if cfg.get("rotary") is False else "scale_attn_weights"
        raise bad(key, False, "transformers' GPT-J always applies it (true expected)")
    r = cfg.get("rotary_dim", 64)
    if r is None:
        raise bad("rotary_dim", r, "GPT-J without a rotary_dim is not supported (transformers' table then has "
                  "n_embd channels, not head_dim)")
    r = integer(cfg, "rotary_dim", default=64)
    frac = r / Dh
    if r > Dh or r % 2 or int(Dh * frac) != r:
        raise bad("rotary_dim", r, f"must be an even number <= head_dim {Dh}")
    act = cfg.get("activation_function", "gelu_new")
    if _GELU.get(act) is None:
        raise bad("activation_function", act, f"is not a supported activation (supported: {', '.join(_GELU)})")
    inner = cfg.get("n_inner")
    mlp: dict[str, Any] = {"bias": True}
    if _GELU[act] != "none":
        mlp["gelu_approximate"] = _GELU[act]
    attn: dict[str, Any] = {"rotary_interleaved": True}
    if frac != 1.0:
        attn["rotary_fraction"] = frac
    return {
        "name": _name(cfg, "gptj"), "architecture": "decoder", "task": "lm", "vocab_size": integer(cfg, "vocab_size"),
        "hidden_size": D, "n_heads": H, "n_kv_heads": H, "head_dim": Dh,
        "mlp_hidden": 4 * D if inner is None else integer(cfg, "n_inner"),
        "max_seq_len": integer(cfg, "n_positions", default=2048), "norm_eps": _eps(cfg),
        "tie_embeddings": _flag(cfg, "tie_word_embeddings", False), "final_norm": True, "dropout": 0.0,
        "positional": kind_for("positional", "rotary"), "rope_theta": 10000.0, "norm": kind_for("norm", "layer_norm"),
        "bias": False, "qkv_bias": False, "norm_bias": True, "head_bias": True, "activation": "gelu",
        "parallel_residual": True, "parallel_shared_norm": True,
        "layers": {"n_layers": n, "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "dense"),
                   "params": {"attention": attn, "mlp": mlp}},
    }


def _import_bloom(config: dict[str, Any]) -> dict[str, Any]:
    cfg = {_BLOOM_ALIASES.get(k, k): v for k, v in config.items()}
    _known(cfg, _BLOOM_KEYS | _BLOOM_INERT, "bloom")
    if _flag(cfg, "apply_residual_connection_post_layernorm", False):
        raise bad("apply_residual_connection_post_layernorm", True, "the residual from the normalised input is "
                  "not supported (false expected)")
    tp = integer(cfg, "pretraining_tp", default=1)
    if _flag(cfg, "slow_but_exact", False) and tp > 1:
        # transformers' sliced path sums F.linear over pretraining_tp column slices of the attention's dense and
        # dense_4h_to_h weights without their biases: a different function from the biased layers it holds
        raise bad("slow_but_exact", True, f"with pretraining_tp {tp}, transformers drops the biases of dense and "
                  "dense_4h_to_h (not modelled; false, or pretraining_tp 1, expected)")
    if cfg.get("n_inner") is not None:
        raise bad("n_inner", cfg["n_inner"], "transformers' BLOOM ignores it (its MLP is 4 * hidden_size): null expected")
    D, H, n = (integer(cfg, k) for k in ("hidden_size", "n_head", "n_layer"))
    if D % H:
        raise bad("n_head", H, f"must divide hidden_size {D}")
    seq = integer(cfg, "seq_length", default=2048)
    return {
        "name": _name(cfg, "bloom"), "architecture": "decoder", "task": "lm", "vocab_size": integer(cfg, "vocab_size"),
        "hidden_size": D, "n_heads": H, "n_kv_heads": H, "head_dim": D // H, "mlp_hidden": 4 * D,
        "max_seq_len": seq, "norm_eps": _eps(cfg), "tie_embeddings": _flag(cfg, "tie_word_embeddings", True),
        "final_norm": True, "dropout": 0.0, "positional": kind_for("positional", "linear_bias"),
        "norm": kind_for("norm", "layer_norm"), "bias": True, "qkv_bias": True, "embed_norm": True,
        "activation": "gelu",
        "layers": {"n_layers": n, "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "dense"),
                   "params": {"mlp": {"gelu_approximate": "tanh"}}},
    }


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations: none) for a gptj / bloom config."""
    if config["model_type"] == "gptj":
        return _import_gptj(config), []
    return _import_bloom(config), []


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_GPTJ_LAYER = {**{f"attn.{p}_proj.weight": f"attn.{p}_proj.weight" for p in "qkv"},
               "attn.out_proj.weight": "attn.o_proj.weight",
               **{f"{hf}.{p}": f"{ours}.{p}" for hf, ours in (("ln_1", "attn_norm"), ("mlp.fc_in", "mlp.fc1"),
                                                           ("mlp.fc_out", "mlp.fc2")) for p in ("weight", "bias")}}
_BLOOM_LAYER = {f"{hf}.{p}": f"{ours}.{p}" for hf, ours in (
    ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "mlp_norm"), ("self_attention.dense", "attn.o_proj"),
    ("mlp.dense_h_to_4h", "mlp.fc1"), ("mlp.dense_4h_to_h", "mlp.fc2")) for p in ("weight", "bias")}
_TOP = {"wte.weight": "embed.weight", "word_embeddings.weight": "embed.weight",
        "word_embeddings_layernorm.weight": "stacks.layers.embed_norm.weight",
        "word_embeddings_layernorm.bias": "stacks.layers.embed_norm.bias",
        "ln_f.weight": "stacks.layers.final_norm.weight", "ln_f.bias": "stacks.layers.final_norm.bias",
        "lm_head.weight": "head.weight", "lm_head.bias": "head.bias"}


def map_weights(model_type: str, hf_state: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our state dict from a GPT-J / BLOOM one (every input name must map; an unknown one is a DesignError).

    ``config`` (the config.json dict) is needed for ``bloom``: its fused ``query_key_value`` is laid out per
    head, and the head count is not in any weight's shape.
    """
    table = _GPTJ_LAYER if model_type == "gptj" else _BLOOM_LAYER
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("transformer."):] if orig.startswith("transformer.") else orig
        if name in _TOP:
            out[_TOP[name]] = t
        elif name.startswith("h.") and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if rest in table:
                out[pre + table[rest]] = t
            elif model_type == "bloom" and rest.startswith("self_attention.query_key_value."):
                out.update(_bloom_qkv(pre, rest.rsplit(".", 1)[-1], t, orig, config))
            elif model_type == "gptj" and rest in ("attn.bias", "attn.masked_bias"):
                continue  # old checkpoints' causal-mask buffers
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF leaves lm_head out of the state dict
    return out


def _bloom_qkv(pre: str, kind: str, t: Any, orig: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """BLOOM's fused query_key_value (weight rows or bias), per head (H, 3, Dh), split into q / k / v."""
    cfg = {_BLOOM_ALIASES.get(k, k): v for k, v in (config or {}).items()}
    H = cfg.get("n_head")
    if not isinstance(H, int) or isinstance(H, bool) or H < 1 or t.shape[0] % (3 * H):
        raise DesignError(orig, "is fused per head: splitting it needs the config's n_head "
                          "(map_state_dict(..., config=...))")
    return {f"{pre}attn.{p}_proj.{kind}": part for p, part in zip("qkv", split_per_head_qkv(t, H))}
