"""backend.diagram: folding keeps every executed layer, DOT renders, sharing and cross-attention are marked."""
from __future__ import annotations

import shutil

import pytest

from backend.diagram import plan_to_dot, segments
from backend.plan import resolve_plan
from backend.presets import list_presets


@pytest.mark.parametrize("name", list_presets())
def test_segments_account_for_every_executed_layer(name):
    plan = resolve_plan(name)
    for stack, sp in plan.stacks.items():
        segs = segments(plan, stack)
        assert sum(s.executed_layers for s in segs) == sp.depth
        assert sum(s.unique_layers for s in segs) == sp.n_unique
        covered = [i for s in segs for r in s.runs for i in range(r.first, r.last + 1)]
        assert covered == list(range(sp.n_unique))


def test_cycle_is_one_shared_block():
    plan = resolve_plan("medium_cycle")
    (seg,) = segments(plan, "layers")
    assert seg.kind == "block" and seg.times == 8
    dot = plan_to_dot(plan)
    assert "repeat x8" in dot and "shared weights" in dot and "16 executed layers (2 unique)" in dot


def test_layerwise_and_grouped():
    base = {"name": "g", "layers": {"n_layers": 4, "repeat": {"mode": "layerwise", "factor": 3}}}
    dot = plan_to_dot(resolve_plan(base))
    assert "executed x3 each (shared weights)" in dot
    grouped = {"name": "g", "layers": {"n_layers": 4, "string": "SDPA,SPECTRAL,SDPA,SDPA",
                                       "repeat": {"mode": "grouped", "groups": [1, 3], "group_factors": [2, 1]}}}
    plan = resolve_plan(grouped)
    segs = segments(plan, "layers")
    assert [(s.kind, s.times, len(s.runs)) for s in segs] == [("block", 2, 1), ("plain", 1, 2)]
    assert "group 0: x2 (shared weights)" in plan_to_dot(plan)


def test_plain_runs_fold_identical_layers():
    plan = resolve_plan({"name": "p", "layers": {"n_layers": 6, "string": "SPECTRAL*2,SDPA*4"}})
    (seg,) = segments(plan, "layers")
    assert [(r.first, r.last) for r in seg.runs] == [(0, 1), (2, 5)]
    assert "layers 2-5" in plan_to_dot(plan)


def test_encoder_decoder_has_cross_attention_edge():
    dot = plan_to_dot(resolve_plan("t5_style"))
    assert "cluster_encoder" in dot and "cluster_decoder" in dot and "cross-attention" in dot


def test_quotes_are_escaped():
    dot = plan_to_dot(resolve_plan({"name": 'my "quoted" \\ model', "layers": {"n_layers": 1}}))
    assert 'label="my \\"quoted\\" \\\\ model"' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
@pytest.mark.parametrize("name", ["hybrid", "medium_cycle", "t5_style", "llama2_70b"])
def test_dot_renders_to_svg(name):
    graphviz = pytest.importorskip("graphviz")
    svg = graphviz.Source(plan_to_dot(resolve_plan(name))).pipe(format="svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
