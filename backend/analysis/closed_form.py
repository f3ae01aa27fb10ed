"""Closed-form FLOP and parameter formulas, per kind: the independent reference.

The analysis measures FLOPs by tracing the real modules on the meta device
(``flops.py``); the tests compare that measurement with the formulas here,
which are written from the papers / module docstrings and never look at a
traced graph. No torch is imported.

Conventions (DESIGN.md section 5):

* 2 FLOPs per multiply-accumulate; only matmul-like work counts (linear
  layers, attention scores ``QK^T`` and values ``AV``, FFTs); element-wise
  ops (activations, softmax, norms, rope, residual adds) count zero, as in
  PaLM (Chowdhery et al. 2022, appendix B), Megatron (Narayanan et al. 2021)
  and Chinchilla (Hoffmann et al. 2022, appendix F, without its small
  softmax / embedding terms).
* ``dense``: attention scores and values over the full ``S x S`` matrix even
  when causal. ``causal``: only the (query, key) pairs the mask allows:
  ``S(S+1)/2`` for a causal stack, window-limited for sliding windows.
* FFT: a complex transform of ``N`` points costs ``5 N log2 N`` real FLOPs
  (the conventional radix-2 count, e.g. FFTW's "mflops" figure); a real
  transform (r2c / c2r) half of that, ``2.5 N log2 N``.
* Encoder-decoder cross-attention: the source length equals the target length.

Worked check (GPT-2 small, S = 1024, batch 1): per layer
``2 * 12 D^2 * S + 4 * S^2 * D``, times 12, plus the head ``2 * S * D * V``
= 291,648,307,200 FLOPs; Llama-2-7B at S = 4096 = 62,921,270,886,400.
"""
from __future__ import annotations

import math
from typing import Any

GATED = ("swiglu", "geglu", "reglu")


# ---------------------------------------------------------------------------
# Attention pairs


