"""The whole model, built from a plain JSON-serialisable config dict.

``Transformer(cfg)`` needs only torch and the sibling layer modules (their
classes are looked up by kind name in ``common.REGISTRY``), so the standalone
export inlines this file unchanged. ``backend.build.model_config`` writes the
dict from a design's resolved plan; nothing else is needed to rebuild a model.

Config format (every value JSON-serialisable; every key below is required --
``backend.build.model_config`` writes them all, so the design is the one home
of every default; :data:`CONFIG_KEYS` lists them)::

    name, architecture        "encoder" | "decoder" | "encoder_decoder"
    task                      lm | mlm | seq2seq | regression | classification |
                              sequence | cluster_centers | cluster_assignments
    vocab_size | input_dim    token ids (nn.Embedding) or features (Linear input_dim -> D)
    output_dim                width of non-token heads (number of clusters for cluster_*)
    hidden_size, n_heads      D and query heads
    n_kv_heads, head_dim      resolved ints
    ffn_hidden                resolved FFN width (MLP kinds' default ``hidden``)
    activation, max_seq_len, positional, rope_theta
    norm                      kind of the final norm (per-layer norms come from the layers)
    norm_placement            pre | post | pre_post
    norm_eps, bias, qkv_bias, tie_embeddings, final_norm, dropout, init_std,
    gradient_checkpointing
    positional_params         the positional kind's params (defaults filled in)
    positional_per_stack      one positional module per stack instead of one for the model
    head_rescale              scale the last hidden state by hidden_size**-0.5 before a token head (T5)
    parallel_residual         attention and MLP read the same block input (GPT-J, GPT-NeoX)
    embed_scale               token embeddings times sqrt(hidden_size) (Gemma)
    logit_softcap             token logits -> cap * tanh(logits / cap), 0 = off (Gemma 2 / 3)
    parallel_shared_norm      parallel_residual with one norm feeding both branches (GPT-J, Falcon-7B)
    norm_bias                 null: norms have a shift when ``bias``; else true / false for the norms alone (Falcon)
    embed_norm                a norm (kind ``norm``) on the summed input embeddings, one per stack (BERT, BART)
    type_vocab_size           token-type embedding rows added to the input (0 = none; BERT 2, RoBERTa 1)
    position_offset           learned positions: position p reads row p + offset (RoBERTa, BART: 2)
    head_transform            token head: Linear(D, D) [bias with ``bias``], activation, norm, then the logits
    head_bias                 a bias on the token logits (BERT / RoBERTa MLM head)
    first_attn_norm           false: unique layer 0 of each stack has no norm before its attention (ModernBERT)
    stacks: {"layers" | "encoder" | "decoder": {
        causal: bool,         decoder stacks are causal
        cross: bool,          has a cross-attention sub-block (decoder of encoder_decoder)
        layers: [             the UNIQUE layers, one module each
            {attention, mlp, norm,
             config: {attention: {...}, mlp: {...}, norm: {...}, cross: {...}}}],
                              each config holds the kind's params with defaults
                              filled in, plus "kind" (the kind name)
        order: [int, ...],    unique index of each executed layer (weight sharing)
        flow: {mode, per_layer, value, hidden}}}

Block (Vaswani et al. 2017, arXiv 1706.03762; pre-norm: Xiong et al. 2020,
arXiv 2002.04745; sandwich: Gemma 2, arXiv 2408.00118), per sublayer ``f``
(self-attention, cross-attention, MLP) with flow speed ``s``:

* ``pre``:       ``x = x + s * f(norm(x))``
* ``post``:      ``x = norm(x + s * f(x))``
* ``pre_post``:  ``x = x + s * post_norm(f(pre_norm(x)))``
* ``post_sublayer``: ``x = x + s * norm(f(x))`` (OLMo 2, OLMo et al. 2024, arXiv 2501.00656: the norm
  moves onto the sublayer output, none before it)
* ``parallel_residual`` (GPT-J; GPT-NeoX, Black et al. 2022, arXiv 2204.06745): attention and MLP
  branches both read the block input, ``x = x + s * attn(n1(x)) + s * mlp(n2(x))`` (any additive placement);
  ``parallel_shared_norm``: one norm, ``x + s * attn(n(x)) + s * mlp(n(x))`` (GPT-J; Falcon, Almazrouei et al.
  2023, arXiv 2311.16867)
* ``rezero`` norm kind, any placement: ``x = x + s * alpha * f(x)``
  (Bachlechner et al. 2020, arXiv 2003.04887; one alpha per sublayer).

Flow speed ``s``: 1 (``none``), ``value`` (``constant``), a learned scalar
initialised at ``value`` (``learned``), or ``value + g(x)`` with ``g`` a
Linear-GELU-Linear of width ``hidden`` on each token of the block input
(``predicted``); one global speed / predictor per stack, or one per executed
layer with ``per_layer``.

Weight sharing: executed layer ``j`` runs ``blocks[order[j]]``, the same module
instance at every depth, so ``parameters()`` counts unique weights once;
incremental decoding gives every executed layer its own cache.

State-dict names::

    embed.weight (nn.Embedding) | embed.weight, embed.bias (Linear, features)
    pos.weight                                     learned positions / a score-bias table only
    stacks.<stack>.pos.weight                      the same, per stack (positional_per_stack)
    stacks.<stack>.blocks.<u>.attn_norm|attn|attn_post_norm
                              .cross_norm|cross|cross_post_norm     decoder of enc-dec
                              .mlp_norm|mlp|mlp_post_norm            *_post_norm: pre_post
    stacks.<stack>.flow.speed | stacks.<stack>.flow.predictor.<j>.{0,2}.*
    stacks.<stack>.final_norm.*                    cfg final_norm (each stack)
    type_embed.weight                              token-type embeddings (type_vocab_size)
    stacks.<stack>.embed_norm.*                    cfg embed_norm (each stack)
    head_transform.dense.* | head_transform.norm.* cfg head_transform
    head.weight [head.bias]                        token heads: a bias only with head_bias; task heads have one

Heads: lm / mlm / seq2seq -> token logits (B, S, V), weight tied to
``embed.weight`` when ``tie_embeddings``; regression / classification ->
masked mean pool then Linear(D, output_dim) -> (B, output_dim); sequence /
cluster_assignments -> per token Linear(D, output_dim) -> (B, S, output_dim);
cluster_centers -> pooled Linear(D, output_dim * input_dim) -> (B, output_dim,
input_dim). The feature input projection and task heads always carry a bias
(they map from / to data space), token heads never.

Initialisation (:meth:`Transformer.init_weights`, GPT-2 / Megatron scheme):
Linear and Embedding weights ~ N(0, init_std), residual output projections
(attribute names in :data:`RESIDUAL_OUT_NAMES`, or ``residual_out = True`` on
the Linear) ~ N(0, init_std / sqrt(2 * depth)) with ``depth`` the stack's
executed depth, biases 0; afterwards every submodule that defines
``init_weights(std)`` (norms, learned positions, kinds with special
parameters) resets itself. The constructor itself never draws normal samples
on the meta device (``normal_`` there imports torch._dynamo, ~1 s).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from .common import ACTIVATIONS, REGISTRY, LayerContext

TOKEN_TASKS = ("lm", "mlm", "seq2seq")
POOLED_TASKS = ("regression", "classification", "cluster_centers")
PER_TOKEN_TASKS = ("sequence", "cluster_assignments")
RESIDUAL_OUT_NAMES = ("w2", "fc2", "wo", "o_proj", "out_proj", "c_proj", "proj_out")

CONFIG_KEYS = (
    "name", "architecture", "task", "vocab_size", "input_dim", "output_dim", "hidden_size", "n_heads",
    "n_kv_heads", "head_dim", "ffn_hidden", "activation", "max_seq_len", "positional", "rope_theta", "norm",
    "norm_placement", "rope_scaling", "norm_eps", "bias", "qkv_bias", "tie_embeddings", "final_norm", "dropout", "init_std",
    "gradient_checkpointing", "stacks",
    # encoder-decoder models (T5, BART; issue 12)
    "positional_params", "positional_per_stack", "head_rescale",
    # decoder building blocks (OLMo 2, GPT-NeoX, Gemma; issue 12)
    "parallel_residual", "embed_scale", "parallel_shared_norm", "norm_bias", "logit_softcap",
    # encoder models (BERT, RoBERTa, BART, ModernBERT; issue 12)
    "embed_norm", "type_vocab_size", "position_offset", "head_transform", "head_bias", "first_attn_norm",
)


def norm_context(cfg: dict[str, Any], ctx: LayerContext) -> LayerContext:
    """A norm's context: ``norm_bias`` (when not null) replaces the model's ``bias`` for the norms only."""
    if cfg["norm_bias"] is None:
        return ctx
    return LayerContext(**{**ctx.__dict__, "bias": bool(cfg["norm_bias"])})


def lookup(category: str, name: str) -> type:
    """The module class registered for a kind; a clear error if its module was not imported."""
    try:
        return REGISTRY[category][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(category, {}))) or "none"
        raise KeyError(f"{category} kind {name!r} is not registered (registered: {known}); "
                       f"import its module first (backend.build.import_kinds does)") from None


def layer_context(cfg: dict[str, Any], *, causal: bool = True, index: int = 0, n_layers: int = 1,
                  depth: int = 1, params: dict[str, Any] | None = None) -> LayerContext:
    return LayerContext(
        hidden_size=cfg["hidden_size"], n_heads=cfg["n_heads"], n_kv_heads=cfg["n_kv_heads"],
        head_dim=cfg["head_dim"], ffn_hidden=cfg["ffn_hidden"], activation=cfg["activation"],
        max_seq_len=cfg["max_seq_len"], positional=cfg["positional"], rope_theta=cfg["rope_theta"],
        rope_scaling=cfg["rope_scaling"],
        norm_eps=cfg["norm_eps"], bias=cfg["bias"], qkv_bias=cfg["qkv_bias"], dropout=cfg["dropout"],
        causal=causal, layer_index=index, n_layers=n_layers, depth=depth, init_std=cfg["init_std"],
        params=dict(params or {}),
    )


def positional_module(cfg: dict[str, Any]) -> nn.Module:
    """The model's positional module (the model holds one, or each stack one with ``positional_per_stack``)."""
    params = {**cfg["positional_params"], "kind": cfg["positional"]}
    if cfg["position_offset"]:  # learned positions shifted by an offset (RoBERTa, BART)
        params["offset"] = cfg["position_offset"]
    ctx = layer_context(cfg).with_params(params)
    return lookup("positional", cfg["positional"])(ctx)


