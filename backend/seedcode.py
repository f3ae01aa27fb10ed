"""Run seed-style Python (code written against the five seed systems) on ``backend.compat``.

``python -m backend from-code SNIPPET.py`` executes the script with its imports
from the seed packages (``models.transformer…``, ``config.…``, ``transformer.…``,
``model.…``) redirected to :mod:`backend.compat`, collects the configs and models
it builds, and prints their designs as YAML documents — the migration path from
an old constructor call to a design the app can open, analyse and export.

The script runs in this process in a fresh namespace, with its working
directory set to its own folder (so relative config files resolve) and its
prints sent to stderr (stdout carries only the designs). It is the user's own
code, run as they would run it; nothing is sandboxed.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from .errors import DesignError

# Top-level packages of the seed systems' code (seed 000: models.transformer.*,
# 001: config.*, 002: transformer.*, 004: model.*).
SEED_PACKAGES = ("models", "config", "transformer", "model")
_ROOTS = "|".join(SEED_PACKAGES)
_FROM_IMPORT = re.compile(r"^(\s*)from\s+(" + _ROOTS + r")(\.[\w.]+)?\s+import\s+", re.M)
_IMPORT_AS = re.compile(r"^(\s*)import\s+(" + _ROOTS + r")(\.[\w.]+)?\s+as\s+(\w+)\s*$", re.M)


def rewrite_imports(source: str) -> str:
    """``from <seed package>… import A, B`` -> ``from backend.compat import A, B`` and
    ``import <seed package>… as m`` -> ``import backend.compat as m``.

    Only the head of each statement changes, so line numbers (and therefore
    error locations) stay those of the original text.
    """
    source = _FROM_IMPORT.sub(lambda m: f"{m.group(1)}from backend.compat import ", source)
    return _IMPORT_AS.sub(lambda m: f"{m.group(1)}import backend.compat as {m.group(4)}", source)


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a Markdown document, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```", text, re.S | re.M)


def _where(exc: BaseException, filename: str) -> str:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        line = exc.lineno
    return f"{filename}:{line}" if line else filename


def run_source(source: str, filename: str, namespace: dict[str, Any] | None = None) -> list[Any]:
    """Execute seed-style ``source``; the top-level seed objects it built, in order.

    A DesignError keeps its field path; any other failure of the script becomes a
    one-line DesignError naming the script line and the exception.
    """
    from . import compat

    ns = namespace if namespace is not None else {"__name__": "__main__", "__file__": filename}
    with compat.capture_models() as built:
        try:
            exec(compile(rewrite_imports(source), filename, "exec"), ns)  # noqa: S102 - the user's own script
        except DesignError as exc:
            raise DesignError(exc.path, f"{exc.message} (at {_where(exc, filename)})") from None
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise DesignError(filename, f"the script exited with status {exc.code}") from None
        except Exception as exc:  # the script's own error, as one line
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise DesignError(_where(exc, filename), f"{type(exc).__name__}: {first}") from None
        return list(built)


def designs_yaml(objects: list[Any], compact: bool = False) -> str:
    """One YAML document per object (``---`` between), headed by a comment naming its class."""
    docs = []
    for obj in objects:
        docs.append(f"# {type(obj).__name__}\n{obj.to_design().to_yaml(exclude_defaults=compact)}")
    return "---\n".join(docs)


def cli_from_code(args: Any) -> int:
    path = Path(args.script)
    if not path.is_file():
        raise DesignError(str(path), "no such file")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DesignError(str(path), f"is not UTF-8 text (byte {exc.start})") from None
    cwd = os.getcwd()
    sink = io.StringIO() if args.quiet else sys.stderr
    from . import compat

    try:
        os.chdir(path.resolve().parent)
        device = compat.default_device("meta") if args.meta else contextlib.nullcontext()
        with contextlib.redirect_stdout(sink), device:
            built = run_source(source, str(path.resolve()))
    finally:
        os.chdir(cwd)
    if not built:
        raise DesignError(str(path), "the script built no seed-style config or model (nothing to print)")
    sys.stdout.write(designs_yaml(built, compact=args.compact))
    return 0
