"""User-defined kinds: load plugin files that define and register kinds (docs/KINDS.md).

A plugin is one Python file holding a kind's ``nn.Module`` (registered with
``backend.nn.common.register``) and its declaration (a
``backend.kinds.base`` subclass instance passed to
``backend.registry.register_kind``, whose ``module`` is
``f"{__name__}:ClassName"``). Sources, in order: ``BACKEND_PLUGINS``
(``path[:path...]``, honoured by the CLI, the app and the Docker image),
then ``--plugin FILE`` on the command line. Each file loads once per process;
loaded paths are added to ``BACKEND_PLUGINS`` so child processes (the app's
smoke workers) see the same kinds.

Bad plugins are user input: a missing file, a syntax error or an exception
while loading is a :class:`~backend.errors.DesignError` naming the file.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from .errors import DesignError

ENV = "BACKEND_PLUGINS"
_LOADED: dict[str, str] = {}  # resolved path -> module name


def module_name_for(path: Path) -> str:
    """A stable, importable module name for a plugin file (unique per path)."""
    stem = "".join(c if c.isalnum() else "_" for c in path.stem).lower() or "plugin"
    tag = hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:8]
    return f"backend_plugin_{stem}_{tag}"


def load_plugin(path: str | os.PathLike[str]) -> str:
    """Import one plugin file (once); returns its module name."""
    p = Path(path).expanduser().resolve()
    key = str(p)
    if key in _LOADED:
        return _LOADED[key]
    if not p.is_file():
        raise DesignError("plugin", f"no such file: {str(path)[:200]!r}")
    name = module_name_for(p)
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise DesignError("plugin", f"cannot load {p.name!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DesignError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:  # a plugin's own bug: one line naming the file
        sys.modules.pop(name, None)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DesignError("plugin", f"{p.name}: {type(exc).__name__}: {first[:300]}") from None
    _LOADED[key] = name
    paths = [x for x in os.environ.get(ENV, "").split(os.pathsep) if x]
    if key not in {str(Path(x).expanduser().resolve()) for x in paths}:
        os.environ[ENV] = os.pathsep.join(paths + [key])
    return name


def load_env() -> list[str]:
    """Load every file named in ``BACKEND_PLUGINS``; returns their module names."""
    return [load_plugin(x) for x in os.environ.get(ENV, "").split(os.pathsep) if x.strip()]


def plugin_path(module: str) -> Path | None:
    """The file of a loaded plugin module, or None when ``module`` is not a plugin."""
    for path, name in _LOADED.items():
        if name == module:
            return Path(path)
    return None


def loaded() -> dict[str, str]:
    return dict(_LOADED)
