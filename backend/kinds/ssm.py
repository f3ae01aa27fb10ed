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
    ),
]
