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
  each), what each module's cache object really holds after decoding
  (checked against the tensors of a real cache in tests/test_memory.py):

  - ``self_sdpa`` / ``self_flex``: ``KVCache`` with K and V of
    (B, n_kv_heads, T, head_dim): ``2 * n_kv_heads * head_dim`` values per
    token; a sliding window keeps the last ``window`` tokens (not with a
    prefix-LM prefix, which stays visible);
  - ``diff_attn``: ``KVCache`` with K of (B, 2 n_kv_heads, T, head_dim/2)
    (two maps per kv head) and V of (B, n_kv_heads, T, head_dim): again
    ``2 * n_kv_heads * head_dim`` per token;
  - ``causal_linear``: ``StateCache`` with the running prefix sums
    S (B, n_heads, m, head_dim) and z (B, n_heads, m), per *sequence*, not
    per token: ``n_heads * m * (head_dim + 1)`` values, held in at least
    float32 (the module computes its features in float32 when the model is
    bf16/fp16);
  - ``spectral`` (causal): ``StateCache`` holding every past ``v_proj``
    output (B, T, n_heads, head_dim) for the convolution: ``n_heads *
    head_dim`` values per token, in the model dtype (a real per-token cache);
  - ``token_param``: a ``StateCache`` that only counts tokens: nothing;
  - ``frequency`` and ``linear`` are bidirectional only: no cache;
  - cross-attention: ``KVCache`` with the encoder's K/V, ``2 * n_kv_heads *
    head_dim`` per *source* token, written once.
  Padding masks (a bool per token, only when decoding with padding) are not
  counted.
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

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
SOFTMAX_KINDS = ("self_sdpa", "self_flex", "diff_attn")
NO_CACHE_KINDS = ("token_param", "frequency", "linear")  # spectral (causal) caches its past inputs


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
    """Cache of one executed layer: bytes per token, cap in tokens, constant bytes."""
    b = dtype_bytes(dtype)
    kv, dh, h = design.kv_heads, design.attn_head_dim, design.n_heads
    att = layer.attention
    cfg = layer.config.get("attention", {})
    out = {"kind": att, "bytes_per_token": 0, "max_tokens": None, "state_bytes": 0, "cross_bytes_per_source_token": 0}
    if layer.causal and att in SOFTMAX_KINDS:
        out["bytes_per_token"] = 2 * kv * dh * b
        window = cfg.get("window", 0) or 0
        if cfg.get("prefix_len"):  # prefix-LM keeps the prefix visible: no sliding cache
            window = 0
        out["max_tokens"] = window or None
    elif layer.causal and att == "causal_linear":
        m = cfg.get("nb_features", 256)
        out["state_bytes"] = h * m * (dh + 1) * max(b, 4)  # features run in >= float32
    elif layer.causal and att == "spectral":
        out["bytes_per_token"] = h * dh * b  # past v_proj outputs for the causal convolution
    if layer.cross:
        out["cross_bytes_per_source_token"] = 2 * kv * dh * b
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
    """(elements per token saved for backward, dropout-mask elements per token)."""
    D, H, KV, Dh = design.hidden_size, design.n_heads, design.kv_heads, design.attn_head_dim
    att = layer.attention
    a_cfg, m_cfg = layer.config.get("attention", {}), layer.config.get("mlp", {})
    F = m_cfg.get("hidden") or design.ffn_hidden
    e = D  # attention norm input
    drop = 0.0
    if att in SOFTMAX_KINDS or att == "cross":
        e += H * Dh + 2 * KV * Dh + H * Dh
        if not fused_attention:
            w = a_cfg.get("window", 0) or 0
            keys = min(s, w) if w else s
            e += 2 * H * keys
            drop += H * keys
    elif att in ("linear", "causal_linear"):
        m = a_cfg.get("nb_features", 256)
        e += H * Dh + 2 * KV * Dh + 2 * H * m + H * Dh
    elif att == "token_param":
        n = a_cfg.get("num_param_tokens", 64)
        e += 2 * H * Dh + H * n
    else:  # spectral / frequency: spectrum in and out (complex = 2 reals)
        e += 4 * D
    if layer.cross:
        e += D + 2 * H * Dh + (0 if fused_attention else 2 * H * s)
    # MLP
    kind = layer.mlp
    u, mult = 1, 1
    if kind == "moe":
        mult = m_cfg.get("top_k", 2) + m_cfg.get("shared_experts", 0)
        e += m_cfg.get("num_experts", 8)  # router logits
        kind = m_cfg.get("expert", "swiglu")
    if kind in ("swiglu", "geglu", "reglu"):
        u = 2
    e += D + mult * (u * F + F)
    e += 2 * D
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
