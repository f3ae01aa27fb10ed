"""Exports: JSON, YAML (compact or resolved) and a standalone PyTorch file.

* :func:`export_text` / :func:`export_bytes`: the file content (the app's
  download buttons use ``export_bytes``, which also names the file);
* :func:`write_export`: write it under ``exports/`` (or a given path),
  atomically, never replacing a file without ``force``;
* :func:`cli_export`: ``python -m backend export DESIGN --format json|yaml|python|train|hf
  [--resolved] [-o PATH|-] [--force]``.

JSON/YAML round trips are exact: the compact form loads back to an equal
:class:`~backend.spec.Design`, the resolved form to the same plan
(``serialize``). The Python file imports only torch and the standard library
(``standalone``); the ``train`` format is a ``torchrun``-ready training
script that embeds it (``train``); ``hf`` is a Hugging Face config.json for the
designs a HF architecture expresses exactly (``hf``). JSON/YAML need no torch; the Python export and the YAML
header's parameter count import it lazily.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import DesignError
from ..spec import load_design
from .files import MIME, atomic_write, default_filename, exports_dir, module_name, slugify
from .serialize import compact_dict, design_dict, headline_numbers, resolved_dict, to_json, to_yaml

FORMATS = ("json", "yaml", "python", "train", "hf")


def export_text(design: Any, fmt: str, resolved: bool = False, *, numbers: dict[str, Any] | None = None,
                header: bool = True) -> str:
    """The export as text. ``numbers`` (params / FLOPs) feeds the YAML header when the caller has them.

    ``resolved`` selects the explicit per-layer form of JSON / YAML; the Python
    file is always resolved (its config lists every layer).
    """
    from ..patterns import inline_library_patterns

    design = inline_library_patterns(design)  # a design naming a library pattern exports self-contained
    if fmt == "json":
        return to_json(design, resolved)
    if fmt == "yaml":
        return to_yaml(design, resolved, header=header, numbers=numbers)
    if fmt == "python":  # always resolved: ``resolved`` makes no difference
        from .standalone import render

        return render(design)
    if fmt == "train":  # a standalone train.py embedding the Python file (``train``)
        from .train import render_train

        return render_train(design)
    if fmt == "hf":  # a Hugging Face config.json, for designs a HF architecture expresses exactly (``hf``)
        import json

        from .hf import hf_config

        return json.dumps(hf_config(design), indent=2) + "\n"
    raise DesignError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")


def export_bytes(design: Any, fmt: str, resolved: bool = False, *, numbers: dict[str, Any] | None = None) -> tuple[str, bytes, str]:
    """``(file name, content, MIME type)`` for a download button."""
    design = load_design(design)
    text = export_text(design, fmt, resolved, numbers=numbers)
    return default_filename(design.name, fmt, resolved and fmt != "python"), text.encode("utf-8"), MIME[fmt]


def write_export(design: Any, fmt: str, resolved: bool = False, *, path: str | Path | None = None,
                 force: bool = False, numbers: dict[str, Any] | None = None) -> Path:
    """Write the export; ``path`` None = ``exports/<name>.<ext>``, a folder = that folder's default name."""
    design = load_design(design)
    name, data, _ = export_bytes(design, fmt, resolved, numbers=numbers)
    if path is None:
        target = exports_dir() / name
    else:
        target = Path(path)
        if target.is_dir():
            target = target / name
    return atomic_write(target, data, force=force)


def cli_export(args: argparse.Namespace) -> int:
    """The ``export`` subcommand (arguments defined in ``backend.cli``)."""
    design = load_design(args.design)
    if args.output == "-":
        _, data, _ = export_bytes(design, args.format, args.resolved)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    # Refuse early, before the (possibly slow) rendering; atomic_write checks again.
    target = Path(args.output) if args.output else exports_dir() / default_filename(design.name, args.format, args.resolved)
    if target.is_dir():
        target = target / default_filename(design.name, args.format, args.resolved)
    if target.exists() and not args.force:
        raise DesignError(str(target), "already exists; pass --force to overwrite it")
    target = write_export(design, args.format, args.resolved, path=target, force=args.force)
    print(f"wrote {target} ({target.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


__all__ = [
    "FORMATS", "export_text", "export_bytes", "write_export", "cli_export",
    "compact_dict", "resolved_dict", "design_dict", "to_json", "to_yaml", "headline_numbers",
    "slugify", "module_name", "default_filename", "exports_dir", "atomic_write",
]
