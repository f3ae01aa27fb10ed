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
# Per-kind formulas, written from each module's documented math (``backend/nn``),
# one matmul / einsum / FFT at a time. Notation: B batch, S length, D hidden,
# H heads, KV kv heads, Dh head dim, L = max_seq_len.
#
# What counts (the same set FlopCounterMode sees, plus explicit formulas):
# every matmul / einsum / linear at 2 FLOPs per multiply-accumulate; a
# *complex* multiply-accumulate is 4 real ones (8 FLOPs); FFTs by the
# 5 N log2 N rule above. Element-wise work (exp of Performer features,
# GeLU/L2 normalisation of token_param, sigmoid gates, the frequency-domain
# pointwise product of a convolution, masks, lambda of diff_attn) and plain
# reductions (softmax / normaliser row sums, Performer's ``sum phi(k)``)
# count zero, like softmax and norms do.
#
# Each attention function returns (linear, per_pair, fixed): FLOPs that
# scale with tokens, FLOPs per (query, key) pair of an S x S score matrix,
# and batch-independent FLOPs (weights-only work done once per call);
# dense = linear + per_pair * S^2 + fixed.

# CausalPerformerAttention.chunk: the causal Performer evaluates its prefix
# sums in chunks of this many tokens (a tests asserts it equals the module's).
CAUSAL_LINEAR_CHUNK = 64


def _dims(d: Any) -> tuple[int, int, int, int]:
    return d.hidden_size, d.n_heads, d.kv_heads, d.attn_head_dim


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _proj_qkvo(design: Any, b: int, s: int) -> float:
    D, H, KV, Dh = _dims(design)
    return 2 * b * s * D * (H * Dh + 2 * KV * Dh) + 2 * b * s * H * Dh * D