def attention_pairs(sq: int, sk: int, *, causal: bool, window: int = 0, prefix: int = 0) -> int:
    """Number of (query, key) pairs a mask allows (queries and keys aligned at position 0).

    Causal: query ``i`` sees keys ``0..i``; a window ``w`` keeps ``i - j < w``
    (and ``j - i < w`` when bidirectional); ``prefix`` (prefix-LM, causal
    only) lets every query also see the first ``prefix`` keys (allowed =
    causal-window OR ``j < prefix``, as ``self_flex`` masks it).
    """
    if not causal:
        if not window:
            return sq * sk
        s = min(sq, sk)
        d = min(window - 1, s - 1)
        return s + 2 * (d * s - d * (d + 1) // 2)
    s = sq
    if prefix and window:  # rare combination: count row by row
        p = min(prefix, s)
        total = 0
        for i in range(s):
            lo = max(0, i - window + 1)
            # every query sees its causal window plus the whole prefix (FlexAttention prefix-LM)
            total += p if i < p else (i - lo + 1) + min(lo, p)
        return total
    if window and window < s:
        base = window * (window + 1) // 2 + (s - window) * window
    else:
        base = s * (s + 1) // 2
    if prefix:
        p = min(prefix, s)
        base += p * (p - 1) // 2
    return base


def fft_flops(n: int, batch: int = 1, *, real: bool = False) -> float:
    """``5 N log2 N`` per complex N-point transform, half for a real one."""
    if n <= 1:
        return 0.0
    c = 2.5 if real else 5.0
    return batch * c * n * math.log2(n)


# ---------------------------------------------------------------------------
# Per-kind formulas. Each attention function returns (linear, per_pair):
# FLOPs that scale with tokens, and FLOPs per allowed (query, key) pair, for
# batch B and length S; dense = linear + per_pair * S^2.


def _dims(d: Any) -> tuple[int, int, int, int]:
    return d.hidden_size, d.n_heads, d.kv_heads, d.attn_head_dim


def attention_terms(design: Any, kind: str, params: dict[str, Any], b: int, s: int) -> tuple[float, float]:
    D, H, KV, Dh = _dims(design)
    proj_qkvo = 2 * b * s * D * (H * Dh + 2 * KV * Dh) + 2 * b * s * H * Dh * D
    if kind in ("self_sdpa", "self_flex", "cross"):
        return proj_qkvo, 4 * b * H * Dh
    if kind == "diff_attn":
        # two softmax maps of half-width queries/keys (Dh/2 each) over full-width values:
        # scores 2 * (2 * Dh/2) = 2 Dh, values 2 * 2 * Dh per pair and head.
        return proj_qkvo, 2 * b * H * (2 * (Dh // 2) + 2 * Dh)
    if kind == "token_param":
        n = params.get("num_param_tokens", 64)
        # queries from tokens (D -> H Dh), scores against n key tokens, mix n value tokens, out proj.
        return 2 * b * s * D * H * Dh + 2 * b * s * H * n * Dh * 2 + 2 * b * s * H * Dh * D, 0.0
    if kind in ("linear", "causal_linear"):
        m = params.get("nb_features", 256)
        feat = 2 * 2 * b * H * s * Dh * m  # q' and k' random-feature projections
        mix = 2 * 2 * b * H * s * m * Dh + 2 * b * H * s * m  # k'^T v (or prefix sums), q' (k'^T v), normaliser
        return proj_qkvo + feat + mix, 0.0
    raise KeyError(kind)


def attention_flops(design: Any, kind: str, params: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
    """(dense, causal-aware) forward FLOPs of one attention sublayer."""
    if kind == "spectral":
        return _spectral(design, params, b, s, causal)
    if kind == "frequency":
        return _frequency(design, params, b, s)
    lin, per_pair = attention_terms(design, kind, params, b, s)
    dense = lin + per_pair * s * s
    window = params.get("window", 0) or 0
    prefix = params.get("prefix_len", 0) or 0
    pairs = attention_pairs(s, s, causal=causal and kind != "cross", window=window if kind != "cross" else 0, prefix=prefix)
    return dense, lin + per_pair * pairs


def _spectral(design: Any, params: dict[str, Any], b: int, s: int, causal: bool) -> tuple[float, float]:
    D = design.hidden_size
    n = 2 * s if causal else s  # causal: zero-padded convolution
    f = fft_flops(n, b * D, real=True) * 2  # forward rfft + inverse irfft over every channel
    if params.get("adaptive"):
        f += 2 * b * s * D * D  # placeholder: replaced when the module's modulation is known
    return f, f


def _frequency(design: Any, params: dict[str, Any], b: int, s: int) -> tuple[float, float]:
    D, H, _, Dh = _dims(design)
    m = min(params.get("modes", 32), s // 2 + 1)
    f = fft_flops(s, b * D, real=True) * 2
    f += 2 * 4 * b * m * H * Dh * Dh  # complex per-mode mixing (4 real MACs per complex MAC)
    return f, f


def mlp_flops(design: Any, kind: str, params: dict[str, Any], b: int, s: int) -> float:
    D = design.hidden_size
    F = params.get("hidden") or design.ffn_hidden
    if kind in GATED:
        return 2 * b * s * D * F * 3
    if kind in ("mlp", "relu2"):
        return 2 * b * s * D * F * 2
    if kind == "moe":
        e, k, shared = params.get("num_experts", 8), params.get("top_k", 2), params.get("shared_experts", 0)
        per = mlp_flops(design, params.get("expert", "swiglu"), {"hidden": F}, b, s)
        return 2 * b * s * D * e + (k + shared) * per
    raise KeyError(kind)


def norm_flops(design: Any, kind: str, b: int, s: int) -> float:
    if kind == "adaptive":
        D = design.hidden_size
        return 2 * b * s * D * 2 * D  # Linear(D, 2D) modulation
    return 0.0


def head_flops(design: Any, b: int, s: int) -> float:
    """Output head: LM/MLM/seq2seq project every position to the vocabulary."""
    D = design.hidden_size
    if design.task in ("lm", "mlm", "seq2seq"):
        return 2 * b * s * D * design.vocab_size
    return 0.0


def layer_flops(design: Any, layer: Any, b: int, s: int) -> dict[str, tuple[float, float]]:
    """Per component (dense, causal) forward FLOPs of one executed layer (a ``ResolvedLayer``)."""
    att = attention_flops(design, layer.attention, layer.config.get("attention", {}), b, s, causal=layer.causal)
    mlp = mlp_flops(design, layer.mlp, layer.config.get("mlp", {}), b, s)
    n_norms = 2 + (1 if layer.cross else 0)
    if design.norm_placement == "pre_post":
        n_norms *= 2
    nf = norm_flops(design, layer.norm, b, s) * n_norms
    out = {"attention": att, "mlp": (mlp, mlp), "norm": (nf, nf)}
    if layer.cross:
        out["cross"] = attention_flops(design, "cross", layer.config.get("cross", {}), b, s, causal=False)
    return out


def model_flops(plan: Any, b: int = 1, s: int | None = None) -> dict[str, float]:
    """Forward FLOPs of a whole plan: ``{"forward": dense, "forward_causal": causal}``."""
    d = plan.design
    s = s or d.max_seq_len
    dense = causal = head_flops(d, b, s)
    for layer in plan.layers:
        for den, cau in layer_flops(d, layer, b, s).values():
            dense += den
            causal += cau
    return {"forward": dense, "forward_causal": causal}


# ---------------------------------------------------------------------------
# Parameters of the standard kinds (used to size the smoke test before any
# module exists, and as a cross-check of the meta-built count).


def mlp_params(design: Any, kind: str, params: dict[str, Any]) -> int:
    D, bias = design.hidden_size, design.bias
    F = params.get("hidden") or design.ffn_hidden
    if kind in GATED:
        return 3 * D * F + (2 * F + D if bias else 0)
    if kind in ("mlp", "relu2"):
        return 2 * D * F + (F + D if bias else 0)
    if kind == "moe":
        per = mlp_params(design, params.get("expert", "swiglu"), {"hidden": F})
        return D * params.get("num_experts", 8) + per * (params.get("num_experts", 8) + params.get("shared_experts", 0))
    raise KeyError(kind)


def softmax_attention_params(design: Any) -> int:
    D, H, KV, Dh = _dims(design)
    w = D * (H * Dh + 2 * KV * Dh) + H * Dh * D
    if design.bias or design.qkv_bias:
        w += H * Dh + 2 * KV * Dh
    if design.bias:
        w += D
    return w


def norm_params(design: Any, kind: str) -> int:
    D = design.hidden_size
    return {"layer": D * (2 if design.bias else 1), "rms": D, "scale": 1, "rezero": 1, "adaptive": 2 * D * D + 2 * D}[kind]
