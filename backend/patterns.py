"""Custom layer patterns stored in the design library (shared by the team, with revisions).

A custom pattern is the layer recipe of one stack: base kinds (``attention``,
``mlp``) and ordered ``rules`` with their conditions, exactly the rules a stack
holds. It is saved under the library name ``pattern:<name>`` as a small design
whose ``layers`` block is the recipe, so it gets revisions, authors, diffs and
deletion like any design, and the library validates it on the way in.

A design uses one by name::

    layers:
      n_layers: 24
      pattern: {name: team/hybrid-4, params: {attention: self_sdpa, revision: 2}}

``params`` may replace the base kinds and pin a revision (default: the latest).
``backend.plan`` asks :func:`library_pattern` for a name it does not know
(this module adds it to ``plan.PATTERN_LOOKUPS``; ``backend/__init__`` imports
this module, so any use of the package has it); a name the library does not
hold either is the plan's "unknown pattern" error. Exports inline the definition
(:func:`inline_library_patterns`), so an exported file stands alone.

Rules are applied with the plan's semantics (a later rule overrides only the
fields it sets; changing a kind drops the params set for the old kind), over
the target stack's own ``n_layers``: ``every`` / ``position`` / ``fraction``
scale with depth, ``layer_idx`` / ``range`` must fit it. Norm choices are not
part of a pattern (``PatternFn`` items carry attention, MLP and params).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Optional

from .errors import DesignError, short_repr
from .plan import PATTERN_LOOKUPS
from .spec import Design, Rule, load_design

PREFIX = "pattern:"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*")
_PARAMS = {"attention": "base attention kind (default: the one saved)",
           "mlp": "base MLP kind (default: the one saved)",
           "revision": "library revision of the pattern (default: the latest)"}


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > 120 or not NAME_RE.fullmatch(name):
        raise DesignError("pattern.name", f"must be lower-case words joined by '/', '-', '_' or '.' (e.g. team/hybrid-4), "
                                          f"got {short_repr(name)}")
    return name


def _library(lib: Any = None) -> Any:
    if lib is not None:
        return lib
    from .library import get_library

    return get_library()


# ---- the recipe ---------------------------------------------------------------------


def recipe_of(design: Design | dict | str, stack: str = "layers") -> dict[str, Any]:
    """``{"attention", "mlp", "rules"}`` of one stack of ``design`` (what a pattern stores)."""
    design = load_design(design)
    stacks = design.stacks()
    if stack not in stacks:
        raise DesignError("stack", f"the design has no stack {stack!r} (stacks: {', '.join(stacks)})")
    s = stacks[stack]
    rules = []
    for i, rule in enumerate(s.rules):
        if rule.norm is not None or rule.params.norm or rule.params.cross:
            raise DesignError(f"{stack}.rules[{i}]", "sets a norm or cross-attention; patterns carry attention and MLP "
                                                     "choices only")
        rules.append(rule.model_dump(mode="json", exclude_defaults=True))
    if not rules:
        raise DesignError(f"{stack}.rules", "is empty: a pattern is the stack's rules (add or paint some first)")
    return {"attention": s.attention, "mlp": s.mlp, "rules": rules}


def expand(recipe: dict[str, Any], n: int) -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
    """The recipe over ``n`` layers: ``(attention, mlp, {"attention": {...}, "mlp": {...}})`` per layer."""
    from .plan import _check_rule_bounds, matches

    att = [recipe["attention"]] * n
    mlp = [recipe["mlp"]] * n
    params: list[dict[str, dict[str, Any]]] = [{"attention": {}, "mlp": {}} for _ in range(n)]
    for r, raw in enumerate(recipe["rules"]):
        rule = Rule.model_validate(raw)
        _check_rule_bounds(rule.when, n, ["rules", r, "when"])
        for i in range(n):
            if not matches(rule.when, i, n):
                continue
            for cat, kinds in (("attention", att), ("mlp", mlp)):
                value = getattr(rule, cat)
                if value is not None and value != kinds[i]:
                    kinds[i] = value
                    params[i][cat] = {}  # as the plan: a new kind drops the old kind's params
                params[i][cat].update(getattr(rule.params, cat))
    return [(a, m, p) for a, m, p in zip(att, mlp, params)]


# ---- the library ----------------------------------------------------------------------


def save_pattern(design: Design | dict | str, name: str, *, stack: str = "layers", author: str, message: str = "",
                 description: str = "", lib: Any = None) -> Any:
    """Store the rules of ``stack`` of ``design`` as the next revision of pattern ``name``."""
    from .plan import PATTERNS

    name = _check_name(name)
    if name in PATTERNS:
        raise DesignError("pattern.name", f"{name!r} is a built-in or registered pattern; choose another name")
    design = load_design(design)
    recipe = recipe_of(design, stack)
    s = design.stacks()[stack]
    arch = "decoder" if design.is_causal(stack) else "encoder"
    holder = {k: v for k, v in design.to_dict().items() if k not in ("layers", "encoder", "decoder")}
    holder.update(name=PREFIX + name, description=description or f"layer pattern {name}", architecture=arch,
                  task="lm" if arch == "decoder" else "mlm", output_dim=None,
                  layers={**recipe, "n_layers": s.n_layers, "params": s.params.model_dump(mode="json")})
    return _library(lib).save(holder, author=author, message=message)


def get_recipe(name: str, revision: Optional[int] = None, *, lib: Any = None) -> tuple[dict[str, Any], Any]:
    """``(recipe, library revision)`` of pattern ``name``; DesignError when the library has no such pattern."""
    lib = _library(lib)
    if PREFIX + _check_name(name) not in lib.names():
        raise DesignError(name, "no such pattern in the library (see `python -m backend patterns list`)")
    rev = lib.get(PREFIX + name, revision)
    return recipe_of(rev.design), rev


def list_patterns(lib: Any = None) -> list[Any]:
    """Library patterns (``DesignSummary`` rows, names without the prefix), newest activity first."""
    from dataclasses import replace

    return [replace(r, name=r.name[len(PREFIX):]) for r in _library(lib).list() if r.name.startswith(PREFIX)]


def delete_pattern(name: str, *, confirm: bool = False, lib: Any = None) -> int:
    lib = _library(lib)
    if PREFIX + _check_name(name) not in lib.names():
        raise DesignError(name, "no such pattern in the library (see `python -m backend patterns list`)")
    return lib.delete(PREFIX + name, confirm=confirm)


def library_pattern(name: str) -> Any:
    """The :class:`~backend.plan.PatternInfo` of a library pattern, or None when the library has none of that name."""
    from .plan import PatternInfo

    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return None
    from .library import database_url

    url = database_url()
    if not _may_exist(url):
        return None  # no library yet: asking would create an empty one
    try:
        lib = _library()
        known = PREFIX + name in lib.names()
    except Exception as exc:  # noqa: BLE001 - an unreachable database must not read as "unknown pattern"
        raise DesignError("pattern.name", f"{name!r}: the design library is not reachable ({type(exc).__name__})") from None
    if not known:
        return None

    def fn(n: int, stack: Any, params: dict[str, Any]) -> list[tuple]:
        recipe, _ = get_recipe(name, _revision(params), lib=lib)
        recipe = {**recipe, **{k: params[k] for k in ("attention", "mlp") if params.get(k) is not None}}
        return [(a, m, p) for a, m, p in expand(recipe, n)]

    return PatternInfo(name, f"library pattern {name}", dict(_PARAMS), fn)


def _may_exist(url: str) -> bool:
    """False for a SQLite library file that does not exist yet."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:") or Path(u.database).exists()


