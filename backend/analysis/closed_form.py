"""Closed-form FLOPs of a whole plan: the sum of what each kind declares.

The analysis measures FLOPs by tracing the real modules on the meta device
(``flops.py``); the tests compare that measurement with the closed forms
each kind declares (``AttentionKind.flops`` / ``MlpKind.flops`` /
``NormKind.flops`` in ``backend/kinds``, written from the papers and module
docstrings, never from a traced graph). This module only sums them over the
executed layers and adds the head. No torch is imported.

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

from typing import Any

from ..kinds.attention import CAUSAL_LINEAR_CHUNK, frequency_modes  # noqa: F401  (re-exported for the tests)
from ..kinds.base import attention_pairs, fft_flops, next_pow2  # noqa: F401
from ..registry import ATTENTION, CROSS, MLP, NORM
from ..spec import TOKEN_TASKS


def attention_flops(design: Any, kind: str, params: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
    """(dense, causal-aware) forward FLOPs of one attention sublayer of ``kind`` (its declaration)."""
    info = CROSS if kind == CROSS.name else ATTENTION[kind]
    return info.flops(design, params, b, s, causal=causal)


def mlp_flops(design: Any, kind: str, params: dict[str, Any], b: int, s: int) -> float:
    return MLP[kind].flops(design, params, b, s)


def norm_flops(design: Any, kind: str, b: int, s: int) -> float:
    return NORM[kind].flops(design, b, s)


def head_flops(design: Any, b: int, s: int) -> float:
    """Output head: LM/MLM/seq2seq project every position to the vocabulary."""
    if design.task in TOKEN_TASKS:
        # BERT's head transform (head_transform) adds a D x D dense layer
        transform = 2 * b * s * design.hidden_size ** 2 if getattr(design, "head_transform", False) else 0
        return 2 * b * s * design.hidden_size * design.vocab_size + transform
    return 0.0


def norms_per_layer(design: Any, layer: Any) -> int:
    """Norm modules of one layer: one per sublayer (two with ``pre_post``); an empty sublayer has none."""
    n = (0 if ATTENTION[layer.attention].identity else 1) + (0 if MLP[layer.mlp].identity else 1) + (1 if layer.cross else 0)
    shared = getattr(design, "parallel_shared_norm", False) and n == 2  # one norm for both parallel branches
    if layer.unique_index == 0 and not getattr(design, "first_attn_norm", True) and not ATTENTION[layer.attention].identity:
        n -= 1  # ModernBERT: the first layer's attention has no pre-norm
    return (n - (1 if shared else 0)) * (2 if design.norm_placement == "pre_post" else 1)


def layer_flops(design: Any, layer: Any, b: int, s: int) -> dict[str, tuple[float, float]]:
    """Per component (dense, causal) forward FLOPs of one executed layer (a ``ResolvedLayer``)."""
    att = attention_flops(design, layer.attention, layer.config.get("attention", {}), b, s, causal=layer.causal)
    mlp = mlp_flops(design, layer.mlp, layer.config.get("mlp", {}), b, s)
    nf = norm_flops(design, layer.norm, b, s) * norms_per_layer(design, layer)
    out = {"attention": att, "mlp": (mlp, mlp), "norm": (nf, nf)}
    if layer.cross:
        out["cross"] = CROSS.flops(design, layer.config.get("cross", {}), b, s, causal=False)
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
