"""Performer FAVOR+ linear attention (Choromanski et al. 2020, arXiv 2009.14794), bidirectional and causal."""
from __future__ import annotations

import torch
from torch import nn

from .common import add_qkvo, LayerContext, StateCache, apply_rope, positions, register, repeat_kv, rope_cos_sin

_EPS = 1e-4  # added to every random feature, as in the paper's code (keeps features > 0)


def orthogonal_gaussian(nb_rows: int, nb_cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(nb_rows, nb_cols) Gaussian matrix with orthogonal rows in each block of ``nb_cols`` rows.

    Row norms are re-drawn from the chi distribution (norms of Gaussian
    vectors), the paper's ``scaling = 0`` choice, so each row is still
    marginally N(0, I) (Choromanski et al. 2020, section 2.4).
    """
    n_blocks = -(-nb_rows // nb_cols)
    g = torch.randn(n_blocks, nb_cols, nb_cols, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)  # one batched QR: (n_blocks, d, d), orthonormal columns
    # Sign fix (Mezzadri 2007, arXiv math-ph/0609050): LAPACK's Householder QR
    # leaves sign patterns in Q (e.g. q[0, 0] < 0 always), so Q is not Haar and
    # the rows' directions would be biased; scaling column j by sign(r_jj) fixes it.
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    rows = q.transpose(1, 2).reshape(n_blocks * nb_cols, nb_cols)[:nb_rows]
    norms = torch.randn(nb_rows, nb_cols, generator=generator, dtype=torch.float64).norm(dim=1)
    return norms[:, None] * rows


def softmax_features(x: torch.Tensor, proj: torch.Tensor, *, is_query: bool, stabilise_keys: bool,
                     key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Positive random features phi(x) (B, H, S, m) with E[phi(q) . phi(k)] = exp(q.k / sqrt(Dh)).

    ``phi(x) = m^-1/2 * (exp(w_i . x' - |x'|^2 / 2 - c) + eps)`` with ``x' = x / Dh^(1/4)``.
    The stabiliser ``c`` (detached) follows the paper's code where it cancels:
    queries subtract their own max over features (one factor per query,
    cancelling between numerator and denominator); keys, when
    ``stabilise_keys``, subtract the max over all keys and features of each
    (batch, head) (one factor per row of the whole computation; bidirectional
    only). Causal attention must not do that (the max would carry
    information from future keys, and grow as a cache fills), so causal keys
    use ``c = 0``: ``w_i . x' - |x'|^2 / 2 <= |w_i|^2 / 2`` bounds them, and
    features are computed in at least float32.
    """
    dh = x.shape[-1]
    x = x * dh ** -0.25
    dash = torch.einsum("bhsd,md->bhsm", x, proj.to(x.dtype))  # (B, H, S, m)
    diag = x.pow(2).sum(-1, keepdim=True) / 2  # (B, H, S, 1)
    if is_query:
        c = dash.amax(dim=-1, keepdim=True).detach()
    elif stabilise_keys:
        masked = dash if key_mask is None else dash.masked_fill(~key_mask[:, None, :, None], float("-inf"))
        c = masked.amax(dim=(-1, -2), keepdim=True).detach()
        c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))  # every key padded: nothing to stabilise
    else:
        c = 0.0
    feats = (torch.exp(dash - diag - c) + _EPS) * proj.shape[0] ** -0.5
    if key_mask is not None and not is_query:
        feats = feats.masked_fill(~key_mask[:, None, :, None], 0.0)
    return feats


