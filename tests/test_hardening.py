"""Regression tests for the red-team findings of issue 14 that are not covered elsewhere.

Each test reproduces a finding from its description: Performer redraws under
weight sharing (4), bounded rejection of huge documents (6), inputs that were
accepted or mishandled silently (7), export names that shadow modules (8).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from backend.build import build_model  # noqa: E402
from backend.export import export_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# Finding 4: Performer, redraw every call, shared weights


def _performer_design(kind: str) -> dict:
    return {"name": "performer-shared", "hidden_size": 32, "n_heads": 4, "vocab_size": 50, "max_seq_len": 16,
            "architecture": "decoder" if kind == "causal_linear" else "encoder",
            "task": "lm" if kind == "causal_linear" else "mlm",
            "layers": {"n_layers": 1, "attention": kind,
                       "params": {"attention": {"redraw_interval": 1, "fix_projection": False, "nb_features": 16}},
                       "repeat": {"mode": "cycle", "factor": 3}}}


def _performers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "projection") and hasattr(m, "redraw_interval")]


def _grads_with_recorded_projections(model, x):
    """Gradients of ``model(x).output.sum()`` and the projection each shared-attention call used."""
    (attn,) = _performers(model)  # one unique layer, executed three times
    used: list[torch.Tensor] = []
    handle = attn.register_forward_hook(lambda mod, args, out: used.append(mod.projection.detach().clone()))
    try:
        model.zero_grad()
        model(x).output.sum().backward()
    finally:
        handle.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, used


def _replayed_grads(model, x, projections):
    """The same gradients from a copy that never redraws: each call is handed its recorded projection."""
    (attn,) = _performers(model)
    attn.fix_projection = True
    queue = list(projections)

    def give(mod, args):
        mod.projection = queue.pop(0).clone()

    handle = attn.register_forward_pre_hook(give)
    try:
        model.zero_grad()
        model(x).output.sum().backward()
    finally:
        handle.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["causal_linear", "linear"])
def test_performer_redraw_with_weight_sharing_trains(kind):
    import copy

    torch.manual_seed(0)
    model = build_model(_performer_design(kind)).train()
    reference = copy.deepcopy(model)
    x = torch.randint(0, 50, (2, 8))
    grads, used = _grads_with_recorded_projections(model, x)
    assert len(used) == 3
    assert not torch.equal(used[0], used[1]) and not torch.equal(used[1], used[2])  # redrawn every call
    expected = _replayed_grads(reference, x, used)
    assert grads.keys() == expected.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], msg=name)


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the file look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_exported_performer_redraw_with_weight_sharing_trains(tmp_path):
    path = tmp_path / "performer_shared.py"
    path.write_text(export_text(_performer_design("causal_linear"), "python"))
    exported = _import_file(path, "performer_shared_export")
    torch.manual_seed(0)
    model = exported.build_model().train()
    x = torch.randint(0, 50, (2, 8))
    for _ in range(2):  # two steps: the second starts from a redrawn buffer
        model.zero_grad()
        model(x).output.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
