"""The real modules the analysis measures, built on the meta device, once each.

A 70B design has 80 executed layers but one distinct layer, so the analysis
never builds the whole model: it builds

* one :class:`~backend.nn.model.Block` per distinct layer (keyed by the
  model-level config and the layer's config, i.e. ``ResolvedLayer.signature()``
  plus the model settings it depends on), and
* a *skeleton*: the real :class:`~backend.nn.model.Transformer` with each
  stack reduced to one layer whose sublayers are empty (executed ``depth``
  times, so per-layer flow parameters keep their size). Everything outside the blocks
  (embeddings, positions, head, final norms, flow) is measured on it.

Both are cached (``functools.lru_cache`` on JSON keys), so a repeated or
edited design re-measures only the layers that changed. Nothing is
initialised: meta tensors have shapes, no storage, and no ``normal_`` runs
(which would import torch._dynamo, DESIGN.md section 5).
"""
from __future__ import annotations

import copy
import itertools
import json
from functools import lru_cache
from typing import Any

import torch

from ..build import import_kinds, model_config
from ..plan import Plan

def model_key(cfg: dict[str, Any]) -> str:
    """JSON of the model-level settings (everything but the stacks and the name)."""
    return json.dumps({k: v for k, v in cfg.items() if k not in ("stacks", "name")}, sort_keys=True)


def layer_model_key(cfg: dict[str, Any], unique_index: int) -> str:
    """``model_key`` for the Block of unique layer ``unique_index``: the analysis builds every Block as layer 0,
    so an option that touches the first layer alone (``first_attn_norm``, ModernBERT) is reset for the others."""
    if unique_index and not cfg.get("first_attn_norm", True):
        cfg = {**cfg, "first_attn_norm": True}
    return model_key(cfg)


def layer_key(layer: dict[str, Any]) -> str:
    return json.dumps(layer, sort_keys=True)


_CONFIGS: dict[int, tuple[Plan, dict[str, Any]]] = {}


def config_of(plan: Plan) -> dict[str, Any]:
    """``backend.build.model_config(plan)``, memoised per plan object (treat as read-only)."""
    hit = _CONFIGS.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    cfg = model_config(plan)
    if len(_CONFIGS) > 64:
        _CONFIGS.clear()
    _CONFIGS[id(plan)] = (plan, cfg)
    return cfg


_IMPORTED: set[str] = set()


def _import(cfg: dict[str, Any]) -> None:
    key = json.dumps(sorted(_kinds(cfg)))
    if key not in _IMPORTED:
        import_kinds(cfg)
        _IMPORTED.add(key)


def _kinds(cfg: dict[str, Any]) -> list[str]:
    from ..build import kinds_used

    return [f"{c}:{n}" for c, n in kinds_used(cfg)]


@lru_cache(maxsize=512)
def block(mkey: str, lkey: str, causal: bool, cross: bool) -> torch.nn.Module:
    """One real Block on meta for a (model settings, layer config) pair."""
    from ..nn.model import Block, complete_config

    cfg = complete_config(json.loads(mkey))
    layer = json.loads(lkey)
    _import({**cfg, "stacks": {"s": {"cross": cross, "layers": [layer]}}})
    with torch.device("meta"):
        return Block(cfg, layer, causal=causal, cross=cross, index=0, n_layers=1, depth=1)


@lru_cache(maxsize=128)
def _skeleton(mkey: str, stacks_key: str) -> torch.nn.Module:
    from ..nn.model import Transformer

    cfg = {**json.loads(mkey), "stacks": json.loads(stacks_key)}
    _import(cfg)
    with torch.device("meta"):
        return Transformer(cfg)


def _empty_layer(layer: dict[str, Any]) -> dict[str, Any]:
    """``layer`` with both sublayers empty (the kinds declaring ``identity``): nothing of a block is
    measured on the skeleton, so a 1,024-expert first layer must not be built there."""
    from ..registry import ATTENTION, MLP

    empty = {cat: next(i.name for i in reg.values() if i.identity) for cat, reg in (("attention", ATTENTION), ("mlp", MLP))}
    return {**empty, "norm": layer["norm"], "config": {cat: {"kind": name} for cat, name in empty.items()}}


def skeleton_stacks(cfg: dict[str, Any]) -> str:
    """JSON of the skeleton's stacks: one empty layer executed ``depth`` times (flow parameters keep their size)."""
    stacks = {}
    for name, st in cfg["stacks"].items():
        s = copy.deepcopy({k: v for k, v in st.items() if k != "layers"})
        s["layers"] = [_empty_layer(st["layers"][0])]
        s["order"] = [0] * len(st["order"])
        stacks[name] = s
    return json.dumps(stacks, sort_keys=True)


def skeleton(cfg: dict[str, Any]) -> torch.nn.Module:
    """The real model with one empty block per stack (module docstring)."""
    return _skeleton(model_key(cfg), skeleton_stacks(cfg))


def stack_blocks(cfg: dict[str, Any], name: str) -> list[torch.nn.Module]:
    """The meta Block of each unique layer of stack ``name``."""
    st = cfg["stacks"][name]
    return [block(layer_model_key(cfg, u), layer_key(layer), bool(st["causal"]), bool(st.get("cross")))
            for u, layer in enumerate(st["layers"])]


@lru_cache(maxsize=8192)
def affine_probes(lkey: str) -> tuple[tuple[str, int, int], ...]:
    """The layer MLP's declared affine parameters ``(param, value, probe)`` (``MlpKind.affine_probes``)."""
    from ..registry import MLP

    layer = json.loads(lkey)
    info = MLP.get(layer.get("mlp"))
    cfg = layer.get("config", {}).get("mlp", {})
    return tuple(info.affine_probes(cfg)) if info is not None else ()


@lru_cache(maxsize=16384)
def _with_values(lkey: str, values: tuple[tuple[str, int], ...]) -> str:
    layer = json.loads(lkey)
    layer["config"]["mlp"].update(values)
    return layer_key(layer)


def combine(terms: list[tuple[int, Any]]) -> Any:
    """``sum(w * tree)`` leaf by leaf over nested dicts / lists of numbers (ints stay ints; other leaves
    are taken from the first tree)."""
    first = terms[0][1]
    if isinstance(first, dict):
        return {k: combine([(w, t[k]) for w, t in terms]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(combine([(w, t[i]) for w, t in terms]) for i in range(len(first)))
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    return sum(w * t for w, t in terms)


def per_layer(fn: Any, mkey: str, lkey: str, *args: Any) -> Any:
    """``fn(mkey, lkey, *args)`` (a per-distinct-layer measurement), interpolated from the probes when the
    layer declares affine parameters: with ``t_i = value_i - probe_i``, the multilinear interpolation
    ``f(t) = sum over corners c in {0,1}^n of f(probe + c) * prod_i (t_i if c_i else 1 - t_i)`` is exact for a
    function affine in each parameter separately."""
    probes = affine_probes(lkey)
    if not probes:
        return fn(mkey, lkey, *args)
    terms = []
    for corner in itertools.product((0, 1), repeat=len(probes)):
        weight = 1
        for (_, value, at), c in zip(probes, corner):
            t = value - at
            weight *= t if c else 1 - t
        if weight:
            key = _with_values(lkey, tuple((name, at + c) for (name, _, at), c in zip(probes, corner)))
            terms.append((weight, fn(mkey, key, *args)))
    return combine(terms)


def unique_numel(modules: Any) -> int:
    """Parameters of one or several modules, each tensor once (shared / tied by identity)."""
    if isinstance(modules, torch.nn.Module):
        modules = [modules]
    seen: set[int] = set()
    n = 0
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
    return n
