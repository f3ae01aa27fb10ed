"""Decoder-only families of 2019-2026 beyond Llama: olmo2, gpt_neox, gemma, phi3, gemma3_text. Torch-free.

Each maps onto building blocks of the design (issue 12):

* ``olmo2`` (OLMo et al. 2024, "2 OLMo 2 Furious", arXiv 2501.00656; model card allenai/OLMo-2-1124-7B):
  the norms move after each sublayer, ``x + norm(f(x))`` (``norm_placement: post_sublayer``), and QK-norm
  is one RMSNorm over the whole q (H*Dh) and k (KV*Dh) projection (``qk_norm_over: projection``).
* ``gpt_neox`` (Black et al. 2022, GPT-NeoX-20B, arXiv 2204.06745; Pythia, Biderman et al. 2023,
  arXiv 2304.01373): parallel attention + MLP residual (``parallel_residual``), rotary on the first
  ``rotary_pct`` of each head (``rotary_fraction``), LayerNorm and linear layers with biases, untied head.
  Hugging Face fuses q/k/v per head (``query_key_value`` rows (H, 3, Dh)).
* ``gemma`` (Gemma Team 2024, arXiv 2403.08295): embeddings times sqrt(hidden) (``embed_scale``), RMSNorm
  gains stored as ``1 + w`` (the weight map adds the 1: a reparametrisation, same function), head_dim
  independent of hidden / heads, GeGLU with the tanh GELU (``gelu_approximate: tanh``).
* ``phi3`` (Abdin et al. 2024, Phi-3 technical report, arXiv 2404.14219): Llama-shaped, with q/k/v fused
  into ``qkv_proj`` (rows [q | k | v]) and gate / up into ``gate_up_proj`` (rows [gate | up]).
* ``gemma3_text`` (Gemma Team 2025, Gemma 3 technical report, arXiv 2503.19786): Gemma 2's sandwich norms,
  per-head QK-norm (``1 + w`` gains), sliding / global ``layer_types``, a separate rotary base for the
  sliding layers (``rope_local_base_freq``; transformers 5 ``rope_parameters`` per layer type: the layer's
  ``rope_theta`` attention param), ``query_pre_attn_scalar`` as the logit scale.
"""
from __future__ import annotations

from typing import Any

from .common import INERT, bad, integer, kind_for, layer_windows, rope_theta, softcap, split_per_head_qkv
from .llama import _DENSE_ACTS

MODEL_TYPES = ("olmo2", "gpt_neox", "gemma", "phi3", "gemma3_text", "falcon")

_LLAMA_KEYS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "n_layers": "num_hidden_layers",
               "n_heads": "num_attention_heads", "mlp_hidden": "intermediate_size",
               "max_seq_len": "max_position_embeddings"}
# model_type -> (extra keys it maps, eps key, default tie_word_embeddings)
_TYPES: dict[str, tuple[set[str], str, bool]] = {
    "olmo2": ({"attention_bias", "hidden_act"}, "rms_norm_eps", False),
    "gpt_neox": ({"attention_bias", "hidden_act", "use_parallel_residual", "rotary_pct", "rotary_emb_base",
                  "classifier_dropout"}, "layer_norm_eps", False),
    "gemma": ({"attention_bias", "hidden_act", "hidden_activation"}, "rms_norm_eps", True),
    "phi3": ({"attention_bias", "hidden_act", "original_max_position_embeddings", "partial_rotary_factor"},
             "rms_norm_eps", False),
    "gemma3_text": ({"attention_bias", "hidden_act", "hidden_activation", "query_pre_attn_scalar",
                     "attn_logit_softcapping", "final_logit_softcapping", "rope_local_base_freq",
                     "_sliding_window_pattern"}, "rms_norm_eps", True),
}


