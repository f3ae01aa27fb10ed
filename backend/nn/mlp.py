"""Position-wise feed-forward networks, registered under category ``"mlp"``.

A module learns which kind it is from ``ctx.params["kind"]`` (the builder puts
the kind name into every category config, ``backend.build.model_config``);
a missing ``kind`` means the class default (``swiglu`` / ``mlp``). The width is
``ctx.params["hidden"]`` or, when null, ``ctx.ffn_hidden``.

Weight names follow the Llama/Mixtral reference code: ``w1`` (gate), ``w3``
(up), ``w2`` (down) for gated FFNs; ``fc1`` / ``fc2`` for two-layer FFNs.
``w2`` and ``fc2`` are residual output projections (scaled init, ``model.py``).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .common import ACTIVATIONS, LayerContext, register

GATES = {"swiglu": F.silu, "geglu": F.gelu, "reglu": F.relu}


def ffn_width(ctx: LayerContext) -> int:
    return ctx.params.get("hidden") or ctx.ffn_hidden


@register("mlp", "swiglu", "geglu", "reglu")
class GatedMLP(nn.Module):
    """GLU-variant FFN: ``w2(act(w1 x) * w3 x)``, act = SiLU / GELU / ReLU.

    Shazeer 2020, GLU Variants Improve Transformer, arXiv 2002.05202.
    Parameters: 3 * D * H (+ 2H + D with bias). ``geglu`` with ``gelu_approximate: tanh``: the tanh
    approximation of GELU (Hendrycks & Gimpel 2016, arXiv 1606.08415), as Gemma computes it.
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.kind = ctx.params.get("kind", "swiglu")
        if self.kind not in GATES:
            raise ValueError(f"GatedMLP kind must be one of {sorted(GATES)}, got {self.kind!r}")
        d, h = ctx.hidden_size, ffn_width(ctx)
        self.act = GATES[self.kind]
        if self.kind == "geglu" and ctx.params.get("gelu_approximate", "none") == "tanh":  # Gemma's GeGLU
            self.act = functools.partial(F.gelu, approximate="tanh")
        self.w1 = nn.Linear(d, h, bias=ctx.bias)  # gate
        self.w3 = nn.Linear(d, h, bias=ctx.bias)  # up
        self.w2 = nn.Linear(h, d, bias=ctx.bias)  # down (residual output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))  # (B, S, H) -> (B, S, D)


def relu2(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU (So et al. 2021, Primer, arXiv 2109.08668)."""
    return F.relu(x).square()


@register("mlp", "relu2", "mlp")
class DenseMLP(nn.Module):
    """Two-layer FFN ``fc2(act(fc1 x))`` (Vaswani et al. 2017, arXiv 1706.03762).

    Kind ``mlp`` uses ``params["activation"]`` or the model's ``activation``
    (gelu / relu / silu / mish); kind ``relu2`` uses squared ReLU. ``params["gelu_approximate"]``
    ``"tanh"``: GELU's tanh approximation (Hendrycks & Gimpel 2016, arXiv 1606.08415; GPT-J's gelu_new,
    BLOOM). ``params["bias"]`` (null = the model's ``bias``): biases of fc1 / fc2 alone (GPT-J).
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.kind = ctx.params.get("kind", "mlp")
        if self.kind == "relu2":
            self.activation = "relu2"
            self.act = relu2
        elif self.kind == "mlp":
            self.activation = ctx.params.get("activation") or ctx.activation
            if self.activation not in ACTIVATIONS:
                raise ValueError(f"mlp activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
            self.act = ACTIVATIONS[self.activation]
            if ctx.params.get("gelu_approximate", "none") == "tanh":
                if self.activation != "gelu":
                    raise ValueError(f"gelu_approximate 'tanh' needs activation 'gelu', got {self.activation!r}")
                self.act = functools.partial(F.gelu, approximate="tanh")
        else:
            raise ValueError(f"DenseMLP kind must be 'mlp' or 'relu2', got {self.kind!r}")
        d, h = ctx.hidden_size, ffn_width(ctx)
        bias = ctx.bias if ctx.params.get("bias") is None else bool(ctx.params["bias"])
        self.fc1 = nn.Linear(d, h, bias=bias)
        self.fc2 = nn.Linear(h, d, bias=bias)  # residual output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, S, H) -> (B, S, D)


@register("mlp", "swiglu_clamped")
class ClampedSwiGLU(nn.Module):
    """gpt-oss's clamped SwiGLU (OpenAI 2025, gpt-oss-120b & gpt-oss-20b model card, arXiv 2508.10925).

    ``g = min(w1 x, limit)``, ``u = clamp(w3 x, -limit, limit)``,
    ``w2((u + 1) * g * sigmoid(alpha * g))`` with ``limit`` 7.0 and ``alpha``
    1.702 (the sigmoid approximation of GELU). Same matrices (and names) as
    :class:`GatedMLP`: 3 * D * H (+ 2H + D with bias). Hugging Face keeps gate
    and up interleaved in one ``gate_up_proj`` (even columns gate, odd up).
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        d, h = ctx.hidden_size, ffn_width(ctx)
        self.limit = float(ctx.params.get("limit", 7.0))
        self.alpha = float(ctx.params.get("alpha", 1.702))
        self.w1 = nn.Linear(d, h, bias=ctx.bias)  # gate
        self.w3 = nn.Linear(d, h, bias=ctx.bias)  # up
        self.w2 = nn.Linear(h, d, bias=ctx.bias)  # down (residual output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.w1(x).clamp(max=self.limit)  # (B, S, H)
        up = self.w3(x).clamp(min=-self.limit, max=self.limit)
        return self.w2((up + 1) * (gate * torch.sigmoid(self.alpha * gate)))  # (B, S, D)


MLP_CLASSES = {"swiglu": GatedMLP, "geglu": GatedMLP, "reglu": GatedMLP, "relu2": DenseMLP, "mlp": DenseMLP,
               "swiglu_clamped": ClampedSwiGLU}


def make_mlp(kind: str, ctx: LayerContext, hidden: int | None = None) -> nn.Module:
    """An FFN of ``kind`` (used for MoE experts); ``hidden`` overrides the width."""
    params = {"kind": kind, "hidden": hidden or ffn_width(ctx)}
    if kind == "mlp":
        params["activation"] = ctx.params.get("activation") or ctx.activation
    if kind == "swiglu_clamped":  # a MoE passes its swiglu_limit / swiglu_alpha on to the experts
        params["limit"] = ctx.params.get("swiglu_limit", 7.0)
        params["alpha"] = ctx.params.get("swiglu_alpha", 1.702)
    return MLP_CLASSES[kind](ctx.with_params(params))
