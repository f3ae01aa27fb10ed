"""A local Hugging Face checkpoint -> this project's state dict (``import-hf CONFIG --weights FILE``).

Offline only: the checkpoint is a local ``model.safetensors``, several shards,
or the shards' ``model.safetensors.index.json``; nothing is downloaded. The
names go through the family's map (:func:`backend.hf.map_state_dict`, which
refuses any name it cannot place), then the result is checked, name by name
and shape by shape, against the model the imported design builds on the meta
device, so the written file loads strictly into ``build_model(design)`` and
into the standalone export's ``build_model()``. The output is one
``.safetensors`` file written atomically (tensors that share storage, a tied
head, are stored once each).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import DesignError, short_repr


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:  # pragma: no cover - a dependency in requirements.txt
        raise DesignError("--weights", "needs the safetensors package (pip install safetensors)") from None
    return st


def shard_files(paths: list[str | Path]) -> list[Path]:
    """The safetensors files named by ``paths`` (files, or an ``*.index.json`` naming its shards)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise DesignError("--weights", f"{short_repr(str(p))} is not a file")
        if p.name.endswith(".json"):
            try:
                index = json.loads(p.read_text(encoding="utf-8"))
                shards = sorted(set(index["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise DesignError("--weights", f"{short_repr(str(p))} is not a safetensors index (no weight_map)") from None
            for s in shards:
                f = p.parent / s
                if not f.is_file() or Path(s).name != s:
                    raise DesignError("--weights", f"shard {short_repr(s)} named by {p.name} is not in {p.parent}")
                out.append(f)
        elif p.suffix == ".safetensors":
            out.append(p)
        else:
            raise DesignError("--weights", f"{short_repr(str(p))}: expected a .safetensors file or its .index.json")
    return out


def load_checkpoint(paths: list[str | Path]) -> dict[str, Any]:
    st = _safetensors()
    state: dict[str, Any] = {}
    for f in shard_files(paths):
        try:
            part = st.load_file(str(f))
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: one line, naming it
            raise DesignError("--weights", f"{f.name} is not a readable safetensors file ({type(exc).__name__})") from None
        dup = set(part) & set(state)
        if dup:
            raise DesignError("--weights", f"tensor {short_repr(sorted(dup)[0])} appears in two shards")
        state.update(part)
    return state


def convert(config: dict[str, Any], design: Any, paths: list[str | Path]) -> dict[str, Any]:
    """Our state dict for ``design`` (the import of ``config``) from the checkpoint files; strict."""
    from ..build import build_model
    from . import map_state_dict

    state = map_state_dict(config.get("model_type"), load_checkpoint(paths), config)
    want = build_model(design, device="meta").state_dict()
    for name, ref in want.items():
        if name not in state:
            raise DesignError("--weights", f"the checkpoint has no tensor for {name} {tuple(ref.shape)}")
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise DesignError("--weights", f"{name} has shape {tuple(got.shape)}, the design needs {tuple(ref.shape)}")
    extra = sorted(set(state) - set(want))
    if extra:
        raise DesignError("--weights", f"{extra[0]} has no place in the design's model")
    seen: set[int] = set()
    out: dict[str, Any] = {}
    for name in want:
        t = state[name]
        key = t.untyped_storage().data_ptr()
        out[name] = t.contiguous().clone() if key in seen else t.contiguous()
        seen.add(key)
    return out


def write_weights(state: dict[str, Any], path: str | Path, *, force: bool = False) -> Path:
    """Write a state dict as one safetensors file, all-or-nothing; refuse to replace without ``force``."""
    st = _safetensors()
    path = Path(path)
    if path.exists() and not force:
        raise DesignError(str(path), "already exists; pass --force to overwrite it")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent if str(path.parent) else "."))
    os.close(fd)
    try:
        st.save_file(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
