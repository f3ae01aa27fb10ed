"""Encoder-decoder models: t5 (T5 1.0, T5 v1.1 / flan-t5). bart is not imported yet (it needs learned
positions with an offset and an embedding LayerNorm per stack, and an embedding scale).

T5 (Raffel et al. 2020, arXiv 1910.10683): pre-norm blocks with RMSNorm without a
bias (``T5LayerNorm``: ``x * rsqrt(mean(x^2) + eps) * w``, this project's ``rms``);
a bucketed relative position bias, one (num_buckets, H) table per stack shared by all
its layers (cross-attention has none); no 1/sqrt(d) scaling of the logits (the
attention ``scale`` param is 1); ``d_kv`` heads (H * d_kv may differ from d_model);
feed-forward ``relu`` (T5 1.0, ``DenseReluDense``) or ``gated-gelu`` (v1.1 / flan-t5,
GELU's tanh approximation, computed here as exact GELU: a note); the tied head sees
the last hidden state times d_model**-0.5 (``head_rescale``).

Tying: transformers 4 files say ``tie_word_embeddings`` (v1.1: false, with an own
``lm_head``; the rescale goes with tying). transformers 5 always ties the head and
writes the rescale as ``scale_decoder_outputs``; a file with that key is read the
transformers-5 way (tied, rescaled as it says).

The rules every importer follows are in ``backend/hf/__init__.py``.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for

MODEL_TYPES = ("t5",)
WEIGHT_TYPES = MODEL_TYPES

_T5_KEYS = {"vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
            "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
            "feed_forward_proj", "dense_act_fn", "is_gated_act", "scale_decoder_outputs", "n_positions",
            # inert: dropout, init, legacy flags
            "dropout_rate", "initializer_factor", "classifier_dropout", "output_past", "gradient_checkpointing"}

# feed_forward_proj -> (MLP role, dense activation or None, note)
_T5_FFN = {
    "relu": ("dense", "relu", None),
    "gelu": ("dense", "gelu", None),
    "silu": ("dense", "silu", None),
    "gated-gelu": ("gated_gelu", None, "GELU's tanh approximation (gelu_new) computed as exact GELU"),
    "gated-silu": ("gated_silu", None, None),
}


def _known(config: dict[str, Any], keys: set[str], mt: str) -> None:
    for key in config:
        if key not in INERT | keys:
            raise bad(key, config[key], f"is not understood for model_type {mt!r} (it may change the architecture)")


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise bad(key, value, "must be true or false")
    return value


def _eps(cfg: dict[str, Any], key: str, default: float) -> float:
    eps = cfg.get(key, default)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad(key, eps, "must be a number in (0, 1)")
    return float(eps)


def _encdec_checks(cfg: dict[str, Any]) -> None:
    if cfg.get("is_encoder_decoder", True) is not True:
        raise bad("is_encoder_decoder", cfg["is_encoder_decoder"], "only the encoder-decoder model is imported")
    if cfg.get("is_decoder"):
        raise bad("is_decoder", cfg["is_decoder"], "only the encoder-decoder model is imported (not a decoder alone)")


def _t5(cfg: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    _known(cfg, _T5_KEYS, "t5")
    _encdec_checks(cfg)
    D, H = integer(cfg, "d_model", default=512), integer(cfg, "num_heads", default=8)
    n_enc = integer(cfg, "num_layers", default=6)
    n_dec = integer(cfg, "num_decoder_layers", default=n_enc)
    proj = cfg.get("feed_forward_proj", "relu")
    if proj not in _T5_FFN:
        raise bad("feed_forward_proj", proj, f"is not supported (supported: {', '.join(_T5_FFN)})")
    role, act, note = _T5_FFN[proj]
    # transformers writes the two derived fields; they must agree with feed_forward_proj
    gated = proj.startswith("gated-")
    if "is_gated_act" in cfg and cfg["is_gated_act"] != gated:
        raise bad("is_gated_act", cfg["is_gated_act"], f"must match feed_forward_proj {proj!r}")
    expect_act = "gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]
    if "dense_act_fn" in cfg and cfg["dense_act_fn"] != expect_act:
        raise bad("dense_act_fn", cfg["dense_act_fn"], f"must be {expect_act!r} for feed_forward_proj {proj!r}")
    if note:
        notes.append(note)
    if "scale_decoder_outputs" in cfg:  # a transformers-5 file: the head is always tied
        tie, rescale = True, _flag(cfg, "scale_decoder_outputs", True)
        if cfg.get("tie_word_embeddings", True) is not True:
            raise bad("tie_word_embeddings", cfg["tie_word_embeddings"], "transformers 5 always ties T5's head "
                      "(scale_decoder_outputs is a transformers-5 key)")
    else:
        tie = rescale = _flag(cfg, "tie_word_embeddings", True)
    buckets = integer(cfg, "relative_attention_num_buckets", default=32)
    max_distance = integer(cfg, "relative_attention_max_distance", default=128)
    if max_distance <= buckets // 2:
        raise bad("relative_attention_max_distance", max_distance,
                  f"must be > relative_attention_num_buckets // 2 = {buckets // 2} (the log-spaced buckets end there)")
    no_scale = {"scale": 1.0}  # T5 does not scale the logits by 1/sqrt(d_kv)
    stack = {"attention": kind_for("attention", "full"), "mlp": kind_for("mlp", role)}
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or "hf_t5")[:200] or "hf_t5",
        "architecture": "encoder_decoder", "task": "seq2seq", "vocab_size": integer(cfg, "vocab_size", default=32128),
        "hidden_size": D, "n_heads": H, "head_dim": integer(cfg, "d_kv", default=64),
        "mlp_hidden": integer(cfg, "d_ff", default=2048),
        # relative positions have no length limit; n_positions (512) is the length T5 was trained at
        "max_seq_len": integer(cfg, "n_positions", default=512),
        "positional": kind_for("positional", "bucket_bias"),
        "positional_params": {"num_buckets": buckets, "max_distance": max_distance},
        "positional_per_stack": True, "norm": kind_for("norm", "rms_norm"), "norm_placement": "pre",
        "norm_eps": _eps(cfg, "layer_norm_epsilon", 1e-6), "bias": False, "qkv_bias": False,
        "tie_embeddings": tie, "head_rescale": rescale, "final_norm": True, "dropout": 0.0,
        "encoder": {"n_layers": n_enc, **stack, "params": {"attention": dict(no_scale)}},
        "decoder": {"n_layers": n_dec, **stack, "params": {"attention": dict(no_scale), "cross": dict(no_scale)}},
    }
    if act:
        design["activation"] = act
    return design


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a t5 config."""
    notes: list[str] = []
    return _t5(dict(config), notes), notes


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_T5_ATTN = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
_T5_FFN_NAMES = {"wi": "fc1", "wo": "fc2", "wi_0": "w1", "wi_1": "w3"}  # gated: wi_0 gate, wi_1 up, wo down


