"""Probes: does a design learn? Short seeded training runs on synthetic recall / copy tasks and a tiny text.

``run_probe`` / ``run_probes`` (``runner``) train the real model built from a
design on a task from ``tasks``; ``python -m backend probe`` is the CLI.
"""
from __future__ import annotations

from .runner import TASKS, ProbeResult, make_task, probe_design, run_probe, run_probes

__all__ = ["TASKS", "ProbeResult", "make_task", "probe_design", "run_probe", "run_probes"]