def complete_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``cfg``, refused when a key of :data:`CONFIG_KEYS` is missing (no defaults here)."""
    missing = [k for k in CONFIG_KEYS if k not in cfg and k not in ("name", "stacks")]  # name: display only
    if missing:
        raise KeyError(f"model config lacks {', '.join(missing)} (backend.build.model_config writes every key)")
    return copy.deepcopy(cfg)


@dataclass
class ModelOutput:
    output: torch.Tensor  # logits / predictions, shape per task (module docstring)
    aux_loss: torch.Tensor  # 0-dim: sum of the MoE load-balancing losses of every executed layer
    hidden: torch.Tensor | None = None  # (B, S, D) last hidden states (after the final norm)


# ---------------------------------------------------------------------------
# Blocks


class Block(nn.Module):
    """One unique layer: [self-attention, (cross-attention), MLP] sublayers with norms."""

    def __init__(self, cfg: dict[str, Any], layer: dict[str, Any], *, causal: bool, cross: bool,
                 index: int, n_layers: int, depth: int):
        super().__init__()
        conf = layer.get("config", {})
        ctx = layer_context(cfg, causal=causal, index=index, n_layers=n_layers, depth=depth)

        def sub(category: str, kind: str) -> LayerContext:
            return ctx.with_params({**conf.get(category, {}), "kind": kind})

        self.placement = cfg["norm_placement"]
        self.window = int(conf.get("attention", {}).get("window", 0) or 0)
        norm_cls = lookup("norm", layer["norm"])
        self.scales_branch = bool(getattr(norm_cls, "scales_branch", False))
        sandwich = self.placement == "pre_post" and not self.scales_branch

        def norm() -> nn.Module:
            return norm_cls(norm_context(cfg, sub("norm", layer["norm"])))

        # a sublayer whose module says ``identity = True`` (``backend/nn/none.py``) is skipped, norms and all
        attn_cls, mlp_cls = lookup("attention", layer["attention"]), lookup("mlp", layer["mlp"])
        no_attn, no_mlp = getattr(attn_cls, "identity", False), getattr(mlp_cls, "identity", False)
        self.attn_norm = None if no_attn else norm()
        if index == 0 and not cfg["first_attn_norm"] and self.attn_norm is not None:
            self.attn_norm = nn.Identity()  # ModernBERT: the first attention reads the embedding norm's output
        self.attn = attn_cls(sub("attention", layer["attention"]))
        self.attn_post_norm = norm() if sandwich and not no_attn else None
        self.cross_norm = self.cross = self.cross_post_norm = None
        if cross:
            self.cross_norm = norm()
            self.cross = lookup("cross", "cross")(sub("cross", "cross"))
            self.cross_post_norm = norm() if sandwich else None
        self.mlp_norm = None if no_mlp else norm()
        self.mlp = mlp_cls(sub("mlp", layer["mlp"]))
        self.mlp_post_norm = norm() if sandwich and not no_mlp else None
        self.drop = nn.Dropout(cfg["dropout"])
        self.parallel = bool(cfg["parallel_residual"])
        if self.parallel and cfg["parallel_shared_norm"] and self.attn_norm is not None and self.mlp_norm is not None:
            self.mlp_norm = None  # GPT-J / Falcon-7B: the attention's norm feeds both branches
            self.shared_norm = True
        else:
            self.shared_norm = False

    def _branch(self, x: torch.Tensor, f, norm: nn.Module, post: nn.Module | None, s) -> torch.Tensor:
        """The term an additive placement adds to ``x`` (every placement but ``post``)."""
        if self.scales_branch and not isinstance(norm, nn.Identity):  # (first_attn_norm: false)
            return s * self.drop(norm.scale(f(x)))
        if self.placement == "post_sublayer":
            return s * self.drop(norm(f(x)))
        y = f(norm(x))
        if post is not None:
            y = post(y)
        return s * self.drop(y)

    def _residual(self, x: torch.Tensor, f, norm: nn.Module | None, post: nn.Module | None, s) -> torch.Tensor:
        if norm is None:  # an identity sublayer: no branch
            return x
        if self.placement == "post" and not self.scales_branch:
            return norm(x + s * self.drop(f(x)))
        return x + self._branch(x, f, norm, post, s)

    def forward(self, x: torch.Tensor, s=1.0, *, start_pos: int = 0, cache: dict | None = None,
                padding_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, score_bias=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) -> ((B, S, D), aux loss 0-dim).

        ``score_bias``: the stack's ``(q_pos, k_pos) -> (1, H, Sq, Sk)`` logit bias (a positional module with
        ``score_bias``, e.g. T5's), given to a self-attention module that says ``takes_score_bias``.
        """
        cache = cache or {}
        self_cache = cache.get("self")
        kw = {"score_bias": score_bias} if score_bias is not None and getattr(self.attn, "takes_score_bias", False) else {}
        attn = lambda h: self.attn(h, start_pos=start_pos, cache=self_cache, padding_mask=padding_mask, **kw)  # noqa: E731
        if self.parallel:  # parallel residual (GPT-NeoX): both branches read the block input
            out = x if self.attn_norm is None else x + self._branch(x, attn, self.attn_norm, self.attn_post_norm, s)
            if self.mlp_norm is not None or self.shared_norm:
                mlp_norm = self.attn_norm if self.shared_norm else self.mlp_norm
                out = out + self._branch(x, self.mlp, mlp_norm, self.mlp_post_norm, s)
            aux = getattr(self.mlp, "aux_loss", None)
            return out, (out.new_zeros(()) if aux is None else aux)
        x = self._residual(x, attn, self.attn_norm, self.attn_post_norm, s)
        if self.cross is not None:
            if memory is None:
                raise ValueError("this decoder layer has cross-attention and needs the encoder output (memory)")
            cross_cache = cache.get("cross")
            x = self._residual(x, lambda h: self.cross(h, memory, cache=cross_cache, memory_mask=memory_mask),
                               self.cross_norm, self.cross_post_norm, s)
        x = self._residual(x, self.mlp, self.mlp_norm, self.mlp_post_norm, s)
        aux = getattr(self.mlp, "aux_loss", None)
        if aux is None:
            aux = x.new_zeros(())
        return x, aux


