"""App tests: every page through ``streamlit.testing.v1.AppTest``, plus the pure edit helpers.

AppTest cannot type into ``st.data_editor`` or drag on a plotly chart, so
edits are injected the way the app documents: queued edit dicts under
``state.PENDING_EDITS_KEY`` (the same ``edits`` functions the grid and table
callbacks call) or a design YAML written to ``state.DESIGN_YAML_KEY`` (what
the library page does). The browser test covers the real mouse paths.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
for p in (str(ROOT), str(APP)):
    if p not in sys.path:
        sys.path.insert(0, p)

from streamlit.testing.v1 import AppTest  # noqa: E402

import edits  # noqa: E402
import state  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.share import encode_design  # noqa: E402
from backend.spec import load_design  # noqa: E402

TIMEOUT = 120
SMALL = {"name": "small-test", "hidden_size": 64, "n_heads": 4, "vocab_size": 256, "max_seq_len": 256,
         "layers": {"n_layers": 6, "attention": "self_sdpa", "mlp": "swiglu"}}


@pytest.fixture(autouse=True)
def _library_db(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKEND_DATABASE_URL", f"sqlite:///{tmp_path / 'library.db'}")
    monkeypatch.delenv("BACKEND_APP_PASSWORD", raising=False)


def _app(design: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=TIMEOUT)
    if design is not None:
        at.query_params["d"] = encode_design(design)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _design(at: AppTest):
    return at.session_state[state.DESIGN_KEY]


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _edit(at: AppTest, *ops: dict) -> AppTest:
    at.session_state[state.PENDING_EDITS_KEY] = list(ops)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _panel(at: AppTest, name: str) -> AppTest:
    """Open one of the designer's editor panels (only the chosen one renders)."""
    at.button_group(key="editor_panel").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


# ---- designer ------------------------------------------------------------------------


def test_designer_loads_with_grid_metrics_and_table():
    at = _app()
    assert at.title[0].value == "Designer"
    labels = [m.label for m in at.metric]
    for label in ("Parameters (unique)", "Params executed", "Forward FLOPs", "KV cache / token", "Weights"):
        assert label in labels
    assert not _errors(at)
    assert len(at.get("plotly_chart")) >= 1
    assert len(at.data_editor) == 1


def test_share_link_loads_design_and_bad_link_is_an_error():
    at = _app(SMALL)
    assert _design(at).name == "small-test"
    at2 = AppTest.from_file(str(APP / "main.py"), default_timeout=TIMEOUT)
    at2.query_params["d"] = "1.not-a-valid-token!!"
    at2.run()
    assert not at2.exception
    assert "share link" in _errors(at2)
    assert _design(at2).name  # the default design is still on screen


def test_paint_typed_indices_changes_design_and_metrics():
    at = _app(SMALL)
    before = _metric(at, "Parameters (unique)")
    at.text_input(key="brush_indices").set_value("0-2").run()
    at.selectbox(key="brush_kind_attention").set_value("spectral").run()
    at.button(key="paint").click().run()
    assert not at.exception
    plan = resolve_plan(_design(at))
    assert [layer.attention for layer in plan.stacks["layers"].unique] == ["spectral"] * 3 + ["self_sdpa"] * 3
    assert _design(at).layers.rules[-1].when.layer_idx == [0, 1, 2]
    assert _metric(at, "Parameters (unique)") != before


def test_typed_indices_paint_the_chosen_stack_of_an_encoder_decoder():
    stack = {"n_layers": 4, "attention": "self_sdpa", "mlp": "swiglu"}
    ed = {"name": "ed", "architecture": "encoder_decoder", "task": "seq2seq", "hidden_size": 64, "n_heads": 4,
          "vocab_size": 256, "max_seq_len": 128, "encoder": stack, "decoder": stack}
    at = _app(ed)
    at.selectbox(key="brush_indices_stack").set_value("decoder").run()
    at.text_input(key="brush_indices").set_value("1-2").run()
    at.selectbox(key="brush_kind_attention").set_value("diff_attn").run()
    at.button(key="paint").click().run()
    assert not at.exception and not _errors(at)
    plan = resolve_plan(_design(at))
    assert [layer.attention for layer in plan.stacks["decoder"].unique] == ["self_sdpa", "diff_attn", "diff_attn", "self_sdpa"]
    assert [layer.attention for layer in plan.stacks["encoder"].unique] == ["self_sdpa"] * 4
    # an index past the chosen stack's depth is refused, naming the range
    at.text_input(key="brush_indices").set_value("7").run()
    assert "outside the executed layers 0..3" in _errors(at)


