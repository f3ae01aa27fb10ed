"""Design -> Hugging Face ``config.json`` (``export --format hf``), for designs a HF architecture expresses.

Torch-free. The family is chosen from the design's kinds by their registry
roles (never by name): a causal LM whose every layer runs the full softmax
attention kind and

* a gated-SiLU MLP, rotary positions and RMSNorm -> ``llama``; ``mistral``
  when every layer has the same sliding window; ``qwen2`` with ``qkv_bias``;
  ``qwen3`` with per-head ``qk_norm`` (both take per-layer windows through
  ``layer_types``);
* a mixture of gated-SiLU experts -> ``mixtral``;
* a dense MLP, learned positions, LayerNorm and biases -> ``gpt2``; with rotary
  positions (optionally partial, optionally a parallel residual) -> ``gpt_neox``;
* norms after each sublayer (``norm_placement: post_sublayer``) -> ``olmo2``;
* a scaled embedding (``embed_scale``) with a GeGLU -> ``gemma`` (pre-norm) or
  ``gemma3_text`` (sandwich norms, per-head QK-norm, per-layer windows and a
  local rotary base through ``layer_types`` / ``rope_local_base_freq``).

Exactness is checked, not assumed: the config is imported back
(``backend.hf.import_hf``) and the model configuration the project builds
from it (``backend.build.model_config``: every size, kind and per-layer
param) must equal the design's, apart from what changes no computed number
(name, dropout, init, checkpointing, the attention kernel choice). The first
difference is the error, naming the design field and the value a HF config
cannot hold, e.g. ``layers[3].attention.window: 128``. So
``import-hf(export(d))`` has d's exact parameter, FLOP and cache figures.
"""
from __future__ import annotations

from typing import Any

from ..errors import DesignError, short_repr
from ..registry import REGISTRIES

# model-config keys that change no computed figure (training-only or naming)
_IGNORED = {"name", "dropout", "init_std", "gradient_checkpointing"}
# the attention kernel choice, and the MoE load-balancing loss weight (training only; exported as
# router_aux_loss_coef, which the importer treats as inert)
_IGNORED_LAYER = {"backend", "aux_loss_weight"}


def _has_role(category: str, name: str, role: str) -> bool:
    return role in REGISTRIES[category][name].roles


def _refuse(field: str, value: Any, why: str) -> DesignError:
    return DesignError(field, f"{short_repr(value)} cannot be expressed in a Hugging Face config: {why}")


def _family(d: Any, plan: Any) -> str:
    if d.architecture != "decoder" or d.task != "lm":
        raise _refuse("architecture", f"{d.architecture} / {d.task}", "only causal decoder language models (lm) export")
    st = d.stacks()["layers"]
    if st.repeat.mode != "none":
        raise _refuse("layers.repeat.mode", st.repeat.mode, "Hugging Face models do not share weights between layers")
    if st.flow.mode != "none":
        raise _refuse("layers.flow.mode", st.flow.mode, "no Hugging Face architecture has a learned flow speed")
    layers = plan.layers
    for layer in layers:
        if not _has_role("attention", layer.attention, "full"):
            raise _refuse(f"layers[{layer.index}].attention", layer.attention, "only full softmax attention exports")
    mlps = {layer.mlp for layer in layers}
    norms = {layer.norm for layer in layers}
    if len(mlps) != 1 or len(norms) != 1:
        raise _refuse("layers.mlp" if len(mlps) != 1 else "layers.norm", sorted(mlps if len(mlps) != 1 else norms),
                      "every layer must use the same kind")
    mlp, norm = mlps.pop(), norms.pop()
    pos = d.positional
    if _has_role("mlp", mlp, "dense"):
        if not _has_role("norm", norm, "layer_norm"):
            raise _refuse("norm", norm, "a dense-MLP model exports as gpt2 / gpt_neox (LayerNorm)")
        if _has_role("positional", pos, "rotary"):
            return "gpt_neox"
        if not _has_role("positional", pos, "learned_table"):
            raise _refuse("positional", pos, "a dense-MLP model exports as gpt2 (learned positions) or gpt_neox (rotary)")
        return "gpt2"
    if not _has_role("positional", pos, "rotary"):
        raise _refuse("positional", pos, "a gated-MLP model exports as llama / mistral / qwen (rotary positions)")
    if not _has_role("norm", norm, "rms_norm"):
        raise _refuse("norm", norm, "llama-family models use RMSNorm")
    if _has_role("mlp", mlp, "experts"):
        return "mixtral"
    if d.embed_scale and _has_role("mlp", mlp, "gated_gelu"):
        return "gemma3_text" if d.norm_placement == "pre_post" else "gemma"
    if d.norm_placement == "post_sublayer":
        return "olmo2"
    if not _has_role("mlp", mlp, "gated_silu"):
        raise _refuse("layers.mlp", mlp, "llama-family models use a gated-SiLU MLP (SwiGLU)")
    attn = [layer.config["attention"] for layer in layers]
    if any(a.get("qk_norm") for a in attn):
        return "qwen3"
    if d.qkv_bias:
        return "qwen2"
    windows = {a.get("window") or 0 for a in attn}
    return "mistral" if len(windows) == 1 and windows != {0} else "llama"