def _rope(cfg: dict[str, Any]) -> tuple[float, float]:
    """(theta, rotary fraction) from transformers 5 ``rope_parameters`` or 4's top-level keys."""
    params = cfg.get("rope_parameters")
    frac = cfg.get("rotary_pct", cfg.get("partial_rotary_factor", 1.0))
    rest = dict(cfg)
    if isinstance(params, dict) and "partial_rotary_factor" in params:
        frac = params["partial_rotary_factor"]
        rest["rope_parameters"] = {k: v for k, v in params.items() if k != "partial_rotary_factor"}
    if "rotary_emb_base" in cfg and params is None:
        rest["rope_theta"] = cfg["rotary_emb_base"]
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
        raise bad("partial_rotary_factor", frac, "must be a number in (0, 1]")
    return rope_theta(rest), float(frac)


def _gemma3_thetas(cfg: dict[str, Any]) -> tuple[float, float]:
    """(global theta, local theta) of Gemma 3: per layer type (transformers 5) or rope_theta /
    rope_local_base_freq (transformers 4, where rope_scaling applies to the global layers)."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        unknown = set(params) - {"full_attention", "sliding_attention"}
        if unknown:
            raise bad("rope_parameters", sorted(unknown), "only full_attention / sliding_attention entries are known")
        full = rope_theta({"rope_parameters": params.get("full_attention", {"rope_theta": 1e6})})
        local = rope_theta({"rope_parameters": params.get("sliding_attention", {"rope_theta": 1e4})})
        return full, local
    full = rope_theta({**cfg, "rope_theta": cfg.get("rope_theta", 1e6)})
    local = cfg.get("rope_local_base_freq", 10000.0)
    if isinstance(local, bool) or not isinstance(local, (int, float)) or not local > 0:
        raise bad("rope_local_base_freq", local, "must be a positive number")
    return full, float(local)


def _checks(cfg: dict[str, Any], mt: str, head_dim: int, notes: list[str]) -> None:
    for key in ("is_encoder_decoder", "use_bidirectional_attention"):
        if cfg.get(key):
            raise bad(key, cfg[key], "only causal decoder-only models are imported")
    if mt == "gpt_neox":
        if cfg.get("attention_bias", True) is not True:
            raise bad("attention_bias", cfg["attention_bias"], "GPT-NeoX without attention biases is not supported "
                      "(its MLP keeps them; one `bias` switch covers both)")
    elif cfg.get("attention_bias"):
        raise bad("attention_bias", cfg["attention_bias"], "attention biases of an RMSNorm model are not supported")
    if mt == "gemma3_text":
        if cfg.get("attn_logit_softcapping") is not None:
            raise bad("attn_logit_softcapping", cfg["attn_logit_softcapping"], "Gemma 3 attention soft-capping is not "
                      "supported (null expected)")
    if mt in ("gemma", "gemma3_text") and cfg.get("hidden_act") not in (None, cfg.get("hidden_activation")):
        if mt == "gemma3_text" or cfg.get("hidden_activation") is not None:
            raise bad("hidden_act", cfg["hidden_act"], "must match hidden_activation")


_FALCON_KEYS = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                "activation", "bias", "ffn_hidden_size", "layer_norm_epsilon", "multi_query",
                "new_decoder_architecture", "num_kv_heads", "num_ln_in_parallel_attn", "parallel_attn"}
# config flags that must be false: Falcon's own key names (one coincides with a positional kind's name, which this
# module never selects by name -- kinds are picked by role with kind_for)
_FALCON_REFUSED = dict(alibi="Falcon with ALiBi positions is not supported (rotary Falcon only)")
_FALCON_ALIASES = {"n_head": "num_attention_heads", "n_layer": "num_hidden_layers", "n_head_kv": "num_kv_heads",
                   "n_embed": "hidden_size"}  # the hub's early Falcon files


def _falcon_flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise bad(key, value, "must be true or false")
    return value


def _import_falcon(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    cfg = {_FALCON_ALIASES.get(k, k): v for k, v in config.items()}
    for key in cfg:
        if key not in INERT | _FALCON_KEYS | set(_FALCON_REFUSED):
            raise bad(key, cfg[key], "is not understood for model_type 'falcon' (it may change the architecture)")
    for key, why in _FALCON_REFUSED.items():
        if _falcon_flag(cfg, key, False):
            raise bad(key, True, why)
    D, H, n = (integer(cfg, k) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers"))
    if D % H:
        raise bad("num_attention_heads", H, f"must divide hidden_size {D}")
    new_arch = _falcon_flag(cfg, "new_decoder_architecture", False)
    multi_query = _falcon_flag(cfg, "multi_query", True)
    parallel = _falcon_flag(cfg, "parallel_attn", True)
    bias = _falcon_flag(cfg, "bias", False)
    kv = integer(cfg, "num_kv_heads", default=H) if (new_arch or not multi_query) else 1
    if not new_arch and not multi_query and kv != H:
        raise bad("num_kv_heads", kv, f"the per-head fused layout needs num_kv_heads == num_attention_heads ({H})")
    n_ln = cfg.get("num_ln_in_parallel_attn")
    if n_ln is None:
        n_ln = 2 if new_arch else 1
    if n_ln not in (1, 2) or (n_ln == 2 and not new_arch):
        raise bad("num_ln_in_parallel_attn", n_ln, "must be 1, or 2 with new_decoder_architecture")
    if new_arch and not parallel:
        raise bad("parallel_attn", False, "the new decoder architecture is parallel (transformers runs no other)")
    act = cfg.get("activation", "gelu")
    if act not in _DENSE_ACTS:
        raise bad("activation", act, f"is not a supported activation (supported: {', '.join(_DENSE_ACTS)})")
    act_mapped, act_note = _DENSE_ACTS[act]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad("layer_norm_epsilon", eps, "must be a number in (0, 1)")
    tie = _falcon_flag(cfg, "tie_word_embeddings", True)
    shared = parallel and (n_ln == 1 or not new_arch)  # HF: the old architecture always shares its one norm
    design = {
        "name": str(cfg.get("_name_or_path") or "hf_falcon")[:200] or "hf_falcon", "architecture": "decoder",
        "task": "lm", "vocab_size": integer(cfg, "vocab_size"), "hidden_size": D, "n_heads": H, "n_kv_heads": kv,
        "head_dim": D // H, "mlp_hidden": integer(cfg, "ffn_hidden_size", default=4 * D),
        "max_seq_len": integer(cfg, "max_position_embeddings", default=2048), "norm_eps": float(eps),
        "tie_embeddings": tie, "final_norm": True, "dropout": 0.0, "positional": kind_for("positional", "rotary"),
        "rope_theta": rope_theta(cfg), "norm": kind_for("norm", "layer_norm"), "bias": bias, "qkv_bias": bias,
        "norm_bias": True, "activation": act_mapped, "parallel_residual": parallel, "parallel_shared_norm": shared,
        "layers": {"n_layers": n, "attention": kind_for("attention", "full"), "mlp": kind_for("mlp", "dense")},
    }
    return design, [act_note] if act_note else []


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for one of this family's configs."""
    mt = config["model_type"]
    if mt == "falcon":
        return _import_falcon(config)
    extra, eps_key, tie_default = _TYPES[mt]
    known = INERT | set(_LLAMA_KEYS.values()) | extra | {eps_key}
    for key in config:
        if key not in known:
            raise bad(key, config[key], f"is not understood for model_type {mt!r} (it may change the architecture)")
    cfg = dict(config)
    notes: list[str] = []
    size = {field: integer(cfg, key) for field, key in _LLAMA_KEYS.items()}
    D, H, n = size["hidden_size"], size["n_heads"], size["n_layers"]
    kv = integer(cfg, "num_key_value_heads", default=H)
    head_dim = cfg.get("head_dim") if mt in ("gemma", "gemma3_text") else None
    if head_dim is None:
        if D % H:
            raise bad("num_attention_heads", H, f"must divide hidden_size {D} when head_dim is not given")
        head_dim = D // H
    head_dim = integer({"head_dim": head_dim}, "head_dim")
    _checks(cfg, mt, head_dim, notes)
    eps = cfg.get(eps_key, 1e-5 if mt in ("gpt_neox", "phi3") else 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad(eps_key, eps, "must be a number in (0, 1)")
    tie = cfg.get("tie_word_embeddings", tie_default)
    if not isinstance(tie, bool):
        raise bad("tie_word_embeddings", tie, "must be true or false")

    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or f"hf_{mt}")[:200] or f"hf_{mt}",
        "architecture": "decoder", "task": "lm", "vocab_size": size["vocab_size"], "hidden_size": D,
        "n_heads": H, "n_kv_heads": kv, "head_dim": head_dim, "mlp_hidden": size["mlp_hidden"],
        "max_seq_len": size["max_seq_len"], "norm_eps": float(eps), "tie_embeddings": tie, "final_norm": True,
        "dropout": 0.0, "positional": kind_for("positional", "rotary"),
    }
    stack: dict[str, Any] = {"n_layers": n, "attention": kind_for("attention", "full")}
    attn: dict[str, Any] = {}
    mlp: dict[str, Any] = {}
    if mt == "gpt_neox":
        act = cfg.get("hidden_act", "gelu")
        if act not in _DENSE_ACTS:
            raise bad("hidden_act", act, f"is not a supported activation (supported: {', '.join(_DENSE_ACTS)})")
        act_mapped, act_note = _DENSE_ACTS[act]
        if act_note:
            notes.append(act_note)
        parallel = cfg.get("use_parallel_residual", True)
        if not isinstance(parallel, bool):
            raise bad("use_parallel_residual", parallel, "must be true or false")
        theta, frac = _rope(cfg)
        design.update(norm=kind_for("norm", "layer_norm"), bias=True, qkv_bias=True, activation=act_mapped,
                      parallel_residual=parallel, rope_theta=theta)
        stack["mlp"] = kind_for("mlp", "dense")
        if frac != 1.0:
            attn["rotary_fraction"] = frac
    else:
        act_key = "hidden_activation" if mt in ("gemma", "gemma3_text") and cfg.get("hidden_activation") else "hidden_act"
        act = cfg.get(act_key, "gelu_pytorch_tanh" if mt in ("gemma", "gemma3_text") else "silu")
        if mt == "gemma" and act == "gelu":
            act = "gelu_pytorch_tanh"  # transformers: Gemma's legacy "gelu" means the tanh approximation
        if act in ("silu", "swish"):
            stack["mlp"] = kind_for("mlp", "gated_silu")
        elif act in ("gelu", "gelu_pytorch_tanh"):
            stack["mlp"] = kind_for("mlp", "gated_gelu")
            if act == "gelu_pytorch_tanh":
                mlp["gelu_approximate"] = "tanh"
        else:
            raise bad(act_key, act, "is not a supported activation (supported: silu, gelu, gelu_pytorch_tanh)")
        design.update(norm=kind_for("norm", "rms_norm"), bias=False, qkv_bias=False)
        if mt == "gemma3_text":
            theta, local = _gemma3_thetas(cfg)
            frac = 1.0
        else:
            theta, frac = _rope(cfg)
        design["rope_theta"] = theta
        if frac != 1.0:
            attn["rotary_fraction"] = frac
    if mt == "olmo2":
        design["norm_placement"] = "post_sublayer"
        attn.update(qk_norm=True, qk_norm_over="projection")
    if mt in ("gemma", "gemma3_text"):
        design["embed_scale"] = True
    if mt == "gemma3_text":
        design.update(norm_placement="pre_post", logit_softcap=softcap(cfg))
        attn["qk_norm"] = True
        scalar = cfg.get("query_pre_attn_scalar", head_dim)
        if isinstance(scalar, bool) or not isinstance(scalar, (int, float)) or not scalar > 0:
            raise bad("query_pre_attn_scalar", scalar, "must be a positive number")
        if scalar != head_dim:
            attn["scale"] = float(scalar) ** -0.5
    if attn:
        stack.setdefault("params", {})["attention"] = attn
    if mlp:
        stack.setdefault("params", {})["mlp"] = mlp
    if mt == "gemma3_text":
        if cfg.get("layer_types") is None:  # transformers 4: every `pattern`-th layer is global
            pattern = integer(cfg, "_sliding_window_pattern", default=cfg.get("sliding_window_pattern", 6))
            cfg["layer_types"] = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]
        windows = layer_windows(cfg, n, mt)
        sliding = [i for i, w in enumerate(windows) if w]
        if sliding:
            local_params: dict[str, Any] = {"window": windows[sliding[0]]}
            if local != theta:
                local_params["rope_theta"] = local
            stack["rules"] = [{"when": {"layer_idx": sliding}, "params": {"attention": local_params}}]
    else:
        windows = layer_windows(cfg, n, mt)
        if any(windows):
            if len(set(windows)) != 1:
                raise bad("layer_types", cfg.get("layer_types"), f"mixed sliding windows are not supported for {mt}")
            stack.setdefault("params", {}).setdefault("attention", {})["window"] = windows[0]
    design["layers"] = stack
    return design, notes


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