def test_paint_with_brush_params_and_mlp_row():
    at = _app(SMALL)
    at.radio(key="brush_category").set_value("mlp").run()
    at.selectbox(key="brush_kind_mlp").set_value("moe").run()
    at.number_input(key="brush_param.mlp.moe.num_experts").set_value(4).run()
    at.text_input(key="brush_indices").set_value("5").run()
    at.button(key="paint").click().run()
    rule = _design(at).layers.rules[-1]
    assert rule.mlp == "moe" and rule.params.mlp == {"num_experts": 4}


def test_painting_a_shared_layer_paints_its_unique_layer():
    cyc = {**SMALL, "layers": {"n_layers": 2, "repeat": {"mode": "cycle", "factor": 3}}}
    at = _app(cyc)
    # executed layer 4 runs unique layer 0 (cycle: u0 u1 u0 u1 u0 u1)
    _edit(at, {"op": "paint", "stack": "layers", "unique": [0], "category": "attention", "kind": "diff_attn"})
    plan = resolve_plan(_design(at))
    assert [layer.attention for layer in plan.stacks["layers"].executed] == ["diff_attn", "self_sdpa"] * 3
    assert any("shared layer" in c.value for c in at.caption)


def test_table_edit_injected_and_explicit_stack():
    at = _app(SMALL)
    _edit(at, {"op": "layout", "stack": "layers", "mode": "string", "value": "SDPA,SPECTRAL"})
    assert _design(at).layers.string == "SDPA,SPECTRAL"
    # bake into an explicit list, then a table edit changes the entry itself
    _panel(at, "Pattern / string")
    at.radio(key=f"layout_mode_layers@{at.session_state[state.VERSION_KEY]}").set_value("explicit").run()
    at.button(key="bake").click().run()
    assert _design(at).layers.explicit is not None and _design(at).layers.string is None
    _edit(at, {"op": "paint", "stack": "layers", "unique": [5], "category": "norm", "kind": "layer"})
    assert _design(at).layers.explicit[5].norm == "layer"
    assert not _design(at).layers.rules


def test_bad_string_notation_shows_error_and_keeps_design():
    at = _panel(_app(SMALL), "Pattern / string")
    v = at.session_state[state.VERSION_KEY]
    at.radio(key=f"layout_mode_layers@{v}").set_value("string").run()
    at.text_input(key=f"string_layers@{v}").set_value("SDPA*4").run()  # 4 does not divide 6
    assert "does not divide n_layers 6" in _errors(at)
    assert _design(at).layers.string is None
    at.text_input(key=f"string_layers@{v}").set_value("SDPA,NOPE").run()
    assert "unknown attention 'NOPE'" in _errors(at)
    at.text_input(key=f"string_layers@{v}").set_value("SDPA,SPECTRAL*2").run()
    assert _design(at).layers.string == "SDPA,SPECTRAL*2"
    assert "does not divide" not in _errors(at)


def test_invalid_design_keeps_last_valid():
    at = _app(SMALL)
    _edit(at, {"op": "set", "path": ["n_heads"], "value": 5})  # 5 does not divide 64
    assert "n_heads" in _errors(at) and "must divide hidden_size 64" in _errors(at)
    assert _design(at).n_heads == 4
    # a bad YAML from outside (library page) is rejected the same way
    at.session_state[state.DESIGN_YAML_KEY] = "name: x\nhidden_size: -3\nlayers: {n_layers: 2}\n"
    at.run()
    assert "hidden_size" in _errors(at)
    assert _design(at).name == "small-test"
    assert yaml.safe_load(at.session_state[state.DESIGN_YAML_KEY])["name"] == "small-test"
    # a rule out of range is a plan error (resolve_plan), also kept out
    _edit(at, {"op": "add_rule", "stack": "layers", "rule": {"when": {"layer_idx": [9]}, "attention": "spectral"}})
    assert "outside the stack" in _errors(at)
    assert not _design(at).layers.rules


