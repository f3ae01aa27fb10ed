"""`python -m backend` plan / presets / schema / kinds / validate (DESIGN.md section 6)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from backend.cli import COMMANDS, build_parser, main
from backend.presets import list_presets

SEED_PRESETS = ["tiny", "small", "medium", "large", "medium_cycle", "medium_layerwise", "medium_one_layer", "medium_flow",
                "medium_layerwise_flow", "research", "efficient", "hybrid"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_command_surface_is_frozen():
    # a new command is a deliberate change: update DESIGN.md section 6 and this list
    assert set(COMMANDS) == {"plan", "presets", "schema", "kinds", "validate", "analyze", "smoke", "export", "library",
                             "from-code",  # issue 18: seed-style script -> design
                             "plan-training",  # issue 16
                             "import-hf",  # issue 12: Hugging Face config.json -> design
                             "patterns",  # issue 15: custom patterns in the design library
                             "probe"}  # issue 17
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_plan_json_shape(capsys):
    code, out, err = run(capsys, "plan", "medium_cycle", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"layers", "warnings"} and data["warnings"] == []
    assert len(data["layers"]) == 16
    for i, layer in enumerate(data["layers"]):
        assert {"index", "unique_index", "attention", "mlp", "norm", "params"} <= set(layer)
        assert layer["index"] == i and layer["unique_index"] == i % 2
        assert isinstance(layer["params"], dict)


def test_plan_json_params_and_warnings(tmp_path, capsys):
    f = tmp_path / "d.yaml"
    f.write_text("layers:\n  n_layers: 4\n  rules:\n    - when: {position: last}\n      params: {attention: {window: 64}}\n"
                 "    - when: {fraction: [0.9, 1.0]}\n      attention: spectral\n")
    code, out, _ = run(capsys, "plan", str(f), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["layers"][3]["params"] == {"attention": {"window": 64}}
    assert data["warnings"] == ["layers.rules[1] matches no layer"]


def test_plan_text_table(capsys):
    code, out, _ = run(capsys, "plan", "hybrid")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("hybrid: decoder, task lm, hidden 512")
    assert any("12 unique -> 12 executed" in line for line in lines)
    rows = [line.split() for line in lines if line[:5].strip().isdigit()]
    assert [r[2] for r in rows] == ["spectral"] * 4 + ["self_sdpa"] * 4 + ["diff_attn"] * 4


def test_plan_text_shows_warnings(tmp_path, capsys):
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"layers": {"n_layers": 2, "rules": [{"when": {"position": "last", "every": 3}, "attention": "spectral"}]}}))
    code, out, _ = run(capsys, "plan", str(f))
    assert code == 0 and "warning: layers.rules[0] matches no layer" in out


@pytest.mark.parametrize("preset", SEED_PRESETS)
def test_every_seed_preset_plans(preset, capsys):
    assert preset in list_presets()
    code, out, err = run(capsys, "plan", preset, "--json")
    assert code == 0, err
    assert json.loads(out)["layers"]


def test_presets_lists_every_file(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert set(SEED_PRESETS) <= set(names)
    assert "INVALID" not in out
    code, out, _ = run(capsys, "presets", "--json")
    assert json.loads(out) == list_presets()


def test_dropped_preset_file_appears_everywhere(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_new_design.yaml").write_text("name: my_new_design\ndescription: dropped in\nlayers: {n_layers: 3}\n")
    monkeypatch.setenv("BACKEND_PRESETS_DIR", str(tmp_path))
    assert "my_new_design" in list_presets()
    code, out, _ = run(capsys, "presets")
    assert "my_new_design" in out and "dropped in" in out
    code, out, _ = run(capsys, "plan", "my_new_design", "--json")
    assert code == 0 and len(json.loads(out)["layers"]) == 3


def test_schema_and_kinds_print_json(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "Transformer design" and "layers" in schema["properties"]
    code, out, _ = run(capsys, "kinds")
    kinds = json.loads(out)
    assert code == 0 and {"attention", "mlp", "norm", "positional", "cross"} <= set(kinds)
    assert "self_sdpa" in kinds["attention"] and "window" in kinds["attention"]["self_sdpa"]["params"]


def test_validate(tmp_path, capsys):
    code, out, err = run(capsys, "validate", "research")
    assert code == 0 and out.strip() == "ok: research" and err == ""
    f = tmp_path / "w.yaml"
    f.write_text("name: w\nlayers:\n  n_layers: 2\n  rules:\n    - when: {layer_idx: [0]}\n      attention: spectral\n    - attention: diff_attn\n")
    code, out, err = run(capsys, "validate", str(f))
    assert code == 0 and out.strip() == "ok: w"
    assert err.strip() == "warning: layers.rules[0] is fully overridden by later rules"


@pytest.mark.parametrize("command", ["plan", "validate"])
def test_bad_input_exit_2_one_line(tmp_path, capsys, command):
    f = tmp_path / "bad.yaml"
    f.write_text("layers:\n  n_layers: 4\n  rules:\n    - when: {every: 0}\n")
    code, out, err = run(capsys, command, str(f))
    assert code == 2 and out == ""
    assert err == "error: layers.rules[0].when.every: must be >= 1, got 0\n"


@pytest.mark.parametrize("target, fragment", [
    ("missing_file.yaml", "no such file"),
    ("no_such_preset", "neither a design file nor a preset"),
    ("dir/that/does/not/exist.json", "no such file"),
])
def test_unknown_design_exit_2(capsys, target, fragment):
    code, out, err = run(capsys, "plan", target)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and fragment in err


@pytest.mark.parametrize("argv", [[], ["bogus"], ["plan"], ["plan", "tiny", "--jsn"]])
def test_usage_errors_exit_2_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_module_entry_point(repo_root):
    proc = subprocess.run([sys.executable, "-m", "backend", "plan", "efficient", "--json"], cwd=repo_root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    layers = json.loads(proc.stdout)["layers"]
    assert [l["attention"] for l in layers] == (["causal_linear"] * 3 + ["self_sdpa"]) * 6
