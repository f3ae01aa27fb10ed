"""Session state of the app: named keys, the current design, edits, cached backend calls.

The current design is always a *valid* :class:`~backend.spec.Design` (it
loads and its plan resolves). An edit that fails keeps the last valid design
and stores the backend's message (field path + why) under :data:`ERROR_KEY`,
which every page shows. Backend results are cached with ``st.cache_data``
keyed by the design's canonical JSON: they are pure functions of the spec.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import streamlit as st

from backend.errors import DesignError
from backend.plan import Plan, resolve_plan
from backend.registry import role
from backend.spec import Design, load_design, parse_design_text

import edits
from text import md

log = logging.getLogger("app")

# ---- session-state keys (initialised once per session by init()) -------------
DESIGN_KEY = "design"  # the current valid Design
DESIGN_YAML_KEY = "design_yaml"  # its YAML; other pages (library) may write a new one here to load it
SYNCED_YAML_KEY = "design_yaml_synced"  # the YAML last written by this module (detects outside writes)
ERROR_KEY = "design_error"  # "source: path: message" of the last rejected edit, or None
VERSION_KEY = "design_version"  # bumps on every change; widget keys include it so they re-read the design
HISTORY_KEY = "design_history"  # [(step name, design before the step)], oldest first, for undo
REDO_KEY = "design_redo"  # [(step name, design after the step)] undone steps, most recent last
PREVIOUS_KEY = "design_previous_json"  # canonical JSON of the design before the last edit (metric deltas)
PENDING_EDITS_KEY = "pending_edits"  # edits (dicts, see edits.apply_edit) applied at the start of the next run
NOTICE_KEY = "design_notice"  # one-shot success message ("loaded preset ...")
SHARE_TOKEN_KEY = "share_token_loaded"  # the ?d= token already decoded this session
GRID_VERSION_KEY = "grid_version"  # bumps to clear the grid selection after a paint
TABLE_VERSION_KEY = "table_version"  # bumps to reset the layer table after its edits are applied
UPLOADED_KEY = "uploaded_design_json"  # last valid uploaded design (compare page)
SMOKE_RESULT_KEY = "smoke_result"  # (design json, result dict) of the last smoke test
SMOKE_REFUSAL_KEY = "smoke_refusal"  # (design json, refusal info) of the last refused smoke test
DEPTH_FIT_KEY = "depth_fit_offer"  # (version, stack, fitted design dict, notes) offered after a refused depth
URL_TOKEN_KEY = "url_token"  # share token of the design last written to the URL (?d=)
_URL_VERSION = "url_token_version"  # VERSION_KEY when URL_TOKEN_KEY was computed
RUN_MS_KEY = "last_run_ms"  # server-side time of the last complete script run (benchmark)

HISTORY_LIMIT = 30
DEFAULT_PRESET = "hybrid"
FALLBACK_DESIGN = {
    "name": "hybrid-demo",
    "description": "A 12-layer hybrid decoder.",
    "layers": {"n_layers": 12, "attention": role("attention", "full"), "mlp": role("mlp", "default"),
               "rules": [{"when": {"range": [0, 4]}, "attention": role("attention", "cheap")}]},
}


def canonical(design: Design) -> str:
    """The cache key of a design: sorted compact JSON of every field."""
    return json.dumps(design.to_dict(), sort_keys=True, separators=(",", ":"))


def default_design() -> Design:
    from backend.presets import find_preset
    from backend.spec import load_preset

    try:
        if find_preset(DEFAULT_PRESET) is not None:
            return load_preset(DEFAULT_PRESET)
    except DesignError:
        log.exception("default preset does not load")
    return load_design(FALLBACK_DESIGN)


def init() -> None:
    """Create every key once; later runs keep their values."""
    ss = st.session_state
    if DESIGN_KEY not in ss:
        d = default_design()
        if ss.get(DESIGN_YAML_KEY):  # a page run on its own (tests) may hand its design in as YAML
            try:
                d = parse_design_text(ss[DESIGN_YAML_KEY], "yaml", source="loaded design")
            except DesignError:
                log.warning("the preset design YAML does not load; using the default design")
        ss[DESIGN_KEY] = d
        text = d.to_yaml()
        ss[DESIGN_YAML_KEY] = text
        ss[SYNCED_YAML_KEY] = text
    defaults: dict[str, Any] = {
        ERROR_KEY: None, VERSION_KEY: 0, HISTORY_KEY: [], REDO_KEY: [], URL_TOKEN_KEY: None, DEPTH_FIT_KEY: None, PREVIOUS_KEY: None, PENDING_EDITS_KEY: [],
        NOTICE_KEY: None, SHARE_TOKEN_KEY: None, GRID_VERSION_KEY: 0, TABLE_VERSION_KEY: 0,
        UPLOADED_KEY: None, SMOKE_RESULT_KEY: None, SMOKE_REFUSAL_KEY: None,
    }
    for key, value in defaults.items():
        if key not in ss:
            ss[key] = value
    if DESIGN_YAML_KEY not in ss or SYNCED_YAML_KEY not in ss:
        ss[DESIGN_YAML_KEY] = ss[SYNCED_YAML_KEY] = ss[DESIGN_KEY].to_yaml()


def sync() -> None:
    """Pick up designs written from outside this module (library page, tests), then queued edits."""
    ss = st.session_state
    text = ss.get(DESIGN_YAML_KEY)
    if text != ss.get(SYNCED_YAML_KEY):
        try:
            new = parse_design_text(text or "", "yaml", source="loaded design")
        except DesignError as exc:
            ss[ERROR_KEY] = f"loaded design: {exc}"
            ss[DESIGN_YAML_KEY] = ss[SYNCED_YAML_KEY]
        else:
            set_design(new, "loaded design")
    pending = ss.get(PENDING_EDITS_KEY) or []
    if pending:
        ss[PENDING_EDITS_KEY] = []
        for edit in pending:
            apply(lambda d, e=edit: edits.apply_edit(d, e), f"edit {edit.get('op', '?')}")


# ---- the current design ----------------------------------------------------------


def design() -> Design:
    return st.session_state[DESIGN_KEY]


def design_json() -> str:
    return canonical(design())


def plan() -> Plan:
    return cached_plan(design_json())


def error() -> str | None:
    return st.session_state.get(ERROR_KEY)


def clear_error() -> None:
    st.session_state[ERROR_KEY] = None


def validate(source: Design | dict | str) -> Design:
    """A design that loads *and* whose plan resolves; DesignError otherwise."""
    d = load_design(source)
    cached_plan(canonical(d))
    return d


def _message(source: str, exc: Exception) -> str:
    """``source: message`` without repeating a prefix the message already starts with."""
    text = str(exc)
    if not source or text.startswith(source + ":") or text.startswith(source + "."):
        return text
    return f"{source}: {text}"


def set_design(new: Design | dict, source: str, *, record: bool = True) -> bool:
    """Make ``new`` the current design if valid; else keep the old one and store the error.

    ``record=False`` replaces the design without an undo step or a "before" design for
    deltas (a share link opening a fresh session: the user never saw the default design).
    """
    ss = st.session_state
    try:
        d = validate(new)
    except DesignError as exc:
        ss[ERROR_KEY] = _message(source, exc)
        return False
    except Exception as exc:  # noqa: BLE001 - a bug must not take the page down
        log.exception("unexpected error validating a design (%s)", source)
        ss[ERROR_KEY] = f"{source}: unexpected error ({type(exc).__name__}); the previous design is kept"
        return False
    old = ss[DESIGN_KEY]
    ss[ERROR_KEY] = None
    if canonical(d) == canonical(old):
        return True
    if record:
        ss[HISTORY_KEY] = (ss[HISTORY_KEY] + [(source or "edit", old)])[-HISTORY_LIMIT:]
        ss[REDO_KEY] = []
        ss[PREVIOUS_KEY] = canonical(old)
    else:
        ss[HISTORY_KEY], ss[REDO_KEY], ss[PREVIOUS_KEY] = [], [], None
    _put(d)
    return True


def _put(d: Design) -> None:
    ss = st.session_state
    ss[DESIGN_KEY] = d
    text = d.to_yaml()
    ss[DESIGN_YAML_KEY] = ss[SYNCED_YAML_KEY] = text
    ss[VERSION_KEY] += 1


def apply(fn: Callable[[dict[str, Any]], dict[str, Any]], source: str) -> bool:
    """Edit the design as a dict; validation as in :func:`set_design`."""
    try:
        new = fn(design().to_dict())
    except (DesignError, KeyError, IndexError, ValueError, TypeError) as exc:
        st.session_state[ERROR_KEY] = _message(source, exc)
        return False
    return set_design(new, source)


def undo() -> None:
    """Step back: the current design goes onto the redo list under the step's name."""
    ss = st.session_state
    if ss[HISTORY_KEY]:
        name, prev = ss[HISTORY_KEY][-1]
        ss[HISTORY_KEY] = ss[HISTORY_KEY][:-1]
        ss[REDO_KEY] = ss[REDO_KEY] + [(name, ss[DESIGN_KEY])]
        ss[PREVIOUS_KEY] = canonical(ss[DESIGN_KEY])
        _put(prev)
        ss[ERROR_KEY] = None


