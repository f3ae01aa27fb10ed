"""Mixture of experts FFN, registered as mlp kind ``"moe"``.

Routing (Mixtral, Jiang et al. 2024, arXiv 2401.04088): a bias-free router
``Linear(D, E)`` scores every expert; each token keeps its ``top_k`` experts
and mixes their outputs with a softmax over the selected logits.

Capacity (Switch Transformer, Fedus et al. 2021, arXiv 2101.03961): with
``capacity_factor > 0`` each expert takes at most
``C = ceil(capacity_factor * N * top_k / E)`` of the ``N`` tokens of a batch;
``capacity > 0`` sets ``C`` in tokens directly (seed 002's ``capacity``).
Slots are served in priority order: every token's first choice (in token
order), then every second choice, and so on. An over-capacity slot is

* ``drop``: left out; the token gets no output from that slot (the block's
  residual carries it through) and the other slots keep their weights;
* ``reroute``: moved to the token's next-best expert (by router logit) that
  still has room and is not already one of its choices; a slot that finds no
  room is dropped. The mixing weights are the softmax over the logits of the
  token's *final* experts.

Load balancing (Switch, eq. 4): ``aux = E * sum_i f_i * P_i`` where ``f_i`` is
the fraction of the ``N * top_k`` routing choices (before capacity) that picked
expert ``i`` and ``P_i`` the mean router probability (softmax over all ``E``
logits) of expert ``i``; a uniform router gives 1. The module stores
``aux_loss_weight * aux`` in :attr:`aux_loss` (0-dim) after every forward; the
model sums it over executed layers.

Experts are any FFN kind (``params["expert"]``) of width ``params["hidden"]``
(null = the model's ``ffn_hidden``), kept in ``experts`` (an ``nn.ModuleList``);
``shared_experts`` always-on experts (DeepSeekMoE, Dai et al. 2024, arXiv
2401.06066) are added unweighted, in ``shared``.

On the meta device (FLOP counting, activation memory without data) routing is
data-free: the ``N * top_k`` slots are dealt evenly (expert ``e`` gets
``N k // E`` slots, one more for the first ``N k mod E``; capped by the
capacity), and every other op is the one the real path runs, so autograd
saves the same tensors as on real data.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerContext, register
from .mlp import make_mlp


@register("mlp", "moe")
class MoE(nn.Module):
    """Top-k routed mixture of experts with capacity, overflow handling and an aux loss."""

    def __init__(self, ctx: LayerContext):
        super().__init__()
        p = ctx.params
        self.num_experts = int(p.get("num_experts", 8))
        self.top_k = int(p.get("top_k", 2))
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"moe top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        self.capacity_factor = float(p.get("capacity_factor", 0.0))
        self.capacity_tokens = int(p.get("capacity", 0) or 0)  # absolute capacity (seed 002); wins over the factor
        self.overflow = p.get("overflow", "drop")
        if self.overflow not in ("drop", "reroute"):
            raise ValueError(f"moe overflow must be 'drop' or 'reroute', got {self.overflow!r}")
        self.aux_loss_weight = float(p.get("aux_loss_weight", 0.01))
        self.expert_kind = p.get("expert", "swiglu")
        hidden = p.get("hidden") or ctx.ffn_hidden
        d = ctx.hidden_size
        self.router = nn.Linear(d, self.num_experts, bias=False)
        self.experts = nn.ModuleList(make_mlp(self.expert_kind, ctx, hidden) for _ in range(self.num_experts))
        self.shared = nn.ModuleList(make_mlp(self.expert_kind, ctx, hidden) for _ in range(int(p.get("shared_experts", 0))))
        self.aux_loss = torch.zeros(())
        self.last_counts: torch.Tensor | None = None  # tokens per expert after capacity (for inspection)

    def active_params(self) -> int:
        """Parameters one token uses: the router, ``top_k`` routed experts and the shared experts
        (the "active" count of Mixtral, arXiv 2401.04088, section 2.1)."""
        def numel(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        routed = self.top_k * numel(self.experts[0]) if len(self.experts) else 0
        return numel(self.router) + routed + sum(numel(m) for m in self.shared)

    def _balanced_slots(self, n_tokens: int, e: int) -> int:
        """Slots expert ``e`` gets when the ``N * top_k`` choices are dealt evenly (capacity applied)."""
        slots = n_tokens * self.top_k
        share = slots // self.num_experts + (1 if e < slots % self.num_experts else 0)
        cap = self.capacity(n_tokens)
        return share if cap is None else min(share, cap)

    def capacity(self, n_tokens: int) -> int | None:
        if self.capacity_tokens > 0:
            return self.capacity_tokens
        if self.capacity_factor <= 0:
            return None
        return max(1, math.ceil(self.capacity_factor * n_tokens * self.top_k / self.num_experts))

    def route(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, E) logits -> experts (N, k) long, weights (N, k), kept (N, k) bool."""
        n, e = logits.shape
        k = self.top_k
        order = logits.argsort(dim=-1, descending=True)  # (N, E) preference list per token
        experts = order[:, :k].clone()  # (N, k)
        cap = self.capacity(n)
        kept = torch.ones(n, k, dtype=torch.bool, device=logits.device)
        if cap is not None and not logits.is_meta:  # meta: balance is assumed (``_balanced_slots``)
            kept = self._fit(experts, torch.zeros(e, dtype=torch.long, device=logits.device), cap)
            if self.overflow == "reroute":
                for r in range(k, e):  # try each token's next preference in turn
                    if bool(kept.all()):
                        break
                    load = torch.zeros(e, dtype=torch.long, device=logits.device)
                    load.index_add_(0, experts[kept], torch.ones_like(experts[kept]))
                    # one slot per token tries the r-th preference: its highest-priority unplaced slot
                    unplaced = ~kept
                    try_mask = unplaced & (unplaced.long().cumsum(1) == 1)  # (N, k)
                    cand = order[:, r : r + 1].expand(n, k)
                    ok = self._fit(torch.where(try_mask, cand, experts), load, cap, only=try_mask)
                    experts = torch.where(ok, cand, experts)
                    kept = kept | ok
        weights = torch.softmax(logits.gather(1, experts), dim=-1)  # (N, k) over the final choices
        return experts, weights, kept

    def _fit(self, experts: torch.Tensor, load: torch.Tensor, cap: int, only: torch.Tensor | None = None) -> torch.Tensor:
        """Which slots fit under ``cap`` given the existing ``load``; priority: slot rank, then token order."""
        n, k = experts.shape
        e = load.shape[0]
        active = torch.ones_like(experts, dtype=torch.bool) if only is None else only
        flat = experts.t().reshape(-1)  # (k*N,), rank-major priority
        act = active.t().reshape(-1)
        onehot = F.one_hot(flat, e) * act[:, None].long()  # (k*N, E)
        pos = onehot.cumsum(0) - 1 + load[None, :]  # slot's place in its expert's queue
        fits = (pos.gather(1, flat[:, None]).squeeze(1) < cap) & act
        return fits.view(k, n).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # (N, D)
        n = h.shape[0]
        logits = self.router(h)  # (N, E)
        out = torch.zeros_like(h)
        experts, weights, kept = self.route(logits)
        probs = torch.softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)  # (N, E)
        chosen = torch.topk(logits, self.top_k, dim=-1).indices  # pre-capacity choices
        frac = F.one_hot(chosen, self.num_experts).sum((0, 1)).float() / (n * self.top_k)  # f_i
        aux = self.num_experts * (frac * probs.mean(0)).sum()
        self.aux_loss = (self.aux_loss_weight * aux).to(x.dtype)
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=h.device)
        for e, expert in enumerate(self.experts):
            if h.is_meta:  # data-free routing: perfect balance, the N * top_k slots dealt round-robin
                n_e = self._balanced_slots(n, e)
                tok = torch.empty(n_e, dtype=torch.long, device=h.device)
                slot = torch.empty(n_e, dtype=torch.long, device=h.device)
            else:
                tok, slot = torch.nonzero((experts == e) & kept, as_tuple=True)
            counts[e] = tok.numel()
            if tok.numel() == 0:
                continue
            # same ops on meta and real tensors, so autograd saves the same tensors (activation memory)
            y = expert(h[tok]) * weights[tok, slot, None].to(h.dtype)  # (n_e, D)
            out = out.index_add(0, tok, y)
        self.last_counts = counts
        for expert in self.shared:
            out = out + expert(h)
        return out.view(shape)