_ATTN = {f"self_attn.{p}_proj.weight": f"attn.{p}_proj.weight" for p in "qkvo"}
_ATTN.update({"self_attn.q_norm.weight": "attn.q_norm.weight", "self_attn.k_norm.weight": "attn.k_norm.weight",
              "mlp.gate_proj.weight": "mlp.w1.weight", "mlp.up_proj.weight": "mlp.w3.weight",
              "mlp.down_proj.weight": "mlp.w2.weight"})
_LAYER = {
    # pre-norm (gemma, phi3): input_layernorm before attention, post_attention_layernorm before the MLP
    "pre": {**_ATTN, "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "mlp_norm.weight"},
    # olmo2 (post_sublayer): the norms after each sublayer are the block's only norms
    "olmo2": {**_ATTN, "post_attention_layernorm.weight": "attn_norm.weight",
              "post_feedforward_layernorm.weight": "mlp_norm.weight"},
    # gemma3 (pre_post sandwich)
    "gemma3_text": {**_ATTN, "input_layernorm.weight": "attn_norm.weight",
                    "post_attention_layernorm.weight": "attn_post_norm.weight",
                    "pre_feedforward_layernorm.weight": "mlp_norm.weight",
                    "post_feedforward_layernorm.weight": "mlp_post_norm.weight"},
    "gpt_neox": {f"{hf}.{p}": f"{ours}.{p}" for hf, ours in (
        ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "mlp_norm"), ("attention.dense", "attn.o_proj"),
        ("mlp.dense_h_to_4h", "mlp.fc1"), ("mlp.dense_4h_to_h", "mlp.fc2")) for p in ("weight", "bias")},
}
_LAYER["falcon"] = {
    **{f"{hf}.{p}": f"{ours}.{p}" for hf, ours in (
        ("input_layernorm", "attn_norm"), ("ln_attn", "attn_norm"), ("ln_mlp", "mlp_norm"),
        ("post_attention_layernorm", "mlp_norm"), ("self_attention.dense", "attn.o_proj"),
        ("mlp.dense_h_to_4h", "mlp.fc1"), ("mlp.dense_4h_to_h", "mlp.fc2")) for p in ("weight", "bias")}}
