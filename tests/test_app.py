"""App tests: every page through ``streamlit.testing.v1.AppTest``, plus the pure edit helpers.

AppTest cannot type into ``st.data_editor`` or drag on a plotly chart, so
edits are injected the way the app documents: queued edit dicts under
``state.PENDING_EDITS_KEY`` (the same ``edits`` functions the grid and table
callbacks call) or a design YAML written to ``state.DESIGN_YAML_KEY`` (what
the library page does). The browser test covers the real mouse paths.
"""
from __future__ import annotations

import re
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


def _shown(markdown: str) -> str:
    """What a CommonMark renderer shows for ``markdown`` as far as escapes go: ``\\*`` is ``*``
    (and the invisible word joiners that stop autolinks are not there for a reader)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def _errors(at: AppTest) -> str:
    return "\n".join(_shown(e.value) for e in at.error)


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


def test_brush_nullable_bool_param_stays_null_until_chosen():
    """The dense MLP's `bias` (null = the model's): a three-way choice, not a checkbox that would write false."""
    at = _app(SMALL)
    at.radio(key="brush_category").set_value("mlp").run()
    at.selectbox(key="brush_kind_mlp").set_value("mlp").run()
    at.text_input(key="brush_indices").set_value("5").run()
    at.button(key="paint").click().run()
    assert "bias" not in (_design(at).layers.rules[-1].params.mlp or {})
    at.selectbox(key="brush_param.mlp.mlp.bias").set_value("true").run()
    at.button(key="paint").click().run()
    assert _design(at).layers.rules[-1].params.mlp == {"bias": True}


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
    at.selectbox(key="new_rule_kind").set_value("spectral").run()
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
    assert {"Download JSON", "Download YAML", "Download Python", "Download Hugging Face config.json"} <= set(labels)
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


def test_export_page_says_why_a_design_has_no_hugging_face_config():
    at = _page(_app({**SMALL, "layers": {**SMALL["layers"], "attention": "spectral"}}), "export")
    assert "Download Hugging Face config.json" not in [b.label for b in at.get("download_button")]
    assert any("not available for this design" in c.value and "spectral" in c.value for c in at.caption)
    assert not at.error


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


# ---- issue 15: broken items, each reproduced -----------------------------------------------

PERFORMER = {"name": "perf", "hidden_size": 64, "n_heads": 4, "vocab_size": 256, "max_seq_len": 256,
             "layers": {"n_layers": 2, "attention": "causal_linear", "mlp": "swiglu"}}


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _number(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


def _text_input(at: AppTest, label_start: str):
    return next(t for t in at.text_input if t.label.startswith(label_start))


def test_invalid_yaml_in_stack_params_is_an_error_naming_the_field():
    at = _panel(_app(SMALL), "Stack, repetition & flow")
    _text_input(at, "stack params").set_value("{mlp: [")
    _button(at, "Apply stack settings").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "layers.params: is not valid YAML" in _errors(at)
    assert _design(at).layers.params.mlp == {}


def test_grid_labels_are_drawn_once_and_faded_cells_stay_readable():
    import grid

    sp = resolve_plan({**SMALL, "layers": {"n_layers": 2, "repeat": {"mode": "cycle", "factor": 3}}}).stacks["layers"]
    fig = grid.grid_figure(sp).to_plotly_json()
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heat) == 2
    for r in range(3):
        for j in range(sp.depth):
            labels = [t["text"][r][j] for t in heat if t["text"][r][j]]
            assert len(labels) == 1, (r, j, labels)  # a second label layer would overprint the first

    # WCAG 2.1 contrast ratio of the faded cells' labels against their (opaque) cell colour
    def lum(hex_colour: str) -> float:
        chans = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in chans]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    faded = heat[1]
    assert faded.get("opacity", 1) == 1  # trace opacity would fade the labels as well
    text_colour = faded["textfont"]["color"]
    used = {faded["z"][r][j] for r in range(3) for j in range(sp.depth) if faded["z"][r][j] is not None}
    scale = faded["colorscale"]
    n = len(scale) // 2
    for code in used:
        cell = scale[2 * code][1]
        hi, lo = sorted((lum(cell), lum(text_colour)), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, (cell, text_colour)
    assert n == len(heat[0]["colorscale"]) // 2


def test_a_refused_value_is_reported_under_its_own_field():
    at = _panel(_app(SMALL), "Model settings")
    at.number_input(key="model.dropout").set_value(1.5)
    _button(at, "Apply model settings").click().run()
    assert "dropout" in _errors(at)
    # the browser must not clamp (a clamped input keeps the old value and says nothing)
    assert not at.number_input(key="model.hidden_size").proto.has_min
    at.number_input(key="model.dropout").set_value(0.0)
    at.number_input(key="model.hidden_size").set_value(-768)
    _button(at, "Apply model settings").click().run()
    assert "hidden_size" in _errors(at) and "dropout" not in _errors(at)
    assert _design(at).hidden_size == 64
    # an unchanged form clears the stale banner instead of leaving it up as if it were this submit's
    at.number_input(key="model.hidden_size").set_value(64)
    _button(at, "Apply model settings").click().run()
    assert not _errors(at)
    at = _panel(_app(SMALL), "Stack, repetition & flow")
    assert not _number(at, "n_layers (unique)").proto.has_min
    _number(at, "n_layers (unique)").set_value(0)
    _button(at, "Apply stack settings").click().run()
    assert "layers.n_layers" in _errors(at)


def _raw_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_error_text_is_literal_not_markdown():
    at = _panel(_app(SMALL), "Pattern / string")
    v = at.session_state[state.VERSION_KEY]
    at.radio(key=f"layout_mode_layers@{v}").set_value("string").run()
    at.text_input(key=f"string_layers@{v}").set_value("SPECTRAL,SDPA*x").run()
    raw = [e for e in _raw_errors(at) if "SDPA" in e]
    assert raw and "SDPA*x" in _errors(at)
    for e in raw:  # every star of the message is escaped (the banner's own **Not applied** aside)
        body = e.replace("**Not applied**", "")
        assert not re.search(r"(?<!\\)[*_`]", body), e


def test_hostile_design_name_is_shown_as_text():
    hostile = "![p](http://127.0.0.1:9/pixel.png) <img src=x> :red[x]"
    at = _app({**SMALL, "name": hostile})
    side = [m.value for m in at.sidebar.markdown]
    assert any(hostile in _shown(m) for m in side)
    for m in side:  # no Markdown / HTML / directive syntax left unescaped
        assert not re.search(r"(?<!\\)[!\[\]()<>:]", m), m


def test_depth_shrink_after_painting_offers_to_fit_the_rules():
    at = _app(SMALL)
    _edit(at, {"op": "paint", "stack": "layers", "unique": [1, 5], "category": "attention", "kind": "spectral"})
    _panel(at, "Stack, repetition & flow")
    _number(at, "n_layers (unique)").set_value(3)
    _button(at, "Apply stack settings").click().run()
    assert "outside the stack" in _errors(at)
    assert _design(at).layers.n_layers == 6
    at.button(key="depth_fit_apply").click().run()
    assert not at.exception
    d = _design(at)
    assert d.layers.n_layers == 3 and d.layers.rules[0].when.layer_idx == [1]
    # a string whose counts no longer divide the depth: its first entries
    at = _app({**SMALL, "layers": {"n_layers": 6, "string": "SDPA*3,SPECTRAL*3"}})
    _panel(at, "Stack, repetition & flow")
    _number(at, "n_layers (unique)").set_value(4)
    _button(at, "Apply stack settings").click().run()
    at.button(key="depth_fit_apply").click().run()
    assert _design(at).layers.string == "SDPA*3,SPECTRAL" and _design(at).layers.n_layers == 4


def test_saving_the_same_revision_twice_stores_it_once():
    import os

    from backend.library import Library

    at = _page(_app(SMALL), "library")
    for attempt in range(2):
        at.text_input(key="library_save_author").set_value("ann")
        at.text_area[0].set_value("first")
        _button(at, "Save revision").click().run()
        assert not at.exception
        if attempt == 0:
            assert any("Saved small-test@1" in _shown(s.value) for s in at.success)
            assert at.text_area[0].value == ""  # the saved message does not stay in the box
    with Library(os.environ["BACKEND_DATABASE_URL"]) as lib:
        assert [r.revision for r in lib.revisions("small-test")] == [1]
    assert any("already holds exactly this design" in _shown(i.value) for i in at.info)


def test_string_notation_says_rules_apply_on_top_and_can_clear_them():
    at = _app({**SMALL, "layers": {**SMALL["layers"], "rules": [{"when": {"position": "last"}, "attention": "spectral"}]}})
    _panel(at, "Pattern / string")
    v = at.session_state[state.VERSION_KEY]
    at.radio(key=f"layout_mode_layers@{v}").set_value("string").run()
    assert any("apply on top of the string" in w.value for w in at.warning)
    at.button(key=f"clear_rules_layers@{v}").click().run()
    assert not _design(at).layers.rules


def test_clicking_the_active_editor_tab_keeps_it_open():
    at = _panel(_app(SMALL), "Rules")
    at.button_group(key="editor_panel").set_value(None).run()
    assert not at.exception
    assert any("Rules apply in order" in c.value for c in at.caption)
    assert len(at.data_editor) == 0


def test_brush_offers_only_kinds_that_run_in_the_stack():
    from backend.registry import ATTENTION

    at = _app(SMALL)  # a decoder: causal
    offered = at.selectbox(key="brush_kind_attention").options
    assert set(offered) == {k for k, info in ATTENTION.items() if info.causal}
    enc = _app({**SMALL, "architecture": "encoder", "task": "mlm"})
    assert set(enc.selectbox(key="brush_kind_attention").options) == {k for k, i in ATTENTION.items() if i.bidirectional}


def test_messages_name_the_field_once():
    at = _panel(_app(SMALL), "Stack, repetition & flow")
    at.selectbox[[s.label for s in at.selectbox].index("mode")].set_value("grouped")
    _text_input(at, "groups").set_value("1, x")
    _button(at, "Apply stack settings").click().run()
    assert "layers.repeat.groups: 'x' is not an integer" in _errors(at)
    at = _app({**SMALL, "layers": {**SMALL["layers"], "rules": [{"when": {"position": "last"}, "attention": "spectral"}]}})
    _panel(at, "Rules")
    _text_input(at, "fraction").set_value("abc")
    _button(at, "Update rule").click().run()
    assert "layers.rules[0].when.fraction: 'abc' is not a number" in _errors(at)
    assert "fraction [a, b]" in [t.label for t in at.text_input]  # the form the error message uses
    _panel(at, "Pattern / string")
    v = at.session_state[state.VERSION_KEY]
    at.radio(key=f"layout_mode_layers@{v}").set_value("string").run()
    at.text_input(key=f"string_layers@{v}").set_value("SDPA*4").run()
    assert "layers.string:" in _errors(at) and "layers.string: layers.string" not in _errors(at)


def test_rule_every_can_be_cleared():
    at = _app({**SMALL, "layers": {**SMALL["layers"], "rules": [{"when": {"every": 2, "position": "last"}, "attention": "spectral"}]}})
    _panel(at, "Rules")
    _text_input(at, "every").set_value("")
    _button(at, "Update rule").click().run()
    assert not _errors(at)
    when = _design(at).layers.rules[0].when
    assert when.every is None and when.position == "last"


def test_library_load_updates_the_sidebar_in_the_same_run():
    import os

    from backend.library import Library

    with Library(os.environ["BACKEND_DATABASE_URL"]) as lib:
        lib.save({**SMALL, "name": "from-library"}, author="t", message="m")
    at = _page(_app(SMALL), "library")
    at.button(key="library_load").click().run()
    assert _design(at).name == "from-library"
    assert any("from-library" in m.value for m in at.sidebar.markdown)


def test_repainting_drops_the_overridden_paint():
    d = load_design(SMALL).to_dict()
    d = edits.paint(d, "layers", [0, 1], "attention", "spectral")
    d = edits.paint(d, "layers", [0, 1], "attention", "diff_attn")
    assert d["layers"]["rules"] == [{"when": {"layer_idx": [0, 1]}, "attention": "diff_attn"}]
    assert not resolve_plan(d).warnings
    # a repaint that a rule in between depends on is kept (the plan must not change)
    d = load_design(SMALL).to_dict()
    d = edits.paint(d, "layers", [0], "attention", "spectral")
    d = edits.add_rule(d, "layers", {"when": {"position": "first"}, "params": {"attention": {"adaptive": True}}})
    before = [x.to_dict() for x in resolve_plan(edits.add_rule(d, "layers", {"when": {"layer_idx": [0]}, "attention": "spectral"})).layers]
    d = edits.paint(d, "layers", [0], "attention", "spectral")
    assert [x.to_dict() for x in resolve_plan(d).layers] == before


def test_share_link_session_has_no_history_and_no_deltas():
    at = _app(SMALL)
    assert not at.session_state[state.HISTORY_KEY]
    assert all(m.delta in (None, "") for m in at.metric)


def test_kv_cache_headline_shows_constant_state():
    from backend.analysis import analyze

    at = _app(PERFORMER)
    state_bytes = analyze(resolve_plan(PERFORMER))["memory"]["kv_cache"]["state_bytes"]
    # 2 layers x 4 heads x S (m x (Dh + 1)) float32, m = nb_features default 256 (as test_analysis_kv_curve...)
    assert state_bytes == 2 * 4 * 256 * (16 + 1) * 4
    value = _metric(at, "KV cache / token")
    assert value.startswith("0 B") and "state" in value and "136" in value  # 139,264 B = 136 KiB
    _page(at, "compare")
    table = at.dataframe[0].value.data if hasattr(at.dataframe[0].value, "data") else at.dataframe[0].value
    row = table[table["metric"] == "decoding state (constant)"].iloc[0]
    assert "136" in row["A"]


# ---- undo / redo and the address ------------------------------------------------------------


def test_undo_redo_with_named_steps():
    at = _app(SMALL)
    _edit(at, {"op": "paint", "stack": "layers", "unique": [0], "category": "attention", "kind": "spectral"})
    _edit(at, {"op": "set", "path": ["hidden_size"], "value": 128})
    names = [n for n, _ in at.session_state[state.HISTORY_KEY]]
    assert len(names) == 2 and names[0].startswith("edit paint")
    at.button(key="undo").click().run()
    assert _design(at).hidden_size == 64
    at.button(key="undo").click().run()
    assert not _design(at).layers.rules
    history = " ".join(m.value for m in at.sidebar.markdown)
    assert "↷" in history and "edit set" in _shown(history)
    at.button(key="redo").click().run()
    assert _design(at).layers.rules and _design(at).hidden_size == 64
    at.button(key="redo").click().run()
    assert _design(at).hidden_size == 128
    assert at.button(key="redo").disabled
    # a new edit after an undo drops the redo list
    at.button(key="undo").click().run()
    _edit(at, {"op": "set", "path": ["n_heads"], "value": 8})
    assert at.button(key="redo").disabled


def test_address_carries_the_current_design():
    from backend.share import decode_design

    at = _app(SMALL)
    _edit(at, {"op": "set", "path": ["hidden_size"], "value": 128})
    token = at.session_state[state.URL_TOKEN_KEY]
    assert decode_design(token) == _design(at)
    # a new session opened on that address shows the edited design, as the first state (no undo step)
    at2 = AppTest.from_file(str(APP / "main.py"), default_timeout=TIMEOUT)
    at2.query_params["d"] = token
    at2.run()
    assert _design(at2).hidden_size == 128 and not at2.session_state[state.HISTORY_KEY]


def test_custom_pattern_saved_from_rules_is_in_the_picker_and_applies():
    rules = [{"when": {"every": 3, "offset": 2}, "attention": "spectral"}]
    at = _app({**SMALL, "layers": {**SMALL["layers"], "rules": rules}})
    _panel(at, "Rules")
    at.text_input(key="pattern_save_name").set_value("team/every-3")
    at.text_input(key="pattern_save_author").set_value("ann")
    _button(at, "Save pattern").click().run()
    assert not at.exception and not _errors(at)
    assert any("Saved pattern team/every" in _shown(s.value) for s in at.success)
    # a 9-layer design with no rules picks it by name
    at = _app({**SMALL, "name": "user", "layers": {"n_layers": 9}})
    _panel(at, "Pattern / string")
    v = at.session_state[state.VERSION_KEY]
    at.radio(key=f"layout_mode_layers@{v}").set_value("pattern").run()
    picker = at.selectbox(key=f"pattern_name_layers@{v}")
    assert "team/every-3  (library)" in picker.options and "uniform" in picker.options
    picker.set_value("team/every-3").run()
    assert any("Preview" in c.value and "SPECTRAL" in c.value for c in at.caption)
    _button(at, "Apply pattern").click().run()
    assert not _errors(at)
    assert _design(at).layers.pattern == "team/every-3"
    kinds = [x.attention for x in resolve_plan(_design(at)).stacks["layers"].unique]
    assert kinds == ["self_sdpa", "self_sdpa", "spectral"] * 3


# ---- structure edits: move / duplicate / insert / delete ------------------------------------


def test_restructure_keeps_compact_form_where_it_can():
    d = load_design({**SMALL, "layers": {"n_layers": 4, "rules": [{"when": {"layer_idx": [0]}, "attention": "spectral"}]}}).to_dict()
    u = list(resolve_plan(d).stacks["layers"].unique)
    kinds = lambda x: [(y.attention, y.mlp) for y in resolve_plan(x).stacks["layers"].unique]  # noqa: E731
    # deleting the last layer: the rules still say it
    new, note = edits.restructure(d, "layers", u, [0, 1, 2])
    assert new["layers"]["explicit"] is None and new["layers"]["n_layers"] == 3 and "compact" in note
    # appending a default layer: likewise
    new, note = edits.restructure(d, "layers", u, [0, 1, 2, 3, None])
    assert new["layers"]["explicit"] is None and kinds(new) == [("spectral", "swiglu")] + [("self_sdpa", "swiglu")] * 4
    # moving layer 0 to the end: not expressible by the rule -> explicit list, and the note says so
    new, note = edits.restructure(d, "layers", u, [1, 2, 3, 0])
    assert new["layers"]["explicit"] is not None and "explicit list of 4" in note
    assert kinds(new) == [("self_sdpa", "swiglu")] * 3 + [("spectral", "swiglu")]
    # params travel with the moved layer
    d2 = edits.paint(d, "layers", [2], "mlp", "moe", {"num_experts": 4})
    u2 = list(resolve_plan(d2).stacks["layers"].unique)
    new, _ = edits.restructure(d2, "layers", u2, [2, 0, 1, 3])
    first = resolve_plan(new).stacks["layers"].unique[0]
    assert first.mlp == "moe" and first.params["mlp"] == {"num_experts": 4}


def test_structure_buttons_duplicate_insert_delete_with_undo():
    at = _app(SMALL)
    at.text_input(key="brush_indices").set_value("1").run()
    at.selectbox(key="brush_kind_attention").set_value("spectral").run()
    at.button(key="paint").click().run()
    _panel(at, "Reorder")
    at.text_input(key="brush_indices").set_value("1").run()
    at.button(key="struct_dup").click().run()
    assert not at.exception and not _errors(at)
    kinds = [x.attention for x in resolve_plan(_design(at)).stacks["layers"].unique]
    assert kinds == ["self_sdpa", "spectral", "spectral", "self_sdpa", "self_sdpa", "self_sdpa"] + ["self_sdpa"]
    assert any("explicit list of 7" in _shown(s.value) for s in at.success)
    at.text_input(key="brush_indices").set_value("0").run()
    at.button(key="struct_delete").click().run()
    assert [x.attention for x in resolve_plan(_design(at)).stacks["layers"].unique][:2] == ["spectral", "spectral"]
    at.text_input(key="brush_indices").set_value("").run()
    at.button(key="struct_insert").click().run()
    assert _design(at).layers.n_layers == 7
    at.button(key="undo").click().run()
    assert _design(at).layers.n_layers == 6
    assert [n for n, _ in at.session_state[state.HISTORY_KEY]][-1].startswith("delete layers 0")


def test_analysis_of_a_hybrid_draws_its_layers_and_linear_state_curves():
    """Mamba-2 and Gated DeltaNet layers in the per-layer bars and the length curves: their FLOPs grow
    linearly past one chunk, their state is flat in length, the softmax layers' KV cache grows linearly."""
    import json

    hybrid = {"name": "hyb", "hidden_size": 64, "n_heads": 4, "vocab_size": 256, "max_seq_len": 4096,
              "layers": {"n_layers": 4, "string": "MAMBA2,SDPA,GATED_DELTANET,SDPA", "mlp": "swiglu"}}
    at = _page(_app(hybrid), "analysis")
    assert not _errors(at)
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars = next(f for f in figs if f["layout"].get("yaxis", {}).get("title", {}).get("text") == "FLOPs")
    attn_bar = next(t for t in bars["data"] if t["name"] == "attention")
    assert len(attn_bar["y"]) == 4 and all(y > 0 for y in attn_bar["y"])  # every mixer is counted, none reads as zero
    curve = next(f for f in figs if any(t.get("name", "").startswith("one mamba2 layer") for t in f["data"]))
    for kind in ("mamba2", "gated_deltanet"):
        t = next(t for t in curve["data"] if t["name"] == f"one {kind} layer (attention part)")
        pts = [(x, y) for x, y in zip(t["x"], t["y"]) if x >= 512]  # past one chunk: linear in length
        assert len(pts) >= 3
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            assert y1 / y0 == pytest.approx(x1 / x0, rel=1e-9), (kind, x0, x1)
    kv = next(f for f in figs if any(t.get("name", "").startswith("KV cache (") for t in f["data"]))
    traces = {t["name"]: t for t in kv["data"]}
    for kind in ("mamba2", "gated_deltanet"):
        ys = traces[f"KV cache of the {kind} layers"]["y"]
        assert len(set(ys)) == 1 and ys[0] > 0  # a constant state
    sdpa = traces["KV cache of the self_sdpa layers"]
    # 2 SDPA layers x K and V x 4 heads x head dim 16 x 2 bytes (bf16) per token
    assert sdpa["y"] == [2 * 2 * 4 * 16 * 2 * s for s in sdpa["x"]]