class FlowSpeed(nn.Module):
    """Residual speed ``s`` of each executed layer (module docstring)."""

    def __init__(self, flow: dict[str, Any], dim: int, depth: int):
        super().__init__()
        self.mode = flow.get("mode", "none")
        self.per_layer = bool(flow.get("per_layer", False))
        self.value = float(flow.get("value", 1.0))
        n = depth if self.per_layer else 1
        self.speed = None
        self.predictor = None
        if self.mode == "learned":
            self.speed = nn.Parameter(torch.full((n,), self.value))
        elif self.mode == "predicted":
            h = int(flow.get("hidden", 32))
            self.predictor = nn.ModuleList(nn.Sequential(nn.Linear(dim, h), nn.GELU(), nn.Linear(h, 1)) for _ in range(n))
        elif self.mode not in ("none", "constant"):
            raise ValueError(f"flow.mode must be none, constant, learned or predicted, got {self.mode!r}")

    def init_weights(self, std: float) -> None:
        if self.speed is not None:
            with torch.no_grad():
                self.speed.fill_(self.value)

    def forward(self, x: torch.Tensor, j: int):
        """Speed for executed layer ``j``: a float, a 0-dim tensor or (B, S, 1)."""
        i = j if self.per_layer else 0
        if self.mode == "none":
            return 1.0
        if self.mode == "constant":
            return self.value
        if self.mode == "learned":
            return self.speed[i].to(x.dtype)
        return self.value + self.predictor[i](x)  # (B, S, 1)


