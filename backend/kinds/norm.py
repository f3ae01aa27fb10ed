"""Declarations of the built-in norm and positional kinds (the contract: ``base``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import KindError, NormKind, ParamInfo, PositionalKind


@dataclass(frozen=True)
class LayerNormKind(NormKind):
    def param_count(self, model: Any) -> int:
        # gain, and a shift when the model has biases (or `norm_bias` says so for the norms alone)
        shift = model.bias if getattr(model, "norm_bias", None) is None else model.norm_bias
        return model.hidden_size * (2 if shift else 1)


@dataclass(frozen=True)
class AdaptiveNormKind(NormKind):
    def param_count(self, model: Any) -> int:
        D = model.hidden_size
        return 2 * D * D + 2 * D  # Linear(D, 2D) modulation

    def flops(self, model: Any, b: int, s: int) -> float:
        D = model.hidden_size
        return 2 * b * s * D * 2 * D


NORMS: list[NormKind] = [
    LayerNormKind("layer", "norm", "backend.nn.norms:LayerNorm", "LayerNorm.", "Ba et al. 2016, arXiv 1607.06450",
                  label="LayerNorm", abbrev="LN", color="#A0A0A0", roles=("layer_norm",)),
    NormKind("rms", "norm", "backend.nn.norms:RMSNorm", "RMSNorm.", "Zhang & Sennrich 2019, arXiv 1910.07467",
             label="RMSNorm", abbrev="RMS", color="#D4D4D4", roles=("default", "rms_norm")),
    NormKind("scale", "norm", "backend.nn.norms:ScaleNorm", "ScaleNorm: one learned scale over the l2-normalised vector.",
             "Nguyen & Salazar 2019, arXiv 1910.05895", label="ScaleNorm", abbrev="Scale", color="#F1CE63", weight_per_dim=0, fixed_params=1),
    NormKind("rezero", "norm", "backend.nn.norms:ReZero",
             "No normalisation; each residual branch is scaled by a learned alpha initialised at 0.",
             "Bachlechner et al. 2020, arXiv 2003.04887", label="ReZero", abbrev="ReZero", color="#B6992D",
             weight_per_dim=0, fixed_params=1, normalizes=False),
    AdaptiveNormKind("adaptive", "norm", "backend.nn.norms:AdaptiveNorm",
                     "AdaLN-style: LayerNorm whose gain and shift are computed from the token itself.",
                     "Peebles & Xie 2022, DiT, arXiv 2212.09748", label="adaptive LN", abbrev="AdaLN", color="#79706E"),
]


POSITIONALS: list[PositionalKind] = [
    PositionalKind("rope", "positional", "backend.nn.positional:RoPE", "Rotary embeddings on q/k.", "Su et al. 2021, arXiv 2104.09864",
               label="rotary (RoPE)", roles=("default", "rotary"), rotary=True),
    PositionalKind("sinusoidal", "positional", "backend.nn.positional:SinusoidalPositions", "Fixed sinusoidal table added to the input.",
                   "Vaswani et al. 2017", label="sinusoidal"),
    PositionalKind("learned", "positional", "backend.nn.positional:LearnedPositions", "Learned absolute position table.",
                   "Radford et al. 2019 (GPT-2)", label="learned table", roles=("learned_table",), table=True),
    PositionalKind("alibi", "positional", "backend.nn.positional:ALiBi", "Linear biases on attention logits.",
                   "Press et al. 2021, arXiv 2108.12409", label="ALiBi", score_bias=True,
                   roles=("linear_bias",)),
    PositionalKind("none", "positional", "backend.nn.positional:NoPositions", "No positional information.",
                   "Kazemnejad et al. 2023, arXiv 2305.19466", label="none (NoPE)"),
]


# ---------------------------------------------------------------------------
# T5's bucketed relative position bias (issue 12: encoder-decoder models)


@dataclass(frozen=True)
class BucketBiasKind(PositionalKind):
    """A (num_buckets, H) table per positional module: one for the model, or one per stack."""

    def param_count(self, model: Any) -> int:
        cfg = self.resolve_params(getattr(model, "positional_params", None), ["positional_params"])
        per = cfg["num_buckets"] * model.n_heads
        return per * (len(model.stacks()) if getattr(model, "positional_per_stack", False) else 1)

    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        # the log-spaced buckets start at num_buckets // 4 (bidirectional) or // 2 (causal) and must end beyond
        exact = cfg["num_buckets"] // 2
        if cfg["max_distance"] <= exact:
            raise KindError(f"must be > num_buckets // 2 = {exact} (the log-spaced buckets end there), "
                            f"got {cfg['max_distance']}", "max_distance")


POSITIONALS.append(BucketBiasKind(
    "t5_bias", "positional", "backend.nn.positional:RelativePositionBias",
    "Bucketed relative position bias on attention logits: one learned scalar per (bucket, head), "
    "log-spaced buckets, shared by every layer of a stack; cross-attention gets none.",
    "Raffel et al. 2020, T5, arXiv 1910.10683, section 2.1",
    {"num_buckets": ParamInfo("int", 32, "relative-position buckets (T5: 32)", 4, 1024),
     "max_distance": ParamInfo("int", 128, "distance from which all positions share the last bucket (T5: 128)", 2, 1 << 20)},
    label="T5 relative bias", roles=("bucket_bias",), score_bias=True, bias_table=True,
))
