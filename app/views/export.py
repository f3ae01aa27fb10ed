"""Export / Import: downloads, uploads, presets gallery and the share link."""
from __future__ import annotations

import streamlit as st

from backend.errors import DesignError
from backend.presets import list_presets
from backend.spec import parse_design_text

import state
import ui
from text import md

design = state.design()
djson = state.design_json()

st.title("Export / Import")
ui.banner()

# ---- export ---------------------------------------------------------------------------
st.subheader("Export")
resolved = st.toggle("Resolved form (explicit per-layer list in JSON / YAML)", key="export_resolved",
                     help="The compact form keeps patterns, strings and rules; the resolved form lists every unique layer.")
cols = st.columns(3)
for col, (fmt, label, icon) in zip(cols, [("json", "JSON", ":material/data_object:"), ("yaml", "YAML", ":material/description:"),
                                          ("python", "Python", ":material/code:")]):
    with col, state.shown_errors(f"the {label} export"):
        with st.spinner(f"Rendering {label}..."):
            filename, data, mime = state.cached_export(djson, fmt, resolved and fmt != "python")
        st.download_button(f"Download {label}", data=data, file_name=filename, mime=mime, icon=icon,
                           key=f"download_{fmt}", width="stretch", on_click="ignore")
        st.caption(f"{md(filename)} · {len(data):,} bytes")
with state.shown_errors("the Hugging Face config export"):
    from backend.errors import DesignError

    try:
        filename, data, mime = state.cached_export(djson, "hf", False)
    except DesignError as exc:  # most designs have no Hugging Face architecture: say why, as text
        st.caption(f":material/info: Hugging Face config.json: not available for this design. {md(str(exc))}")
    else:
        st.download_button("Download Hugging Face config.json", data=data, file_name=filename, mime=mime,
                           icon=":material/hub:", key="download_hf", on_click="ignore")
        st.caption(f"{md(filename)} · imports back (`import-hf`) to exactly this model's numbers")
with st.expander("Preview"):
    fmt = st.segmented_control("Format", ["yaml", "json", "python"], default="yaml", key="export_preview_fmt") or "yaml"
    with state.shown_errors("the export preview"):
        _, data, _ = state.cached_export(djson, fmt, resolved and fmt != "python")
        st.code(data.decode("utf-8"), language={"yaml": "yaml", "json": "json", "python": "python"}[fmt])
st.caption("The Python file imports only torch and the standard library; `build_model()` rebuilds exactly this model "
           "(same parameter names and shapes).")

# ---- share link -----------------------------------------------------------------------
st.subheader("Share link")
with state.shown_errors("the share link"):
    from backend.share import encode_design

    token = encode_design(design)
    base = None
    try:
        base = st.context.url
    except Exception:  # noqa: BLE001 - older/limited contexts have no URL
        base = None
    base = (base or "").split("?")[0].rstrip("/")
    if base.endswith("/export"):
        base = base[: -len("/export")]
    link = f"{base or ''}/?d={token}"
    st.code(link, language=None, wrap_lines=True)
    st.caption("Anyone with access to this server who opens the link gets this design in their own session.")

# ---- import -------------------------------------------------------------------------------
st.subheader("Import")
up = st.file_uploader("Upload a design (JSON or YAML)", type=["json", "yaml", "yml"], key="import_upload")
if up is not None:
    raw = up.getvalue()
    fmt = "json" if up.name.lower().endswith(".json") else "yaml"
    try:
        uploaded = parse_design_text(raw, fmt, source=up.name)
        state.validate(uploaded)
    except DesignError as exc:
        st.error(f"**{md(up.name)}** is not a valid design — {md(exc)}")
    except Exception as exc:  # noqa: BLE001
        state.log.exception("upload failed")
        st.error(f"**{md(up.name)}** could not be read ({type(exc).__name__}).")
    else:
        st.session_state[state.UPLOADED_KEY] = state.canonical(uploaded)
        st.success(f"**{md(up.name)}**: valid design {md(uploaded.name)} ({uploaded.architecture}, {uploaded.task}).")

        def _load(d=uploaded, name=up.name) -> None:
            if state.set_design(d, f"upload {name}"):
                state.notice(f"Loaded **{md(d.name)}** from {md(name)}.")

        st.button("Load it into the designer", type="primary", on_click=_load, key="import_load")

# ---- presets gallery --------------------------------------------------------------------
st.subheader("Presets")
names = list_presets()
query = st.text_input("Filter presets", key="preset_filter", placeholder="name or description")
grid_cols = st.columns(3)
shown = 0
for name in names:
    try:
        p = state.cached_preset(name)
    except DesignError as exc:
        st.caption(md(f"preset {name} does not load: {exc}"))
        continue
    if query and query.lower() not in (name + " " + p.description).lower():
        continue
    depth = " + ".join(f"{s.executed_depth}" + ("" if n == "layers" else f" {n}") for n, s in p.stacks().items())
    with grid_cols[shown % 3].container(border=True):
        st.markdown(f"**{md(name)}**")
        st.caption(f"{p.architecture} · {p.task} · {depth} layers · width {p.hidden_size}")
        st.caption(md(p.description[:160] + ("…" if len(p.description) > 160 else "")))

        def _load_preset(d=p, name=name) -> None:
            if state.set_design(d, f"preset {name}"):
                state.notice(f"Loaded preset **{md(name)}**.")

        st.button("Load", key=f"preset_load_{name}", on_click=_load_preset, width="stretch")
    shown += 1
if not shown:
    st.info("No preset matches.")
