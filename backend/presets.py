"""Presets: YAML designs in ``presets/``, discovered by file name.

A file dropped into the folder appears in :func:`list_presets` and everywhere a
design is accepted (CLI, app). ``BACKEND_PRESETS_DIR`` adds another folder.
This module only finds files; ``backend.spec.load_preset`` reads one.
"""
from __future__ import annotations

import os
from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_dirs() -> list[Path]:
    dirs = [PRESETS_DIR]
    extra = os.environ.get("BACKEND_PRESETS_DIR")
    if extra:
        dirs.insert(0, Path(extra))
    return [d for d in dirs if d.is_dir()]


def preset_files() -> dict[str, Path]:
    """Name -> file; earlier folders win."""
    out: dict[str, Path] = {}
    for d in reversed(preset_dirs()):
        for f in sorted(d.glob("*.y*ml")):
            out[f.stem] = f
    return dict(sorted(out.items()))


def list_presets() -> list[str]:
    return list(preset_files())


def find_preset(name: str) -> Path | None:
    return preset_files().get(name)
