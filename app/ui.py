"""Widgets shared by the pages: error banner, headline metrics, schema-driven parameter inputs."""
from __future__ import annotations

import functools
import json
from typing import Any

import streamlit as st

from backend.analysis.report import human
from backend.registry import KindInfo, ParamInfo

import state
from text import md

DEFAULT_LABEL = "(default)"

def error(text: Any) -> None:
    """A user-facing error whose whole text is literal."""
    st.error(md(text), icon=":material/error:")


def banner() -> None:
    """The last rejected edit (field + why) and one-shot notices; shown at the top of every page."""
    err = state.error()
    if err:
        c1, c2 = st.columns([12, 1])
        c1.error(f"**Not applied** — {md(err)}\n\nThe last valid design is kept.", icon=":material/error:")
        c2.button("✕", key="dismiss_error", help="Dismiss", on_click=state.clear_error)
    msg = st.session_state.get(state.NOTICE_KEY)
    if msg:
        st.success(msg)  # notices are built with md() around every user value (state.notice)
        st.session_state[state.NOTICE_KEY] = None


def fmt_bytes(n: float) -> str:
    return human(n, "B")


def fmt_count(n: float) -> str:
    return human(n)


def headline(design_json: str | None = None, *, with_delta: bool = True) -> dict[str, Any] | None:
    """Params unique / executed, forward FLOPs, KV cache per token, weights memory (from backend.analysis)."""
    design_json = design_json or state.design_json()
    try:
        with st.spinner("Analysing..."):
            r = state.cached_analysis(design_json)
    except Exception as exc:  # noqa: BLE001
        from backend.errors import DesignError

        if isinstance(exc, DesignError):
            error(exc)
        else:
            state.log.exception("analysis failed")
            st.error(f"The analysis failed ({type(exc).__name__}); details are in the server log.")
        return None
    prev = None
    prev_json = st.session_state.get(state.PREVIOUS_KEY)
    if with_delta and prev_json and prev_json != design_json:
        try:
            prev = state.cached_analysis(prev_json)
        except Exception:  # noqa: BLE001 - deltas are a nicety
            prev = None

    def delta(get, fmt) -> str | None:
        if prev is None:
            return None
        a, b = get(r), get(prev)
        if a == b:
            return None
        return ("+" if a > b else "-") + fmt(abs(a - b))

    items = [
        ("Parameters (unique)", lambda x: x["params"]["total"], fmt_count,
         "Exact sum of numel over unique tensors (shared weights counted once)"),
        ("Params executed", lambda x: x["params"]["executed"], fmt_count,
         "Counting every execution of a shared layer"),
        ("Forward FLOPs", lambda x: x["flops"]["forward"], fmt_count,
         f"One forward pass at seq {r['seq_len']}, batch 1 (full S×S attention)"),
        ("KV cache / token", lambda x: x["memory"]["kv_cache_bytes_per_token"], fmt_bytes,
         f"Decoding cache per token ({r['dtype']})" + (
             f"; plus {fmt_bytes(state_bytes(r))} of constant state (linear / recurrent layers, batch 1), "
             "the same at any length" if state_bytes(r) else "")),
        ("Weights", lambda x: x["memory"]["weights_bytes"], fmt_bytes, f"Weights in {r['dtype']}"),
    ]
    cols = st.columns(len(items))
    for col, (label, get, fmt, help_) in zip(cols, items):
        value = fmt(get(r))
        if label == "KV cache / token" and state_bytes(r):
            value += f" + {fmt_bytes(state_bytes(r))} state"
        col.metric(label, value, delta(get, fmt), delta_color="off", help=help_)
    return r


def state_bytes(r: dict[str, Any]) -> int:
    """The decoding cache that does not grow with length (Performer / SSM state), as the memory report gives it."""
    return int((r["memory"].get("kv_cache") or {}).get("state_bytes") or 0)


# ---- widgets generated from the registry schema --------------------------------------