class Stack(nn.Module):
    """Unique blocks executed in ``order``, then the stack's final norm."""

    def __init__(self, cfg: dict[str, Any], name: str, scfg: dict[str, Any]):
        super().__init__()
        self.name = name
        self.causal = bool(scfg.get("causal", False))
        self.has_cross = bool(scfg.get("cross", False))
        layers = scfg["layers"]
        self.order = [int(u) for u in (scfg.get("order") or range(len(layers)))]
        if any(not 0 <= u < len(layers) for u in self.order):
            raise ValueError(f"stacks.{name}.order refers to a layer outside 0..{len(layers) - 1}")
        depth = len(self.order)
        self.blocks = nn.ModuleList(
            Block(cfg, layer, causal=self.causal, cross=self.has_cross, index=u, n_layers=len(layers), depth=depth)
            for u, layer in enumerate(layers)
        )
        self.flow = FlowSpeed(scfg.get("flow") or {}, cfg["hidden_size"], depth)
        self.pos = positional_module(cfg) if cfg["positional_per_stack"] else None  # else the model's
        self.final_norm = None
        if cfg["final_norm"]:
            cls = lookup("norm", cfg["norm"])
            if not getattr(cls, "scales_branch", False):  # rezero has nothing to normalise with
                self.final_norm = cls(norm_context(cfg, layer_context(cfg, causal=self.causal, params={"kind": cfg["norm"]})))
        self.checkpointing = bool(cfg["gradient_checkpointing"])
        # encoder models (issue 12): the norm on this stack's summed input embeddings (BERT, BART)
        self.embed_norm = lookup("norm", cfg["norm"])(layer_context(cfg, params={"kind": cfg["norm"]})) if cfg["embed_norm"] else None

    @property
    def depth(self) -> int:
        return len(self.order)

    def forward(self, x: torch.Tensor, *, start_pos: int = 0, caches: list | None = None,
                padding_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, pos: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``pos``: the positional module in force (the stack's own, else the model's, passed by the model)."""
        aux = x.new_zeros(())
        pos = self.pos if self.pos is not None else pos
        # a score-bias table (T5): one module for the whole stack, biased in this stack's direction
        score_bias = functools.partial(pos, causal=self.causal) if getattr(pos, "score_bias", False) else None
        for j, u in enumerate(self.order):
            block = self.blocks[u]
            s = self.flow(x, j)
            kw = dict(start_pos=start_pos, cache=None if caches is None else caches[j],
                      padding_mask=padding_mask, memory=memory, memory_mask=memory_mask, score_bias=score_bias)
            if self.checkpointing and self.training and caches is None and torch.is_grad_enabled():
                x, a = torch.utils.checkpoint.checkpoint(block, x, s, use_reentrant=False, **kw)
            else:
                x, a = block(x, s, **kw)
            aux = aux + a
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, aux


# ---------------------------------------------------------------------------
# Caches


class ModelCache:
    """Incremental-decoding state of the decoding stack.

    ``layers[j]`` is ``{"self": cache | None, "cross": cache | None}`` for
    executed layer ``j``. When some layer mixes tokens but has no cache
    (spectral, frequency, ...), ``recompute`` is True and each step reruns the
    full forward over ``history`` (exact, O(S^2) over a generation).
    """

    def __init__(self, layers: list[dict], max_len: int, recompute: bool):
        self.layers = layers
        self.max_len = max_len
        self.recompute = recompute
        self.history: torch.Tensor | None = None
        self.memory: torch.Tensor | None = None  # encoder output (encoder_decoder)
        self.memory_mask: torch.Tensor | None = None
        self.length = 0  # tokens consumed so far


# ---------------------------------------------------------------------------
# Encoder models (issue 12)


class HeadTransform(nn.Module):
    """BERT's MLM head transform (Devlin et al. 2019, arXiv 1810.04805; ``BertPredictionHeadTransform``,
    RoBERTa's and ModernBERT's ``lm_head`` / ``head`` too): ``norm(act(dense(h)))`` before the logits; the
    dense layer has a bias when the model has biases, the norm is the model's ``norm`` kind."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d = cfg["hidden_size"]
        self.dense = nn.Linear(d, d, bias=bool(cfg["bias"]))
        self.act = cfg["activation"]
        self.norm = lookup("norm", cfg["norm"])(layer_context(cfg, params={"kind": cfg["norm"]}))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(ACTIVATIONS[self.act](self.dense(h)))