def attention_terms(design: Any, kind: str, params: dict[str, Any], b: int, s: int) -> tuple[float, float, float]:
    """(linear, per_pair, fixed) forward FLOPs of one attention sublayer (see above)."""
    D, H, KV, Dh = _dims(design)
    proj = _proj_qkvo(design, b, s)
    if kind in ("self_sdpa", "self_flex", "cross"):
        # scores Q K^T (Dh MACs per pair and head) + values A V (Dh MACs)
        return proj, 4 * b * H * Dh, 0.0
    if kind == "diff_attn":
        # q_proj D -> 2H maps of d = Dh/2, k_proj D -> 2KV maps of d, v_proj D -> KV heads of 2d:
        # the same widths as softmax attention. Scores: 2H maps x d = H*Dh MACs per pair;
        # the two maps are combined (A1 - lambda A2) *before* one A V over 2d = Dh channels:
        # H*Dh MACs per pair. So 4 H Dh per pair, like softmax attention.
        return proj, 2 * b * (2 * H * (Dh // 2)) + 2 * b * H * (2 * (Dh // 2)), 0.0
    if kind == "token_param":
        n = params.get("num_param_tokens", 64)
        # q_proj D -> H Dh; scores q K_h^T against n parameter tokens; Theta(A) V_h; o_proj.
        lin = 2 * b * s * D * H * Dh + 2 * b * s * H * n * Dh + 2 * b * s * H * n * Dh + 2 * b * s * H * Dh * D
        return lin, 0.0, 0.0
    if kind in ("linear", "causal_linear"):
        m = params.get("nb_features", 256)
        # random features: q (H heads) and k (KV heads, before repeat_kv) times the (m, Dh) projection
        feat = 2 * b * s * Dh * m * (H + KV)
        if kind == "linear":
            # kv = phi(K)^T V, num = phi(Q) kv (m x Dh per token and head), den = phi(Q) z
            mix = 2 * b * H * s * m * Dh * 2 + 2 * b * H * s * m
            return proj + feat + mix, 0.0, 0.0
        # causal: chunks of c tokens; per chunk and head: a = q_c k_c^T (c*c*m), q_c S_run (c*m*Dh),
        # a v_c (c*c*Dh), q_c . z_run (c*m), S_run += k_c^T v_c (m*c*Dh). The c x c products
        # are computed in full and then masked (tril).
        c = CAUSAL_LINEAR_CHUNK
        sq = sum(min(c, s - i) ** 2 for i in range(0, s, c))
        mix = 2 * b * H * (s * m * (2 * Dh + 1) + sq * (m + Dh))
        return proj + feat + mix, 0.0, 0.0
    raise KeyError(kind)


def attention_flops(design: Any, kind: str, params: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
    """(dense, causal-aware) forward FLOPs of one attention sublayer.

    Causal-aware: softmax kinds (self_sdpa, self_flex, diff_attn) count only the
    (query, key) pairs the mask allows; cross-attention sees every source
    token. Kinds without an S x S score matrix (token_param, spectral,
    frequency, linear, causal_linear) count the same in both figures: their
    cost is what runs (causal_linear's masked c x c chunk blocks are O(S c)).
    """
    if kind == "spectral":
        f = _spectral(design, params, b, s, causal)
        return f, f
    if kind == "frequency":
        f = _frequency(design, params, b, s)
        return f, f
    lin, per_pair, fixed = attention_terms(design, kind, params, b, s)
    dense = lin + per_pair * s * s + fixed
    window = params.get("window", 0) or 0
    prefix = params.get("prefix_len", 0) or 0
    pairs = attention_pairs(s, s, causal=causal and kind != "cross", window=window if kind != "cross" else 0, prefix=prefix)
    return dense, lin + per_pair * pairs + fixed


def _spectral(design: Any, params: dict[str, Any], b: int, s: int, causal: bool) -> float:
    """SpectralMixer: v_proj, per-head FFT filtering along S, optional gate, o_proj.

    Bidirectional: rfft of v zero-padded to L = max_seq_len, pointwise filter,
    irfft at L (B*H*Dh real transforms each way, independent of S).
    Causal: n = next_pow2(2S); rfft of v and irfft (B*H*Dh real transforms
    each), plus the rfft of the H time-domain kernels (weights only: once per
    call, whatever the batch). Adaptive: gate Linear(D, r) then Linear(r, H Dh),
    r = max(8, D // 4).
    """
    D, H, _, Dh = _dims(design)
    f = 2 * b * s * D * H * Dh * 2  # v_proj + o_proj
    if causal:
        n = next_pow2(2 * s)
        f += 2 * fft_flops(n, b * H * Dh, real=True) + fft_flops(n, H, real=True)
    else:
        L = design.max_seq_len
        f += 2 * fft_flops(L, b * H * Dh, real=True)
    if params.get("adaptive"):
        r = max(8, D // 4)
        f += 2 * b * s * D * r + 2 * b * s * r * H * Dh
    return f


def frequency_modes(seq_len: int, modes: int, method: str, seed: int) -> list[int]:
    """FEDformer's mode choice (as ``FrequencyAttention`` documents it), for length L = max_seq_len."""
    import random

    modes = max(1, min(modes, seq_len // 2))
    if method == "random":
        return sorted(random.Random(seed).sample(range(seq_len // 2), modes))
    return list(range(modes))


def _frequency(design: Any, params: dict[str, Any], b: int, s: int) -> float:
    """FrequencyAttention: q_proj, rfft over S, per kept mode a complex (Dh x Dh) mix per head, irfft, o_proj.

    Kept modes at length S: those chosen for L = max_seq_len with index < S//2 + 1.
    """
    D, H, _, Dh = _dims(design)
    idx = frequency_modes(design.max_seq_len, params.get("modes", 32), params.get("mode_select", "lowest"), params.get("seed", 0))
    m = sum(1 for i in idx if i < s // 2 + 1)
    f = 2 * b * s * D * H * Dh * 2  # q_proj + o_proj
    f += 2 * fft_flops(s, b * H * Dh, real=True)  # rfft + irfft at S
    f += 2 * 4 * b * H * m * Dh * Dh  # complex mixing: 4 real MACs per complex MAC
    return f


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
