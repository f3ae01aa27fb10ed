"""Diagram: the architecture as a graph (repeated blocks folded, shared weights marked)."""
from __future__ import annotations

import streamlit as st

import state
import ui

st.title("Diagram")
ui.banner()
design = state.design()
djson = state.design_json()

with state.shown_errors("the diagram"):
    dot = state.cached_dot(djson)
    st.caption("Consecutive layers with the same configuration are folded into one box; dashed purple clusters run "
               "several times with **shared weights** (cycle / grouped repetition), purple boxes repeat each layer "
               "(layerwise). Box colour = attention kind.")
    st.graphviz_chart(dot, width="content")
    c1, c2 = st.columns(2)
    with c1, state.shown_errors("the SVG export"):
        svg = state.cached_svg(dot)
        st.download_button("Download SVG", data=svg, file_name=f"{design.name}.svg", mime="image/svg+xml",
                           icon=":material/download:", key="diagram_svg", on_click="ignore")
    with c2:
        st.download_button("Download DOT", data=dot.encode(), file_name=f"{design.name}.dot", mime="text/vnd.graphviz",
                           icon=":material/download:", key="diagram_dot", on_click="ignore")
    with st.expander("DOT source"):
        st.code(dot, language="dot")
