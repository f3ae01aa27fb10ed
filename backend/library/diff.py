"""Diffs between two designs of the library: changed fields, the resolved plans, the headline numbers.

No torch unless numbers are asked for (the analysis is imported lazily, when present).
"""
from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import DesignError
from ..spec import Design
from .content import canonical_yaml, content_hash


# ---------------------------------------------------------------------------
# Diff


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not value and prefix:
            out[prefix] = {}
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def design_field_diff(a: Design, b: Design) -> list[dict[str, Any]]:
    """``[{"field", "a", "b"}]`` for every leaf that differs (dotted paths; missing = None)."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    out = []
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            out.append({"field": key, "a": va, "b": vb})
    return out


def plan_diff(a: Design, b: Design) -> dict[str, Any]:
    """Per executed layer, keyed by (stack, index): changed, added and removed layers."""
    from ..plan import resolve_plan

    pa, pb = resolve_plan(a), resolve_plan(b)
    la = {(x.stack, x.index): x.to_dict() for x in pa.layers}
    lb = {(x.stack, x.index): x.to_dict() for x in pb.layers}
    changed, added, removed = [], [], []
    for key in list(la) + [k for k in lb if k not in la]:
        xa, xb = la.get(key), lb.get(key)
        if xa is None:
            added.append(xb)
        elif xb is None:
            removed.append(xa)
        elif xa != xb:
            fields = {k: {"a": xa[k], "b": xb[k]} for k in xa if xa[k] != xb.get(k)}
            changed.append({"stack": key[0], "index": key[1], "changes": fields})
    depth = {"a": {s: st.depth for s, st in pa.stacks.items()}, "b": {s: st.depth for s, st in pb.stacks.items()}}
    return {"depth": depth, "changed": changed, "added": added, "removed": removed,
            "warnings": {"a": list(pa.warnings), "b": list(pb.warnings)}}


# Headline numbers taken from the analysis report (DESIGN.md section 6 names).
HEADLINE_KEYS = ("params.total", "params.unique", "params.embedding", "flops.forward", "flops.forward_causal",
                 "flops.training", "memory.weights_bytes", "memory.kv_cache_bytes_per_token")


def _analyse(design: Design, seq_len: Optional[int]) -> dict[str, Any]:
    """The analysis report as a dict; raises ImportError while backend.analysis does not exist yet."""
    import importlib

    mod = importlib.import_module(".analysis", __package__)
    for fname in ("analyze_design", "analyze", "analyse_design", "analyse", "report"):
        fn = getattr(mod, fname, None)
        if callable(fn):
            break
    else:
        raise ImportError("backend.analysis has no analyze function")
    try:
        result = fn(design, seq_len=seq_len) if seq_len else fn(design)
    except TypeError:
        result = fn(design)
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    if not isinstance(result, dict):
        raise ImportError(f"backend.analysis.{fname} returned {type(result).__name__}, not a report dict")
    return result


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in HEADLINE_KEYS:
        v: Any = report
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is not None:
            out[key] = v
    return out


def numbers_diff(a: Design, b: Design, seq_len: Optional[int] = None) -> dict[str, Any]:
    """Headline numbers of both sides with the change; ``note`` says why they are missing."""
    try:
        ha, hb = _headline(_analyse(a, seq_len)), _headline(_analyse(b, seq_len))
    except ImportError as exc:
        return {"available": False, "note": f"numbers not available (analysis not importable: {exc}); plan diff only", "rows": []}
    except DesignError as exc:
        return {"available": False, "note": f"numbers not available: {exc}", "rows": []}
    except Exception as exc:  # noqa: BLE001 - an analysis bug must not break the plan diff
        return {"available": False, "note": f"numbers not available (analysis failed: {type(exc).__name__}: {exc}); plan diff only", "rows": []}
    rows = []
    for key in HEADLINE_KEYS:
        va, vb = ha.get(key), hb.get(key)
        if va is None and vb is None:
            continue
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        rel = (delta / va) if delta is not None and va else None
        rows.append({"metric": key, "a": va, "b": vb, "delta": delta, "relative": rel})
    return {"available": True, "note": "", "rows": rows}


def diff_designs(a: Design, b: Design, *, seq_len: Optional[int] = None, numbers: bool = True) -> dict[str, Any]:
    """Design field differences, plan differences per executed layer, and headline numbers."""
    out: dict[str, Any] = {"same_content": content_hash(canonical_yaml(a)) == content_hash(canonical_yaml(b)),
                           "fields": design_field_diff(a, b)}
    try:
        out["plan"] = plan_diff(a, b)
    except DesignError as exc:  # a stored design the current registry no longer resolves
        out["plan"] = {"error": str(exc), "changed": [], "added": [], "removed": []}
    out["numbers"] = numbers_diff(a, b, seq_len) if numbers else {"available": False, "note": "not requested", "rows": []}
    return out


def format_diff(d: dict[str, Any]) -> str:
    """Human-readable text of :meth:`Library.diff` / :func:`diff_designs`."""
    lines = []
    if "a" in d and "b" in d:
        a, b = d["a"], d["b"]
        lines.append(f"--- {a['name']}@{a['revision']}  {a['author']}  {a['created_at']}  {a['message']}")
        lines.append(f"+++ {b['name']}@{b['revision']}  {b['author']}  {b['created_at']}  {b['message']}")
    if d["same_content"]:
        lines.append("identical designs")
        return "\n".join(lines)
    nums = d["numbers"]
    lines.append("\nnumbers:")
    if nums["available"]:
        for r in nums["rows"]:
            rel = f" ({r['relative']:+.1%})" if r["relative"] is not None else ""
            delta = f"{r['delta']:+,}" if isinstance(r["delta"], int) else (f"{r['delta']:+.4g}" if r["delta"] is not None else "")
            lines.append(f"  {r['metric']:<34} {_num(r['a']):>18} -> {_num(r['b']):>18}  {delta}{rel}")
    else:
        lines.append(f"  {nums['note']}")
    lines.append("\nfields:")
    for f in d["fields"] or []:
        lines.append(f"  {f['field']}: {json.dumps(f['a'])} -> {json.dumps(f['b'])}")
    if not d["fields"]:
        lines.append("  (none)")
    plan = d["plan"]
    lines.append("\nplan:")
    if plan.get("error"):
        lines.append(f"  {plan['error']}")
    if "depth" in plan and plan["depth"]["a"] != plan["depth"]["b"]:
        lines.append(f"  executed depth {plan['depth']['a']} -> {plan['depth']['b']}")
    for c in plan["changed"]:
        parts = ", ".join(f"{k} {json.dumps(v['a'])} -> {json.dumps(v['b'])}" for k, v in c["changes"].items())
        lines.append(f"  ~ {c['stack']}[{c['index']}]: {parts}")
    for x in plan["added"]:
        lines.append(f"  + {x['stack']}[{x['index']}]: {x['attention']} / {x['mlp']} / {x['norm']}")
    for x in plan["removed"]:
        lines.append(f"  - {x['stack']}[{x['index']}]: {x['attention']} / {x['mlp']} / {x['norm']}")
    if not (plan["changed"] or plan["added"] or plan["removed"] or plan.get("error")):
        lines.append("  (no layer changes)")
    return "\n".join(lines)


def _num(v: Any) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