def test_model_settings_form_and_undo():
    at = _panel(_app(SMALL), "Model settings")
    form_key = "model.hidden_size"
    at.number_input(key=form_key).set_value(128)
    at.button[[b.label for b in at.button].index("Apply model settings")].click().run()
    assert _design(at).hidden_size == 128
    at.button(key="undo").click().run()
    assert _design(at).hidden_size == 64


def test_stack_settings_repetition():
    at = _app(SMALL)
    _edit(at, {"op": "set", "path": ["layers", "repeat"], "value": {"mode": "layerwise", "factor": 2}})
    d = _design(at)
    assert d.layers.executed_depth == 12
    assert "Params executed" in [m.label for m in at.metric]


def test_rules_editor_add_move_remove():
    at = _panel(_app(SMALL), "Rules")
    v = at.session_state[state.VERSION_KEY]
    at.button(key=f"add_rule_layers@{v}").click().run()
    assert _design(at).layers.rules[0].when.every == 2
    _edit(at, {"op": "add_rule", "stack": "layers", "rule": {"when": {"position": "last"}, "mlp": "relu2"}})
    v = at.session_state[state.VERSION_KEY]
    at.button(key=f"rule_up_layers_1@{v}").click().run()
    assert _design(at).layers.rules[0].mlp == "relu2"
    v = at.session_state[state.VERSION_KEY]
    at.button(key=f"rule_del_layers_0@{v}").click().run()
    assert len(_design(at).layers.rules) == 1 and _design(at).layers.rules[0].attention == "spectral"


# ---- other pages ------------------------------------------------------------------------