# ---------------------------------------------------------------------------
# The model


class Transformer(nn.Module):
    """Encoder, decoder or encoder-decoder transformer from a plain config dict (module docstring)."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        cfg = complete_config(cfg)
        self.cfg = cfg
        self.architecture = cfg["architecture"]
        self.task = cfg["task"]
        d = cfg["hidden_size"]
        if cfg.get("vocab_size"):
            # torch.empty + explicit init instead of nn.Embedding's normal_: on the meta
            # device normal_ imports torch._dynamo (~1 s); meta builds skip it.
            w = torch.empty(cfg["vocab_size"], d)
            if not w.is_meta:
                nn.init.normal_(w, 0.0, cfg["init_std"])
            self.embed = nn.Embedding(cfg["vocab_size"], d, _weight=w)
        elif cfg.get("input_dim"):
            self.embed = nn.Linear(cfg["input_dim"], d)  # continuous inputs
        else:
            raise ValueError("set vocab_size (tokens) or input_dim (features)")
        # one positional module for the model, or (positional_per_stack) one in each stack
        self.pos = None if cfg["positional_per_stack"] else positional_module(cfg)
        # token-type (segment) embeddings (BERT, Devlin et al. 2019, arXiv 1810.04805, section 3.2)
        self.type_embed = None
        if cfg["type_vocab_size"]:
            w = torch.empty(cfg["type_vocab_size"], d)
            if not w.is_meta:
                nn.init.normal_(w, 0.0, cfg["init_std"])
            self.type_embed = nn.Embedding(cfg["type_vocab_size"], d, _weight=w)
        self.drop = nn.Dropout(cfg["dropout"])
        expected = ["encoder", "decoder"] if self.architecture == "encoder_decoder" else ["layers"]
        if sorted(cfg["stacks"]) != sorted(expected):
            raise ValueError(f"architecture {self.architecture!r} needs stacks {expected}, got {sorted(cfg['stacks'])}")
        self.stacks = nn.ModuleDict({name: Stack(cfg, name, cfg["stacks"][name]) for name in expected})

        task = self.task
        if task in TOKEN_TASKS:
            if not cfg.get("vocab_size"):
                raise ValueError(f"task {task!r} predicts tokens and needs vocab_size")
            # BERT's MLM head (Devlin et al. 2019): a transform, then tied logits with their own bias
            self.head_transform = HeadTransform(cfg) if cfg["head_transform"] else None
            self.head = nn.Linear(d, cfg["vocab_size"], bias=bool(cfg["head_bias"]))
            if cfg["tie_embeddings"]:
                self.head.weight = self.embed.weight
        elif task in PER_TOKEN_TASKS or task in ("regression", "classification"):
            self.head = nn.Linear(d, cfg["output_dim"])
        elif task == "cluster_centers":
            self.head = nn.Linear(d, cfg["output_dim"] * cfg["input_dim"])
        else:
            raise ValueError(f"unknown task {task!r}")
        if task not in TOKEN_TASKS:
            self.head_transform = None

    # ---- pieces ---------------------------------------------------------------------
    @property
    def decoding_stack(self) -> Stack:
        return self.stacks["decoder" if self.architecture == "encoder_decoder" else "layers"]

    def _embed(self, x: torch.Tensor, start_pos: int = 0, stack: str | None = None,
               token_types: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, S) long or features (B, S, input_dim) -> (B, S, D), with the positions of ``stack``.

        ``token_types`` (B, S) long: token-type ids (``type_vocab_size``; default all 0, as BERT's)."""
        h = self.embed(x)
        if self.cfg["embed_scale"] and self.cfg.get("vocab_size"):  # Gemma: embeddings times sqrt(D)
            h = h * torch.tensor(self.cfg["hidden_size"] ** 0.5, dtype=h.dtype)
        if self.type_embed is not None:
            if token_types is None:
                h = h + self.type_embed.weight[0].to(h.dtype)
            else:
                h = h + self.type_embed(token_types).to(h.dtype)
        pos = self.stacks[stack].pos if stack is not None and self.pos is None else self.pos
        if getattr(pos, "additive", False):
            s = h.shape[1]
            if self.cfg["positional"] == "learned" and start_pos + s > self.cfg["max_seq_len"]:
                raise ValueError(f"positions up to {start_pos + s} exceed max_seq_len {self.cfg['max_seq_len']} (learned positions)")
            positions = torch.arange(start_pos, start_pos + s, device=h.device)
            h = h + pos(positions).to(h.dtype)
        norm = self.stacks[stack].embed_norm if stack is not None else None
        if norm is not None:
            h = norm(h)
        return self.drop(h)

    def _head(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.task in POOLED_TASKS:
            if mask is None:
                pooled = h.mean(1)
            else:
                m = mask.to(h.dtype)[..., None]  # (B, S, 1)
                pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
            out = self.head(pooled)
            if self.task == "cluster_centers":
                out = out.view(out.shape[0], self.cfg["output_dim"], self.cfg["input_dim"])
            return out
        if self.cfg["head_rescale"] and self.task in TOKEN_TASKS:  # T5: the tied head sees h / sqrt(D)
            h = h * self.cfg["hidden_size"] ** -0.5
        if self.head_transform is not None:
            h = self.head_transform(h)
        logits = self.head(h)
        cap = self.cfg.get("logit_softcap") or 0.0
        if cap and self.task in TOKEN_TASKS:  # Gemma 2 / 3: cap * tanh(logits / cap)
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _encode(self, src: torch.Tensor, src_mask: torch.Tensor | None,
                token_types: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.stacks["encoder"](self._embed(src, stack="encoder", token_types=token_types), padding_mask=src_mask, pos=self.pos)

    # ---- public API -----------------------------------------------------------------
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output (B, S, D) of an encoder_decoder model (the decoder's memory)."""
        if self.architecture != "encoder_decoder":
            raise ValueError("encode() is for encoder_decoder models")
        return self._encode(src, src_mask)[0]

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, *, tgt_mask: torch.Tensor | None = None,
               memory_mask: torch.Tensor | None = None) -> ModelOutput:
        """Full (non-incremental) decoder pass over ``tgt`` given the encoder output."""
        if self.architecture != "encoder_decoder":
            raise ValueError("decode() is for encoder_decoder models")
        h, aux = self.stacks["decoder"](self._embed(tgt, stack="decoder"), padding_mask=tgt_mask, memory=memory,
                                        memory_mask=memory_mask, pos=self.pos)
        return ModelOutput(self._head(h, tgt_mask), aux, h)

    def forward(self, x: torch.Tensor, tgt: torch.Tensor | None = None, *, mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, token_types: torch.Tensor | None = None) -> ModelOutput:
        """Encoder / decoder: ``forward(x, mask=...)``; encoder_decoder: ``forward(src, tgt, mask=src_mask, tgt_mask=...)``.

        ``x``: tokens (B, S) or features (B, S, input_dim); masks (B, S) bool, True = real token;
        ``token_types`` (B, S) long: token-type ids of ``x`` (``type_vocab_size``, default 0).
        """
        if self.architecture == "encoder_decoder":
            if tgt is None:
                raise ValueError("an encoder_decoder model needs forward(src, tgt)")
            memory, aux_enc = self._encode(x, mask, token_types)
            out = self.decode(tgt, memory, tgt_mask=tgt_mask, memory_mask=mask)
            out.aux_loss = out.aux_loss + aux_enc
            return out
        if tgt is not None:
            raise ValueError(f"tgt only applies to encoder_decoder models, not {self.architecture!r}")
        h, aux = self.stacks["layers"](self._embed(x, stack="layers", token_types=token_types), padding_mask=mask, pos=self.pos)
        return ModelOutput(self._head(h, mask), aux, h)

    # ---- incremental decoding ---------------------------------------------------------
    def new_cache(self, batch: int, max_len: int | None = None) -> ModelCache:
        """One cache per executed layer of the decoding stack (sliding window where the layer has one)."""
        stack = self.decoding_stack
        if not stack.causal:
            raise ValueError("incremental decoding needs a causal (decoder) stack")
        max_len = max_len or self.cfg["max_seq_len"]
        layers, recompute = [], False
        for u in stack.order:
            block = stack.blocks[u]
            entry: dict[str, Any] = {"self": None, "cross": None}
            if hasattr(block.attn, "new_cache"):
                entry["self"] = block.attn.new_cache(batch, max_len, window=block.window)
            elif getattr(block.attn, "mixes_tokens", True):
                recompute = True
            if block.cross is not None and hasattr(block.cross, "new_cache"):
                entry["cross"] = block.cross.new_cache(batch, max_len)
            layers.append(entry)
        return ModelCache(layers, max_len, recompute)

    def forward_one_step(self, tokens: torch.Tensor, cache: ModelCache, start_pos: int | None = None, *,
                         memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (B, s, ...) for ``tokens`` (B, s) at positions ``start_pos..`` given the cache.

        ``s > 1`` prefills. encoder_decoder: pass ``memory`` (and ``memory_mask``)
        on the first call; the cross-attention caches keep its keys/values.
        """
        if start_pos is None:
            start_pos = cache.length
        if start_pos != cache.length:
            raise ValueError(f"start_pos {start_pos} does not continue the cache (it holds {cache.length} tokens)")
        if memory is not None:
            cache.memory, cache.memory_mask = memory, memory_mask
        if self.architecture == "encoder_decoder" and cache.memory is None:
            raise ValueError("pass memory=model.encode(src) on the first forward_one_step of an encoder_decoder")
        s = tokens.shape[1]
        cache.length = start_pos + s
        if cache.recompute:
            cache.history = tokens if cache.history is None else torch.cat([cache.history, tokens], dim=1)
            if self.architecture == "encoder_decoder":
                out = self.decode(cache.history, cache.memory, memory_mask=cache.memory_mask).output
            else:
                out = self.forward(cache.history).output
            return out[:, -s:]
        name = "decoder" if self.architecture == "encoder_decoder" else "layers"
        h, _ = self.decoding_stack(self._embed(tokens, start_pos, stack=name), start_pos=start_pos, caches=cache.layers,
                                   memory=cache.memory, memory_mask=cache.memory_mask, pos=self.pos)
        return self._head(h, None)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None, *,
                 src: torch.Tensor | None = None, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt (B, P) -> (B, P + max_new_tokens) tokens with the KV cache.

        ``temperature == 0``: greedy; otherwise sample from softmax(logits / T),
        restricted to the ``top_k`` most likely tokens when given. encoder_decoder:
        ``src`` is encoded once and ``prompt`` starts the decoder (e.g. BOS).
        """
        if self.task not in ("lm", "seq2seq"):
            raise ValueError(f"generate() needs a token-predicting decoder (task lm or seq2seq), got {self.task!r}")
        b, p = prompt.shape
        memory = None
        if self.architecture == "encoder_decoder":
            if src is None:
                raise ValueError("an encoder_decoder model generates from src: generate(prompt, n, src=...)")
            memory = self.encode(src, src_mask)
        cache = self.new_cache(b, p + max_new_tokens)
        logits = self.forward_one_step(prompt, cache, 0, memory=memory, memory_mask=src_mask)[:, -1]
        out = [prompt]
        for i in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)  # (B, 1)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits = self.forward_one_step(nxt, cache, p + i)[:, -1]
        return torch.cat(out, dim=1)

    # ---- initialisation ----------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) weights, scaled residual outputs, zero biases, norms reset (module docstring)."""
        std = float(self.cfg["init_std"])
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                leaf = name.rsplit(".", 1)[-1]
                s = std
                if leaf in RESIDUAL_OUT_NAMES or getattr(m, "residual_out", False):
                    parts = name.split(".")
                    depth = self.stacks[parts[1]].depth if parts[0] == "stacks" else 1
                    s = std / math.sqrt(2 * depth)
                nn.init.normal_(m.weight, 0.0, s)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
        for m in self.modules():
            if m is not self and callable(getattr(m, "init_weights", None)):
                m.init_weights(std)

    def num_params(self, *, exclude_embedding: bool = False) -> int:
        """Unique parameters (shared and tied tensors once)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embedding:
            n -= self.embed.weight.numel()
            if self.type_embed is not None:
                n -= self.type_embed.weight.numel()
            for pos in [self.pos] + [st.pos for st in self.stacks.values()]:
                if isinstance(getattr(pos, "weight", None), torch.Tensor):
                    n -= pos.weight.numel()
        return n


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, 1) next tokens: greedy at temperature 0, else (top-k) sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)