def _windows(cfg: dict[str, Any], mt: str, windows: list[int]) -> None:
    if not any(windows):
        return
    if len(set(windows)) == 1 and mt in ("mistral", "mixtral"):
        cfg["sliding_window"] = windows[0]
        return
    if mt not in ("qwen2", "qwen3") or len(set(w for w in windows if w)) != 1:
        raise _refuse("layers.params.attention.window", sorted(set(windows)),
                      f"a {mt} config holds one sliding window for all layers"
                      + ("" if mt in ("qwen2", "qwen3") else " (per-layer windows: qwen2 / qwen3 layer_types)"))
    cfg.update(use_sliding_window=True, sliding_window=max(windows), max_window_layers=len(windows),
               layer_types=["sliding_attention" if w else "full_attention" for w in windows])


def hf_config(design: Any) -> dict[str, Any]:
    """The Hugging Face config (a JSON-ready dict) of a design, or a DesignError naming what it cannot hold."""
    from ..build import model_config
    from ..hf import import_hf
    from ..plan import resolve_plan
    from ..spec import load_design

    d = load_design(design)
    plan = resolve_plan(d)
    mt = _family(d, plan)
    attn = [layer.config["attention"] for layer in plan.layers]
    n = len(plan.layers)
    if mt == "gpt2":
        cfg: dict[str, Any] = {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": d.vocab_size,
            "n_embd": d.hidden_size, "n_layer": n, "n_head": d.n_heads, "n_inner": d.ffn_hidden,
            "n_positions": d.max_seq_len, "layer_norm_epsilon": d.norm_eps,
            "activation_function": "gelu_new" if plan.layers[0].config["mlp"].get("gelu_approximate") == "tanh"
            else {"gelu": "gelu", "relu": "relu", "silu": "silu"}.get(d.activation, d.activation),
            "tie_word_embeddings": d.tied,
        }
    elif mt in ("llama", "mistral", "qwen2", "qwen3", "mixtral"):
        cfg = {
            "model_type": mt, "architectures": [f"{mt.capitalize()}ForCausalLM"],
            "vocab_size": d.vocab_size, "hidden_size": d.hidden_size, "num_hidden_layers": n,
            "num_attention_heads": d.n_heads, "num_key_value_heads": d.kv_heads, "head_dim": d.attn_head_dim,
            "intermediate_size": d.ffn_hidden, "max_position_embeddings": d.max_seq_len, "rms_norm_eps": d.norm_eps,
            "hidden_act": "silu", "rope_theta": d.rope_theta, "tie_word_embeddings": d.tied,
        }
        if mt == "llama":
            cfg.update(attention_bias=False, mlp_bias=False)
        if mt == "mixtral":
            mlp_cfg = plan.layers[0].config["mlp"]
            cfg.update(num_local_experts=mlp_cfg.get("num_experts"), num_experts_per_tok=mlp_cfg.get("top_k"),
                       router_aux_loss_coef=mlp_cfg.get("aux_loss_weight"))
        _windows(cfg, mt, [a.get("window") or 0 for a in attn])
    elif mt == "gpt_neox":
        fracs = {a.get("rotary_fraction", 1.0) for a in attn}
        cfg = {
            "model_type": mt, "architectures": ["GPTNeoXForCausalLM"], "vocab_size": d.vocab_size,
            "hidden_size": d.hidden_size, "num_hidden_layers": n, "num_attention_heads": d.n_heads,
            "intermediate_size": d.ffn_hidden, "max_position_embeddings": d.max_seq_len,
            "layer_norm_eps": d.norm_eps, "hidden_act": d.activation, "rotary_pct": max(fracs),
            "rotary_emb_base": d.rope_theta, "use_parallel_residual": d.parallel_residual,
            "attention_bias": True, "tie_word_embeddings": d.tied,
        }
    else:
        cfg = _rms_family_config(d, plan, mt, attn, n)
    _check_round_trip(d, plan, import_hf(cfg), mt, model_config)
    return cfg


