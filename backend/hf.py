"""Hugging Face ``config.json`` -> design (``python -m backend import-hf``), and the weight-name map.

Torch-free. Supported ``model_type``: llama, mistral, mixtral, qwen2, qwen3,
gpt2, gemma2 -- read from both the hub's transformers-4 files (``rope_theta``,
``rope_scaling``, ``torch_dtype``) and transformers-5 files
(``rope_parameters``, ``dtype``, ``layer_types``).

The rule: every key of the config is either *mapped* onto the design, *known
to change nothing* about the function the model computes (token ids, dropout,
init ranges, cache flags, labels), or an error naming the key and its value.
A key the importer does not know is an error too, so a new upstream feature
never yields a silently different model. A few features that change outputs
but no count (Gemma's sqrt(D) embedding scale and final-logit soft-cap, the
tanh GELU approximation) are *approximations*: accepted by default, listed in
the design's description, returned by :func:`import_hf_notes`, and errors with
``exact=True``.

Sliding windows: Hugging Face's ``sliding_window: w`` lets query i see keys
j with ``0 <= i - j < w`` (its sliding-window mask), which is this project's
``window: w`` (``backend.nn.common.attention_mask``); the logit test in
tests/test_hf.py checks it with a window shorter than the sequence.

Kinds are picked by their registry *roles* (``backend/kinds``), never by name.
"""
from __future__ import annotations

from typing import Any

from .errors import DesignError, short_repr
from .registry import REGISTRIES

# Keys that do not change the function a model computes (or only its numerics / training).
_INERT = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "initializer_range", "attention_dropout", "hidden_dropout", "dropout",
    "embd_pdrop", "resid_pdrop", "attn_pdrop", "summary_activation", "summary_first_dropout", "summary_proj_to_labels",
    "summary_type", "summary_use_proj", "task_specific_params", "_name_or_path", "id2label", "label2id",
    "output_router_logits", "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp", "n_ctx",
    "reorder_and_upcast_attn", "use_return_dict", "return_dict", "output_attentions", "output_hidden_states",
    "tokenizer_class", "quantization_config", "_attn_implementation", "attn_implementation", "cache_implementation",
    "sliding_window_pattern", "use_sliding_window", "max_window_layers", "layer_types", "sliding_window",
    "num_key_value_heads", "head_dim", "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings",
    "is_decoder", "chunk_size_feed_forward", "problem_type", "decoder_start_token_id", "sep_token_id",
    "finetuning_task", "prefix", "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads",
    "is_encoder_decoder", "use_bidirectional_attention",  # checked below: must be false
}

# Per model type: the config keys holding each design size (transformers' own attribute_map names).
_LLAMA_KEYS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "n_layers": "num_hidden_layers",
               "n_heads": "num_attention_heads", "mlp_hidden": "intermediate_size",
               "max_seq_len": "max_position_embeddings", "norm_eps": "rms_norm_eps", "act": "hidden_act"}
_GPT2_KEYS = {"vocab_size": "vocab_size", "hidden_size": "n_embd", "n_layers": "n_layer", "n_heads": "n_head",
              "mlp_hidden": "n_inner", "max_seq_len": "n_positions", "norm_eps": "layer_norm_epsilon",
              "act": "activation_function"}
_GEMMA2_KEYS = {**_LLAMA_KEYS, "act": "hidden_activation"}

# model_type -> (size keys, extra keys it maps, default tie_word_embeddings)
_TYPES: dict[str, tuple[dict[str, str], set[str], bool]] = {
    "llama": (_LLAMA_KEYS, {"attention_bias", "mlp_bias"}, False),
    "mistral": (_LLAMA_KEYS, set(), False),
    "qwen2": (_LLAMA_KEYS, set(), False),
    "qwen3": (_LLAMA_KEYS, {"attention_bias"}, False),
    "mixtral": (_LLAMA_KEYS, {"num_local_experts", "num_experts_per_tok"}, False),
    "gpt2": (_GPT2_KEYS, {"scale_attn_weights", "scale_attn_by_inverse_layer_idx", "add_cross_attention"}, True),
    "gemma2": (_GEMMA2_KEYS, {"query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
                              "hidden_act", "attention_bias"}, True),
}
SUPPORTED = tuple(_TYPES)