def redo() -> None:
    """Re-apply the last undone step."""
    ss = st.session_state
    if ss[REDO_KEY]:
        name, nxt = ss[REDO_KEY][-1]
        ss[REDO_KEY] = ss[REDO_KEY][:-1]
        ss[HISTORY_KEY] = (ss[HISTORY_KEY] + [(name, ss[DESIGN_KEY])])[-HISTORY_LIMIT:]
        ss[PREVIOUS_KEY] = canonical(ss[DESIGN_KEY])
        _put(nxt)
        ss[ERROR_KEY] = None


def steps() -> tuple[list[str], list[str]]:
    """Names of the undoable steps (oldest first) and of the redoable ones (next first)."""
    ss = st.session_state
    return [n for n, _ in ss[HISTORY_KEY]], [n for n, _ in reversed(ss[REDO_KEY])]


def sync_url() -> None:
    """Keep ``?d=<share token>`` equal to the current design, so a reload or a copied address brings it back.

    ``URL_TOKEN_KEY`` becomes ``""`` when the design is too large for a link (the sidebar says so).
    A link that failed to load stays in the address until the first edit (it may be worth keeping).
    """
    ss = st.session_state
    current = st.query_params.get("d")
    if ss.get(URL_TOKEN_KEY) and current == ss[URL_TOKEN_KEY] and ss.get(_URL_VERSION) == ss[VERSION_KEY]:
        return  # nothing changed since the last write (most reruns)
    token = _token(design())  # once per design version (the check above)
    ss[_URL_VERSION] = ss[VERSION_KEY]
    if token is None:
        ss[URL_TOKEN_KEY] = ""
        if current is not None and ss[VERSION_KEY] > 0:
            del st.query_params["d"]  # the address must not hold an older design than the screen
        return
    if ss[VERSION_KEY] == 0 and current and current == ss.get(SHARE_TOKEN_KEY) and ss.get(URL_TOKEN_KEY) is None:
        return
    if current != token:
        st.query_params["d"] = token
    ss[URL_TOKEN_KEY] = token


