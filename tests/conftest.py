"""Shared pytest fixtures. Tests run from the repo root; the package is imported in place."""
from __future__ import annotations

import sys
from pathlib import Path

import os

import pytest
from hypothesis import settings

# CI explores the same examples every run (a red CI must mean a real regression);
# local runs keep drawing new examples to find new bugs.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