# activation name -> (GLU role or dense activation, approximation note or None)
_GLU_ACTS = {"silu": ("gated_silu", None), "swish": ("gated_silu", None), "gelu": ("gated_gelu", None),
             "gelu_pytorch_tanh": ("gated_gelu", "GELU's tanh approximation computed as exact GELU")}
_DENSE_ACTS = {"gelu": ("gelu", None), "relu": ("relu", None), "silu": ("silu", None),
               "gelu_new": ("gelu", "GELU's tanh approximation (gelu_new) computed as exact GELU"),
               "gelu_pytorch_tanh": ("gelu", "GELU's tanh approximation computed as exact GELU")}



def _role(category: str, role: str) -> str:
    """The registered kind filling ``role`` (strict: ``registry.role`` falls back to the first kind)."""
    for info in REGISTRIES[category].values():
        if role in info.roles:
            return info.name
    raise RuntimeError(f"no {category} kind declares the role {role!r} the Hugging Face importer needs")


def _bad(key: str, value: Any, why: str) -> DesignError:
    return DesignError(key, f"{why}, got {short_repr(value)}")


def _int(cfg: dict[str, Any], key: str, *, default: Any = None, lo: int = 1) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise DesignError(key, "is required")
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _bad(key, value, f"must be an integer >= {lo}")
    return value


