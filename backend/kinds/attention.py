"""Declarations of the built-in attention kinds / token mixers (the contract: ``base``).

Each declaration says, for its module in ``backend/nn``: its schema, where it
runs, how its closed-form FLOPs are counted (written from the module's
documented math, one matmul / einsum / FFT at a time), what its decode cache
holds, what it saves for backward, and what it refuses. Notation: B batch,
S length, D hidden, H heads, KV kv heads, Dh head dim, L = max_seq_len.

FLOP conventions (DESIGN.md section 5): 2 per multiply-accumulate; a complex
multiply-accumulate is 4 real ones; FFTs by ``5 N log2 N`` (complex) /
``2.5 N log2 N`` (real). Element-wise work (exp of Performer features,
GeLU / L2 normalisation, sigmoid gates, masks, lambda of diff_attn, the
pointwise product of a frequency-domain convolution) and plain reductions
count zero, like softmax and norms. ``dense`` counts every (query, key) pair
of an S x S score matrix; ``causal`` only the pairs the kind's mask allows.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .base import (AttentionKind, CacheLayout, KindError, ParamInfo as P, attention_pairs, dims, fft_flops,
                   next_pow2, qkvo_flops, qkvo_params)

BACKENDS = ("auto", "math", "flash", "efficient")
# softmax logit scale: null = 1/sqrt(head_dim); T5 uses 1 (Raffel et al. 2020, arXiv 1910.10683, folded into the init)
_SCALE = P("float", None, "logit scale (null = 1/sqrt(head_dim); T5: 1.0)", 1e-6, 1e6, nullable=True)


# ---------------------------------------------------------------------------
# Softmax attention (self_sdpa, self_flex, cross) and differential attention


@dataclass(frozen=True)
class SoftmaxKind(AttentionKind):
    """Multi-head softmax attention over q/k/v/o projections; K and V cached per token."""

    cacheable: bool = True
    softmax: bool = True

    def window(self, cfg: dict[str, Any]) -> int:
        return int(cfg.get("window", 0) or 0)

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        # self_sdpa's rotary params (partial rotary, per-layer theta) and the whole-projection QK-norm
        frac = cfg.get("rotary_fraction", 1.0)
        if frac != 1.0 and int(model.attn_head_dim * frac) % 2:
            raise KindError(f"rotary on int(head_dim * rotary_fraction) = {int(model.attn_head_dim * frac)} channels "
                            f"must be an even number (rotary rotates pairs), got rotary_fraction {frac}", "rotary_fraction")
        if (frac != 1.0 or cfg.get("rope_theta") or cfg.get("rotary_interleaved")) and not getattr(positional, "rotary", False):
            key = "rotary_fraction" if frac != 1.0 else "rope_theta" if cfg.get("rope_theta") else "rotary_interleaved"
            raise KindError(f"{key} shapes rotary positions: it needs a rotary positional, got "
                            f"{getattr(positional, 'name', positional)!r}", key)
        if cfg.get("qk_norm_over") == "projection" and cfg.get("output_gate"):
            raise KindError("qk_norm_over 'projection' normalises a q projection of H*Dh and cannot be combined "
                            "with output_gate (a doubled q projection)", "qk_norm_over")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        # scores Q K^T (Dh MACs per pair and head) + values A V (Dh MACs); attention sinks run as one
        # extra (zero) key per query (backend/nn/attention.py), so s more pairs in either count
        D, H, _, Dh = dims(model)
        lin, per_pair = qkvo_flops(model, b, s), 4 * b * H * Dh
        if cfg.get("output_gate"):  # q_proj's second half: the gate (D -> H Dh); the sigmoid product counts zero
            lin += 2 * b * s * D * H * Dh
        sink = s if cfg.get("sinks") else 0
        return lin + per_pair * (s * s + sink), lin + per_pair * (self.pairs(cfg, s, causal=causal) + sink)

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        # qk_norm: one RMSNorm gain of Dh shared by the heads of q, one of k (Qwen3 / Gemma-3);
        # sinks: one logit per head (gpt-oss); output_gate: q_proj doubled (weight, and its bias when q has one)
        # qk_norm_over "projection" (OLMo 2): gains of H*Dh (q) and KV*Dh (k) instead
        D, H, KV, Dh = dims(model)
        qk = (H + KV) * Dh if cfg.get("qk_norm_over") == "projection" else 2 * Dh
        n = qkvo_params(model) + (qk if cfg.get("qk_norm") else 0) + (H if cfg.get("sinks") else 0)
        if cfg.get("output_gate"):
            n += D * H * Dh + (H * Dh if (model.bias or model.qkv_bias) else 0)
        return n

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        # KVCache: K and V of (B, KV, T, Dh); a sliding window keeps the last `window` tokens
        _, _, KV, Dh = dims(model)
        return CacheLayout(2 * KV * Dh * dtype_bytes, self.cache_cap(cfg))

    def cache_cap(self, cfg: dict[str, Any]) -> int | None:
        return self.window(cfg) or None

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        # q, k, v and the attention output; without a fused kernel the softmax in and out
        # (the 5 a S / h term of Korthikanti et al. 2022) and its dropout mask
        _, H, KV, Dh = dims(model)
        e, drop = H * Dh + 2 * KV * Dh + H * Dh, 0.0
        if cfg.get("output_gate"):  # the gate and the gated output (o_proj's input)
            e += 2 * H * Dh
        if not fused:
            w = self.window(cfg)
            keys = min(s, w) if w else s
            e += 2 * H * keys
            drop += H * keys
        return e, drop


@dataclass(frozen=True)
class FlexKind(SoftmaxKind):
    """FlexAttention: the window is symmetric in encoders; a prefix-LM prefix stays visible (and cached)."""

    def pairs(self, cfg: dict[str, Any], s: int, *, causal: bool) -> int:
        prefix = int(cfg.get("prefix_len", 0) or 0) if causal else 0
        return attention_pairs(s, s, causal=causal, window=self.window(cfg), prefix=prefix)

    def cache_cap(self, cfg: dict[str, Any]) -> int | None:
        return None if cfg.get("prefix_len") else super().cache_cap(cfg)  # the prefix must stay in the cache


@dataclass(frozen=True)
class CrossKind(SoftmaxKind):
    """Decoder-to-encoder attention: every query sees every source token; K/V cached once per source token."""

    def pairs(self, cfg: dict[str, Any], s: int, *, causal: bool) -> int:
        return s * s

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        # per target token: q and the attention output (K/V come from the encoder memory, saved there);
        # without a fused kernel the softmax in and out over s source tokens
        _, H, _, Dh = dims(model)
        return 2 * H * Dh + (0 if fused else 2 * H * s), 0.0


@dataclass(frozen=True)
class DiffKind(SoftmaxKind):
    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        Dh = model.attn_head_dim
        rotary = bool(getattr(positional, "rotary", False))
        if Dh % 2 or (rotary and Dh % 4):
            raise KindError(f"diff_attn splits each head in two maps and needs head_dim divisible by 2"
                            f"{' (by 4 with rotary positions, which rotate each half)' if rotary else ''}, got {Dh}")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        # q_proj D -> 2H maps of d = Dh/2, k_proj D -> 2KV maps of d, v_proj D -> KV heads of 2d:
        # the widths of softmax attention. Scores: 2H maps x d = H*Dh MACs per pair; the two maps
        # are combined (A1 - lambda A2) before one A V over 2d = Dh channels: H*Dh MACs per pair.
        _, H, _, Dh = dims(model)
        lin, per_pair = qkvo_flops(model, b, s), 2 * b * (2 * H * (Dh // 2)) + 2 * b * H * (2 * (Dh // 2))
        return lin + per_pair * s * s, lin + per_pair * self.pairs(cfg, s, causal=causal)

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        # q/k/v/o as softmax attention, four lambda vectors of d, the per-head RMSNorm gain of 2d
        d = model.attn_head_dim // 2
        return qkvo_params(model) + 4 * d + 2 * d


# ---------------------------------------------------------------------------
# Multi-head Latent Attention (DeepSeek-V2 / V3)


def mla_sizes(model: Any, cfg: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(qr (0 = plain q projection), c, n, r, dv) of an ``mla`` layer, null sizes derived from ``head_dim``
    as ``backend.nn.mla.mla_sizes`` derives them: n = dv = head_dim, r = head_dim / 2 rounded down to even, c = 4 head_dim."""
    Dh = model.attn_head_dim
    return (int(cfg.get("q_lora_rank") or 0), int(cfg.get("kv_lora_rank") or 4 * Dh),
            int(cfg.get("qk_nope_head_dim") or Dh), int(cfg.get("qk_rope_head_dim") or max(2, Dh // 4 * 2)),
            int(cfg.get("v_head_dim") or Dh))


@dataclass(frozen=True)
class MlaKind(AttentionKind):
    """Multi-head Latent Attention (``backend/nn/mla.py``; qr, c, n, r, dv as there).

    FLOPs count the *expanded* (training) form the module runs without a cache:
    q (``q_proj`` D x H(n+r), or ``q_a_proj`` D x qr + ``q_b_proj`` qr x H(n+r)),
    ``kv_a_proj_with_mqa`` D x (c+r), ``kv_b_proj`` c x H(n+dv) on every token,
    scores (n+r MACs per pair and head), values (dv), ``o_proj`` H dv x D; rotary,
    the latent RMSNorms and softmax are element-wise (zero). The analysis reports
    no decode FLOPs; the absorbed decode step the module runs with a cache costs,
    per new token and T cached tokens, the same projections less ``kv_b_proj``, plus
    ``2 H n c`` (q_nope W_UK), ``2 H T (c+r)`` (scores), ``2 H T c`` (values) and
    ``2 H c dv`` (W_UV). The cache is the compressed latent: c + r values per token.
    """

    cacheable: bool = True
    softmax: bool = True

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        _, _, _, r, _ = mla_sizes(model, cfg)
        rotary = bool(getattr(positional, "rotary", False))
        if rotary and r % 2:
            raise KindError(f"rotary positions rotate channel pairs: qk_rope_head_dim must be even, got {r}",
                            "qk_rope_head_dim")
        if cfg.get("yarn_factor", 1.0) > 1 and not rotary:
            raise KindError(f"YaRN scales rotary frequencies: it needs rotary positions, got positional "
                            f"{getattr(positional, 'name', positional)!r}", "yarn_factor")

    def _linear(self, model: Any, cfg: dict[str, Any]) -> tuple[int, int, int]:
        """(weights of the projections applied to each query token, of kv_b_proj per token, bias count)."""
        D, H = model.hidden_size, model.n_heads
        qr, c, n, r, dv = mla_sizes(model, cfg)
        q = D * qr + qr * H * (n + r) if qr else D * H * (n + r)
        w = q + D * (c + r) + H * dv * D
        in_bias = model.bias or model.qkv_bias
        bias = ((qr or H * (n + r)) + c + r if in_bias else 0) + (D if model.bias else 0)
        return w, c * H * (n + dv), bias

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        H = model.n_heads
        _, _, n, r, dv = mla_sizes(model, cfg)
        w, up, _ = self._linear(model, cfg)
        lin, per_pair = 2 * b * s * (w + up), 2 * b * H * (n + r + dv)
        return lin + per_pair * s * s, lin + per_pair * self.pairs(cfg, s, causal=causal)

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        qr, c, _, _, _ = mla_sizes(model, cfg)
        w, up, bias = self._linear(model, cfg)
        return w + up + bias + qr + c  # + the gains of q_a_layernorm and kv_a_layernorm

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        # KVCache: c_kv (B, 1, T, c) as k and the rotated shared rope key (B, 1, T, r) as v
        _, c, _, r, _ = mla_sizes(model, cfg)
        return CacheLayout((c + r) * dtype_bytes)

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        # q_a output and its norm (low-rank q), the kv_a output and the normed latent, the kv_b output,
        # q and k of n + r per head, the attention output; without a fused kernel the softmax in and out
        H = model.n_heads
        qr, c, n, r, dv = mla_sizes(model, cfg)
        e, drop = 2 * qr + (c + r) + c + H * (n + dv) + 2 * H * (n + r) + H * dv, 0.0
        if not fused:
            e += 2 * H * s
            drop += H * s
        return e, drop


_MLA_SIZE = "(null = derived from head_dim, see the kind's docstring)"
_MLA = {
    "q_lora_rank": P("int", 0, "rank of the low-rank query (q_a_proj -> RMSNorm -> q_b_proj); 0 / null = a plain "
                     "q projection (DeepSeek-V2-Lite)", 0, 1 << 16, nullable=True),
    "kv_lora_rank": P("int", None, f"rank c of the compressed KV latent (cached) {_MLA_SIZE}", 1, 1 << 16, nullable=True),
    "qk_nope_head_dim": P("int", None, f"per-head query/key channels without rotary {_MLA_SIZE}", 1, 4096, nullable=True),
    "qk_rope_head_dim": P("int", None, f"rotary channels of q per head and of the shared key (cached) {_MLA_SIZE}",
                          1, 4096, nullable=True),
    "v_head_dim": P("int", None, f"per-head value channels {_MLA_SIZE}", 1, 4096, nullable=True),
    "rope_interleave": P("bool", True, "rotary on interleaved channel pairs (2i, 2i+1), DeepSeek's layout; "
                         "false: half-split pairs (i, i + r/2)"),
    "latent_norm_eps": P("float", None, "epsilon of the q / kv latent RMSNorms (null = the model's norm_eps; "
                         "DeepSeek uses 1e-6)", 0.0, 1.0, nullable=True),
    "yarn_factor": P("float", 1.0, "YaRN context-extension factor of the rotary frequencies (1 = plain rotary)",
                     1.0, 1e4),
    "yarn_original_max": P("int", None, "YaRN: the pre-training context length (null = max_seq_len)", 1, 1 << 24,
                           nullable=True),
    "yarn_beta_fast": P("float", 32.0, "YaRN: rotations bounding the extrapolated (kept) frequencies", 0.0, 1e4),
    "yarn_beta_slow": P("float", 1.0, "YaRN: rotations bounding the interpolated frequencies", 0.0, 1e4),
    "yarn_mscale": P("float", 0.0, "YaRN mscale of the cos/sin factor (0 = unset)", 0.0, 100.0),
    "yarn_mscale_all_dim": P("float", 0.0, "YaRN mscale_all_dim: cos/sin divisor and the squared softmax-scale "
                             "factor (0 = unset)", 0.0, 100.0),
    "backend": P("choice", "auto", "SDPA kernel", choices=BACKENDS),
}


# ---------------------------------------------------------------------------
# Token-parameter attention


@dataclass(frozen=True)
class TokenParamKind(AttentionKind):
    cacheable: bool = True  # position-wise: its cache only counts tokens
    uses_positions: bool = False

    def _n(self, cfg: dict[str, Any]) -> int:
        return int(cfg.get("num_param_tokens", 64))

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        # q_proj D -> H Dh; scores q K_h^T against n parameter tokens; Theta(A) V_h; o_proj
        D, H, _, Dh = dims(model)
        n = self._n(cfg)
        f = 2 * b * s * D * H * Dh + 4 * b * s * H * n * Dh + 2 * b * s * H * Dh * D
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        D, H, _, Dh = dims(model)
        q_bias = H * Dh if (model.bias or model.qkv_bias) else 0
        return D * H * Dh + q_bias + 2 * H * self._n(cfg) * Dh + H * Dh * D + (D if model.bias else 0)

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        return CacheLayout()  # a StateCache that only counts tokens

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        _, H, _, Dh = dims(model)
        return 2 * H * Dh + H * self._n(cfg), 0.0


# ---------------------------------------------------------------------------
# Spectral and frequency mixers


@dataclass(frozen=True)
class SpectralKind(AttentionKind):
    cacheable: bool = True  # the causal variant decodes with a cache of its past inputs
    uses_positions: bool = False

    def max_positions(self, model: Any, cfg: dict[str, Any]) -> tuple[int, str] | None:
        # one filter per position of L = max_seq_len (backend/nn/spectral.py refuses longer inputs)
        return model.max_seq_len, f"{self.name}: a filter of max_seq_len = {model.max_seq_len} positions"

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        if model.max_seq_len > 65536:
            raise KindError(f"spectral mixing keeps a filter per position; max_seq_len must be <= 65536, got {model.max_seq_len}")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        """v_proj, per-head FFT filtering along S, optional gate, o_proj.

        Bidirectional: rfft of v zero-padded to L, pointwise filter, irfft at L
        (B*H*Dh real transforms each way). Causal: n = next_pow2(2S); rfft of v
        and irfft, plus the rfft of the H time-domain kernels (weights only:
        once per call, whatever the batch). Adaptive gate: Linear(D, r) then
        Linear(r, H Dh), r = max(8, D // 4).
        """
        D, H, _, Dh = dims(model)
        f = 2 * b * s * D * H * Dh * 2
        if causal:
            n = next_pow2(2 * s)
            f += 2 * fft_flops(n, b * H * Dh, real=True) + fft_flops(n, H, real=True)
        else:
            f += 2 * fft_flops(model.max_seq_len, b * H * Dh, real=True)
        if cfg.get("adaptive"):
            r = max(8, D // 4)
            f += 2 * b * s * D * r + 2 * b * s * r * H * Dh
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        # causal: time-domain taps (H, L); bidirectional: a frequency response (H, L//2+1, re/im)
        D, H, _, Dh = dims(model)
        L = model.max_seq_len
        n = 2 * D * H * Dh + ((H * Dh + D) if model.bias else 0)
        n += H * L if causal else H * (L // 2 + 1) * 2
        if cfg.get("adaptive"):
            r = max(8, D // 4)
            n += D * r + r + r * H * Dh + H * Dh
        return n

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        # StateCache holding every past v_proj output (B, T, H, Dh) for the causal convolution
        _, H, _, Dh = dims(model)
        return CacheLayout(H * Dh * dtype_bytes)

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        return 4 * model.hidden_size, 0.0  # spectrum in and out (complex = 2 reals)


def frequency_modes(seq_len: int, modes: int, method: str, seed: int) -> list[int]:
    """FEDformer's mode choice (as ``FrequencyAttention`` documents it), for length L = max_seq_len."""
    modes = max(1, min(modes, seq_len // 2))
    if method == "random":
        return sorted(random.Random(seed).sample(range(seq_len // 2), modes))
    return list(range(modes))


@dataclass(frozen=True)
class FrequencyKind(AttentionKind):
    causal: bool = False
    uses_positions: bool = False

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        L = model.max_seq_len
        if cfg["modes"] > L // 2 + 1:
            raise KindError(f"at most max_seq_len//2+1 = {L // 2 + 1} modes exist, got {cfg['modes']}", "modes")
        if cfg["mode_select"] == "random" and L < 2:
            raise KindError(f"random mode selection draws from max_seq_len//2 = {L // 2} modes; needs max_seq_len >= 2, "
                            f"got {L}", "mode_select")

    def _modes(self, model: Any, cfg: dict[str, Any]) -> list[int]:
        return frequency_modes(model.max_seq_len, cfg.get("modes", 32), cfg.get("mode_select", "lowest"), cfg.get("seed", 0))

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        """q_proj, rfft over S, per kept mode a complex (Dh x Dh) mix per head, irfft, o_proj.

        Kept modes at length S: those chosen for L with index < S//2 + 1.
        """
        D, H, _, Dh = dims(model)
        m = sum(1 for i in self._modes(model, cfg) if i < s // 2 + 1)
        f = 2 * b * s * D * H * Dh * 2 + 2 * fft_flops(s, b * H * Dh, real=True) + 2 * 4 * b * H * m * Dh * Dh
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        D, H, _, Dh = dims(model)
        q_bias = H * Dh if (model.bias or model.qkv_bias) else 0
        return D * H * Dh + q_bias + H * Dh * Dh * len(self._modes(model, cfg)) * 2 + H * Dh * D + (D if model.bias else 0)

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        return 4 * model.hidden_size, 0.0


# ---------------------------------------------------------------------------
# Performer FAVOR+

# CausalPerformerAttention.chunk: the causal Performer evaluates its prefix sums
# in chunks of this many tokens (a test asserts it equals the module's).
CAUSAL_LINEAR_CHUNK = 64


@dataclass(frozen=True)
class PerformerKind(AttentionKind):
    prefix_sums: bool = False  # causal variant: running prefix sums, evaluated in chunks

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        if getattr(positional, "score_bias", False):
            raise KindError(f"{self.name!r} (Performer) cannot apply positional {positional.name!r} (it has no score "
                            "matrix to bias): use rotary or no positions, or a softmax kind")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        _, H, KV, Dh = dims(model)
        m = int(cfg.get("nb_features", 256))
        # random features: q (H heads) and k (KV heads, before repeat_kv) times the (m, Dh) projection
        f = qkvo_flops(model, b, s) + 2 * b * s * Dh * m * (H + KV)
        if not self.prefix_sums:
            # kv = phi(K)^T V, num = phi(Q) kv (m x Dh per token and head), den = phi(Q) z
            f += 2 * b * H * s * m * Dh * 2 + 2 * b * H * s * m
            return f, f
        # chunks of c tokens; per chunk and head: a = q_c k_c^T (c*c*m), q_c S_run (c*m*Dh),
        # a v_c (c*c*Dh), q_c . z_run (c*m), S_run += k_c^T v_c (m*c*Dh); the c x c products
        # are computed in full and then masked (tril)
        c = CAUSAL_LINEAR_CHUNK
        sq = sum(min(c, s - i) ** 2 for i in range(0, s, c))
        f += 2 * b * H * (s * m * (2 * Dh + 1) + sq * (m + Dh))
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        return qkvo_params(model)  # the projection is a buffer

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        if not self.cacheable:
            return CacheLayout()
        # StateCache: S (B, H, m, Dh) and z (B, H, m), per sequence; features run in >= float32
        _, H, _, Dh = dims(model)
        m = int(cfg.get("nb_features", 256))
        return CacheLayout(state_bytes=H * m * (Dh + 1) * max(dtype_bytes, 4))

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        _, H, KV, Dh = dims(model)
        m = int(cfg.get("nb_features", 256))
        return H * Dh + 2 * KV * Dh + 2 * H * m + H * Dh, 0.0


_PERFORMER = {
    "nb_features": P("int", 256, "number of random features", 1, 1 << 16),
    "redraw_interval": P("int", 0, "redraw the projection every N training steps (0 = never)", 0, 1 << 30),
    "fix_projection": P("bool", True, "keep the projection fixed (no redraw even if an interval is set)"),
}

KINDS: list[AttentionKind] = [
    SoftmaxKind(
        "self_sdpa", "attention", "backend.nn.attention:SelfSDPA",
        "Multi-head softmax attention on F.scaled_dot_product_attention (MHA/GQA/MQA via n_kv_heads).",
        "Vaswani et al. 2017, arXiv 1706.03762; GQA: Ainslie et al. 2023, arXiv 2305.13245",
        {
            "window": P("int", 0, "sliding-window size in tokens (0 = full attention)", 0, 1 << 20),
            "backend": P("choice", "auto", "SDPA kernel: auto, math, flash or efficient (xformers-style)", choices=BACKENDS),
            "qk_norm": P("bool", False, "RMSNorm over each head of q and k before rotary (Qwen3, Gemma-3)"),
            "sinks": P("bool", False, "attention sinks: a learned logit per head in the softmax denominator (gpt-oss)"),
            "scale": _SCALE,
            "output_gate": P("bool", False, "sigmoid gate on the attention output from a doubled q_proj (Qwen3-Next)"),
            # issue 12 decoders: OLMo 2's whole-projection QK-norm, Pythia's partial rotary, Gemma 3's local theta
            "qk_norm_over": P("choice", "head", "qk_norm over each head's Dh channels (Qwen3) or the whole q / k "
                              "projection before the head split (OLMo 2)", choices=("head", "projection")),
            "rotary_fraction": P("float", 1.0, "rotary on the first int(head_dim * f) channels of each head "
                                 "(GPT-NeoX rotary_pct)", 1e-3, 1.0),
            "rope_theta": P("float", None, "this layer's rotary base (null = the model's rope_theta; Gemma 3 "
                            "local layers)", 1e-6, 1e12, nullable=True),
            "rotary_interleaved": P("bool", False, "rotary pairs adjacent channels (2i, 2i+1) (GPT-J's "
                                    "rotate_every_two) instead of the half-split pairs (i, i + r/2) of GPT-NeoX / Llama"),
        },
        label="softmax (SDPA)", abbrev="SDPA", color="#4C78A8", aliases=("SDPA",), roles=("default", "full"),
        takes_score_bias=True,
    ),
    FlexKind(
        "self_flex", "attention", "backend.nn.flex:SelfFlex",
        "FlexAttention with score/mask mods: sliding window, ALiBi, soft-capping, prefix-LM.",
        "Dong et al. 2024, arXiv 2412.05496 (FlexAttention); soft-capping: Gemma 2, arXiv 2408.00118",
        {
            "window": P("int", 0, "sliding-window size in tokens (0 = full)", 0, 1 << 20),
            "softcap": P("float", 0.0, "tanh soft-cap on attention logits (0 = off)", 0.0, 1e4),
            "alibi": P("bool", False, "add ALiBi slopes as a score mod in this layer"),
            "prefix_len": P("int", 0, "prefix-LM: the first N tokens attend bidirectionally", 0, 1 << 20),
        },
        label="FlexAttention", abbrev="FLEX", color="#72B7B2", aliases=("FLEX",), roles=("softcap",),
    ),
    DiffKind(
        "diff_attn", "attention", "backend.nn.diff_attn:DiffAttention",
        "Differential attention: difference of two softmax maps with learnable lambda and per-head RMSNorm.",
        "Ye et al. 2024, Differential Transformer, arXiv 2410.05258",
        {
            "lambda_init": P("float", None, "fixed lambda_init (null = 0.8 - 0.6*exp(-0.3*depth))", 0.0, 1.0, nullable=True),
        },
        label="differential", abbrev="DIFF", color="#B279A2",
    ),
    TokenParamKind(
        "token_param", "attention", "backend.nn.token_param:TokenParamAttention",
        "Pattention: token queries attend to learnable key/value parameter tokens (no token mixing).",
        "Wang et al. 2024, Tokenformer, arXiv 2410.23168",
        {
            "num_param_tokens": P("int", 64, "learnable key/value parameter tokens per head", 1, 1 << 16),
            "normalization": P("choice", "gelu_l2", "score normalisation: Tokenformer's L2+GeLU or softmax", choices=("gelu_l2", "softmax")),
        },
        label="token-parameter", abbrev="TOKP", color="#EECA3B",
    ),
    SpectralKind(
        "spectral", "attention", "backend.nn.spectral:SpectralMixer",
        "FFT token mixing with a learnable per-head frequency filter (O(n log n)); causal variant is a zero-padded FFT convolution.",
        "Lee-Thorp et al. 2021, FNet, arXiv 2105.03824; Rao et al. 2021, GFNet, arXiv 2107.00645",
        {"adaptive": P("bool", False, "input-adaptive modulation of the filter (small MLP on the input)")},
        label="spectral (FFT)", abbrev="SPEC", color="#F58518", roles=("cheap",),
    ),
    FrequencyKind(
        "frequency", "attention", "backend.nn.frequency:FrequencyAttention",
        "Fourier-enhanced block for time series: mixes a selected set of frequency modes per head.",
        "Zhou et al. 2022, FEDformer, arXiv 2201.12740",
        {
            "modes": P("int", 32, "number of frequency modes kept", 1, 1 << 16),
            "mode_select": P("choice", "lowest", "which modes: lowest or random (seeded)", choices=("lowest", "random")),
            "seed": P("int", 0, "seed for random mode selection", 0, 2**31 - 1),
        },
        label="frequency (FEDformer)", abbrev="FREQ", color="#E45756",
    ),
    MlaKind(
        "mla", "attention", "backend.nn.mla:MultiHeadLatentAttention",
        "Multi-head Latent Attention: low-rank (optional) q, a compressed KV latent plus one shared rope key, "
        "decoupled rotary; caches the latent (kv_lora_rank + qk_rope_head_dim values per token).",
        "DeepSeek-AI 2024, DeepSeek-V2, arXiv 2405.04434; DeepSeek-V3, arXiv 2412.19437; YaRN: Peng et al. 2023, "
        "arXiv 2309.00071",
        dict(_MLA), label="latent attention (MLA)", abbrev="MLA", color="#5D69B1", roles=("latent",),
    ),
    PerformerKind(
        "linear", "attention", "backend.nn.performer:PerformerAttention",
        "Performer FAVOR+ linear attention with positive orthogonal random features (bidirectional).",
        "Choromanski et al. 2020, arXiv 2009.14794",
        dict(_PERFORMER), label="Performer", abbrev="LIN", color="#54A24B", causal=False,
        causal_alternative="causal_linear",
    ),
    PerformerKind(
        "causal_linear", "attention", "backend.nn.performer:CausalPerformerAttention",
        "Causal Performer FAVOR+ via prefix sums; caches its running state for decoding.",
        "Choromanski et al. 2020, arXiv 2009.14794",
        dict(_PERFORMER), label="causal Performer", abbrev="CLIN", color="#88D27A", cacheable=True, prefix_sums=True,
    ),
]

# Cross-attention (decoder of encoder_decoder models): a softmax attention over
# the encoder output. Not a self-attention kind, so it is kept apart.
CROSS = CrossKind(
    "cross", "attention", "backend.nn.attention:CrossAttention",
    "Decoder-to-encoder softmax attention (keys/values from the encoder output, cached once).",
    "Vaswani et al. 2017, arXiv 1706.03762",
    {"backend": P("choice", "auto", "SDPA kernel", choices=BACKENDS), "scale": _SCALE},
    label="cross-attention", abbrev="CROSS", color="#9D755D", uses_positions=False,
)
