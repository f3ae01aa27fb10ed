"""Encoder-decoder models: t5 (T5 1.0, T5 v1.1 / flan-t5) and bart.

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

BART (Lewis et al. 2019, arXiv 1910.13461; ``BartForConditionalGeneration``): post-norm blocks with
biases everywhere and a dense FFN (GELU); learned positions numbered from 2 (``position_offset``: a
table of max_position_embeddings + 2 rows), one table per stack (``positional_per_stack``); a LayerNorm
on each stack's summed embeddings (``layernorm_embedding``: ``embed_norm``); no final norm; the word
embedding shared by both stacks and the tied head. ``final_logits_bias`` is a buffer (zeros in the
public checkpoints, not a parameter); a checkpoint whose buffer is not zero is refused. Embedding
scaling (``scale_embedding``, mBART-style) and pre-norm variants are errors.

The rules every importer follows are in ``backend/hf/__init__.py``.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for

MODEL_TYPES = ("t5", "bart")
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


# ---- bart (issue 12) ----
_BART_KEYS = {"vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
              "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "activation_function",
              "max_position_embeddings", "scale_embedding", "num_hidden_layers",
              # transformers-3 era flags, checked below
              "normalize_before", "add_final_layer_norm", "normalize_embedding", "static_position_embeddings",
              "extra_pos_embeddings", "add_bias_logits",
              # inert: dropout, init, generation settings
              "activation_dropout", "encoder_layerdrop", "decoder_layerdrop", "init_std", "classifier_dropout",
              "classif_dropout", "forced_eos_token_id", "forced_bos_token_id", "num_labels", "gradient_checkpointing",
              "no_repeat_ngram_size", "num_beams", "early_stopping", "length_penalty", "max_length", "min_length",
              "force_bos_token_to_be_generated", "output_past"}
_BART_ACT = {"gelu": ("gelu", None), "relu": ("relu", None), "silu": ("silu", None), "swish": ("silu", None),
             "gelu_new": ("gelu", "GELU's tanh approximation (gelu_new) computed as exact GELU")}
_BART_FIXED = {"normalize_before": False, "add_final_layer_norm": False, "normalize_embedding": True,
               "static_position_embeddings": False, "extra_pos_embeddings": 2, "add_bias_logits": False,
               "scale_embedding": False}


def _bart(cfg: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    _known(cfg, _BART_KEYS, "bart")
    _encdec_checks(cfg)
    for key, want in _BART_FIXED.items():
        if key in cfg and cfg[key] != want:
            raise bad(key, cfg[key], f"is not supported for bart (only {want!r}: BART-base/large's architecture)")
    if cfg.get("tie_word_embeddings", True) is not True:
        raise bad("tie_word_embeddings", cfg["tie_word_embeddings"], "bart is imported with its tied head")
    act = cfg.get("activation_function", "gelu")
    if act not in _BART_ACT:
        raise bad("activation_function", act, f"is not supported (supported: {', '.join(_BART_ACT)})")
    activation, note = _BART_ACT[act]
    if note:
        notes.append(note)
    D = integer(cfg, "d_model", default=1024)
    H = integer(cfg, "encoder_attention_heads", default=16)
    if integer(cfg, "decoder_attention_heads", default=16) != H:
        raise bad("decoder_attention_heads", cfg["decoder_attention_heads"], f"must equal encoder_attention_heads {H}")
    if D % H:
        raise bad("encoder_attention_heads", H, f"must divide d_model {D}")
    n_enc = integer(cfg, "encoder_layers", default=12)
    if "num_hidden_layers" in cfg and cfg["num_hidden_layers"] != n_enc:
        raise bad("num_hidden_layers", cfg["num_hidden_layers"], f"must equal encoder_layers {n_enc}")
    ffn_enc = integer(cfg, "encoder_ffn_dim", default=4096)
    ffn_dec = integer(cfg, "decoder_ffn_dim", default=4096)
    dec: dict[str, Any] = {"n_layers": integer(cfg, "decoder_layers", default=12),
                           "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "dense")}
    if ffn_dec != ffn_enc:
        dec["params"] = {"mlp": {"hidden": ffn_dec}}
    return {
        "name": str(cfg.get("_name_or_path") or "hf_bart")[:200] or "hf_bart",
        "architecture": "encoder_decoder", "task": "seq2seq", "vocab_size": integer(cfg, "vocab_size", default=50265),
        "hidden_size": D, "n_heads": H, "mlp_hidden": ffn_enc, "activation": activation,
        "max_seq_len": integer(cfg, "max_position_embeddings", default=1024),
        "positional": kind_for("positional", "learned_table"), "position_offset": 2, "positional_per_stack": True,
        "norm": kind_for("norm", "layer_norm"), "norm_placement": "post", "norm_eps": 1e-5,  # nn.LayerNorm's default
        "bias": True, "qkv_bias": True, "tie_embeddings": True, "final_norm": False, "dropout": 0.0,
        "embed_norm": True,
        "encoder": {"n_layers": n_enc, "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "dense")},
        "decoder": dec,
    }


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a t5 or bart config."""
    notes: list[str] = []
    if config.get("model_type") == "bart":
        return _bart(dict(config), notes), notes
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


_BART_LAYER = {"self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj", "self_attn.v_proj": "attn.v_proj",
               "self_attn.out_proj": "attn.o_proj", "self_attn_layer_norm": "attn_norm",
               "encoder_attn.q_proj": "cross.q_proj", "encoder_attn.k_proj": "cross.k_proj",
               "encoder_attn.v_proj": "cross.v_proj", "encoder_attn.out_proj": "cross.o_proj",
               "encoder_attn_layer_norm": "cross_norm", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "final_layer_norm": "mlp_norm"}


def _map_bart(hf_state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("model."):] if orig.startswith("model.") else orig
        ours = None
        if name == "shared.weight":
            ours = "embed.weight"
        elif name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            out.setdefault("embed.weight", t)  # the shared embedding under the stacks' names
            continue
        elif name == "lm_head.weight":
            ours = "head.weight"
        elif name == "final_logits_bias":  # a buffer, zeros in the public checkpoints
            if not getattr(t, "is_meta", False) and bool(t.any()):
                raise bad(orig, tuple(t.shape), "is not zero; a logit bias buffer is not modelled for bart")
            continue
        else:
            stack, _, rest = name.partition(".")
            module, _, leaf = rest.rpartition(".")
            if stack in ("encoder", "decoder") and leaf in ("weight", "bias"):
                if module == "embed_positions" and leaf == "weight":
                    ours = f"stacks.{stack}.pos.weight"
                elif module == "layernorm_embedding":
                    ours = f"stacks.{stack}.embed_norm.{leaf}"
                else:
                    parts = module.split(".", 2)
                    if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() and parts[2] in _BART_LAYER:
                        if not (stack == "encoder" and parts[2].startswith("encoder_attn")):
                            ours = f"stacks.{stack}.blocks.{parts[1]}.{_BART_LAYER[parts[2]]}.{leaf}"
        if ours is None:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        out[ours] = t
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave lm_head out of the state dict
    return out


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Hugging Face t5 or bart one; every input name must map (else a DesignError)."""
    if model_type == "bart":
        return _map_bart(hf_state)
    return _map_t5(hf_state)

