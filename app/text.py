"""User text inside Markdown: the one escaping rule of the app (no streamlit, no backend).

Every element that takes Markdown (``st.error``, ``st.caption``, ``st.markdown``, widget
labels) gets user text (design names, descriptions, error messages, library messages)
only through :func:`md`; ``st.markdown`` without it is for our own static strings.
"""
from __future__ import annotations

import html
import re
from typing import Any

# Every ASCII punctuation character may be backslash-escaped in CommonMark. Inline syntax
# (emphasis, code, links, images, HTML, Streamlit's `:red[...]` / `:material/x:`, `$math$`)
# can start anywhere; block syntax (headings, lists, quotes, setext underlines) only at the
# start of a line.
WORD_JOINER = "\u2060"
_EMAIL_AT = re.compile(r"@(?=[\w-]+\.[\w-])")  # an "@" that would start an e-mail autolink (not "name@3")
_INLINE = re.compile(r"([\\`*_{}\[\]()!<>~$:&|])")
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))", re.MULTILINE)


def md(text: Any) -> str:
    """``text`` made literal inside Markdown: ``![p](http://host/x.png)`` stays those characters
    (no image is fetched) and ``SDPA*x`` keeps its star. Line breaks become Markdown hard breaks."""
    out = _INLINE.sub(r"\\\1", str(text))
    # "- x" -> "\- x"; "12. x" -> "12\. x" (the escape goes before the list marker's punctuation)
    out = _LINE_START.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2).isdigit() else "\\" + m.group(2)), out)
    # GFM autolinks (``http://…``, ``www.…``, ``a@b.c``) are found in the text after escapes are
    # resolved, so escaping cannot stop them: an invisible word joiner breaks the trigger instead.
    out = out.replace("://", ":" + WORD_JOINER + "//").replace("www.", "www" + WORD_JOINER + ".")
    out = _EMAIL_AT.sub("@" + WORD_JOINER, out)
    return out.replace("\n", "  \n")


def plotly(text: Any) -> str:
    """User text inside a plotly label or hover text, which reads a subset of HTML (``<a href>``, ``<b>``)."""
    return html.escape(str(text), quote=False)
