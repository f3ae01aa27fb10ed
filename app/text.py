"""User text inside Markdown: the one escaping rule of the app (no streamlit, no backend).

Every element that takes Markdown (``st.error``, ``st.caption``, ``st.markdown``, widget
labels) gets user text (design names, descriptions, error messages, library messages)
only through :func:`md`; ``st.markdown`` without it is for our own static strings.
"""
from __future__ import annotations

import html
import re
from typing import Any

# Every ASCII punctuation character may be backslash-escaped in CommonMark; these are the
# ones that start Markdown, HTML or Streamlit syntax (`:red[...]`, `:material/x:`, `$math$`).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&\"'])")


def md(text: Any) -> str:
    """``text`` made literal inside Markdown: ``![p](http://host/x.png)`` stays those characters
    (no image is fetched) and ``SDPA*x`` keeps its star. Line breaks become Markdown hard breaks."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", "  \n")


def plotly(text: Any) -> str:
    """User text inside a plotly label or hover text, which reads a subset of HTML (``<a href>``, ``<b>``)."""
    return html.escape(str(text), quote=False)
