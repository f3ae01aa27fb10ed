"""Registry of every layer kind: name -> its declaration (``backend.kinds``).

This module imports no torch. Validation (``backend.spec``), the plan, the
analysis and the app read the declarations here; ``backend.nn`` holds the
modules, imported lazily by dotted path only when a model is built. A new kind
is one module (its ``nn.Module`` and its declaration, a
:class:`~backend.kinds.base.KindInfo` subclass) plus a :func:`register_kind`
call -- see docs/KINDS.md; the built-ins are declared in ``backend/kinds``.

Each schema entry says type, default, bounds and help text; the app renders
the same schema as widgets, so a new kind appears in the browser unchanged.
"""
from __future__ import annotations

from typing import Any

from .errors import DesignError, format_path, short_repr
from .kinds import attention as _attention, mlp as _mlp, norm as _norm
from .kinds.base import (REGISTRIES, AttentionKind, CacheLayout, Category, KindError, KindInfo, MlpKind, NormKind,
                         ParamInfo, ParamType, PositionalKind)

ATTENTION: dict[str, AttentionKind] = REGISTRIES["attention"]  # type: ignore[assignment]
MLP: dict[str, MlpKind] = REGISTRIES["mlp"]  # type: ignore[assignment]
NORM: dict[str, NormKind] = REGISTRIES["norm"]  # type: ignore[assignment]
POSITIONAL: dict[str, PositionalKind] = REGISTRIES["positional"]  # type: ignore[assignment]
CROSS: AttentionKind = _attention.CROSS
_BASES = {"attention": AttentionKind, "mlp": MlpKind, "norm": NormKind, "positional": PositionalKind}

# Model-level ``activation`` choices (the dense MLP kind and its experts).
ACTIVATIONS: tuple[str, ...] = _mlp.ACTIVATIONS

# String-notation aliases (upper case; DESIGN.md section 3), collected from the kinds.
ATTENTION_ALIASES: dict[str, str] = {}


def register_kind(info: KindInfo, *, replace: bool = False) -> KindInfo:
    """Add a kind declaration (a plugin's entry point). Returns it, so it can decorate nothing else."""
    if info.category not in REGISTRIES:
        raise ValueError(f"kind {info.name!r}: category must be one of {', '.join(REGISTRIES)}, got {info.category!r}")
    if not isinstance(info, _BASES[info.category]):
        raise TypeError(f"kind {info.name!r}: a {info.category} kind must be a {_BASES[info.category].__name__}")
    if not info.name.isidentifier() or info.name != info.name.lower():
        raise ValueError(f"kind name must be lower snake case, got {info.name!r}")
    reg = REGISTRIES[info.category]
    if info.name in reg and not replace:
        raise ValueError(f"{info.category} kind {info.name!r} is already registered")
    reg[info.name] = info
    if info.category == "attention":
        for alias in info.aliases:
            ATTENTION_ALIASES[alias.upper()] = info.name
    return info


for _k in [*_attention.KINDS, *_mlp.KINDS, *_norm.NORMS, *_norm.POSITIONALS]:
    register_kind(_k)


def kind(category: str, name: str, path: list[Any] | None = None) -> KindInfo:
    """Look a kind up, raising a DesignError that lists the known names."""
    reg = REGISTRIES[category]
    if name not in reg:
        known = ", ".join(reg)
        raise DesignError(format_path(path or [category]), f"unknown {category} kind {short_repr(name)} (known: {known})")
    return reg[name]


def role(category: str, name: str) -> str:
    """The kind that fills a role: ``default`` (a new stack's kind), ``full`` (full softmax attention),
    ``cheap`` (a sub-quadratic mixer, the patterns' default partner)."""
    for info in REGISTRIES[category].values():
        if name in info.roles:
            return info.name
    return next(iter(REGISTRIES[category]))


def names(category: str) -> tuple[str, ...]:
    return tuple(REGISTRIES[category])


def schema_json() -> dict[str, Any]:
    """The registry as plain data (for the app and `python -m backend kinds`)."""
    def info(k: KindInfo) -> dict[str, Any]:
        out = {
            "description": k.description,
            "paper": k.paper,
            "label": k.display,
            "abbrev": k.short,
            "params": {
                n: {"type": p.type, "default": p.default, "help": p.help, "min": p.min, "max": p.max,
                    "choices": list(p.choices) if p.choices else None, "nullable": p.nullable}
                for n, p in k.params.items()
            },
        }
        if isinstance(k, AttentionKind):
            out.update(causal=k.causal, bidirectional=k.bidirectional, cacheable=k.cacheable)
        return out

    out = {cat: {n: info(k) for n, k in reg.items()} for cat, reg in REGISTRIES.items()}
    out["cross"] = {"cross": info(CROSS)}
    return out


__all__ = [
    "ATTENTION", "MLP", "NORM", "POSITIONAL", "CROSS", "REGISTRIES", "ACTIVATIONS", "ATTENTION_ALIASES",
    "AttentionKind", "MlpKind", "NormKind", "PositionalKind", "KindInfo", "ParamInfo", "ParamType", "Category",
    "CacheLayout", "KindError", "register_kind", "kind", "role", "names", "schema_json",
]