def _t5_layer(stack: str, i: str, rest: str, gated: bool) -> str | None:
    """Our name for ``{stack}.block.{i}.{rest}``, or None (unmapped)."""
    pre = f"stacks.{stack}.blocks.{i}."
    parts = rest.split(".")  # layer.{j}.{Module}.{name}.weight | layer.{j}.layer_norm.weight
    if len(parts) < 4 or parts[0] != "layer" or not parts[1].isdigit():
        return None
    j = int(parts[1])
    # encoder: 0 self-attention, 1 FFN; decoder: 0 self-attention, 1 cross-attention, 2 FFN
    sub = {0: "attn", 1: "cross" if stack == "decoder" else "mlp", 2: "mlp" if stack == "decoder" else None}.get(j)
    if sub is None:
        return None
    if parts[2] == "layer_norm" and parts[3:] == ["weight"]:
        return f"{pre}{sub}_norm.weight"
    module, leaf = parts[2], parts[3:]
    if sub in ("attn", "cross") and module in ("SelfAttention", "EncDecAttention") and len(leaf) == 2 and leaf[0] in _T5_ATTN:
        return f"{pre}{sub}.{_T5_ATTN[leaf[0]]}.weight"
    if sub == "mlp" and module in ("DenseReluDense",) and len(leaf) == 2 and leaf[0] in _T5_FFN_NAMES:
        ours = _T5_FFN_NAMES[leaf[0]]
        if leaf[0] == "wo" and gated:
            ours = "w2"
        return f"{pre}mlp.{ours}.weight"
    return None


def _map_t5(hf_state: dict[str, Any]) -> dict[str, Any]:
    gated = any(".DenseReluDense.wi_0." in k for k in hf_state)
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig
        if name == "shared.weight":
            out["embed.weight"] = t
        elif name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            out.setdefault("embed.weight", t)  # the shared embedding under the stacks' names
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.endswith(".final_layer_norm.weight") and name.split(".")[0] in ("encoder", "decoder"):
            out[f"stacks.{name.split('.')[0]}.final_norm.weight"] = t
        elif name in ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"):
            out[f"stacks.{name.split('.')[0]}.pos.weight"] = t  # (num_buckets, H), one per stack
        elif name == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
            continue  # in old checkpoints, unused by the model (transformers ignores it too)
        else:
            parts = name.split(".", 3)
            ours = None
            if len(parts) == 4 and parts[0] in ("encoder", "decoder") and parts[1] == "block" and parts[2].isdigit():
                ours = _t5_layer(parts[0], parts[2], parts[3], gated)
            if ours is None:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
            out[ours] = t
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave lm_head out of the state dict
    return out


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Hugging Face t5 one; every input name must map (else a DesignError)."""
    return _map_t5(hf_state)

