"""Entry point: ``streamlit run app/main.py``.

Owns the page config, the optional password gate, the session state, the
share link (``?d=<token>``) and the navigation; each page lives in
``app/views/`` and calls backend functions only.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

_T0 = time.perf_counter()

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
for p in (str(ROOT), str(APP_DIR)):
    if p not in sys.path:
        sys.path.insert(0, p)

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Transformer designer", page_icon=":material/view_column:", layout="wide")

# Navigation first, the password gate second: the page a deep link (/export) asks for
# is resolved before the gate stops the run, so it is still the current page when the
# unlocked session reruns (a gate before st.navigation lands on the default page).
PAGES = APP_DIR / "views"
pages = [
    st.Page(str(PAGES / "designer.py"), title="Designer", icon=":material/grid_view:", default=True, url_path="designer"),
    st.Page(str(PAGES / "analysis.py"), title="Analysis", icon=":material/bar_chart:", url_path="analysis"),
    st.Page(str(PAGES / "diagram.py"), title="Diagram", icon=":material/account_tree:", url_path="diagram"),
    st.Page(str(PAGES / "training.py"), title="Training plan", icon=":material/memory:", url_path="training"),
    st.Page(str(PAGES / "smoke.py"), title="Smoke test", icon=":material/local_fire_department:", url_path="smoke"),
    st.Page(str(PAGES / "probe.py"), title="Probe", icon=":material/model_training:", url_path="probe"),
    st.Page(str(PAGES / "export.py"), title="Export / Import", icon=":material/import_export:", url_path="export"),
    st.Page(str(PAGES / "compare.py"), title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page(str(PAGES / "library.py"), title="Library", icon=":material/library_books:", url_path="library"),
]

if (APP_DIR / "auth.py").is_file():
    from auth import is_unlocked, require_password  # noqa: E402

    nav = st.navigation(pages, position="sidebar" if is_unlocked() else "hidden")
    require_password()
else:
    nav = st.navigation(pages)

import state  # noqa: E402
import ui  # noqa: E402
from backend.errors import DesignError  # noqa: E402

logging.basicConfig(level=logging.INFO)
state.init()


@st.cache_resource
def _plugins() -> str | None:
    """Load BACKEND_PLUGINS once per server process (kinds are process-wide, like the registry)."""
    from backend.plugins import load_env

    try:
        load_env()
    except DesignError as exc:
        return str(exc)
    return None


if (_plugin_error := _plugins()) is not None:
    st.error(ui.md(_plugin_error), icon=":material/extension_off:")


def _load_share_link() -> None:
    """Decode ``?d=`` once per token; a bad link is an error message, never a crash.

    The app writes the current design into ``?d=`` after every change (state.sync_url), so a
    token equal to the one it wrote is the design already on screen. A link that opens a
    fresh session replaces the default design without an undo step or deltas against it.
    """
    ss = st.session_state
    token = st.query_params.get("d")
    if not token or token in (ss.get(state.SHARE_TOKEN_KEY), ss.get(state.URL_TOKEN_KEY)):
        return
    ss[state.SHARE_TOKEN_KEY] = token
    try:
        from backend.share import decode_design

        design = decode_design(token)
    except DesignError as exc:
        ss[state.ERROR_KEY] = str(exc) if str(exc).startswith("share link") else f"share link: {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        state.log.exception("share link failed")
        ss[state.ERROR_KEY] = f"share link: could not be read ({type(exc).__name__})"
        return
    fresh = ss[state.VERSION_KEY] == 0 and not ss[state.HISTORY_KEY]
    if state.set_design(design, "share link", record=not fresh):
        ss[state.URL_TOKEN_KEY] = token
        if not fresh:
            state.notice(f"Loaded {ui.md(design.name)} from the share link (Undo brings the previous design back).")


_load_share_link()
state.sync()
state.sync_url()

# Our pages live in app/views/ (above): Streamlit treats a folder named `pages/` next to the entry
# point as v1 auto-pages and, on a fresh server, runs a deep link (/analysis) from it without this script.


def _sidebar() -> None:
    """The current design's name (as text), undo / redo and the named steps of this session."""
    d = state.design()
    depth = " + ".join(f"{s.executed_depth}" + ("" if n == "layers" else f" {n}") for n, s in d.stacks().items())
    st.markdown(f"**{ui.md(d.name)}**  \n{d.architecture} · {d.task} · {depth} layers")
    done, undone = state.steps()
    c1, c2 = st.columns(2)
    c1.button("Undo", icon=":material/undo:", on_click=state.undo, disabled=not done, width="stretch", key="undo",
              help=f"Undo: {done[-1]}" if done else "Nothing to undo")
    c2.button("Redo", icon=":material/redo:", on_click=state.redo, disabled=not undone, width="stretch", key="redo",
              help=f"Redo: {undone[0]}" if undone else "Nothing to redo")
    with st.expander(f"History · {len(done)} step{'s' if len(done) != 1 else ''}", expanded=False):
        if not done and not undone:
            st.caption("No edits yet in this session.")
        # newest first; undone steps greyed above the current position
        lines = [f":gray[↷ {ui.md(n)}]" for n in reversed(undone)] + ["**▸ current design**"] + \
            [f"{len(done) - i}. {ui.md(n)}" for i, n in enumerate(reversed(done))]
        st.markdown("  \n".join(lines))
    if st.session_state.get(state.URL_TOKEN_KEY) == "":
        st.warning("This design is too large for the page address: a reload would lose it. Save it to the "
                   "Library or export it.", icon=":material/warning:")


with st.sidebar:
    _sidebar()

nav.run()
state.sync_url()  # an edit made while the page ran (forms) reaches the address too
# server-side time of this script run (benchmarks/bench_app.py reads it)
st.session_state[state.RUN_MS_KEY] = (time.perf_counter() - _T0) * 1e3
