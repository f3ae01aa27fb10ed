"""Token-parameter attention (Wang et al. 2024, Tokenformer "Pattention", arXiv 2410.23168)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, StateCache, register

_TINY = 1e-12  # guards the L2 norm of an all-zero score row (keeps gradients finite)


@register("attention", "token_param")
class TokenParamAttention(nn.Module):
    """Pattention (Wang et al. 2024, Tokenformer, arXiv 2410.23168): tokens attend to learnable parameter tokens.

    Per head ``h``, queries ``q = q_proj(x)`` attend to ``N = num_param_tokens``
    learnable key tokens ``K_h`` (N, Dh) and read the matching value tokens
    ``V_h`` (N, Dh); ``o_proj`` mixes the heads back to D::

        A = q K_h^T                                    (B, H, S, N)
        gelu_l2 (paper eq. 5):  Theta(A)_ij = GeLU(A_ij * sqrt(N) / ||A_i||_2)
        softmax:                Theta(A)   = softmax(A / sqrt(Dh))
        out_h = Theta(A) V_h

    Position-wise (no token mixing), so it is trivially causal, ignores
    positions and padding, and holds no decoding state: a decoding step is the
    forward pass on the new token. ``new_cache`` returns a :class:`StateCache`
    that only counts tokens, so callers can treat every mixer alike.
    """

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        self.n_heads, self.head_dim = ctx.n_heads, ctx.head_dim
        self.n_tokens = int(p.get("num_param_tokens", 64))
        self.normalization = p.get("normalization", "gelu_l2")
        if self.normalization not in ("gelu_l2", "softmax"):
            raise ValueError(f"token_param normalization must be gelu_l2 or softmax, got {self.normalization!r}")
        self.init_std = ctx.init_std
        d, H, hd = ctx.hidden_size, ctx.n_heads, ctx.head_dim
        self.q_proj = nn.Linear(d, H * hd, bias=ctx.bias or ctx.qkv_bias)
        self.key_tokens = nn.Parameter(torch.empty(H, self.n_tokens, hd))  # (H, N, Dh)
        self.value_tokens = nn.Parameter(torch.empty(H, self.n_tokens, hd))  # (H, N, Dh)
        self.o_proj = nn.Linear(H * hd, d, bias=ctx.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.key_tokens.is_meta:  # nothing to fill (and normal_ on meta would import torch._dynamo)
            return
        with torch.no_grad():
            self.key_tokens.normal_(0.0, self.init_std)
            self.value_tokens.normal_(0.0, self.init_std)

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (Linear layers are initialised by the model)."""
        self.reset_parameters()

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        return StateCache()

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)
        scores = torch.einsum("bhsd,hnd->bhsn", q, self.key_tokens)  # (B, H, S, N)
        if self.normalization == "gelu_l2":
            # A * sqrt(N) / ||A||_2 == A / rms(A)
            weights = F.gelu(scores * torch.rsqrt(scores.pow(2).mean(-1, keepdim=True) + _TINY))
        else:
            weights = (scores / math.sqrt(self.head_dim)).softmax(dim=-1)
        out = torch.einsum("bhsn,hnd->bhsd", weights, self.value_tokens)  # (B, H, S, Dh)
        if cache is not None:
            cache.length += S
        return self.o_proj(out.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim))
