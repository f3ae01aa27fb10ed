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

if (APP_DIR / "auth.py").is_file():
    from auth import require_password  # noqa: E402

    require_password()

import state  # noqa: E402
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
    st.error(_plugin_error, icon=":material/extension_off:")


def _load_share_link() -> None:
    """Decode ``?d=`` once per token; a bad link is an error message, never a crash."""
    token = st.query_params.get("d")
    if not token or token == st.session_state.get(state.SHARE_TOKEN_KEY):
        return
    st.session_state[state.SHARE_TOKEN_KEY] = token
    try:
        from backend.share import decode_design

        design = decode_design(token)
    except DesignError as exc:
        st.session_state[state.ERROR_KEY] = f"share link: {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        state.log.exception("share link failed")
        st.session_state[state.ERROR_KEY] = f"share link: could not be read ({type(exc).__name__})"
        return
    if state.set_design(design, "share link"):
        state.notice(f"Loaded **{design.name}** from the share link.")


_load_share_link()
state.sync()

# Our pages live in app/views/: Streamlit treats a folder named `pages/` next to the entry point as
# v1 auto-pages and, on a fresh server, runs a deep link (/analysis) from it without this script.
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

nav = st.navigation(pages)

with st.sidebar:
    d = state.design()
    depth = " + ".join(f"{s.executed_depth}" + ("" if n == "layers" else f" {n}") for n, s in d.stacks().items())
    st.markdown(f"**{d.name}**  \n{d.architecture} · {d.task} · {depth} layers")
    c1, c2 = st.columns(2)
    c1.button("Undo", icon=":material/undo:", on_click=state.undo, disabled=not st.session_state[state.HISTORY_KEY],
              width="stretch", key="undo")
    n_hist = len(st.session_state[state.HISTORY_KEY])
    c2.caption(f"{n_hist} step{'s' if n_hist != 1 else ''} of history")

nav.run()
# server-side time of this script run (benchmarks/bench_app.py reads it)
st.session_state[state.RUN_MS_KEY] = (time.perf_counter() - _T0) * 1e3
