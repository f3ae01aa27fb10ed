"""The one exception type for bad user input.

Every message names the field path and the offending value, e.g.
``layers.rules[2].when.every: must be >= 1, got 0``. The CLI prints it on one
line and exits 2; the app shows it inline. Never raised for internal bugs.
"""
from __future__ import annotations

from typing import Any, Iterable


MAX_PART = 40  # characters of one path component (a key) shown in a message
MAX_PATH = 200
MAX_MESSAGE = 500  # a message never echoes a whole multi-MB value back


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping the head and the tail (where hints live)."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[: limit - tail - 5]} ... {text[-tail:]}"


def format_path(parts: Iterable[Any]) -> str:
    """``("layers", "rules", 2, "when")`` -> ``layers.rules[2].when`` (long keys shortened)."""
    out = ""
    for p in parts:
        if isinstance(p, int) and not isinstance(p, bool):
            out += f"[{p}]" if len(str(p)) <= MAX_PART else f"[{str(p)[:MAX_PART - 3]}...]"
        else:
            text = str(p)
            out += ("." if out else "") + (text if len(text) <= MAX_PART else text[: MAX_PART - 3] + "...")
    return out or "<design>"


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` of at most ``limit`` characters; huge values are cut before ``repr`` runs."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DesignError(ValueError):
    """Invalid design: ``path`` is the dotted field path, ``message`` says why."""

    def __init__(self, path: str, message: str):
        # Backstop for every message: values are echoed through short_repr, and
        # whatever still gets through is shortened here.
        self.path = _shorten(str(path), MAX_PATH)
        self.message = _shorten(str(message), MAX_MESSAGE)
        super().__init__(f"{self.path}: {self.message}")

    @classmethod
    def at(cls, parts: Iterable[Any], message: str) -> "DesignError":
        return cls(format_path(parts), message)
