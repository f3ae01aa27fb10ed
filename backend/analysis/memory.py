"""Memory figures: weights per dtype, training state, KV cache, activations.

Pure arithmetic on the plan and the parameter count (no torch), so the smoke
test can size a 70B design before allocating anything.

Assumptions, stated once:

* **Weights**: unique parameters x bytes of the dtype (fp32 4, bf16/fp16 2,
  int8 1). Shared (repeated) layers and tied embeddings count once.
* **Training** (Adam, Kingma & Ba 2014): fp32 training keeps weights 4 +
  grads 4 + two fp32 moments 8 = 16 bytes/param. bf16/fp16 mixed precision
  (Micikevicius et al. 2017; ZeRO, Rajbhandari et al. 2019, section 3.1)
  keeps half-precision weights 2 + grads 2 + an fp32 master copy 4 + moments
  8 = 16 bytes/param as well; the split is reported. int8 is not a training
  dtype: its training figure uses the bf16 recipe.
* **KV cache** (per executed layer: weight-shared layers still have one cache
  each): what each kind declares its module's cache holds after decoding
  (``AttentionKind.cache``, a :class:`~backend.kinds.base.CacheLayout`:
  bytes per token up to a token cap, plus constant per-sequence state),
  checked against the tensors of real caches in tests/test_kind_contract.py;
  cross-attention: ``KVCache`` with the encoder's K/V per *source* token,
  written once. Padding masks (a bool per token, only when decoding with
  padding) are not counted. The per-kind layouts are documented with each
  declaration (``backend/kinds``).
* **Activations** (what backward needs; Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", arXiv 2205.05198,
  section 4.1, generalised to GQA / gated / MoE widths): per layer and token,
  elements saved = attention ``D`` (norm input) + ``H Dh + 2 KV Dh`` (q, k, v)
  + ``H Dh`` (attention output) + MLP ``D`` (norm input) + ``u F`` (up
  projections, u = 2 gated / 1 dense; MoE: top_k + shared experts, plus the
  router) + ``F`` (activation output) + 2 ``D`` (norm statistics / residual),
  times the dtype's bytes; without a fused (flash / memory-efficient)
  attention kernel the softmax input and output add ``2 * H * S`` elements per
  token (the ``5 a S / h`` term of the paper); dropout masks add 1 byte per
  element when dropout > 0. Gradient checkpointing keeps only each layer's
  input (``D`` elements per token) plus one layer's full set. Logits
  ``S * V`` elements (in fp32) are added for token heads.
"""
from __future__ import annotations

from typing import Any

from ..registry import ATTENTION, CROSS, MLP

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def weights_bytes(n_params: int, dtype: str = "bf16") -> int:
    return n_params * dtype_bytes(dtype)


