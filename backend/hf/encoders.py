"""Encoder models with a masked-LM head: bert, roberta.

BERT (Devlin et al. 2019, arXiv 1810.04805; ``BertForMaskedLM``): the input is the sum of word,
learned position and token-type (segment) embeddings, normalised by a LayerNorm (``embed_norm``,
``type_vocab_size``); post-norm blocks (``x = LN(x + f(x))``, ``norm_placement: post``) with biases
everywhere and a dense GELU FFN; no final norm. The MLM head is a transform -- dense D->D, the hidden
activation, LayerNorm (``head_transform``) -- then logits with the decoder weight tied to the word
embedding and their own bias (``head_bias``). BertForMaskedLM has no pooler.

RoBERTa (Liu et al. 2019, arXiv 1907.11692; ``RobertaForMaskedLM``): BERT's architecture with learned
positions numbered from padding_idx + 1 (``position_offset`` = pad_token_id + 1 = 2: a table of
max_position_embeddings = max_seq_len + 2 rows), type_vocab_size 1, and a head whose activation is
always GELU. transformers numbers only the non-padding tokens (``create_position_ids_from_input_ids``);
here position p is row p + 2, the same for every token of a right-padded batch.

The rules every importer follows are in ``backend/hf/__init__.py``.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for

MODEL_TYPES = ("bert", "roberta")

_KEYS = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
         "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "position_embedding_type", "add_cross_attention",
         # inert: dropout, init, legacy flags
         "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "gradient_checkpointing",
         "output_past"}

# hidden_act -> (our activation, note or None)
_ACT = {"gelu": ("gelu", None), "relu": ("relu", None), "silu": ("silu", None), "swish": ("silu", None),
        "gelu_new": ("gelu", "GELU's tanh approximation (gelu_new) computed as exact GELU"),
        "gelu_pytorch_tanh": ("gelu", "GELU's tanh approximation (gelu_pytorch_tanh) computed as exact GELU")}


def _known(config: dict[str, Any], mt: str) -> None:
    for key in config:
        if key not in INERT | _KEYS:
            raise bad(key, config[key], f"is not understood for model_type {mt!r} (it may change the architecture)")


def _eps(cfg: dict[str, Any], key: str, default: float) -> float:
    eps = cfg.get(key, default)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad(key, eps, "must be a number in (0, 1)")
    return float(eps)


def _bert(cfg: dict[str, Any], mt: str, notes: list[str]) -> dict[str, Any]:
    _known(cfg, mt)
    if cfg.get("is_decoder"):
        raise bad("is_decoder", cfg["is_decoder"], "only the bidirectional encoder is imported")
    if cfg.get("add_cross_attention"):
        raise bad("add_cross_attention", cfg["add_cross_attention"], "cross-attention in an encoder is not supported")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise bad("position_embedding_type", cfg["position_embedding_type"], "only 'absolute' positions are supported")
    if cfg.get("tie_word_embeddings", True) is not True:
        raise bad("tie_word_embeddings", cfg["tie_word_embeddings"], "the MLM decoder is imported tied to the embedding")
    act = cfg.get("hidden_act", "gelu")
    if act not in _ACT:
        raise bad("hidden_act", act, f"is not supported (supported: {', '.join(_ACT)})")
    activation, note = _ACT[act]
    if mt == "roberta" and activation != "gelu":
        raise bad("hidden_act", act, "RoBERTa's MLM head always uses GELU; a different hidden activation is not supported")
    if note:
        notes.append(note)
    D, H = integer(cfg, "hidden_size", default=768), integer(cfg, "num_attention_heads", default=12)
    if D % H:
        raise bad("num_attention_heads", H, f"must divide hidden_size {D}")
    max_pos = integer(cfg, "max_position_embeddings", default=512)
    offset = 0
    if mt == "roberta":  # positions start after padding_idx
        offset = integer(cfg, "pad_token_id", default=1, lo=0) + 1
        if max_pos <= offset:
            raise bad("max_position_embeddings", max_pos, f"must exceed pad_token_id + 1 = {offset} (RoBERTa's first position)")
    return {
        "name": str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}",
        "architecture": "encoder", "task": "mlm", "vocab_size": integer(cfg, "vocab_size", default=30522),
        "hidden_size": D, "n_heads": H, "mlp_hidden": integer(cfg, "intermediate_size", default=3072),
        "activation": activation, "max_seq_len": max_pos - offset, "positional": kind_for("positional", "learned_table"),
        "position_offset": offset, "type_vocab_size": integer(cfg, "type_vocab_size", default=2, lo=0),
        "norm": kind_for("norm", "layer_norm"), "norm_placement": "post", "norm_eps": _eps(cfg, "layer_norm_eps", 1e-12),
        "bias": True, "qkv_bias": True, "tie_embeddings": True, "final_norm": False, "dropout": 0.0,
        "embed_norm": True, "head_transform": True, "head_bias": True,
        "layers": {"n_layers": integer(cfg, "num_hidden_layers", default=12), "attention": kind_for("attention", "full"),
                   "mlp": kind_for("mlp", "dense")},
    }


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a bert / roberta config."""
    notes: list[str] = []
    cfg = dict(config)
    return _bert(cfg, cfg["model_type"], notes), notes


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_EMBED = {"embeddings.word_embeddings.weight": "embed.weight", "embeddings.position_embeddings.weight": "pos.weight",
          "embeddings.token_type_embeddings.weight": "type_embed.weight",
          "embeddings.LayerNorm.weight": "stacks.layers.embed_norm.weight",
          "embeddings.LayerNorm.bias": "stacks.layers.embed_norm.bias"}
_LAYER = {"attention.self.query": "attn.q_proj", "attention.self.key": "attn.k_proj", "attention.self.value": "attn.v_proj",
          "attention.output.dense": "attn.o_proj", "attention.output.LayerNorm": "attn_norm",
          "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "output.LayerNorm": "mlp_norm"}
_HEAD = {  # BERT's cls.predictions.* and RoBERTa's lm_head.*
    "cls.predictions.transform.dense": "head_transform.dense", "cls.predictions.transform.LayerNorm": "head_transform.norm",
    "cls.predictions.decoder": "head", "lm_head.dense": "head_transform.dense", "lm_head.layer_norm": "head_transform.norm",
    "lm_head.decoder": "head"}
_SKIP = ("embeddings.position_ids", "embeddings.token_type_ids")  # buffers some checkpoints keep


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Hugging Face BertForMaskedLM / RobertaForMaskedLM one; every name must map."""
    out: dict[str, Any] = {}
    prefix = f"{model_type}."
    for orig, t in hf_state.items():
        name = orig[len(prefix):] if orig.startswith(prefix) else orig
        if name in _SKIP:
            continue
        ours = _EMBED.get(name)
        if ours is None and name in ("cls.predictions.bias", "lm_head.bias"):
            ours = "head.bias"  # the logit bias (transformers ties decoder.bias to it)
        if ours is None:
            module, _, leaf = name.rpartition(".")
            if leaf in ("weight", "bias"):
                if module in _HEAD:
                    ours = f"{_HEAD[module]}.{leaf}"
                parts = module.split(".", 3)
                if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[2].isdigit() and parts[3] in _LAYER:
                    ours = f"stacks.layers.blocks.{parts[2]}.{_LAYER[parts[3]]}.{leaf}"
        if ours is None:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        out[ours] = t
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave the decoder weight out of the state dict
    return out
