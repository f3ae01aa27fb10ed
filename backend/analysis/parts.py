"""The real modules the analysis measures, built on the meta device, once each.

A 70B design has 80 executed layers but one distinct layer, so the analysis
never builds the whole model: it builds

* one :class:`~backend.nn.model.Block` per distinct layer (keyed by the
  model-level config and the layer's config, i.e. ``ResolvedLayer.signature()``
  plus the model settings it depends on), and
* a *skeleton*: the real :class:`~backend.nn.model.Transformer` with each
  stack reduced to its first unique layer (executed ``depth`` times, so
  per-layer flow parameters keep their size). Everything outside the blocks
  (embeddings, positions, head, final norms, flow) is measured on it.

Both are cached (``functools.lru_cache`` on JSON keys), so a repeated or
edited design re-measures only the layers that changed. Nothing is
initialised: meta tensors have shapes, no storage, and no ``normal_`` runs
(which would import torch._dynamo, DESIGN.md section 5).
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

import torch

from ..build import import_kinds, model_config
from ..plan import Plan

def model_key(cfg: dict[str, Any]) -> str:
    """JSON of the model-level settings (everything but the stacks and the name)."""
    return json.dumps({k: v for k, v in cfg.items() if k not in ("stacks", "name")}, sort_keys=True)


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


def skeleton(cfg: dict[str, Any]) -> torch.nn.Module:
    """The real model with one block per stack (module docstring)."""
    stacks = {}
    for name, st in cfg["stacks"].items():
        s = copy.deepcopy(st)
        s["layers"] = s["layers"][:1]
        s["order"] = [0] * len(st["order"])
        stacks[name] = s
    return _skeleton(model_key(cfg), json.dumps(stacks, sort_keys=True))


def stack_blocks(cfg: dict[str, Any], name: str) -> list[torch.nn.Module]:
    """The meta Block of each unique layer of stack ``name``."""
    st = cfg["stacks"][name]
    mkey = model_key(cfg)
    return [block(mkey, layer_key(layer), bool(st["causal"]), bool(st.get("cross"))) for layer in st["layers"]]


def affine_probe(lkey: str) -> tuple[str, str, int] | None:
    """``(key at probe, key at probe + 1, steps)`` when the layer's MLP declares its counts affine in a
    parameter (``MlpKind.affine_probe``): measure at the two probes, extrapolate ``steps`` further."""
    from ..registry import MLP

    layer = json.loads(lkey)
    info = MLP.get(layer.get("mlp"))
    cfg = layer.get("config", {}).get("mlp", {})
    probe = info.affine_probe(cfg) if info is not None else None
    if probe is None:
        return None
    key, value, at = probe

    def with_value(v: int) -> str:
        out = copy.deepcopy(layer)
        out["config"]["mlp"][key] = v
        return layer_key(out)

    return with_value(at), with_value(at + 1), value - at


def extrapolate(a: Any, b: Any, steps: int) -> Any:
    """``a + steps * (b - a)`` leaf by leaf over nested dicts / lists of numbers (ints stay ints)."""
    if isinstance(a, dict):
        return {k: extrapolate(a[k], b[k], steps) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(extrapolate(x, y, steps) for x, y in zip(a, b))
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        return a
    return a + steps * (b - a)


def per_layer(fn: Any, mkey: str, lkey: str, *args: Any) -> Any:
    """``fn(mkey, lkey, *args)`` (a per-distinct-layer measurement), extrapolated when the layer is affine."""
    probe = affine_probe(lkey)
    if probe is None:
        return fn(mkey, lkey, *args)
    k1, k2, steps = probe
    return extrapolate(fn(mkey, k1, *args), fn(mkey, k2, *args), steps)


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