def _rope_theta(cfg: dict[str, Any]) -> float:
    """``rope_theta`` (transformers 4) or ``rope_parameters`` (5, possibly one per layer type); scaling is an error."""
    params = cfg.get("rope_parameters")
    if params is None:
        scaling = cfg.get("rope_scaling")
        if scaling not in (None, {}) and not (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default"):
            raise _bad("rope_scaling", scaling, "RoPE scaling is not supported (only the default rotary)")
        params = {"rope_theta": cfg.get("rope_theta", 10000.0)}
    if not isinstance(params, dict):
        raise _bad("rope_parameters", params, "must be a mapping")
    if all(isinstance(v, dict) for v in params.values()) and params:  # per layer type (Gemma-3 style)
        thetas = {k: _rope_theta({"rope_parameters": v}) for k, v in params.items()}
        if len(set(thetas.values())) > 1:
            raise _bad("rope_parameters", thetas, "a RoPE theta per layer type is not supported (one theta per model)")
        return next(iter(thetas.values()))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise _bad("rope_parameters.rope_type", kind, "RoPE scaling is not supported (only 'default')")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise _bad("rope_parameters.partial_rotary_factor", params["partial_rotary_factor"], "partial rotary is not supported")
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
        raise _bad("rope_theta", theta, "must be a positive number")
    return float(theta)


def _windows(cfg: dict[str, Any], n_layers: int, mt: str) -> list[int]:
    """The sliding window of each layer (0 = full attention), from ``layer_types`` or the type's own rule."""
    w = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if mt in ("qwen2", "qwen3") and not cfg.get("use_sliding_window", False):
        w = None  # Qwen2 keeps `sliding_window` in its files but uses it only with use_sliding_window
    if types is not None:
        if not isinstance(types, list) or len(types) != n_layers:
            raise _bad("layer_types", types, f"must be a list of {n_layers} layer types")
        out = []
        for t in types:
            if t == "full_attention":
                out.append(0)
            elif t == "sliding_attention":
                out.append(_int(cfg, "sliding_window"))
            else:
                raise _bad("layer_types", t, "only full_attention and sliding_attention layers are supported")
        return out
    if w is None:
        return [0] * n_layers
    w = _int(cfg, "sliding_window")
    if mt == "gemma2":  # transformers 4: even layers slide, odd layers are global
        return [w if i % 2 == 0 else 0 for i in range(n_layers)]
    if mt in ("qwen2", "qwen3"):  # layers from max_window_layers on slide
        first = _int(cfg, "max_window_layers", default=n_layers, lo=0)
        return [w if i >= first else 0 for i in range(n_layers)]
    return [w] * n_layers


def _notes_and_checks(cfg: dict[str, Any], mt: str, notes: list[str]) -> None:
    """Refuse mapped-but-unsupported values; collect the count-preserving approximations."""
    for key in ("is_encoder_decoder", "use_bidirectional_attention"):
        if cfg.get(key):
            raise _bad(key, cfg[key], "only causal decoder-only models are imported")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise _bad(key, cfg[key], "biases on the attention output / MLP of a RMSNorm model are not supported")
    if mt == "gpt2":
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            raise _bad("scale_attn_by_inverse_layer_idx", True, "per-layer attention scaling is not supported")
        if cfg.get("scale_attn_weights", True) is not True:
            raise _bad("scale_attn_weights", cfg["scale_attn_weights"], "unscaled attention logits are not supported")
        if cfg.get("add_cross_attention"):
            raise _bad("add_cross_attention", True, "a decoder with cross-attention is not supported")
    if mt == "gemma2":
        head_dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        if cfg.get("query_pre_attn_scalar", head_dim) != head_dim:
            raise _bad("query_pre_attn_scalar", cfg["query_pre_attn_scalar"],
                       f"attention scaling other than 1/sqrt(head_dim={head_dim}) is not supported")
        if cfg.get("hidden_act") not in (None, cfg.get("hidden_activation")):
            raise _bad("hidden_act", cfg["hidden_act"], "must match hidden_activation")
        notes.append("embedding scaled by sqrt(hidden_size)")
        if cfg.get("final_logit_softcapping"):
            notes.append(f"final-logit soft-cap {cfg['final_logit_softcapping']}")
        notes.append("RMSNorm gain stored as 1 + w (a reparametrisation; map_state_dict adds the 1)")


def import_hf_notes(config: dict[str, Any], *, exact: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(design dict, approximations) for a Hugging Face config; DesignError on anything else."""
    if not isinstance(config, dict):
        raise DesignError("<config>", f"must be a mapping (a config.json), got {type(config).__name__}")
    mt = config.get("model_type")
    if mt not in _TYPES:
        raise _bad("model_type", mt, f"is not supported by import-hf (supported: {', '.join(SUPPORTED)})")
    keys, extra, tie_default = _TYPES[mt]
    known = _INERT | set(keys.values()) | extra
    for key in config:
        if key not in known:
            raise _bad(key, config[key], f"is not understood for model_type {mt!r} (it may change the architecture)")
    cfg = dict(config)
    notes: list[str] = []
    if mt == "gpt2" and cfg.get(keys["mlp_hidden"]) is None:
        cfg[keys["mlp_hidden"]] = 4 * cfg.get(keys["hidden_size"], 0)  # GPT-2: n_inner null = 4 * n_embd
    if mt == "gemma2":
        cfg.setdefault("hidden_activation", cfg.get("hidden_act", "gelu_pytorch_tanh"))
    size = {field: _int(cfg, key) for field, key in keys.items() if field not in ("norm_eps", "act")}
    _notes_and_checks(cfg, mt, notes)
    D, H, n = size["hidden_size"], size["n_heads"], size["n_layers"]
    kv = _int(cfg, "num_key_value_heads", default=H)
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if D % H:
            raise _bad(keys["n_heads"], H, f"must divide {keys['hidden_size']} {D} when head_dim is not given")
        head_dim = D // H
    head_dim = _int({"head_dim": head_dim}, "head_dim")
    eps = cfg.get(keys["norm_eps"], 1e-5 if mt == "gpt2" else 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise _bad(keys["norm_eps"], eps, "must be a number in (0, 1)")
    act = cfg.get(keys["act"], "gelu_new" if mt == "gpt2" else "silu")
    table = _DENSE_ACTS if mt == "gpt2" else _GLU_ACTS
    if act not in table:
        raise _bad(keys["act"], act, f"is not a supported activation (supported: {', '.join(table)})")
    act_mapped, act_note = table[act]
    if act_note:
        notes.append(act_note)
    tie = cfg.get("tie_word_embeddings", tie_default)
    if not isinstance(tie, bool):
        raise _bad("tie_word_embeddings", tie, "must be true or false")

    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}",
        "architecture": "decoder", "task": "lm", "vocab_size": size["vocab_size"],
        "hidden_size": D, "n_heads": H, "n_kv_heads": kv, "head_dim": head_dim, "mlp_hidden": size["mlp_hidden"],
        "max_seq_len": size["max_seq_len"], "norm_eps": float(eps), "tie_embeddings": tie,
        "final_norm": True, "dropout": 0.0,
    }
    stack: dict[str, Any] = {"n_layers": n, "attention": _role("attention", "full")}
    attn_params: dict[str, Any] = {}
    if mt == "gpt2":
        design.update(positional=_role("positional", "learned_table"), norm=_role("norm", "layer_norm"),
                      bias=True, qkv_bias=True, activation=act_mapped)
        stack["mlp"] = _role("mlp", "dense")
    else:
        design.update(positional=_role("positional", "rotary"), rope_theta=_rope_theta(cfg),
                      norm=_role("norm", "rms_norm"), bias=False, qkv_bias=mt == "qwen2")
        stack["mlp"] = _role("mlp", act_mapped)
    if mt == "mixtral":
        stack["params"] = {"mlp": {"num_experts": _int(cfg, "num_local_experts", default=8),
                                   "top_k": _int(cfg, "num_experts_per_tok", default=2), "expert": stack["mlp"]}}
        stack["mlp"] = _role("mlp", "experts")
    if mt == "qwen3":
        attn_params["qk_norm"] = True
    if mt == "gemma2":
        design["norm_placement"] = "pre_post"
        cap = cfg.get("attn_logit_softcapping")
        if cap:
            stack["attention"] = _role("attention", "softcap")
            attn_params["softcap"] = float(cap)
    windows = _windows(cfg, n, mt)
    if attn_params:
        stack.setdefault("params", {})["attention"] = attn_params
    if any(windows):
        if len(set(windows)) == 1:
            stack.setdefault("params", {}).setdefault("attention", {})["window"] = windows[0]
        else:
            stack["rules"] = [{"when": {"layer_idx": [i for i, w in enumerate(windows) if w == win]},
                               "params": {"attention": {"window": win}}} for win in sorted(set(windows) - {0})]
    if notes:
        if exact:
            raise DesignError("model_type", f"{mt!r} needs approximations (exact import refused): {'; '.join(notes)}")
        design["description"] = f"Imported from a Hugging Face {mt} config. Not modelled: {'; '.join(notes)}."
    else:
        design["description"] = f"Imported from a Hugging Face {mt} config (exact)."
    design["layers"] = stack
    return design, notes


def import_hf(config: dict[str, Any], *, exact: bool = False) -> dict[str, Any]:
    """A design dict (load it with ``backend.spec.load_design``) for a Hugging Face config dict."""
    return import_hf_notes(config, exact=exact)[0]


def is_hf_config(data: Any) -> bool:
    """A Hugging Face config is recognised by its ``model_type`` key (designs have none)."""
    return isinstance(data, dict) and "model_type" in data


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_LLAMA_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "mlp_norm.weight",
    "self_attn.q_proj.weight": "attn.q_proj.weight", "self_attn.k_proj.weight": "attn.k_proj.weight",
    "self_attn.v_proj.weight": "attn.v_proj.weight", "self_attn.o_proj.weight": "attn.o_proj.weight",
    "self_attn.q_proj.bias": "attn.q_proj.bias", "self_attn.k_proj.bias": "attn.k_proj.bias",
    "self_attn.v_proj.bias": "attn.v_proj.bias",
    "self_attn.q_norm.weight": "attn.q_norm.weight", "self_attn.k_norm.weight": "attn.k_norm.weight",
    "mlp.gate_proj.weight": "mlp.w1.weight", "mlp.up_proj.weight": "mlp.w3.weight", "mlp.down_proj.weight": "mlp.w2.weight",
}
_GPT2_LAYER = {  # GPT-2's Conv1D stores (in, out): transposed on the way
    "ln_1.weight": "attn_norm.weight", "ln_1.bias": "attn_norm.bias", "ln_2.weight": "mlp_norm.weight",
    "ln_2.bias": "mlp_norm.bias", "attn.c_proj.weight": "attn.o_proj.weight", "attn.c_proj.bias": "attn.o_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}


def map_state_dict(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict (names and layouts of ``backend.nn.model.Transformer``) from a Hugging Face one.

    Works on any tensor type with ``.t()``, ``.chunk()`` and ``.reshape()`` (torch, no import here).
    Every input name must map (an unknown name is a DesignError), so nothing is silently dropped.
    """
    if model_type not in ("llama", "mistral", "qwen2", "qwen3", "mixtral", "gpt2"):
        raise _bad("model_type", model_type, "has no weight map (supported: llama, mistral, qwen2, qwen3, mixtral, gpt2)")
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig
        name = name[len("model."):] if name.startswith("model.") else name
        name = name[len("transformer."):] if name.startswith("transformer.") else name
        if name in ("embed_tokens.weight", "wte.weight"):
            out["embed.weight"] = t
        elif name == "wpe.weight":
            out["pos.weight"] = t
        elif name in ("norm.weight", "ln_f.weight", "ln_f.bias"):
            out["stacks.layers.final_norm." + name.split(".")[-1]] = t
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.startswith(("layers.", "h.")) and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if model_type == "gpt2":
                if rest.startswith("attn.c_attn."):  # fused qkv, (D, 3D) / (3D,)
                    q, k, v = (t.t() if t.dim() == 2 else t).chunk(3, dim=0)
                    kind = rest.split(".")[-1]
                    for p, x in zip("qkv", (q, k, v)):
                        out[f"{pre}attn.{p}_proj.{kind}"] = x
                elif rest in _GPT2_LAYER:
                    out[pre + _GPT2_LAYER[rest]] = t.t() if rest.endswith("weight") and t.dim() == 2 and "ln_" not in rest else t
                elif rest.endswith(".attn.bias") or rest in ("attn.bias", "attn.masked_bias"):
                    continue  # GPT-2's causal-mask buffers
                else:
                    raise _bad(orig, tuple(t.shape), "has no counterpart in this project's model")
            elif rest in _LLAMA_LAYER:
                out[pre + _LLAMA_LAYER[rest]] = t
            elif model_type == "mixtral" and rest.startswith("block_sparse_moe."):  # transformers 4's name
                _map_moe(out, pre, "mlp." + rest[len("block_sparse_moe."):], t, orig)
            elif model_type == "mixtral" and rest.startswith("mlp."):
                _map_moe(out, pre, rest, t, orig)
            else:
                raise _bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise _bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF leaves lm_head out of the state dict
    return out


def _map_moe(out: dict[str, Any], pre: str, rest: str, t: Any, orig: str) -> None:
    if rest == "mlp.gate.weight":
        out[pre + "mlp.router.weight"] = t
    elif rest.startswith("mlp.experts."):
        _map_experts(out, pre, rest, t, orig)
    else:
        raise _bad(orig, tuple(t.shape), "has no counterpart in this project's model")


def _map_experts(out: dict[str, Any], pre: str, rest: str, t: Any, orig: str) -> None:
    """Mixtral experts: transformers 5 fuses them (``gate_up_proj`` (E, 2F, D), ``down_proj`` (E, D, F));
    transformers 4 keeps ``experts.{e}.w1/w2/w3`` (our names already)."""
    parts = rest.split(".")
    if parts[2].isdigit() and parts[3:] in (["w1", "weight"], ["w2", "weight"], ["w3", "weight"]):  # experts.{e}.w1.weight
        out[f"{pre}mlp.experts.{parts[2]}.{'.'.join(parts[3:])}"] = t
    elif parts[2] == "gate_up_proj":
        for e in range(t.shape[0]):
            gate, up = t[e].chunk(2, dim=0)
            out[f"{pre}mlp.experts.{e}.w1.weight"], out[f"{pre}mlp.experts.{e}.w3.weight"] = gate, up
    elif parts[2] == "down_proj":
        for e in range(t.shape[0]):
            out[f"{pre}mlp.experts.{e}.w2.weight"] = t[e]
    else:
        raise _bad(orig, tuple(t.shape), "has no counterpart in this project's model")
