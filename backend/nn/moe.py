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
2401.06066) of width ``shared_hidden`` (null = ``hidden``) are added
unweighted, in ``shared``. ``shared_gate`` (Qwen1.5-MoE / Qwen2-MoE) scales
the shared experts' summed output by ``sigmoid(shared_gate(x))``, a bias-free
``Linear(D, 1)``. ``router_bias`` / ``expert_bias`` (gpt-oss, arXiv
2508.10925): a bias on the router and on every expert linear (routed and
shared; with the model's ``bias`` they have one anyway).

Scores and weights (the Hugging Face routers of each family, read one op at a time):

* ``scoring: softmax``, ``norm_topk_prob: true`` (default; Mixtral, Qwen3-MoE,
  gpt-oss): the weights are a softmax over the selected logits, which equals
  the full softmax's top-k probabilities renormalised to sum to 1;
* ``scoring: softmax``, ``norm_topk_prob: false`` (Qwen2-MoE default,
  DeepSeek-V2): the top-k probabilities of the softmax over all ``E`` logits,
  not renormalised;
* ``scoring: sigmoid`` (DeepSeek-V3, arXiv 2412.19437 eq. 15-16): scores
  ``sigmoid(logits)``; the weights are the selected scores, divided by their
  sum (``+ 1e-20``) when ``norm_topk_prob``;
* ``score_bias`` (DeepSeek-V3's auxiliary-loss-free balancing,
  ``e_score_correction_bias``): a per-expert bias added to the scores for the
  *selection* only, never to the weights; a buffer (Hugging Face registers it
  as one: not a parameter, no gradient, but in the state dict);
* ``n_group`` / ``topk_group`` (DeepSeek-V2 ``group_limited_greedy``, V3
  ``noaux_tc``): the ``E`` experts form ``n_group`` equal groups; each token
  keeps only its ``topk_group`` best groups and selects its ``top_k`` experts
  among them. A group's score is its best expert score with softmax scoring
  (V2) and the sum of its two best (bias-corrected) scores with sigmoid
  scoring (V3);
* ``routed_scale`` (DeepSeek's ``routed_scaling_factor``) multiplies the
  routed weights (so the routed output), after any renormalisation.

On the meta device (FLOP counting, activation memory without data) routing is
data-free: the ``N * top_k`` slots are dealt evenly (expert ``e`` gets
``N k // E`` slots, one more for the first ``N k mod E``; capped by the
capacity), and every other op is the one the real path runs, so autograd
saves the same tensors as on real data.
"""
from __future__ import annotations

import dataclasses
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
        self.norm_topk_prob = bool(p.get("norm_topk_prob", True))
        self.scoring = p.get("scoring", "softmax")
        if self.scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"moe scoring must be 'softmax' or 'sigmoid', got {self.scoring!r}")
        self.routed_scale = float(p.get("routed_scale", 1.0))
        self.n_group, self.topk_group = int(p.get("n_group", 1)), int(p.get("topk_group", 1))
        if self.num_experts % self.n_group or not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"moe n_group {self.n_group} must divide num_experts {self.num_experts} and "
                             f"topk_group {self.topk_group} must be in [1, n_group]")
        if self.n_group > 1 and self.top_k > self.topk_group * (self.num_experts // self.n_group):
            raise ValueError(f"moe top_k {self.top_k} exceeds the experts of topk_group {self.topk_group} groups")
        hidden = p.get("hidden") or ctx.ffn_hidden
        n_shared = int(p.get("shared_experts", 0))
        d = ctx.hidden_size
        ectx = dataclasses.replace(ctx, bias=ctx.bias or bool(p.get("expert_bias", False)))
        self.router = nn.Linear(d, self.num_experts, bias=bool(p.get("router_bias", False)))
        self.experts = nn.ModuleList(make_mlp(self.expert_kind, ectx, hidden) for _ in range(self.num_experts))
        shared_hidden = p.get("shared_hidden") or hidden
        self.shared = nn.ModuleList(make_mlp(self.expert_kind, ectx, shared_hidden) for _ in range(n_shared))
        if p.get("shared_gate"):
            if not n_shared:
                raise ValueError("moe shared_gate needs shared_experts >= 1")
            self.shared_gate = nn.Linear(d, 1, bias=False)  # Qwen2-MoE's shared_expert_gate
        else:
            self.shared_gate = None
        # DeepSeek-V3's e_score_correction_bias: selection only, a (persistent) buffer as in Hugging Face
        self.score_bias = nn.Buffer(torch.zeros(self.num_experts)) if p.get("score_bias") else None
        self.aux_loss = torch.zeros(())
        self.last_counts: torch.Tensor | None = None  # tokens per expert after capacity (for inspection)

    def active_params(self) -> int:
        """Parameters one token uses: the router, ``top_k`` routed experts and the shared experts
        (the "active" count of Mixtral, arXiv 2401.04088, section 2.1)."""
        def numel(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        routed = self.top_k * numel(self.experts[0]) if len(self.experts) else 0
        gate = numel(self.shared_gate) if self.shared_gate is not None else 0
        return numel(self.router) + routed + sum(numel(m) for m in self.shared) + gate

    def _balanced_slots(self, n_tokens: int, e: int) -> int:
        """Slots expert ``e`` gets when the ``N * top_k`` choices are dealt evenly (capacity applied)."""
        slots = n_tokens * self.top_k
        share = slots // self.num_experts + (1 if e < slots % self.num_experts else 0)
        cap = self.capacity(n_tokens)
        return share if cap is None else min(share, cap)

    @property
    def noncausal_reason(self) -> str | None:
        """Why a full forward of this layer is not causal, or None when it is.

        Capacity slots are served in token order over the whole batch, so a
        later token's choice can take the slot of an earlier token's choice:
        earlier outputs depend on later tokens, and step-by-step decoding
        (which routes each new token alone) cannot reproduce a full forward.
        """
        if self.capacity_factor <= 0 and self.capacity_tokens <= 0:
            return None
        limit = f"capacity {self.capacity_tokens}" if self.capacity_tokens > 0 else f"capacity_factor {self.capacity_factor:g}"
        return (f"MoE capacity routing ({limit}) lets later tokens take earlier "
                "tokens' expert slots, so a full forward is not causal and cached decoding cannot match it")

    def capacity(self, n_tokens: int) -> int | None:
        if self.capacity_tokens > 0:
            return self.capacity_tokens
        if self.capacity_factor <= 0:
            return None
        return max(1, math.ceil(self.capacity_factor * n_tokens * self.top_k / self.num_experts))

    def _plain(self) -> bool:
        """Mixtral routing (softmax over the selected logits): the original ops, unchanged."""
        return (self.scoring == "softmax" and self.norm_topk_prob and self.score_bias is None and self.n_group == 1)

    def _choice(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores the weights come from (N, E), selection scores (N, E)) for the configured routing."""
        if self.scoring == "sigmoid":
            scores = torch.sigmoid(logits)
        else:
            scores = torch.softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
            scores = scores.to(logits.dtype)
        choice = scores if self.score_bias is None else scores + self.score_bias.to(scores.dtype)
        if self.n_group > 1:
            n, e = choice.shape
            grouped = choice.view(n, self.n_group, e // self.n_group)  # (N, G, E/G)
            if self.scoring == "sigmoid":  # DeepSeek-V3: sum of each group's two best scores
                gscore = grouped.topk(min(2, e // self.n_group), dim=-1).values.sum(-1)
            else:  # DeepSeek-V2 group_limited_greedy: each group's best score
                gscore = grouped.max(dim=-1).values
            keep = torch.zeros_like(gscore, dtype=torch.bool)
            keep.scatter_(1, gscore.topk(self.topk_group, dim=-1).indices, True)  # (N, G)
            choice = choice.masked_fill(~keep[:, :, None].expand_as(grouped).reshape(n, e), float("-inf"))
        return scores, choice

    def _weights(self, logits: torch.Tensor, scores: torch.Tensor | None, experts: torch.Tensor) -> torch.Tensor:
        """(N, k) mixing weights of the token's final ``experts``."""
        if scores is None:  # plain: softmax over the selected logits
            w = torch.softmax(logits.gather(1, experts), dim=-1)
        else:
            w = scores.gather(1, experts)
            if self.scoring == "sigmoid" and self.norm_topk_prob:
                w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
            elif self.scoring == "softmax" and self.norm_topk_prob:
                w = w / w.sum(dim=-1, keepdim=True)
        return w * self.routed_scale if self.routed_scale != 1.0 else w

    def route(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, E) logits -> experts (N, k) long, weights (N, k), kept (N, k) bool."""
        n, e = logits.shape
        k = self.top_k
        scores = None
        choice = logits
        if not self._plain():
            scores, choice = self._choice(logits)
        order = choice.argsort(dim=-1, descending=True)  # (N, E) preference list per token
        allowed = e if self.n_group == 1 else self.topk_group * (e // self.n_group)  # experts of the kept groups
        experts = order[:, :k].clone()  # (N, k)
        cap = self.capacity(n)
        kept = torch.ones(n, k, dtype=torch.bool, device=logits.device)
        if cap is not None and not logits.is_meta:  # meta: balance is assumed (``_balanced_slots``)
            kept = self._fit(experts, torch.zeros(e, dtype=torch.long, device=logits.device), cap)
            if self.overflow == "reroute":
                for r in range(k, allowed):  # try each token's next preference in turn (within its groups)
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
        weights = self._weights(logits, scores, experts)  # (N, k) over the final choices
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
        choice = logits if self._plain() else self._choice(logits)[1]
        chosen = torch.topk(choice, self.top_k, dim=-1).indices  # pre-capacity choices
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
        if self.shared_gate is not None:  # Qwen2-MoE: sigmoid(gate(x)) * shared(x)
            shared = self.shared[0](h)
            for expert in self.shared[1:]:
                shared = shared + expert(h)
            out = out + torch.sigmoid(self.shared_gate(h)) * shared
        else:
            for expert in self.shared:
                out = out + expert(h)
        return out.view(shape)