def param_widgets(info: KindInfo, key_prefix: str, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """One widget per parameter of a kind; returns the values that differ from the schema defaults."""
    current = current or {}
    out: dict[str, Any] = {}
    if not info.params:
        st.caption(f"{md(info.name)} has no parameters.")
        return out
    for name, p in info.params.items():
        value = current.get(name, p.default)
        v = param_widget(name, p, value, f"{key_prefix}.{name}")
        if v != p.default:
            out[name] = v
    return out


def param_widget(name: str, p: ParamInfo, value: Any, key: str) -> Any:
    label = name.replace("_", " ")
    if p.type == "bool" and p.nullable:  # null = derived (e.g. the dense MLP's bias follows the model's)
        options = [DEFAULT_LABEL, "true", "false"]
        idx = 0 if value is None else options.index("true" if value else "false")
        v = st.selectbox(label, options, index=idx, help=p.help, key=key)
        return None if v == DEFAULT_LABEL else v == "true"
    if p.type == "bool":
        return st.checkbox(label, value=bool(value), help=p.help, key=key)
    if p.type == "choice":
        options = ([DEFAULT_LABEL] if p.nullable else []) + list(p.choices or ())
        idx = options.index(value) if value in options else 0
        v = st.selectbox(label, options, index=idx, help=p.help, key=key)
        return None if v == DEFAULT_LABEL else v
    if p.type in ("int", "float"):
        is_int = p.type == "int"
        cast = int if is_int else float
        kwargs: dict[str, Any] = {"help": p.help, "key": key}
        if p.min is not None:
            kwargs["min_value"] = cast(p.min)
        if p.max is not None:
            kwargs["max_value"] = cast(p.max)
        if is_int:
            kwargs["step"] = 1
        else:
            kwargs["format"] = "%g"
        if p.nullable:
            kwargs["placeholder"] = "default (derived)"
        v = st.number_input(label, value=None if value is None else cast(value), **kwargs)
        return v
    v = st.text_input(label, value="" if value is None else str(value), help=p.help, key=key)
    return None if (p.nullable and v == "") else v


# ---- model-level settings from the Design's JSON schema -------------------------------


@functools.lru_cache(maxsize=1)
def design_schema() -> dict[str, Any]:
    """pydantic's JSON schema of a Design (generation takes ~20 ms; the schema never changes)."""
    from backend.spec import Design

    return Design.model_json_schema()


def schema_widget(name: str, prop: dict[str, Any], value: Any, key: str) -> Any:
    """A widget for one Design field described by its JSON schema (pydantic's)."""
    label = prop.get("title", name)
    help_ = prop.get("description")
    nullable = False
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        prop = {**prop, **options[0]}
    typ = prop.get("type")
    if "enum" in prop:
        opts = list(prop["enum"])
        return st.selectbox(label, opts, index=opts.index(value) if value in opts else 0, help=help_, key=key)
    if typ == "boolean":
        return st.checkbox(label, value=bool(value), help=help_, key=key)
    if typ in ("integer", "number"):
        is_int = typ == "integer"
        cast = int if is_int else float
        # No min/max in the browser: a clamped input refuses silently (a tooltip) and the form
        # submits the old value; the backend's validation names the field and the bound instead.
        kwargs: dict[str, Any] = {"help": help_, "key": key}
        if is_int:
            kwargs["step"] = 1
        else:
            kwargs["format"] = "%g"
        if nullable:
            kwargs["placeholder"] = "null (derived / unused)"
        return st.number_input(label, value=None if value is None else cast(value), **kwargs)
    if typ == "string":
        if name == "description":  # multi-line: a text_input would drop newlines
            return st.text_area(label, value=value or "", help=help_, key=key, height=68)
        return st.text_input(label, value=value or "", help=help_, key=key)
    text = st.text_input(label + " (JSON)", value=json.dumps(value), help=help_, key=key)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return value
