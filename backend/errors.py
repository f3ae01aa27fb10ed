"""The one exception type for bad user input.

Every message names the field path and the offending value, e.g.
``layers.rules[2].when.every: must be >= 1, got 0``. The CLI prints it on one
line and exits 2; the app shows it inline. Never raised for internal bugs.
"""
from __future__ import annotations

from typing import Any, Iterable


def format_path(parts: Iterable[Any]) -> str:
    """``("layers", "rules", 2, "when")`` -> ``layers.rules[2].when``."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "<design>"


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DesignError(ValueError):
    """Invalid design: ``path`` is the dotted field path, ``message`` says why."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")

    @classmethod
    def at(cls, parts: Iterable[Any], message: str) -> "DesignError":
        return cls(format_path(parts), message)
