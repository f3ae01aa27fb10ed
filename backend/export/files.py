"""Where export files go: safe names, the default folder, atomic writes.

* The default folder is ``exports/`` at the repository root
  (``BACKEND_EXPORTS_DIR`` overrides it, e.g. a volume in Docker).
* File names come from the design name, slugified to ``[a-z0-9_-]`` (no path
  separators, no leading dot, never empty), so a name can never point
  outside the folder or create a hidden file; a Python file never takes the
  name of a module it could shadow (``torch`` -> ``torch_design.py``).
* Writes are atomic: a temporary file in the target folder, fsync, then a
  rename. A reader never sees half a file, and an existing file is never
  replaced unless ``force`` is given.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import unicodedata
from pathlib import Path

from ..errors import DesignError

EXPORTS_DIR = Path(__file__).resolve().parent.parent.parent / "exports"
MAX_SLUG = 80
EXTENSIONS = {"json": ".json", "yaml": ".yaml", "python": ".py", "train": "_train.py", "hf": ".config.json"}
MIME = {"json": "application/json", "yaml": "application/yaml", "python": "text/x-python", "train": "text/x-python",
        "hf": "application/json"}
# Names Windows reserves for devices; a file called `con.json` is unusable there.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def exports_dir() -> Path:
    env = os.environ.get("BACKEND_EXPORTS_DIR", "").strip()
    return Path(env) if env else EXPORTS_DIR


def slugify(name: str, *, sep: str = "-") -> str:
    """``"Modèle: v2/β"`` -> ``"modele-v2"``; never empty, never hidden, no separators."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", sep, text).strip(sep)[:MAX_SLUG].strip(sep)
    if not text:
        text = "design"
    if text in _RESERVED:
        text += f"{sep}design"
    return text


# A file `typing.py` or `torch.py` next to the export shadows that module for the
# export itself (`python torch.py` imports itself as torch) and for every script run
# from that folder. The standard library, torch with what it imports, and the
# packages an ML engineer runs beside it (a fixed list: file names must not depend
# on what this machine has installed).
_SHADOWED = frozenset(sys.stdlib_module_names) | {
    "torch", "torchvision", "torchaudio", "torchgen", "functorch", "triton", "numpy", "scipy", "sympy", "mpmath",
    "networkx", "jinja2", "markupsafe", "filelock", "fsspec", "typing_extensions", "setuptools", "pkg_resources",
    "pip", "wheel", "yaml", "pydantic", "pandas", "matplotlib", "sklearn", "transformers", "tokenizers",
    "safetensors", "huggingface_hub", "datasets", "accelerate", "einops", "tqdm", "requests", "packaging",
    "pytest", "hypothesis", "streamlit", "backend", "app", "tests", "sitecustomize", "usercustomize",
}


def module_name(name: str) -> str:
    """A slug that is also an importable Python module name (``hybrid_demo``) and shadows no module (``torch_design``)."""
    slug = slugify(name, sep="_")
    slug = slug if slug[0].isalpha() else f"model_{slug}"
    return f"{slug}_design" if slug in _SHADOWED else slug


def default_filename(name: str, fmt: str, resolved: bool = False) -> str:
    if fmt not in EXTENSIONS:
        raise DesignError("format", f"must be one of {', '.join(EXTENSIONS)}, got {fmt!r}")
    if fmt in ("python", "train"):
        return module_name(name) + EXTENSIONS[fmt]
    return slugify(name) + (".resolved" if resolved else "") + EXTENSIONS[fmt]


def atomic_write(path: Path, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` all-or-nothing; refuse to replace a file unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise DesignError(str(path), "is a directory; give a file path or the folder's file name")
    if path.exists() and not force:
        raise DesignError(str(path), "already exists; pass --force (force=True) to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DesignError(str(parent), f"cannot create the folder: {exc.strerror or exc}") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if force:
            os.replace(tmp, path)
        else:
            # link() fails if the name appeared meanwhile: no race can overwrite a file.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise DesignError(str(path), "already exists; pass --force (force=True) to overwrite it") from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise DesignError(str(path), "already exists; pass --force (force=True) to overwrite it") from None
                os.replace(tmp, path)
    except OSError as exc:
        raise DesignError(str(path), f"cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
