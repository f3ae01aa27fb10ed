"""The Llama family and GPT-2: llama, mistral, mixtral, qwen2, qwen3, gpt2, gemma2.

Read from both the hub's transformers-4 files (``rope_theta``, ``rope_scaling``,
``torch_dtype``) and transformers-5 files (``rope_parameters``, ``dtype``,
``layer_types``). The rules every importer follows are in ``backend/hf/__init__.py``.

Sliding windows: Hugging Face's ``sliding_window: w`` lets query i see keys
j with ``0 <= i - j < w`` (its sliding-window mask), which is this project's
``window: w`` (``backend.nn.common.attention_mask``); the logit test in
tests/test_hf.py checks it with a window shorter than the sequence.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for, layer_windows, put_windows, rope_theta, softcap

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
MODEL_TYPES = tuple(_TYPES)
WEIGHT_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "gpt2", "gemma2")

# activation name -> (GLU role or dense activation, approximation note or None)
_GLU_ACTS = {"silu": ("gated_silu", None), "swish": ("gated_silu", None), "gelu": ("gated_gelu", None),
             "gelu_pytorch_tanh": ("gated_gelu", "GELU's tanh approximation computed as exact GELU")}
_DENSE_ACTS = {"gelu": ("gelu", None), "relu": ("relu", None), "silu": ("silu", None),
               "gelu_new": ("gelu", "GELU's tanh approximation (gelu_new) computed as exact GELU"),
               "gelu_pytorch_tanh": ("gelu", "GELU's tanh approximation computed as exact GELU")}



def _notes_and_checks(cfg: dict[str, Any], mt: str, notes: list[str]) -> None:
    """Refuse mapped-but-unsupported values; collect the count-preserving approximations."""
    for key in ("is_encoder_decoder", "use_bidirectional_attention"):
        if cfg.get(key):
            raise bad(key, cfg[key], "only causal decoder-only models are imported")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise bad(key, cfg[key], "biases on the attention output / MLP of a RMSNorm model are not supported")
    if mt == "gpt2":
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            raise bad("scale_attn_by_inverse_layer_idx", True, "per-layer attention scaling is not supported")
        if cfg.get("scale_attn_weights", True) is not True:
            raise bad("scale_attn_weights", cfg["scale_attn_weights"], "unscaled attention logits are not supported")
        if cfg.get("add_cross_attention"):
            raise bad("add_cross_attention", True, "a decoder with cross-attention is not supported")
    if mt == "gemma2":
        head_dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        if cfg.get("query_pre_attn_scalar", head_dim) != head_dim:
            raise bad("query_pre_attn_scalar", cfg["query_pre_attn_scalar"],
                       f"attention scaling other than 1/sqrt(head_dim={head_dim}) is not supported")
        if cfg.get("hidden_act") not in (None, cfg.get("hidden_activation")):
            raise bad("hidden_act", cfg["hidden_act"], "must match hidden_activation")


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for one of this family's configs."""
    mt = config["model_type"]
    keys, extra, tie_default = _TYPES[mt]
    known = INERT | set(keys.values()) | extra
    for key in config:
        if key not in known:
            raise bad(key, config[key], f"is not understood for model_type {mt!r} (it may change the architecture)")
    cfg = dict(config)
    notes: list[str] = []
    if mt == "gpt2" and cfg.get(keys["mlp_hidden"]) is None:
        cfg[keys["mlp_hidden"]] = 4 * cfg.get(keys["hidden_size"], 0)  # GPT-2: n_inner null = 4 * n_embd
    if mt == "gemma2":
        cfg.setdefault("hidden_activation", cfg.get("hidden_act", "gelu_pytorch_tanh"))
    size = {field: integer(cfg, key) for field, key in keys.items() if field not in ("norm_eps", "act")}
    _notes_and_checks(cfg, mt, notes)
    D, H, n = size["hidden_size"], size["n_heads"], size["n_layers"]
    kv = integer(cfg, "num_key_value_heads", default=H)
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if D % H:
            raise bad(keys["n_heads"], H, f"must divide {keys['hidden_size']} {D} when head_dim is not given")
        head_dim = D // H
    head_dim = integer({"head_dim": head_dim}, "head_dim")
    eps = cfg.get(keys["norm_eps"], 1e-5 if mt == "gpt2" else 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad(keys["norm_eps"], eps, "must be a number in (0, 1)")
    act = cfg.get(keys["act"], "gelu_new" if mt == "gpt2" else "silu")
    table = _DENSE_ACTS if mt == "gpt2" else _GLU_ACTS
    if act not in table:
        raise bad(keys["act"], act, f"is not a supported activation (supported: {', '.join(table)})")
    act_mapped, act_note = table[act]
    # the GeGLU (gemma2) and dense (gpt2) MLP kinds run the tanh GELU themselves: exact, no note
    tanh_gelu = act in ("gelu_pytorch_tanh", "gelu_new") and mt in ("gemma2", "gpt2")
    if act_note and not tanh_gelu:
        notes.append(act_note)
    tie = cfg.get("tie_word_embeddings", tie_default)
    if not isinstance(tie, bool):
        raise bad("tie_word_embeddings", tie, "must be true or false")

    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}",
        "architecture": "decoder", "task": "lm", "vocab_size": size["vocab_size"],
        "hidden_size": D, "n_heads": H, "n_kv_heads": kv, "head_dim": head_dim, "mlp_hidden": size["mlp_hidden"],
        "max_seq_len": size["max_seq_len"], "norm_eps": float(eps), "tie_embeddings": tie,
        "final_norm": True, "dropout": 0.0,
    }
    stack: dict[str, Any] = {"n_layers": n, "attention": kind_for("attention", "full")}
    attn_params: dict[str, Any] = {}
    if mt == "gpt2":
        design.update(positional=kind_for("positional", "learned_table"), norm=kind_for("norm", "layer_norm"),
                      bias=True, qkv_bias=True, activation=act_mapped)
        stack["mlp"] = kind_for("mlp", "dense")
        if tanh_gelu:
            stack["params"] = {"mlp": {"gelu_approximate": "tanh"}}
    else:
        design.update(positional=kind_for("positional", "rotary"), rope_theta=rope_theta(cfg),
                      norm=kind_for("norm", "rms_norm"), bias=False, qkv_bias=mt == "qwen2")
        stack["mlp"] = kind_for("mlp", act_mapped)
    if mt == "mixtral":
        stack["params"] = {"mlp": {"num_experts": integer(cfg, "num_local_experts", default=8),
                                   "top_k": integer(cfg, "num_experts_per_tok", default=2), "expert": stack["mlp"]}}
        stack["mlp"] = kind_for("mlp", "experts")
    if mt == "qwen3":
        attn_params["qk_norm"] = True
    if mt == "gemma2":
        design.update(norm_placement="pre_post", embed_scale=True, logit_softcap=softcap(cfg))
        if tanh_gelu:
            stack["params"] = {"mlp": {"gelu_approximate": "tanh"}}
        cap = cfg.get("attn_logit_softcapping")
        if cap:
            stack["attention"] = kind_for("attention", "softcap")
            attn_params["softcap"] = float(cap)
    if attn_params:
        stack.setdefault("params", {})["attention"] = attn_params
    put_windows(stack, layer_windows(cfg, n, mt))
    design["layers"] = stack
    return design, notes


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
# Gemma 2 (pre_post sandwich norms; RMSNorm gains stored as w and applied as 1 + w: the map adds the 1)
_GEMMA2_LAYER = {**_LLAMA_LAYER, "post_attention_layernorm.weight": "attn_post_norm.weight",
                 "pre_feedforward_layernorm.weight": "mlp_norm.weight",
                 "post_feedforward_layernorm.weight": "mlp_post_norm.weight"}


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict (names and layouts of ``backend.nn.model.Transformer``) from a Hugging Face one.

    Works on any tensor type with ``.t()``, ``.chunk()`` and ``.reshape()`` (torch, no import here).
    Every input name must map (an unknown name is a DesignError), so nothing is silently dropped.
    """
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
            out["stacks.layers.final_norm." + name.split(".")[-1]] = t + 1 if model_type == "gemma2" else t
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
                    raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
            elif model_type == "gemma2" and rest in _GEMMA2_LAYER:
                out[pre + _GEMMA2_LAYER[rest]] = t + 1 if "layernorm" in rest else t
            elif rest in _LLAMA_LAYER:
                out[pre + _LLAMA_LAYER[rest]] = t
            elif model_type == "mixtral" and rest.startswith("block_sparse_moe."):  # transformers 4's name
                _map_moe(out, pre, "mlp." + rest[len("block_sparse_moe."):], t, orig)
            elif model_type == "mixtral" and rest.startswith("mlp."):
                _map_moe(out, pre, rest, t, orig)
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF leaves lm_head out of the state dict
    return out


def _map_moe(out: dict[str, Any], pre: str, rest: str, t: Any, orig: str) -> None:
    if rest == "mlp.gate.weight":
        out[pre + "mlp.router.weight"] = t
    elif rest.startswith("mlp.experts."):
        _map_experts(out, pre, rest, t, orig)
    else:
        raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")


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
        raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
