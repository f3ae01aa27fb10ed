"""Analysis: exact parameters, FLOPs and memory of a design, and the smoke test.

``analyze(design)`` (``report``) is the entry point; ``smoke_test(design)``
(``smoke``) builds real weights. Importing the package is cheap: torch is
imported by the measuring modules on first use.
"""
from __future__ import annotations

from typing import Any


def analyze(design_or_plan: Any, **kwargs: Any) -> dict[str, Any]:
    from .report import analyze as _analyze

    return _analyze(design_or_plan, **kwargs)


def smoke_test(design: Any, **kwargs: Any):
    from .smoke import smoke_test as _smoke

    return _smoke(design, **kwargs)


__all__ = ["analyze", "smoke_test"]