def _page(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_analysis_page():
    at = _page(_app(SMALL), "analysis")
    assert at.title[0].value == "Analysis"
    assert len(at.get("plotly_chart")) >= 5
    assert not _errors(at)


def test_analysis_kv_curve_has_one_curve_per_cached_kind():
    import json

    mix = {"name": "mix", "hidden_size": 64, "n_heads": 4, "vocab_size": 256, "max_seq_len": 256,
           "layers": {"n_layers": 4, "string": "SDPA,CAUSAL_LINEAR", "mlp": "swiglu"}}
    at = _page(_app(mix), "analysis")
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    kv = next(f for f in figs if any(t.get("name", "").startswith("KV cache (") for t in f["data"]))
    traces = {t["name"]: t for t in kv["data"]}
    sdpa, linear = traces["KV cache of the self_sdpa layers"], traces["KV cache of the causal_linear layers"]
    # 2 SDPA layers x K and V x 4 kv heads x head dim 16 x 2 bytes (bf16) per token
    assert sdpa["y"] == [2 * 2 * 4 * 16 * 2 * s for s in sdpa["x"]]
    # 2 Performer layers: S (m x (Dh + 1)) per head in float32, whatever the length
    assert linear["y"] == [2 * 4 * 256 * (16 + 1) * 4] * len(linear["x"])


def test_diagram_page():
    at = _page(_app(SMALL), "diagram")
    assert len(at.get("graphviz_chart")) == 1
    assert any(b.label == "Download SVG" for b in at.get("download_button"))


def test_smoke_page_passes_for_a_small_design():
    at = _page(_app(SMALL), "smoke")
    at.button(key="smoke_run").click().run()
    assert not at.exception
    assert any("Passed" in s.value for s in at.success), [e.value for e in at.error]


def test_smoke_page_refuses_oversize_design():
    at = _app()
    at.session_state[state.PENDING_EDITS_KEY] = []
    from backend.spec import load_preset

    at.session_state[state.DESIGN_YAML_KEY] = load_preset("llama2_70b").to_yaml()
    at.run()
    _page(at, "smoke")
    at.button(key="smoke_run").click().run()
    assert not at.exception
    assert any("Refused" in w.value for w in at.warning)
    assert any(b.key == "smoke_scaled" for b in at.button)


def test_export_page_downloads_upload_and_presets():
    at = _page(_app(SMALL), "export")
    labels = [b.label for b in at.get("download_button")]
    assert {"Download JSON", "Download YAML", "Download Python"} <= set(labels)
    assert any("?d=1." in c.value for c in at.code)
    # a bad upload is an inline error; the design is unchanged
    at.file_uploader(key="import_upload").set_value(("bad.yaml", b"name: x\nlayers: {n_layers: 0}\n", "application/yaml")).run()
    assert "bad.yaml" in _errors(at) and "n_layers" in _errors(at)
    assert _design(at).name == "small-test"
    # a good upload loads with one click
    good = load_design({**SMALL, "name": "uploaded-one"}).to_yaml().encode()
    at.file_uploader(key="import_upload").set_value(("good.yaml", good, "application/yaml")).run()
    at.button(key="import_load").click().run()
    assert _design(at).name == "uploaded-one"
    # presets gallery: one click loads a preset
    at.button(key="preset_load_tiny").click().run()
    assert _design(at).name == "tiny"


def test_compare_page_marks_differences():
    at = _app(SMALL)
    _edit(at, {"op": "paint", "stack": "layers", "unique": [1], "category": "attention", "kind": "spectral"})
    _page(at, "compare")
    assert at.selectbox(key="compare_b").value == "Before the last edit"
    assert any("1 of 6 executed layers differ" in c.value for c in at.caption)
    assert len(at.dataframe) == 2


def test_compare_against_a_library_design():
    import os

    from backend.library import Library

    saved = {**SMALL, "name": "saved-one", "layers": {**SMALL["layers"], "n_layers": 3}}
    with Library(os.environ["BACKEND_DATABASE_URL"]) as lib:
        lib.save(saved, author="t", message="for compare")
    at = _app(SMALL)
    _page(at, "compare")
    assert "library: saved-one" in at.selectbox(key="compare_b").options
    at.selectbox(key="compare_b").set_value("library: saved-one").run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(str(df.value) for df in at.dataframe)
    assert "saved-one" in text and "small-test" in text


def test_library_page_runs():
    at = _app(SMALL)
    at.switch_page("views/library.py").run()
    assert not at.exception, [e.value for e in at.exception]


# ---- pure edit helpers ---------------------------------------------------------------------


def test_paint_merges_with_the_last_paint_rule():
    d = load_design(SMALL).to_dict()
    d = edits.paint(d, "layers", [0], "attention", "spectral")
    d = edits.paint(d, "layers", [2, 3], "attention", "spectral")
    assert d["layers"]["rules"] == [{"when": {"layer_idx": [0, 2, 3]}, "attention": "spectral"}]
    d = edits.paint(d, "layers", [1], "attention", "diff_attn", {"lambda_init": 0.5})
    assert d["layers"]["rules"][-1] == {"when": {"layer_idx": [1]}, "attention": "diff_attn",
                                         "params": {"attention": {"lambda_init": 0.5}}}
    assert [x.attention for x in resolve_plan(d).stacks["layers"].unique][:4] == ["spectral", "diff_attn", "spectral", "spectral"]


def test_bake_explicit_keeps_the_plan():
    d = load_design("hybrid").to_dict()
    before = resolve_plan(d).stacks["layers"]
    baked = edits.bake_explicit(d, "layers", list(before.unique))
    after = resolve_plan(baked).stacks["layers"]
    assert [(x.attention, x.mlp, x.norm, x.config) for x in after.executed] == \
        [(x.attention, x.mlp, x.norm, x.config) for x in before.executed]


def test_change_architecture_moves_stacks():
    d = load_design(SMALL).to_dict()
    ed = edits.set_fields(d, {"architecture": "encoder_decoder"})
    design = load_design(ed)
    assert design.task == "seq2seq" and design.encoder.n_layers == 6 and design.layers is None
    back = load_design(edits.set_fields(ed, {"architecture": "encoder"}))
    assert back.task == "mlm" and back.layers.n_layers == 6


def test_parse_indices():
    assert edits.parse_indices("0-2, 5", 8) == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="outside"):
        edits.parse_indices("7, 9", 8)
    with pytest.raises(ValueError, match="not an index"):
        edits.parse_indices("a", 8)
