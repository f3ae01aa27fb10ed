"""ModernBERT (Warner et al. 2024, arXiv 2412.13663; ``ModernBertForMaskedLM``): an encoder with a masked-LM
head. Torch-free.

* embeddings: the token table and a LayerNorm (``embed_norm``); no position table (rotary positions);
* pre-norm blocks (``norm_placement: pre``) with LayerNorms, biases as ``norm_bias`` / ``attention_bias`` /
  ``mlp_bias`` / ``classifier_bias`` (all equal here: the design's ``bias``); layer 0 has no norm before its
  attention (transformers' ``nn.Identity``; ``first_attn_norm: false``), every layer has one before its MLP;
* attention: a fused ``Wqkv`` (rows ``[q | k | v]``, split by the weight map) and ``Wo``. Layer ``i`` is
  global when ``i % global_attn_every_n_layers == 0`` (transformers 4) or as ``layer_types`` says
  (transformers 5: ``full_attention`` / ``sliding_attention``); the others are local;
* local layers: a bidirectional sliding window in which transformers keeps keys with
  ``|i - j| <= local_attention // 2``. This project's ``window: w`` keeps ``|i - j| < w`` in a bidirectional
  stack, so the window is ``local_attention // 2 + 1`` (ModernBERT's 128 -> 65); each local layer has its own
  rotary base (``local_rope_theta``; the model's ``rope_theta`` is ``global_rope_theta``). transformers 5 keeps
  both in ``rope_parameters`` keyed by layer type; transformers 4 in the flat keys (a null
  ``local_rope_theta`` means the global base);
* MLP: ``Wi`` (D -> 2 I) chunked in two, ``act(first half) * second half``, then ``Wo``: a GeGLU whose gate
  (``w1``, the activated half) is the first half and whose ``w3`` is the second;
* ``final_norm``, then the MLM head: dense D -> D (``classifier_bias``), ``classifier_activation``, LayerNorm
  (``head_transform``), and the decoder tied to the token embedding with its own bias (``head_bias`` =
  ``decoder_bias``).

Inert here: dropouts and init ranges, ``classifier_pooling`` (sequence-classification heads only),
``sparse_prediction`` / ``sparse_pred_ignore_index`` (which rows the loss reads), ``reference_compile``,
``deterministic_flash_attn``, ``repad_logits_with_grad`` (kernels and padding bookkeeping),
``position_embedding_type`` and ``layer_norm_eps`` (hub files keep them; ModernBERT reads neither).

The rules every importer follows are in ``backend/hf/__init__.py``.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for, rope_theta

MODEL_TYPES = ("modernbert",)

_KEYS = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "max_position_embeddings", "hidden_activation", "norm_eps", "norm_bias", "attention_bias", "mlp_bias",
         "classifier_bias", "decoder_bias", "classifier_activation", "local_attention", "global_attn_every_n_layers",
         "global_rope_theta", "local_rope_theta",
         # inert (module docstring)
         "embedding_dropout", "mlp_dropout", "classifier_dropout", "initializer_cutoff_factor", "cls_token_id",
         "classifier_pooling", "sparse_prediction", "sparse_pred_ignore_index", "reference_compile",
         "deterministic_flash_attn", "repad_logits_with_grad", "gradient_checkpointing", "position_embedding_type",
         "layer_norm_eps"}

# hidden_activation -> the GeGLU's gelu_approximate
_GATE = {"gelu": "none", "gelu_pytorch_tanh": "tanh"}
# classifier_activation -> our activation
_HEAD_ACT = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "mish": "mish"}


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise bad(key, value, "must be true or false")
    return value


def _thetas(cfg: dict[str, Any]) -> tuple[float, float]:
    """(global theta, local theta): ``rope_parameters`` per layer type (transformers 5) or the flat keys (4)."""
    params = cfg.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise bad("rope_parameters", params, "must map full_attention / sliding_attention to rope parameters")
        unknown = set(params) - {"full_attention", "sliding_attention"}
        if unknown:
            raise bad("rope_parameters", sorted(unknown), "only full_attention / sliding_attention entries are known")
        # an entry without its theta takes the flat key's (transformers 5 fills it so on load)
        full = {"rope_theta": cfg.get("global_rope_theta", 160000.0), **params.get("full_attention", {})}
        local = {"rope_theta": cfg.get("local_rope_theta", 10000.0), **params.get("sliding_attention", {})}
        return rope_theta({"rope_parameters": full}), rope_theta({"rope_parameters": local})
    if cfg.get("rope_scaling") not in (None, {}):
        rope_theta({"rope_scaling": cfg["rope_scaling"]})  # the default rotary passes; scaling is an error
    if "rope_theta" in cfg:
        raise bad("rope_theta", cfg["rope_theta"], "ModernBERT reads global_rope_theta / local_rope_theta, not rope_theta")
    glob = rope_theta({"rope_theta": cfg.get("global_rope_theta", 160000.0)})
    local = cfg.get("local_rope_theta", 10000.0)
    return glob, glob if local is None else rope_theta({"rope_theta": local})


def _global_layers(cfg: dict[str, Any], n: int) -> list[bool]:
    """Per layer: global (full) attention? From ``layer_types`` (5) or ``global_attn_every_n_layers`` (4)."""
    types = cfg.get("layer_types")
    if types is not None:  # transformers 5 writes both; layer_types is what it reads
        if not isinstance(types, list) or len(types) != n:
            raise bad("layer_types", types, f"must be a list of {n} layer types")
        for t in types:
            if t not in ("full_attention", "sliding_attention"):
                raise bad("layer_types", t, "only full_attention and sliding_attention layers are supported")
        return [t == "full_attention" for t in types]
    every = integer(cfg, "global_attn_every_n_layers", default=3)
    return [i % every == 0 for i in range(n)]


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a modernbert config."""
    cfg = dict(config)
    mt = cfg["model_type"]
    for key in cfg:
        if key not in INERT | _KEYS:
            raise bad(key, cfg[key], f"is not understood for model_type {mt!r} (it may change the architecture)")
    for key in ("is_decoder", "use_bidirectional_attention", "add_cross_attention"):
        if cfg.get(key):
            raise bad(key, cfg[key], "only the bidirectional ModernBERT encoder is imported")
    if not _flag(cfg, "tie_word_embeddings", True):
        raise bad("tie_word_embeddings", cfg["tie_word_embeddings"], "the MLM decoder is imported tied to the embedding")
    # one `bias` for the linear layers and norms: every bias flag must agree
    bias = _flag(cfg, "norm_bias", False)
    for key in ("attention_bias", "mlp_bias", "classifier_bias"):
        if _flag(cfg, key, False) != bias:
            raise bad(key, cfg[key], f"must equal norm_bias ({bias}): one bias setting for the linear layers and norms")
    act = cfg.get("hidden_activation", "gelu")
    if act not in _GATE:
        raise bad("hidden_activation", act, f"is not supported (supported: {', '.join(_GATE)})")
    head_act = cfg.get("classifier_activation", "gelu")
    if head_act not in _HEAD_ACT:
        raise bad("classifier_activation", head_act, f"is not supported (supported: {', '.join(_HEAD_ACT)})")
    D, H = integer(cfg, "hidden_size", default=768), integer(cfg, "num_attention_heads", default=12)
    if D % H:
        raise bad("num_attention_heads", H, f"must divide hidden_size {D}")
    for key in ("num_key_value_heads", "head_dim"):  # transformers ignores them; refuse a layout they would imply
        if cfg.get(key) not in (None, {"num_key_value_heads": H, "head_dim": D // H}[key]):
            raise bad(key, cfg[key], "ModernBERT has hidden_size // num_attention_heads channels per head and no GQA")
    eps = cfg.get("norm_eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad("norm_eps", eps, "must be a number in (0, 1)")
    n = integer(cfg, "num_hidden_layers", default=22)
    local_attention = integer(cfg, "local_attention", default=128)
    if cfg.get("sliding_window") is not None and cfg["sliding_window"] != local_attention // 2:
        raise bad("sliding_window", cfg["sliding_window"], f"must be local_attention // 2 = {local_attention // 2}")
    window = local_attention // 2 + 1  # HF keeps |i - j| <= local_attention // 2; our window keeps |i - j| < w
    theta, local = _thetas(cfg)
    is_global = _global_layers(cfg, n)

    mlp_params: dict[str, Any] = {}
    if _GATE[act] != "none":
        mlp_params["gelu_approximate"] = _GATE[act]
    stack: dict[str, Any] = {"n_layers": n, "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "gated_gelu")}
    if mlp_params:
        stack["params"] = {"mlp": mlp_params}
    local_layers = [i for i, g in enumerate(is_global) if not g]
    if local_layers:
        attn: dict[str, Any] = {"window": window}
        if local != theta:
            attn["rope_theta"] = local
        stack["rules"] = [{"when": {"layer_idx": local_layers}, "params": {"attention": attn}}]
    design = {
        "name": str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}",
        "architecture": "encoder", "task": "mlm", "vocab_size": integer(cfg, "vocab_size", default=50368),
        "hidden_size": D, "n_heads": H, "mlp_hidden": integer(cfg, "intermediate_size", default=1152),
        "activation": _HEAD_ACT[head_act], "max_seq_len": integer(cfg, "max_position_embeddings", default=8192),
        "positional": kind_for("positional", "rotary"), "rope_theta": theta,
        "norm": kind_for("norm", "layer_norm"), "norm_placement": "pre", "norm_eps": float(eps),
        "bias": bias, "qkv_bias": bias, "tie_embeddings": True, "final_norm": True, "dropout": 0.0,
        "embed_norm": True, "head_transform": True, "head_bias": _flag(cfg, "decoder_bias", True),
        "first_attn_norm": False, "layers": stack,
    }
    return design, []


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_TOP = {"model.embeddings.tok_embeddings": "embed", "model.embeddings.norm": "stacks.layers.embed_norm",
        "model.final_norm": "stacks.layers.final_norm", "head.dense": "head_transform.dense",
        "head.norm": "head_transform.norm", "decoder": "head"}
_LAYER = {"attn_norm": "attn_norm", "attn.Wo": "attn.o_proj", "mlp_norm": "mlp_norm", "mlp.Wo": "mlp.w2"}


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Hugging Face ModernBertForMaskedLM one; every name must map."""
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        module, _, leaf = orig.rpartition(".")
        parts = module.split(".", 3)
        ours: Any = None
        if leaf not in ("weight", "bias"):
            pass
        elif module in _TOP:
            ours = f"{_TOP[module]}.{leaf}"
        elif len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
            pre, rest = f"stacks.layers.blocks.{parts[2]}.", parts[3]
            if rest in _LAYER:
                ours = pre + f"{_LAYER[rest]}.{leaf}"
            elif rest == "attn.Wqkv":  # rows [q | k | v]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                    out[f"{pre}attn.{name}.{leaf}"] = part
                continue
            elif rest == "mlp.Wi":  # rows [activated half (our gate w1) | multiplier (w3)]
                gate, up = t.chunk(2, dim=0)
                out[f"{pre}mlp.w1.{leaf}"], out[f"{pre}mlp.w3.{leaf}"] = gate, up
                continue
        if ours is None:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        out[ours] = t
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave the decoder weight out of the state dict
    return out