def _revision(params: dict[str, Any]) -> Optional[int]:
    rev = params.get("revision")
    if rev is not None and (not isinstance(rev, int) or isinstance(rev, bool) or rev < 1):
        raise DesignError("params.revision", f"must be a revision number >= 1, got {short_repr(rev)}")
    return rev


def inline_library_patterns(design: Design | dict | str) -> Design:
    """``design`` with every library pattern replaced by its definition (base kinds + its rules before the
    stack's own), so the file stands alone; the resolved plan is the same."""
    from .plan import PATTERNS

    design = load_design(design)
    d = design.to_dict()
    changed = False
    for sname, stack in design.stacks().items():
        ref = stack.pattern
        pname = ref if isinstance(ref, str) else ref.name if ref is not None else None
        if pname is None or pname in PATTERNS or library_pattern(pname) is None:
            continue
        params = {} if isinstance(ref, str) else dict(ref.params)
        recipe, _ = get_recipe(pname, _revision(params))
        s = d[sname]
        s["pattern"] = None
        s["attention"] = params.get("attention") or recipe["attention"]
        s["mlp"] = params.get("mlp") or recipe["mlp"]
        s["rules"] = list(recipe["rules"]) + list(s.get("rules") or [])
        changed = True
    return load_design(d) if changed else design


PATTERN_LOOKUPS.append(library_pattern)


# ---- CLI: python -m backend patterns list|save|show|delete ------------------------------


def cli_patterns(args: argparse.Namespace) -> int:
    import yaml

    from .plan import PATTERNS

    cmd = args.patterns_command
    if cmd == "list":
        rows = list_patterns()
        if args.json:
            print(json.dumps({"builtin": {k: v.description for k, v in PATTERNS.items()},
                              "library": [r.to_dict() for r in rows]}, indent=2))
            return 0
        for k, v in PATTERNS.items():
            print(f"{k:<32} {'built-in' if v.builtin else 'registered':<10} {v.description}")
        for r in rows:
            print(f"{r.name:<32} {'library':<10} {r.n_revisions} revision{'s' if r.n_revisions != 1 else ''}, "
                  f"latest by {r.latest.author}: {r.latest.message.splitlines()[0] if r.latest.message else ''}")
        return 0
    if cmd == "save":
        info = save_pattern(args.design, args.name, stack=args.stack, author=args.author, message=args.message,
                            description=args.description)
        print(f"saved pattern {args.name}@{info.revision} ({info.content_hash[:12]}) by {info.author}")
        return 0
    if cmd == "show":
        recipe, rev = get_recipe(args.name, args.revision)
        print(f"# pattern {args.name}@{rev.revision} by {rev.author} at {rev.created_at.isoformat(timespec='seconds')}: {rev.message}")
        sys.stdout.write(yaml.safe_dump(recipe, sort_keys=False))
        return 0
    if cmd == "delete":
        n = delete_pattern(args.name, confirm=bool(args.yes))
        print(f"deleted pattern {args.name} ({n} revision{'s' if n != 1 else ''})")
        return 0
    raise DesignError("patterns", f"unknown command {cmd!r}")