def key(name: str) -> str:
    """A widget key tied to the design version: the widget re-reads the design after every change."""
    return f"{name}@{st.session_state[VERSION_KEY]}"


def notice(message: str) -> None:
    st.session_state[NOTICE_KEY] = message


# ---- cached backend calls (pure functions of the canonical JSON) ----------------


@st.cache_data(max_entries=512, show_spinner=False)
def cached_plan(design_json: str) -> Plan:
    return resolve_plan(json.loads(design_json))


@st.cache_data(max_entries=256, show_spinner=False)
def cached_analysis(design_json: str, seq_len: int | None = None, batch: int = 1, dtype: str = "bf16") -> dict[str, Any]:
    from backend.analysis import analyze

    return analyze(cached_plan(design_json), seq_len=seq_len, batch=batch, dtype=dtype)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_flops_curve(design_json: str, seq_lens: tuple[int, ...]) -> list[dict[str, int]]:
    from backend.analysis.flops import flops_curve

    return flops_curve(cached_plan(design_json), list(seq_lens))


@st.cache_data(max_entries=64, show_spinner=False)
def cached_training_plan(design_json: str, layout_json: str) -> dict[str, Any]:
    """``backend.training.plan.plan_training`` for a layout given as JSON keyword arguments."""
    from backend.training.plan import plan_training

    return plan_training(cached_plan(design_json), **json.loads(layout_json))


@st.cache_data(max_entries=64, show_spinner=False)
def cached_dot(design_json: str) -> str:
    from backend.diagram import plan_to_dot

    return plan_to_dot(cached_plan(design_json))


@st.cache_data(max_entries=64, show_spinner=False)
def cached_svg(dot: str) -> bytes:
    import graphviz

    return graphviz.Source(dot).pipe(format="svg")


@st.cache_data(max_entries=64, show_spinner=False)
def cached_export(design_json: str, fmt: str, resolved: bool = False) -> tuple[str, bytes, str]:
    from backend.export import export_bytes

    return export_bytes(json.loads(design_json), fmt, resolved)


def library_patterns() -> dict[str, str]:
    """Custom patterns in the design library: name -> description (re-read every 10 s; {} without a library)."""
    from backend.library import database_url

    return _library_patterns(database_url())


def forget_library_patterns() -> None:
    """After a save: the picker must list the new pattern at once."""
    _library_patterns.clear()


@st.cache_data(ttl=10, show_spinner=False)
def _library_patterns(url: str) -> dict[str, str]:
    try:
        from backend.patterns import list_patterns

        return {r.name: r.description for r in list_patterns()}
    except Exception:  # noqa: BLE001 - no library configured or reachable: the built-ins still work
        log.warning("library patterns unavailable", exc_info=True)
        return {}


def _token(d: Design) -> str | None:
    """The share token of a design, or None when it is too large for a link."""
    from backend.share import encode_design

    try:
        return encode_design(d)
    except DesignError:
        return None


@st.cache_data(max_entries=64, show_spinner=False)
def cached_preset(name: str) -> Design:
    from backend.spec import load_preset

    return load_preset(name)


# ---- errors --------------------------------------------------------------------


@contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Render a DesignError as its message (literal text) and anything else as a short error (details in the log)."""
    try:
        yield
    except DesignError as exc:
        st.error(md(exc))
    except Exception as exc:  # noqa: BLE001 - never show a traceback to the user
        log.exception("unexpected error in %s", what)
        st.error(f"Something went wrong in {what} ({type(exc).__name__}); details are in the server log.")


def library_names() -> list[str]:
    """Design names in the shared library, or [] when none is configured or reachable (pages work without it)."""
    from backend.library import get_library

    try:
        return get_library().names()
    except Exception:  # noqa: BLE001
        return []


def library_design(name: str):
    """The latest revision of a library design (the process-wide Library: engines are shared, not per user)."""
    from backend.library import get_library

    return get_library().load(name)
