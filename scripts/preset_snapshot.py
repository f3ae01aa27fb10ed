"""Write every preset's numbers and exports to a folder, to show a refactor changes none of them.

    python scripts/preset_snapshot.py OUT_DIR      # analysis JSON (two lengths), plan JSON, YAML/JSON exports,
                                                   # standalone Python export, its state-dict shapes
    diff -r BEFORE_DIR AFTER_DIR

The standalone Python file inlines ``backend/nn``; where a refactor edits those
sources its text changes by design, so ``*.state.json`` (parameter names and
shapes of the model the exported file builds, and its parameter count) is the
part of the Python export that must stay identical.
"""
from __future__ import annotations

import json
import runpy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.analysis import analyze  # noqa: E402
from backend.export import export_text  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.presets import list_presets
from backend.spec import load_preset  # noqa: E402


def _exported_state(text: str) -> dict:
    """Names, shapes and count of the parameters of the model the exported file builds (on meta)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exported_model.py"
        path.write_text(text, encoding="utf-8")
        ns = runpy.run_path(str(path), run_name="exported_model")
    with torch.device("meta"):
        model = ns["build_model"]() if "device" not in ns["build_model"].__code__.co_varnames else ns["build_model"](device="meta")
    return {"params": sum(p.numel() for p in model.parameters()),
            "state": {k: list(v.shape) for k, v in model.state_dict().items()}}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in list_presets():
        design = load_preset(name)
        for seq in (None, 128):
            r = analyze(design, seq_len=seq)
            (out / f"{name}.analyze{'' if seq is None else seq}.json").write_text(json.dumps(r, indent=1, sort_keys=True, default=str))
        (out / f"{name}.plan.json").write_text(json.dumps(resolve_plan(design).to_dict(), indent=1, sort_keys=True))
        for fmt in ("yaml", "json"):
            for resolved in (False, True):
                (out / f"{name}.{'resolved.' if resolved else ''}{fmt}").write_text(export_text(design, fmt, resolved))
        py = export_text(design, "python")
        (out / f"{name}.py.txt").write_text(py)
        (out / f"{name}.state.json").write_text(json.dumps(_exported_state(py), indent=1, sort_keys=True))
        print(name, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
