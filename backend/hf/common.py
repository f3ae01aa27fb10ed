"""Helpers shared by the Hugging Face importers (``backend/hf/<family>.py``). Torch-free."""
from __future__ import annotations

from typing import Any

from ..errors import DesignError, short_repr
from ..registry import REGISTRIES

# Keys that do not change the function a model computes (or only its numerics / training).
INERT = {
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

def kind_for(category: str, role: str) -> str:
    """The registered kind filling ``role`` (strict: ``registry.role`` falls back to the first kind)."""
    for info in REGISTRIES[category].values():
        if role in info.roles:
            return info.name
    raise RuntimeError(f"no {category} kind declares the role {role!r} the Hugging Face importer needs")


def bad(key: str, value: Any, why: str) -> DesignError:
    return DesignError(key, f"{why}, got {short_repr(value)}")


def split_per_head_qkv(t: Any, heads: int) -> tuple[Any, Any, Any]:
    """q, k, v (rows H*Dh each) of a fused query_key_value laid out per head, rows (H, 3, Dh) = [q_h | k_h | v_h]
    (GPT-NeoX, BLOOM, Falcon without multi-query); ``t`` a weight (rows, D) or a bias (rows,)."""
    rest = tuple(t.shape[1:])
    g = t.reshape(heads, 3, t.shape[0] // (3 * heads), *rest)
    return tuple(g[:, j].reshape(-1, *rest) for j in range(3))  # type: ignore[return-value]


def integer(cfg: dict[str, Any], key: str, *, default: Any = None, lo: int = 1) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise DesignError(key, "is required")
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise bad(key, value, f"must be an integer >= {lo}")
    return value


def softcap(cfg: dict[str, Any], key: str = "final_logit_softcapping") -> float:
    """A soft-cap value (null / 0 = off) as the design's float; anything else non-positive is an error."""
    value = cfg.get(key)
    if value is None or value == 0:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1e4:
        raise bad(key, value, "must be null or a number in (0, 10000]")
    return float(value)


def rope_theta(cfg: dict[str, Any]) -> float:
    """``rope_theta`` (transformers 4) or ``rope_parameters`` (5, possibly one per layer type); scaling is an error."""
    params = cfg.get("rope_parameters")
    if params is None:
        scaling = cfg.get("rope_scaling")
        if scaling not in (None, {}) and not (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default"):
            raise bad("rope_scaling", scaling, "RoPE scaling is not supported (only the default rotary)")
        params = {"rope_theta": cfg.get("rope_theta", 10000.0)}
    if not isinstance(params, dict):
        raise bad("rope_parameters", params, "must be a mapping")
    if all(isinstance(v, dict) for v in params.values()) and params:  # per layer type (Gemma-3 style)
        thetas = {k: rope_theta({"rope_parameters": v}) for k, v in params.items()}
        if len(set(thetas.values())) > 1:
            raise bad("rope_parameters", thetas, "a RoPE theta per layer type is not supported (one theta per model)")
        return next(iter(thetas.values()))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise bad("rope_parameters.rope_type", kind, "RoPE scaling is not supported (only 'default')")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise bad("rope_parameters.partial_rotary_factor", params["partial_rotary_factor"], "partial rotary is not supported")
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
        raise bad("rope_theta", theta, "must be a positive number")
    return float(theta)


def layer_windows(cfg: dict[str, Any], n_layers: int, mt: str) -> list[int]:
    """The sliding window of each layer (0 = full attention), from ``layer_types`` or the type's own rule."""
    w = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if mt in ("qwen2", "qwen3") and not cfg.get("use_sliding_window", False):
        w = None  # Qwen2 keeps `sliding_window` in its files but uses it only with use_sliding_window
    if types is not None:
        if not isinstance(types, list) or len(types) != n_layers:
            raise bad("layer_types", types, f"must be a list of {n_layers} layer types")
        out = []
        for t in types:
            if t == "full_attention":
                out.append(0)
            elif t == "sliding_attention":
                out.append(integer(cfg, "sliding_window"))
            else:
                raise bad("layer_types", t, "only full_attention and sliding_attention layers are supported")
        return out
    if w is None:
        return [0] * n_layers
    w = integer(cfg, "sliding_window")
    if mt == "gemma2":  # transformers 4: even layers slide, odd layers are global
        return [w if i % 2 == 0 else 0 for i in range(n_layers)]
    if mt in ("qwen2", "qwen3"):  # layers from max_window_layers on slide
        first = integer(cfg, "max_window_layers", default=n_layers, lo=0)
        return [w if i >= first else 0 for i in range(n_layers)]
    return [w] * n_layers


def put_windows(stack: dict[str, Any], windows: list[int]) -> None:
    """Write per-layer sliding windows (0 = full) into a design stack: one default or one rule per width."""
    if not any(windows):
        return
    if len(set(windows)) == 1:
        stack.setdefault("params", {}).setdefault("attention", {})["window"] = windows[0]
    else:
        stack["rules"] = [{"when": {"layer_idx": [i for i, w in enumerate(windows) if w == win]},
                           "params": {"attention": {"window": win}}} for win in sorted(set(windows) - {0})]