_ONE_PLUS = ("gemma", "gemma3_text")  # RMSNorm gains stored as w, applied as 1 + w


def map_weights(model_type: str, hf_state: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our state dict from a Hugging Face one (every input name must map; an unknown one is a DesignError).

    ``config`` (the config.json dict) is needed for ``gpt_neox`` only: its fused ``query_key_value`` is
    laid out per head, and the head count is not in any weight's shape.
    """
    table = _LAYER.get(model_type, _LAYER["pre"])
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig
        for prefix in ("model.", "gpt_neox.", "transformer."):
            name = name[len(prefix):] if name.startswith(prefix) else name
        if name in ("embed_tokens.weight", "embed_in.weight", "word_embeddings.weight"):
            out["embed.weight"] = t
        elif name in ("norm.weight", "final_layer_norm.weight", "final_layer_norm.bias", "ln_f.weight", "ln_f.bias"):
            gain = name.endswith("weight") and model_type in _ONE_PLUS
            out["stacks.layers.final_norm." + name.split(".")[-1]] = t + 1 if gain else t
        elif name in ("lm_head.weight", "embed_out.weight"):
            out["head.weight"] = t
        elif name.startswith(("layers.", "h.")) and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if rest in table:
                gain = model_type in _ONE_PLUS and "norm" in rest
                out[pre + table[rest]] = t + 1 if gain else t
            elif model_type == "gpt_neox" and rest.startswith("attention.query_key_value."):
                if config is None or not isinstance(config.get("num_attention_heads"), int):
                    raise bad(orig, tuple(t.shape), "is fused per head: splitting it needs the config's "
                              "num_attention_heads (map_state_dict(..., config=...))")
                H = config["num_attention_heads"]
                kind = rest.rsplit(".", 1)[-1]  # rows (H, 3, Dh): per head [q_h | k_h | v_h]
                for p, part in zip("qkv", split_per_head_qkv(t, H)):
                    out[f"{pre}attn.{p}_proj.{kind}"] = part
            elif model_type == "falcon" and rest.startswith("self_attention.query_key_value."):
                out.update(_falcon_qkv(pre, rest.rsplit(".", 1)[-1], t, orig, config))
            elif model_type == "gpt_neox" and rest in ("attention.bias", "attention.masked_bias",
                                                       "attention.rotary_emb.inv_freq"):
                continue  # old checkpoints' mask / rotary buffers
            elif model_type == "phi3" and rest == "self_attn.qkv_proj.weight":
                # rows [q (H*Dh) | k (KV*Dh) | v (KV*Dh)]; H*Dh is o_proj's input width
                o = hf_state.get(orig.replace("qkv_proj", "o_proj"))
                if o is None:
                    raise bad(orig, tuple(t.shape), "needs the layer's o_proj to find the query width")
                q_rows = o.shape[1]
                kv_rows = (t.shape[0] - q_rows) // 2
                out[pre + "attn.q_proj.weight"] = t[:q_rows]
                out[pre + "attn.k_proj.weight"] = t[q_rows:q_rows + kv_rows]
                out[pre + "attn.v_proj.weight"] = t[q_rows + kv_rows:]
            elif model_type == "phi3" and rest == "mlp.gate_up_proj.weight":
                gate, up = t.chunk(2, dim=0)
                out[pre + "mlp.w1.weight"], out[pre + "mlp.w3.weight"] = gate, up
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF leaves lm_head out of the state dict
    return out


def _falcon_qkv(pre: str, kind: str, t: Any, orig: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Falcon's fused query_key_value (weight rows or bias) split into our q / k / v projections."""
    if config is None:
        raise bad(orig, tuple(t.shape), "is fused by head: splitting it needs the config (map_state_dict(..., config=...))")
    cfg = {_FALCON_ALIASES.get(k, k): v for k, v in config.items()}
    H = cfg["num_attention_heads"]
    new_arch, multi_query = cfg.get("new_decoder_architecture", False), cfg.get("multi_query", True)
    dh = cfg["hidden_size"] // H
    rest = tuple(t.shape[1:])
    if new_arch:  # per KV group: [q of the group's H/KV heads | k | v]
        kv = cfg.get("num_kv_heads") or H
        g = t.reshape(kv, H // kv + 2, dh, *rest)
        q, k, v = g[:, :-2].reshape(H * dh, *rest), g[:, -2].reshape(kv * dh, *rest), g[:, -1].reshape(kv * dh, *rest)
    elif multi_query:  # [q_1 .. q_H | k | v]
        q, k, v = t[:H * dh], t[H * dh:(H + 1) * dh], t[(H + 1) * dh:]
    else:  # per head (H, 3, Dh)
        q, k, v = split_per_head_qkv(t, H)
    return {f"{pre}attn.q_proj.{kind}": q, f"{pre}attn.k_proj.{kind}": k, f"{pre}attn.v_proj.{kind}": v}