class _FavorBase(nn.Module):
    """Projections, the random projection buffer and its redraw schedule."""

    causal_kernel = False

    def __init__(self, ctx: LayerContext):
        super().__init__()
        if ctx.positional == "alibi":
            raise ValueError("Performer attention cannot apply ALiBi (there is no score matrix to bias); "
                             "use positional rope or none, or a softmax kind for this layer")
        p = ctx.params
        self.nb_features = int(p.get("nb_features", 256))
        self.redraw_interval = int(p.get("redraw_interval", 0) or 0)
        self.fix_projection = bool(p.get("fix_projection", True))
        self.rope = ctx.positional == "rope"
        self.rope_theta, self.rope_scaling = ctx.rope_theta, ctx.rope_scaling
        add_qkvo(self, ctx)  # q_proj, k_proj, v_proj, o_proj
        # Persistent: a state dict carries the features it was trained with.
        self.register_buffer("projection", torch.empty(self.nb_features, ctx.head_dim))  # (m, Dh)
        self.calls_since_redraw = 0
        self.redraw_projection()

    def reset_parameters(self) -> None:
        """Linear layers initialise themselves; this draws the random features (e.g. after ``to_empty``)."""
        self.redraw_projection()

    def init_weights(self, std: float) -> None:
        """Hook for the model-wide init (Linear layers are initialised by the model)."""
        self.reset_parameters()

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Fresh orthogonal random features (global RNG unless a generator is given); no-op on meta."""
        if self.projection.is_meta:
            return
        new = orthogonal_gaussian(self.nb_features, self.head_dim, generator)
        # A new tensor, not ``copy_``: with weight sharing this module runs several
        # times in one forward, and earlier calls saved the old projection for
        # backward; writing into it in place would break their gradients.
        self.projection = new.to(device=self.projection.device, dtype=self.projection.dtype)
        self.calls_since_redraw = 0

    def _maybe_redraw(self) -> None:
        if not self.training or self.fix_projection or not self.redraw_interval:
            return
        if self.calls_since_redraw >= self.redraw_interval:
            self.redraw_projection()
        self.calls_since_redraw += 1

    def _qkv(self, x: torch.Tensor, start_pos: int):
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, Dh)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:  # rotate before the feature map: approximates softmax attention with rope
            cos, sin = rope_cos_sin(positions(start_pos, S, x.device), self.head_dim, self.rope_theta, q.dtype, self.rope_scaling)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        work = torch.promote_types(x.dtype, torch.float32)  # exp() of features: never in half precision
        return q.to(work), k.to(work), v.to(work)

    def _out(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        B, _, S, _ = out.shape
        return self.o_proj(out.to(x.dtype).transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim))


@register("attention", "linear")
class PerformerAttention(_FavorBase):
    """Bidirectional Performer attention, FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794).

    ``out = phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1)``: linear in sequence
    length, an unbiased estimate of softmax attention with positive orthogonal
    random features (``nb_features`` of them, a persistent ``projection``
    buffer). In training, the projection is redrawn every ``redraw_interval``
    forward calls unless ``fix_projection``. GQA via ``n_kv_heads``; rope is
    applied to q/k before the feature map; ALiBi is refused.
    """

    def __init__(self, ctx: LayerContext):
        if ctx.causal:
            raise ValueError("'linear' (bidirectional Performer) cannot run in a causal stack; use 'causal_linear'")
        super().__init__(ctx)

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache=None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("bidirectional Performer ('linear') has no decoding cache; use 'causal_linear'")
        self._maybe_redraw()
        q, k, v = self._qkv(x, start_pos)
        pad = None if padding_mask is None else padding_mask.to(torch.bool)
        qf = softmax_features(q, self.projection, is_query=True, stabilise_keys=False)  # (B, H, S, m)
        kf = softmax_features(k, self.projection, is_query=False, stabilise_keys=True, key_mask=pad)  # (B, Hkv, S, m)
        kf, v = repeat_kv(kf, self.n_rep), repeat_kv(v, self.n_rep)
        kv = torch.einsum("bhsm,bhsd->bhmd", kf, v)  # (B, H, m, Dh)
        z = kf.sum(dim=2)  # (B, H, m)
        num = torch.einsum("bhsm,bhmd->bhsd", qf, kv)  # (B, H, S, Dh)
        den = torch.einsum("bhsm,bhm->bhs", qf, z)[..., None]
        return self._out(num / den.clamp_min(torch.finfo(den.dtype).tiny), x)


@register("attention", "causal_linear")
class CausalPerformerAttention(_FavorBase):
    """Causal Performer attention, FAVOR+ with prefix sums (Choromanski et al. 2020, arXiv 2009.14794).

    ``out_t = phi(q_t) S_t / (phi(q_t) . z_t)`` with ``S_t = sum_{j<=t} phi(k_j) v_j^T``
    and ``z_t = sum_{j<=t} phi(k_j)``. The prefix sums are evaluated chunk by
    chunk (within a chunk as a masked (c x c) product, across chunks through
    the running S and z), which is exact and keeps memory at O(S*m) instead of
    the O(S*m*Dh) of a materialised cumsum. The running (S, z) is the decoding
    state (a :class:`StateCache`): a step costs O(m*Dh), independent of
    position. Key features carry no data-dependent stabiliser (see
    :func:`softmax_features`), so the layer is exactly causal.
    """

    chunk = 64

    def new_cache(self, batch: int, max_len: int, *, window: int = 0) -> StateCache:
        return StateCache()

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, cache: StateCache | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._maybe_redraw()
        q, k, v = self._qkv(x, start_pos)
        pad = None if padding_mask is None else padding_mask.to(torch.bool)
        qf = softmax_features(q, self.projection, is_query=True, stabilise_keys=False)  # (B, H, S, m)
        kf = softmax_features(k, self.projection, is_query=False, stabilise_keys=False, key_mask=pad)
        kf, v = repeat_kv(kf, self.n_rep), repeat_kv(v, self.n_rep)  # (B, H, S, m), (B, H, S, Dh)
        B, H, S, m = qf.shape
        state = cache.state if cache is not None else {}
        s_run = state.get("S", qf.new_zeros(B, H, m, self.head_dim))  # (B, H, m, Dh)
        z_run = state.get("z", qf.new_zeros(B, H, m))  # (B, H, m)
        outs = []
        for i in range(0, S, self.chunk):
            qc, kc, vc = qf[:, :, i:i + self.chunk], kf[:, :, i:i + self.chunk], v[:, :, i:i + self.chunk]
            a = torch.matmul(qc, kc.transpose(-1, -2)).tril()  # (B, H, c, c), key j <= query t
            num = torch.matmul(qc, s_run) + torch.matmul(a, vc)  # (B, H, c, Dh)
            den = torch.einsum("bhcm,bhm->bhc", qc, z_run) + a.sum(-1)  # (B, H, c)
            outs.append(num / den[..., None].clamp_min(torch.finfo(den.dtype).tiny))
            s_run = s_run + torch.matmul(kc.transpose(-1, -2), vc)
            z_run = z_run + kc.sum(dim=2)
        if cache is not None:
            cache.state["S"], cache.state["z"] = s_run, z_run
            cache.length += S
        return self._out(torch.cat(outs, dim=2), x)
