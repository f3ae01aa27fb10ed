"""Mamba-2 (``mamba2``, transformers' ``Mamba2ForCausalLM``): a stack of mixer-only Mamba-2 blocks.

Each layer is ``x + mixer(RMSNorm(x))`` with no MLP (``mlp: none``; the design
uses the Megatron pattern ``"M" * n_layers``, ``backend/kinds/empty.py``), then a
final RMSNorm and the LM head (tied with ``tie_word_embeddings``). The mixer is
the ``mamba2`` kind (Dao & Gu 2024, arXiv 2405.21060) with the same layout as
transformers' ``Mamba2Mixer``: in_proj -> [z | x B C | dt], a depthwise conv with
bias over [x | B | C], per-head dt_bias / A_log / D, the gated RMSNorm per group
of ``E / n_groups`` channels, out_proj.

Config fields: ``state_size`` -> d_state, ``conv_kernel`` -> d_conv, ``expand``,
``head_dim``, ``n_groups``, ``chunk_size``; ``num_heads`` must equal
``expand * hidden_size / head_dim`` (transformers checks the same);
``use_bias`` -> the design's ``bias`` (in_proj / out_proj); ``use_conv_bias``
must be true (our conv always has a bias); ``hidden_act`` must be silu;
``time_step_limit`` must be (0, inf) (a clamp of the positive softplus output
to that range changes nothing). Init-only fields (``time_step_min`` / ``max`` /
``floor`` / ``rank``, ``rescale_prenorm_residual``) and numerics
(``residual_in_fp32``) change nothing. ``norm_before_gate`` (in older converted
files) is read by neither transformers' torch path nor its kernels' call
(which pass ``norm_before_gate=False``): the gate always comes before the
norm, as in ours, so it changes nothing either. ``vocab_size`` is used as
given: the checkpoints' files already hold the padded size (mamba2-130m: 50277
tokens padded to 50288).

Weights: ``backbone.embeddings`` -> ``embed``, ``backbone.layers.i.norm`` ->
``attn_norm``, ``backbone.layers.i.mixer.*`` -> ``attn.*`` (the same names and
layouts), ``backbone.norm_f`` -> the final norm, ``lm_head`` -> ``head``.
"""
from __future__ import annotations

import math
from typing import Any

from .common import INERT, bad, integer, kind_for

MODEL_TYPES = ("mamba2",)

# read by transformers only to initialise weights, or numerics only
SSM_INERT = {"time_step_min", "time_step_max", "time_step_floor", "time_step_rank", "rescale_prenorm_residual",
             "residual_in_fp32", "norm_before_gate", "time_step_init_scheme", "time_step_scale",
             "mamba_dt_min", "mamba_dt_max", "mamba_dt_init_floor", "mamba_dt_init", "mamba_dt_scale"}
_MAPPED = {"vocab_size", "hidden_size", "num_hidden_layers", "state_size", "expand", "head_dim", "num_heads",
           "n_groups", "conv_kernel", "use_conv_bias", "use_bias", "chunk_size", "hidden_act", "layer_norm_epsilon",
           "rms_norm", "time_step_limit", "tie_word_embeddings", "max_position_embeddings"}


def number(cfg: dict[str, Any], key: str, default: Any) -> float:
    """A float field (transformers 5 writes infinities as ``{"__float__": "Infinity"}``)."""
    v = cfg.get(key, default)
    if isinstance(v, dict) and "__float__" in v:
        v = float(v["__float__"])
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(key, v, "must be a number")
    return float(v)


def flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise bad(key, v, "must be true or false")
    return v


def check_time_step_limit(cfg: dict[str, Any], key: str = "time_step_limit") -> None:
    lim = cfg.get(key, (0.0, math.inf))
    if not isinstance(lim, (list, tuple)) or len(lim) != 2:
        raise bad(key, lim, "must be a pair (low, high)")
    lo, hi = (number({"v": x}, "v", None) for x in lim)
    if lo > 0.0 or hi != math.inf:
        raise bad(key, lim, "clamping dt is not supported (only (0, inf), which changes nothing)")


def eps_of(cfg: dict[str, Any], key: str, default: float) -> float:
    eps = number(cfg, key, default)
    if not 0 < eps < 1:
        raise bad(key, eps, "must be a number in (0, 1)")
    return eps


