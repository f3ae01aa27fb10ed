"""Library page: browse, search, load, save, diff and delete shared designs.

Thin: every action is one call into ``backend.library``; this file only lays
out widgets and renders results. The current design is exchanged with the
rest of the app as YAML text in ``st.session_state[DESIGN_YAML_KEY]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT, ROOT / "app"):  # app/main.py sets both; the page also runs on its own (tests)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from backend.errors import DesignError  # noqa: E402
from backend.library import canonical_yaml, content_hash, database_url, format_diff, get_library  # noqa: E402
from backend.spec import parse_design_text  # noqa: E402

import state  # noqa: E402
import ui  # noqa: E402
from state import DESIGN_YAML_KEY  # noqa: E402
from text import md  # noqa: E402


SAVES_KEY = "library_saves"  # revisions saved from this session (keys the save form's fields)


@st.cache_resource(show_spinner=False)
def _library(url: str):
    # One engine (connection pool) per server process: shared, thread-safe, no per-user state.
    return get_library(url)


@st.cache_data(show_spinner="Comparing revisions...", max_entries=64)
def _diff(url: str, name: str, rev_a: int, rev_b: int, hash_a: str, hash_b: str) -> dict:
    # Revisions never change, so (name, numbers, content hashes) identify a diff; the
    # analysis behind the numbers is worth caching.
    return _library(url).diff(name, rev_a, rev_b)


def _latest_same(lib, name: str, design):
    """The latest revision of ``name`` when it stores exactly ``design`` (a second save would duplicate it)."""
    try:
        latest = lib.revisions(name)[-1]
    except (DesignError, IndexError):
        return None
    return latest if latest.content_hash == content_hash(canonical_yaml(design)) else None


def _fmt_time(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC")


state.init()  # no-op under app/main.py; the page also runs on its own (tests)
st.title("Design library")
ui.banner()
try:
    url = database_url()
    lib = _library(url)
except Exception as exc:  # database unreachable / misconfigured URL: say so, don't crash the app
    st.error(md(f"The design library is not available: {type(exc).__name__}: {exc}"))
    st.stop()

# ---- save the current design -------------------------------------------------
current_yaml = st.session_state.get(DESIGN_YAML_KEY)
with st.expander("Save the current design as a new revision", expanded=False):
    if not current_yaml:
        st.info("No current design yet: open or build one in the designer first.")
    else:
        try:
            current = parse_design_text(current_yaml, "yaml", source="current design")
        except DesignError as exc:
            current = None
            st.error(md(f"The current design is invalid and cannot be saved: {exc}"))
        if current is not None:
            # the message box is keyed by a save counter: after a save it is empty, not ready to be saved again
            n_saved = st.session_state.get(SAVES_KEY, 0)
            with st.form("library_save"):
                name = st.text_input("Library name", value=current.name, key=f"library_save_name@{n_saved}")
                author = st.text_input("Author", value=st.session_state.get("library_author", ""), key="library_save_author")
                message = st.text_area("Message", placeholder="what changed and why", key=f"library_save_message@{n_saved}")
                if st.form_submit_button("Save revision", type="primary"):
                    st.session_state["library_author"] = author
                    try:
                        same = _latest_same(lib, name.strip(), current)
                        if same is not None:
                            st.info(md(f"{same.name}@{same.revision} already holds exactly this design "
                                       f"(sha256 {same.content_hash[:12]}); nothing saved."))
                        else:
                            info = lib.save(current, author=author, message=message, name=name)
                            st.session_state[SAVES_KEY] = n_saved + 1
                            state.notice(md(f"Saved {info.name}@{info.revision}."))
                            st.rerun()
                    except DesignError as exc:
                        st.error(md(exc))

# ---- list and search ---------------------------------------------------------
query = st.text_input("Search", placeholder="name, description or author", key="library_search")
rows = lib.list(search=query or None)
if not rows:
    st.info("No designs match." if query else "The library is empty: save a design to start it.")
    st.stop()
st.dataframe(
    [{"name": r.name, "revisions": r.n_revisions, "latest": r.latest.revision, "author": r.latest.author,
      "saved": _fmt_time(r.latest.created_at), "message": r.latest.message, "description": r.description} for r in rows],
    hide_index=True,
)

name = st.selectbox("Design", [r.name for r in rows], key="library_design")
try:
    revisions = lib.revisions(name)
except DesignError as exc:  # deleted meanwhile by someone else
    st.warning(md(exc))
    st.stop()
numbers = [r.revision for r in reversed(revisions)]

tab_show, tab_diff, tab_delete = st.tabs(["Revisions", "Diff", "Delete"])

with tab_show:
    st.dataframe(
        [{"revision": r.revision, "author": r.author, "saved": _fmt_time(r.created_at), "message": r.message,
          "sha256": r.content_hash[:12]} for r in reversed(revisions)],
        hide_index=True,
    )
    rev = st.selectbox("Revision", numbers, key="library_revision", format_func=lambda n: f"{name}@{n}")
    try:
        revision = lib.get(name, rev)
        revision.design  # validate with the current code before offering it
        def _load(revision=revision, label=f"{name}@{rev}") -> None:
            # a callback runs before the script, so the sidebar and every page already show the new design
            if state.set_design(revision.design, f"library {label}"):
                state.notice(f"Loaded {md(label)} as the current design.")

        st.button(md(f"Load {name}@{rev} into the designer"), type="primary", key="library_load", on_click=_load)
        st.code(revision.design_yaml, language="yaml")
    except DesignError as exc:
        st.error(md(f"This revision no longer loads: {exc}"))

with tab_diff:
    if len(numbers) < 2:
        st.info("Only one revision so far.")
    else:
        c1, c2 = st.columns(2)
        rev_a = c1.selectbox("From", numbers, index=1, key="library_diff_a")
        rev_b = c2.selectbox("To", numbers, index=0, key="library_diff_b")
        try:
            hashes = {r.revision: r.content_hash for r in revisions}
            d = _diff(url, name, rev_a, rev_b, hashes[rev_a], hashes[rev_b])
        except DesignError as exc:
            st.error(md(exc))
            d = None
        if d is not None:
            if d["same_content"]:
                st.success("The two revisions hold identical designs.")
            nums = d["numbers"]
            st.subheader("Numbers")
            if nums["available"]:
                st.dataframe(nums["rows"], hide_index=True)
            else:
                st.caption(nums["note"])
            st.subheader("Design fields")
            if d["fields"]:
                st.dataframe([{"field": f["field"], "from": str(f["a"]), "to": str(f["b"])} for f in d["fields"]],
                             hide_index=True)
            else:
                st.caption("No field changes.")
            st.subheader("Executed layers")
            plan = d["plan"]
            layer_rows = (
                [{"change": "~", "layer": f"{c['stack']}[{c['index']}]",
                  "what": "; ".join(f"{k}: {v['a']} -> {v['b']}" for k, v in c["changes"].items())} for c in plan["changed"]]
                + [{"change": "+", "layer": f"{x['stack']}[{x['index']}]", "what": f"{x['attention']} / {x['mlp']} / {x['norm']}"} for x in plan["added"]]
                + [{"change": "-", "layer": f"{x['stack']}[{x['index']}]", "what": f"{x['attention']} / {x['mlp']} / {x['norm']}"} for x in plan["removed"]]
            )
            if plan.get("error"):
                st.warning(md(plan["error"]))
            if layer_rows:
                st.dataframe(layer_rows, hide_index=True)
            else:
                st.caption("No layer changes.")
            with st.expander("As text"):
                st.code(format_diff(d), language="diff")

with tab_delete:
    st.warning(f"Deleting removes **{md(name)}** and all {len(revisions)} of its revisions for everyone. This cannot be undone.")
    confirm = st.checkbox(md(f"Yes, delete {name} and all its revisions"), key=f"library_confirm_{name}")
    if st.button("Delete", disabled=not confirm):
        try:
            n = lib.delete(name, confirm=confirm)
            st.success(md(f"Deleted {name} ({n} revisions)."))
            st.rerun()
        except DesignError as exc:
            st.error(md(exc))
