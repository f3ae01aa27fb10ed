"""Declarations of the state-space token mixers (the contract: ``base``): ``mamba2`` and ``mamba``.

``mamba2``: Mamba-2 / SSD (Dao & Gu 2024, arXiv 2405.21060), module
``backend.nn.mamba2``. Notation: D hidden, E = expand * D, P head_dim,
H = E / P heads, G n_groups, N d_state, K d_conv, Q = min(chunk_size, S),
c = ceil(S / Q) chunks.

FLOP convention (DESIGN.md section 5): 2 per multiply-accumulate of the
projections, the depthwise convolution and the SSD matmuls; element-wise work
(softplus, exp of the decays, the carry between chunks, gates, the gated
RMSNorm, the D skip) counts zero, as norms and softmax do elsewhere. The
chunked form computes each Q x Q intra-chunk block in full and masks it, so
there is no separate causal-aware count.

``mamba``: Mamba-1 selective scan (Gu & Dao 2023, arXiv 2312.00752), module
``backend.nn.mamba``. Notation: D hidden, E = expand * D, N d_state, K d_conv,
R dt_rank (0 = ceil(D / 16)). FLOP convention as above: the MACs of in_proj,
the depthwise conv, x_proj, dt_proj, the read-out h_t . C_t (E N per token)
and out_proj. The recurrence itself (decay exp(dt A), dt x B, h = a h + u:
about 3 E N element-wise operations per token, or 2 E N log2(Q) more in the
chunked form's associative scan), the gate, the D skip and the optional
dt/B/C RMSNorms are element-wise and count zero, as norms and softmax do
elsewhere. Megatron-LM has no Mamba-1 formula; its Mamba-2 scan term is 7 E N
per token.

``gated_deltanet``: Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, arXiv
2412.06464) as in Qwen3-Next, module ``backend.nn.gated_deltanet``. Notation:
Hk key heads of dk, Hv value heads of dv, Kd = Hk dk, Vd = Hv dv, conv_dim =
2 Kd + Vd, K conv_kernel, Q = min(chunk_size, S), c = ceil(S / Q). Same FLOP
convention: the projections, the depthwise conv and the chunkwise matmuls
count 2 per multiply-accumulate; the two unit-triangular solves of the UT
transform count 2 per multiply-accumulate of forward substitution
(Q (Q - 1) / 2 per right-hand column, ``backend.analysis.counting``);
L2 norms, gates, decays, the gated RMSNorm and the cumulative sums count
zero. Each Q x Q block is computed in full and masked: no separate
causal-aware count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .base import AttentionKind, CacheLayout, KindError, ParamInfo as P


@dataclass(frozen=True)
class Mamba2Kind(AttentionKind):
    causal: bool = True
    bidirectional: bool = False
    cacheable: bool = True
    uses_positions: bool = False
    softmax: bool = False

    @staticmethod
    def sizes(model: Any, cfg: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
        """(E, H, P, G, N, K) of a resolved layer."""
        E = int(cfg["expand"]) * model.hidden_size
        Ph = int(cfg["head_dim"])
        return E, E // Ph, Ph, int(cfg["n_groups"]), int(cfg["d_state"]), int(cfg["d_conv"])

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        E, H, Ph, G, _, _ = self.sizes(model, cfg)
        if E % Ph:
            raise KindError(f"expand * hidden_size = {E} must be a multiple of head_dim, got {Ph}", "head_dim")
        if H % G:
            raise KindError(f"the {H} heads (expand * hidden_size / head_dim) must split evenly into n_groups, "
                            f"got {G}", "n_groups")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        """in_proj, the depthwise conv over [x | B | C], the four SSD matmuls per chunk, out_proj."""
        D = model.hidden_size
        E, H, Ph, G, N, K = self.sizes(model, cfg)
        conv_dim = E + 2 * G * N
        lin = 2 * b * s * D * (E + conv_dim + H) + 2 * b * s * E * D
        conv = 2 * b * s * conv_dim * K
        Q = max(1, min(int(cfg["chunk_size"]), s))
        c = -(-s // Q)
        # C B^T (G Q^2 N), (C B^T o L)(dt x) (H Q^2 P), chunk state (H Q P N), carried state read by C (H Q N P)
        ssd = 2 * b * c * Q * (G * Q * N + H * Q * Ph + 2 * H * Ph * N)
        f = float(lin + conv + ssd)
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        # in_proj (+ bias), conv weight (conv_dim, 1, K) + bias, dt_bias / A_log / D per head, norm gain, out_proj
        D = model.hidden_size
        E, H, _, G, N, K = self.sizes(model, cfg)
        conv_dim = E + 2 * G * N
        d_in = E + conv_dim + H
        n = D * d_in + conv_dim * K + conv_dim + 3 * H + E + E * D
        if model.bias:
            n += d_in + D
        return n

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        # StateCache: conv (B, conv_dim, K - 1) in the model dtype, ssm (B, H, P, N) in >= float32
        E, H, Ph, G, N, K = self.sizes(model, cfg)
        conv_dim = E + 2 * G * N
        return CacheLayout(state_bytes=conv_dim * (K - 1) * dtype_bytes + H * Ph * N * max(dtype_bytes, 4))

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        # per token: in_proj output, conv output, the scan output, the gate product (norm input), out_proj input,
        # plus this token's rows of the Q x Q intra-chunk blocks (C B^T per group, decays per head)
        E, H, _, G, N, _ = self.sizes(model, cfg)
        conv_dim = E + 2 * G * N
        Q = max(1, min(int(cfg["chunk_size"]), s))
        return float((E + conv_dim + H) + conv_dim + 3 * E + (G + H) * Q), 0.0


@dataclass(frozen=True)
class MambaKind(AttentionKind):
    """Mamba-1 (``backend.nn.mamba``): per-channel diagonal state (E x N), no heads or groups."""

    causal: bool = True
    bidirectional: bool = False
    cacheable: bool = True
    uses_positions: bool = False
    softmax: bool = False

    @staticmethod
    def sizes(model: Any, cfg: dict[str, Any]) -> tuple[int, int, int, int]:
        """(E, N, K, R) of a resolved layer."""
        D = model.hidden_size
        return int(cfg["expand"]) * D, int(cfg["d_state"]), int(cfg["d_conv"]), int(cfg["dt_rank"]) or -(-D // 16)

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        """in_proj, the depthwise conv, x_proj, dt_proj, the read-out h . C, out_proj (module docstring)."""
        D = model.hidden_size
        E, N, K, R = self.sizes(model, cfg)
        per_token = D * 2 * E + E * K + E * (R + 2 * N) + R * E + E * N + E * D
        f = float(2 * b * s * per_token)
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        # in_proj, conv weight (E, 1, K) + bias, x_proj, dt_proj (+ bias), A_log (E, N), D, out_proj, [dt/B/C norms]
        D = model.hidden_size
        E, N, K, R = self.sizes(model, cfg)
        n = D * 2 * E + E * K + E + E * (R + 2 * N) + R * E + E + E * N + E + E * D
        if model.bias:
            n += 2 * E + D
        if cfg["bc_norm"]:
            n += R + 2 * N
        return n

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        # StateCache: conv (B, E, K - 1) in the model dtype, ssm (B, E, N) in >= float32
        E, N, K, _ = self.sizes(model, cfg)
        return CacheLayout(state_bytes=E * (K - 1) * dtype_bytes + E * N * max(dtype_bytes, 4))

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        # per token: in_proj output (2E), conv input and output (2E), x_proj input (E) and output (R + 2N),
        # dt_proj output and dt (2E), the gate inputs (2E), out_proj input (E); the scan keeps its (E, N)
        # decays and partial sums at each of the ceil(log2 Q) + 1 passes of a chunk (2 E N each)
        E, N, _, R = self.sizes(model, cfg)
        Q = max(1, min(int(cfg["chunk_size"]), s))
        passes = math.ceil(math.log2(Q)) + 1 if Q > 1 else 1
        return float(10 * E + R + 2 * N + 2 * E * N * passes), 0.0


@dataclass(frozen=True)
class GatedDeltaNetKind(Mamba2Kind):
    """Causal-only, cacheable, position-free like Mamba-2; its own sizes and counts."""

    @staticmethod
    def gdn_sizes(cfg: dict[str, Any]) -> tuple[int, int, int, int, int]:
        """(Hk, Hv, dk, dv, K) of a resolved layer."""
        return (int(cfg["num_key_heads"]), int(cfg["num_value_heads"]), int(cfg["key_head_dim"]),
                int(cfg["value_head_dim"]), int(cfg["conv_kernel"]))

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        Hk, Hv, _, _, _ = self.gdn_sizes(cfg)
        if Hv % Hk:
            raise KindError(f"num_value_heads must be a multiple of num_key_heads ({Hk}), got {Hv}", "num_value_heads")

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        """in_proj_qkvz + in_proj_ba, the depthwise conv over [q | k | v], the chunkwise rule, out_proj."""
        D = model.hidden_size
        Hk, Hv, dk, dv, K = self.gdn_sizes(cfg)
        Kd, Vd = Hk * dk, Hv * dv
        lin = 2 * b * s * D * (2 * Kd + 2 * Vd + 2 * Hv) + 2 * b * s * Vd * D
        conv = 2 * b * s * (2 * Kd + Vd) * K
        Q = max(1, min(int(cfg["chunk_size"]), s))
        c = -(-s // Q)
        # per chunk and value head: beta k k^T, q k^T (Q^2 dk each), q k^T-block times V' (Q^2 dv),
        # W S0, q S0, k^T V' (Q dk dv each); the two unit-triangular solves (Q (Q - 1) / 2 (dv + dk) MACs)
        rule = b * c * Hv * (2 * (2 * Q * Q * dk + Q * Q * dv + 3 * Q * dk * dv) + Q * (Q - 1) * (dv + dk))
        f = float(lin + conv + rule)
        return f, f

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        # in_proj_qkvz, in_proj_ba, conv weight (conv_dim, 1, K) without bias, dt_bias / A_log per value head,
        # the norm gain (dv, shared by the heads), out_proj
        D = model.hidden_size
        Hk, Hv, dk, dv, K = self.gdn_sizes(cfg)
        Kd, Vd = Hk * dk, Hv * dv
        d_in = 2 * Kd + 2 * Vd + 2 * Hv
        n = D * d_in + (2 * Kd + Vd) * K + 2 * Hv + dv + Vd * D
        if model.bias:
            n += d_in + D
        return n

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        # StateCache: conv (B, conv_dim, K - 1) in the model dtype, state (B, Hv, dk, dv) in >= float32
        Hk, Hv, dk, dv, K = self.gdn_sizes(cfg)
        return CacheLayout(state_bytes=(2 * Hk * dk + Hv * dv) * (K - 1) * dtype_bytes + Hv * dk * dv * max(dtype_bytes, 4))

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        # per token: the projections' outputs, the conv output, normalised q / k (per value head) and v, the
        # rule's output, the norm's input and gate product, plus this token's rows of the Q x Q blocks (A, q k^T)
        Hk, Hv, dk, dv, _ = self.gdn_sizes(cfg)
        Kd, Vd = Hk * dk, Hv * dv
        Q = max(1, min(int(cfg["chunk_size"]), s))
        return float((2 * Kd + 2 * Vd + 2 * Hv) + (2 * Kd + Vd) + (2 * Hv * dk + Vd) + 3 * Vd + 2 * Hv * Q), 0.0


KINDS: list[AttentionKind] = [
    Mamba2Kind(
        "mamba2", "attention", "backend.nn.mamba2:Mamba2",
        "Mamba-2 state-space mixer (SSD): input projection, causal depthwise conv, selective scan with scalar "
        "per-head decay in chunked form, gated RMSNorm; decodes with a constant state.",
        "Dao & Gu 2024, Transformers are SSMs (Mamba-2), arXiv 2405.21060",
        {
            "d_state": P("int", 128, "SSM state size N per head", 1, 4096),
            "d_conv": P("int", 4, "depthwise causal convolution kernel size", 2, 64),
            "expand": P("int", 2, "inner width = expand * hidden_size", 1, 16),
            "head_dim": P("int", 64, "channels per SSM head (heads = inner width / head_dim)", 1, 1 << 16),
            "n_groups": P("int", 1, "groups sharing B and C (like GQA's kv heads)", 1, 1 << 12),
            "chunk_size": P("int", 256, "SSD chunk length of the chunked (training) form", 1, 1 << 16),
        },
        label="Mamba-2 (SSD)", abbrev="MAMBA2", color="#D67236", aliases=("MAMBA2",),
    ),
    MambaKind(
        "mamba", "attention", "backend.nn.mamba:Mamba",
        "Mamba selective state-space mixer: input projection, causal depthwise conv, input-dependent dt / B / C, "
        "a diagonal decay per channel and state entry, chunked parallel scan; decodes with a constant state.",
        "Gu & Dao 2023, Mamba: Linear-Time Sequence Modeling with Selective State Spaces, arXiv 2312.00752",
        {
            "d_state": P("int", 16, "SSM state size N per channel", 1, 4096),
            "d_conv": P("int", 4, "depthwise causal convolution kernel size", 2, 64),
            "expand": P("int", 2, "inner width = expand * hidden_size", 1, 16),
            "dt_rank": P("int", 0, "rank of the dt projection (0 = ceil(hidden_size / 16))", 0, 1 << 16),
            "bc_norm": P("bool", False, "RMSNorm on dt, B and C before the scan (Jamba, arXiv 2403.19887)"),
            "chunk_size": P("int", 64, "chunk length of the chunked (training) scan", 1, 1 << 16),
        },
        label="Mamba (selective scan)", abbrev="MAMBA", color="#B5542B", aliases=("MAMBA",),
        roles=("selective_scan",),
    ),
    GatedDeltaNetKind(
        "gated_deltanet", "attention", "backend.nn.gated_deltanet:GatedDeltaNet",
        "Gated DeltaNet (Qwen3-Next's linear attention): causal depthwise conv over q/k/v, L2-normalised q/k, "
        "the gated delta rule in chunkwise-parallel (UT-transform) form, gated RMSNorm; decodes with a constant state.",
        "Yang, Kautz & Hatamizadeh 2024, Gated Delta Networks, arXiv 2412.06464",
        {
            "num_key_heads": P("int", 16, "q/k heads (Qwen3-Next linear_num_key_heads)", 1, 4096),
            "num_value_heads": P("int", 32, "value heads; a multiple of num_key_heads, which they share", 1, 4096),
            "key_head_dim": P("int", 128, "q/k channels per head (the state is key_head_dim x value_head_dim)", 1, 4096),
            "value_head_dim": P("int", 128, "value channels per head", 1, 4096),
            "conv_kernel": P("int", 4, "depthwise causal convolution kernel size over q/k/v", 1, 64),
            "chunk_size": P("int", 64, "chunk length of the chunkwise-parallel (training) form", 1, 1 << 16),
        },
        label="Gated DeltaNet", abbrev="GDN", color="#8E6C8A", aliases=("GATED_DELTANET", "GDN"), roles=("gated_delta",),
    ),
]