def _rms_family_config(d: Any, plan: Any, mt: str, attn: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """olmo2 / gemma / gemma3_text: RMSNorm decoders with their own placements and gains."""
    cfg: dict[str, Any] = {
        "model_type": mt, "architectures": [{"olmo2": "Olmo2ForCausalLM", "gemma": "GemmaForCausalLM",
                                             "gemma3_text": "Gemma3ForCausalLM"}[mt]],
        "vocab_size": d.vocab_size, "hidden_size": d.hidden_size, "num_hidden_layers": n,
        "num_attention_heads": d.n_heads, "num_key_value_heads": d.kv_heads, "intermediate_size": d.ffn_hidden,
        "max_position_embeddings": d.max_seq_len, "rms_norm_eps": d.norm_eps, "rope_theta": d.rope_theta,
        "tie_word_embeddings": d.tied, "attention_bias": False,
    }
    if mt == "olmo2":
        cfg["hidden_act"] = "silu"
        return cfg
    mlp = plan.layers[0].config["mlp"]
    cfg["head_dim"] = d.attn_head_dim
    cfg["hidden_activation"] = "gelu_pytorch_tanh" if mlp.get("gelu_approximate") == "tanh" else "gelu"
    if mt == "gemma3_text":
        windows = [a.get("window") or 0 for a in attn]
        local = {a.get("rope_theta") for a, w in zip(attn, windows) if w}
        scale = attn[0].get("scale")
        scalar = d.attn_head_dim if scale is None else scale ** -2  # logits scaled by query_pre_attn_scalar**-0.5
        if abs(scalar - round(scalar)) > 1e-6 * scalar:
            raise _refuse("layers.params.attention.scale", scale, "Gemma 3 scales logits by an integer "
                          "query_pre_attn_scalar ** -0.5")
        cfg.update(layer_types=["sliding_attention" if w else "full_attention" for w in windows],
                   sliding_window=max(windows) or 4096, query_pre_attn_scalar=int(round(scalar)), rope_local_base_freq=(local.pop() if len(local) == 1 else None)
                   or d.rope_theta, final_logit_softcapping=d.logit_softcap or None, attn_logit_softcapping=None)
    return cfg


def _diff(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            hit = _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if hit:
                return hit
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return path, len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            hit = _diff(x, y, f"{path}[{i}]")
            if hit:
                return hit
        return None
    return None if a == b else (path, a, b)


def _comparable(cfg: dict[str, Any], uses_activation: bool) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if k not in _IGNORED and (uses_activation or k != "activation")}
    stacks = {}
    for name, st in cfg["stacks"].items():
        layers = [{**layer, "config": {c: {k: v for k, v in p.items() if k not in _IGNORED_LAYER}
                                       for c, p in layer["config"].items()}} for layer in st["layers"]]
        stacks[name] = {**st, "layers": layers}
    out["stacks"] = stacks
    return out


def _check_round_trip(d: Any, plan: Any, imported: dict[str, Any], mt: str, model_config) -> None:
    from ..plan import resolve_plan

    back = resolve_plan(imported)
    dense = any(_has_role("mlp", layer.mlp, "dense") for layer in plan.layers)
    ours, theirs = _comparable(model_config(plan), dense), _comparable(model_config(back), dense)
    hit = _diff(ours, theirs, "")
    if hit:
        path, mine, hf = hit
        field = path.replace("stacks.layers.layers[", "layers[").replace(".config.", ".")
        raise _refuse(field, mine, f"a Hugging Face {mt} config gives {short_repr(hf)}")