def training_bytes(n_params: int, dtype: str = "bf16") -> dict[str, int]:
    """Weights + grads + Adam state for ``n_params`` unique parameters."""
    if dtype == "fp32":
        w, g, master = 4, 4, 0
    else:  # mixed precision (int8 uses the bf16 recipe)
        w, g, master = 2, 2, 4
    out = {
        "weights_bytes": n_params * w,
        "grads_bytes": n_params * g,
        "master_weights_bytes": n_params * master,
        "optimizer_bytes": n_params * 8,  # Adam m and v in fp32
    }
    out["total_bytes"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------
# KV cache


def layer_cache(design: Any, layer: Any, dtype: str = "bf16") -> dict[str, Any]:
    """Cache of one executed layer: bytes per token, cap in tokens, constant bytes (the kind's declaration)."""
    b = dtype_bytes(dtype)
    att = layer.attention
    out = {"kind": att, "bytes_per_token": 0, "max_tokens": None, "state_bytes": 0, "cross_bytes_per_source_token": 0}
    info = ATTENTION[att]
    if layer.causal and info.cacheable:
        c = info.cache(design, layer.config.get("attention", {}), b)
        out.update(bytes_per_token=c.bytes_per_token, max_tokens=c.max_tokens, state_bytes=c.state_bytes)
    if layer.cross:
        out["cross_bytes_per_source_token"] = CROSS.cache(design, layer.config.get("cross", {}), b).bytes_per_token
    return out


def kv_cache(plan: Any, dtype: str = "bf16", seq_len: int | None = None, batch: int = 1) -> dict[str, Any]:
    """KV cache of the decoding stack(s): per token (first tokens), at ``seq_len`` / ``max_seq_len``."""
    d = plan.design
    caches = [layer_cache(d, layer, dtype) for layer in plan.layers if layer.causal or layer.cross]
    per_token = sum(c["bytes_per_token"] for c in caches)
    cross_per_src = sum(c["cross_bytes_per_source_token"] for c in caches)
    state = sum(c["state_bytes"] for c in caches)

    def one(c: dict[str, Any], t: int) -> int:
        tok = c["bytes_per_token"] * (min(t, c["max_tokens"]) if c["max_tokens"] else t)
        return batch * (tok + c["state_bytes"])

    def by_kind(t: int) -> dict[str, int]:
        """Bytes at ``t`` tokens per attention kind (``cross`` for the cross-attention K/V)."""
        out: dict[str, int] = {}
        for c in caches:
            if c["bytes_per_token"] or c["state_bytes"]:
                out[c["kind"]] = out.get(c["kind"], 0) + one(c, t)
        if cross_per_src:
            out["cross"] = batch * cross_per_src * t
        return out

    def at(t: int) -> int:
        return sum(by_kind(t).values())

    max_len = d.max_seq_len
    return {
        "bytes_per_token": per_token + cross_per_src,  # self K/V + cross K/V (source length = target length)
        "self_bytes_per_token": per_token,
        "cross_bytes_per_source_token": cross_per_src,
        "state_bytes": state,
        "at_seq_len_bytes": at(seq_len or max_len),
        "at_max_seq_len_bytes": at(max_len),
        "by_kind_at_seq_len_bytes": by_kind(seq_len or max_len),
        "batch": batch,
        "dtype": dtype,
    }


# ---------------------------------------------------------------------------
# Activations


def _layer_activation_elems(design: Any, layer: Any, s: int, *, fused_attention: bool) -> tuple[float, float]:
    """(elements per token saved for backward, dropout-mask elements per token); the kinds declare their parts."""
    D = design.hidden_size
    e, drop = ATTENTION[layer.attention].activation_elems(design, layer.config.get("attention", {}), s, fused=fused_attention)
    e += D  # attention norm input
    if layer.cross:
        ce, cd = CROSS.activation_elems(design, layer.config.get("cross", {}), s, fused=fused_attention)
        e += D + ce
        drop += cd
    e += D + MLP[layer.mlp].activation_elems(design, layer.config.get("mlp", {}))  # MLP norm input + the MLP
    e += 2 * D  # norm statistics / residual
    drop += 2 * D
    return e, drop


def activations(plan: Any, seq_len: int, batch: int = 1, dtype: str = "bf16", *, fused_attention: bool = True,
                checkpointing: bool | None = None) -> dict[str, Any]:
    """Activation memory estimate for one training step (formula in the module docstring)."""
    d = plan.design
    b = dtype_bytes("bf16" if dtype == "int8" else dtype)
    ckpt = d.gradient_checkpointing if checkpointing is None else checkpointing
    tokens = batch * seq_len
    per_layer = []
    for layer in plan.layers:
        e, drop = _layer_activation_elems(d, layer, seq_len, fused_attention=fused_attention)
        per_layer.append(tokens * (e * b + (drop if d.dropout > 0 else 0)))
    if ckpt and per_layer:
        layers_total = tokens * d.hidden_size * b * len(per_layer) + max(per_layer)
    else:
        layers_total = sum(per_layer)
    logits = tokens * (d.vocab_size or d.output_dim or 0) * 4 if d.task in ("lm", "mlm", "seq2seq") else 0
    embed = tokens * d.hidden_size * b
    return {
        "total_bytes": int(layers_total + logits + embed),
        "per_layer_bytes": [int(x) for x in per_layer],
        "logits_bytes": int(logits),
        "fused_attention": fused_attention,
        "checkpointing": bool(ckpt),
        "batch": batch,
        "seq_len": seq_len,
    }