def mamba2_params(cfg: dict[str, Any], *, hidden: int, keys: dict[str, str], defaults: dict[str, int]) -> dict[str, Any]:
    """The ``mamba2`` kind's params from a config (``keys``: ours -> theirs); heads checked against the width."""
    get = {ours: integer({**defaults, **cfg}, theirs) for ours, theirs in keys.items() if ours != "num_heads"}
    E = get["expand"] * hidden if "expand" in get else None
    if "num_heads" in keys:
        H = integer({**defaults, **cfg}, keys["num_heads"])
        if E is None:  # Nemotron-H: the inner width is num_heads * head_dim
            E = H * get["head_dim"]
            if E % hidden:
                raise bad(keys["num_heads"], H, f"num_heads * head_dim = {E} must be a multiple of hidden_size {hidden}")
            get["expand"] = E // hidden
        elif H * get["head_dim"] != E:
            raise bad(keys["num_heads"], H, f"must equal expand * hidden_size / head_dim = {E} / {get['head_dim']}")
    return {"d_state": get["d_state"], "d_conv": get["d_conv"], "expand": get["expand"], "head_dim": get["head_dim"],
            "n_groups": get["n_groups"], "chunk_size": get.get("chunk_size", 256)}


def import_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(design dict without its description, approximations) for a mamba2 config."""
    known = INERT | SSM_INERT | _MAPPED
    for key in config:
        if key not in known:
            raise bad(key, config[key], f"is not understood for model_type {MODEL_TYPES[0]!r} (it may change the architecture)")
    cfg = config
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise bad("hidden_act", cfg["hidden_act"], "only silu (the conv activation of Mamba-2) is supported")
    if not flag(cfg, "use_conv_bias", True):
        raise bad("use_conv_bias", False, "a Mamba-2 conv without bias is not supported")
    if not flag(cfg, "rms_norm", True):
        raise bad("rms_norm", False, "only RMSNorm Mamba-2 models are supported")
    flag(cfg, "residual_in_fp32", True)
    check_time_step_limit(cfg)
    D, n = integer(cfg, "hidden_size", default=4096), integer(cfg, "num_hidden_layers", default=64)
    params = mamba2_params(cfg, hidden=D, keys={"d_state": "state_size", "d_conv": "conv_kernel", "expand": "expand",
                                                 "head_dim": "head_dim", "n_groups": "n_groups", "chunk_size": "chunk_size",
                                                 "num_heads": "num_heads"},
                           defaults={"state_size": 128, "conv_kernel": 4, "expand": 2, "head_dim": 64, "n_groups": 8,
                                     "chunk_size": 256, "num_heads": 128})
    H = params["expand"] * D // params["head_dim"]
    if H % params["n_groups"]:
        raise bad("n_groups", params["n_groups"], f"must divide the {H} heads")
    design: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or "hf_mamba2")[:200] or "hf_mamba2",
        "architecture": "decoder", "task": "lm", "vocab_size": integer(cfg, "vocab_size", default=32768),
        "hidden_size": D, "n_heads": 1, "max_seq_len": integer(cfg, "max_position_embeddings", default=2048),
        "norm_eps": eps_of(cfg, "layer_norm_epsilon", 1e-5), "tie_embeddings": flag(cfg, "tie_word_embeddings", False),
        "final_norm": True, "dropout": 0.0, "positional": "none", "norm": kind_for("norm", "rms_norm"),
        "bias": flag(cfg, "use_bias", False),
        "layers": {"n_layers": n, "hybrid_override_pattern": "M" * n, "params": {"attention": params}},
    }
    return design, []


# ---------------------------------------------------------------------------
# Weights: Hugging Face state-dict names -> this project's (backend/nn/model.py).

MIXER = ("in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
         "out_proj.weight", "out_proj.bias")


def map_weights(model_type: str, hf_state: dict[str, Any]) -> dict[str, Any]:
    """Our state dict from a Mamba2ForCausalLM one (module docstring); an unknown name is a DesignError."""
    out: dict[str, Any] = {}
    for orig, t in hf_state.items():
        name = orig[len("backbone."):] if orig.startswith("backbone.") else orig
        if name == "embeddings.weight":
            out["embed.weight"] = t
        elif name == "norm_f.weight":
            out["stacks.layers.final_norm.weight"] = t
        elif name == "lm_head.weight":
            out["head.weight"] = t
        elif name.startswith("layers.") and name.split(".")[1].isdigit():
            _, i, rest = name.split(".", 2)
            pre = f"stacks.layers.blocks.{i}."
            if rest == "norm.weight":
                out[pre + "attn_norm.weight"] = t
            elif rest.startswith("mixer.") and rest[len("mixer."):] in MIXER:
                out[pre + "attn." + rest[len("mixer."):]] = t
            else:
                raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
        else:
            raise bad(orig, tuple(t.shape), "has no counterpart in this project's model")
    if "head.weight" not in out and "embed.weight" in out:
        out["head.weight"] = out["embed.weight"]  # tied: HF may leave lm_head out of the state dict
    return out
