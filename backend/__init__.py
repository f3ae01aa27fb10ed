"""Transformer architecture designer: design -> plan -> model / analysis / export.

Importing the package is cheap (no torch); torch is imported by ``backend.nn``
and ``backend.model`` only when a model is built.
"""
from .errors import DesignError
from .plan import Plan, resolve_plan
from .spec import Design, load_design
from . import patterns as _patterns  # noqa: E402,F401 - registers the design library's custom patterns with the plan

__all__ = ["Design", "DesignError", "Plan", "load_design", "resolve_plan"]
