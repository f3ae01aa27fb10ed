"""Custom patterns in the design library: save, list, use by name, pin a revision, export self-contained, CLI."""
from __future__ import annotations

import json

import pytest
import yaml

from backend.cli import main
from backend.errors import DesignError
from backend.export import export_text
from backend.library import Library
from backend.patterns import get_recipe, inline_library_patterns, list_patterns, save_pattern
from backend.plan import resolve_plan

BASE = {"hidden_size": 64, "n_heads": 4, "vocab_size": 256, "max_seq_len": 256}
SOURCE = {**BASE, "name": "src", "layers": {"n_layers": 8, "rules": [
    {"when": {"every": 4, "offset": 3}, "attention": "spectral"},
    {"when": {"position": "last"}, "mlp": "moe", "params": {"mlp": {"num_experts": 4}}}]}}


def _user(n: int, ref) -> dict:
    return {**BASE, "name": "user", "layers": {"n_layers": n, "pattern": ref}}


@pytest.fixture(autouse=True)
def _db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    monkeypatch.setenv("BACKEND_DATABASE_URL", url)
    return url


def _kinds(design) -> list[tuple[str, str]]:
    return [(x.attention, x.mlp) for x in resolve_plan(design).stacks["layers"].unique]


def test_saved_pattern_is_used_by_name_over_another_depth():
    save_pattern(SOURCE, "team/hybrid-4", author="ann", message="first")
    # every 4 from 3 over 12 layers: 3, 7, 11 spectral; the last layer an MoE (written out by hand)
    expected = [("self_sdpa", "swiglu")] * 12
    for i in (3, 7, 11):
        expected[i] = ("spectral", "swiglu")
    expected[11] = ("spectral", "moe")
    assert _kinds(_user(12, {"name": "team/hybrid-4"})) == expected
    last = resolve_plan(_user(12, "team/hybrid-4")).stacks["layers"].unique[-1]
    assert last.params["mlp"] == {"num_experts": 4}
    # params replace the base kinds
    assert _kinds(_user(4, {"name": "team/hybrid-4", "params": {"attention": "diff_attn"}}))[:3] == [("diff_attn", "swiglu")] * 3
    assert [r.name for r in list_patterns()] == ["team/hybrid-4"]


def test_revisions_are_kept_and_can_be_pinned():
    save_pattern(SOURCE, "team/x", author="ann")
    second = {**SOURCE, "layers": {"n_layers": 8, "rules": [{"when": {"position": "first"}, "attention": "diff_attn"}]}}
    save_pattern(second, "team/x", author="bob", message="v2")
    assert _kinds(_user(4, "team/x"))[0] == ("diff_attn", "swiglu")
    pinned = _kinds(_user(4, {"name": "team/x", "params": {"revision": 1}}))
    assert pinned[0] == ("self_sdpa", "swiglu") and pinned[3] == ("spectral", "moe")
    recipe, rev = get_recipe("team/x", 1)
    assert rev.revision == 1 and recipe["rules"][0]["when"] == {"every": 4, "offset": 3}


def test_missing_pattern_is_a_clear_error():
    with pytest.raises(DesignError, match=r"layers\.pattern\.name: unknown pattern 'team/gone'"):
        resolve_plan(_user(4, {"name": "team/gone"}))
    save_pattern(SOURCE, "team/x", author="ann")
    with pytest.raises(DesignError, match=r"team/x@9: no such revision"):
        resolve_plan(_user(4, {"name": "team/x", "params": {"revision": 9}}))
    with pytest.raises(DesignError, match="layer_idx|outside the stack"):  # a rule that does not fit the depth
        save_pattern({**SOURCE, "layers": {"n_layers": 8, "rules": [{"when": {"layer_idx": [7]}, "attention": "spectral"}]}},
                     "team/idx", author="ann")
        resolve_plan(_user(4, "team/idx"))


def test_bad_names_and_builtin_clash_are_refused():
    with pytest.raises(DesignError, match="pattern.name"):
        save_pattern(SOURCE, "Team X", author="ann")
    with pytest.raises(DesignError, match="built-in"):
        save_pattern(SOURCE, "uniform", author="ann")
    with pytest.raises(DesignError, match="layers.rules: is empty"):
        save_pattern({**BASE, "name": "plain", "layers": {"n_layers": 2}}, "team/empty", author="ann")


def test_exports_are_self_contained():
    save_pattern(SOURCE, "team/hybrid-4", author="ann")
    design = _user(12, {"name": "team/hybrid-4"})
    before = resolve_plan(design)
    for fmt in ("yaml", "json"):
        text = export_text(design, fmt)
        data = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
        assert data["layers"].get("pattern") is None, fmt
        assert "team/hybrid-4" not in text
        assert [x.to_dict() for x in resolve_plan(data).layers] == [x.to_dict() for x in before.layers]
    assert "team/hybrid-4" not in export_text(design, "python")
    # the inlined design resolves without the library
    inlined = inline_library_patterns(design)
    Library().delete("pattern:team/hybrid-4", confirm=True)
    assert [x.to_dict() for x in resolve_plan(inlined).layers] == [x.to_dict() for x in before.layers]


def test_cli_patterns_list_save_show_delete(tmp_path, capsys):
    src = tmp_path / "src.yaml"
    src.write_text(yaml.safe_dump(SOURCE))
    assert main(["patterns", "save", str(src), "--name", "team/cli", "--author", "ann", "-m", "via cli"]) == 0
    assert "saved pattern team/cli@1" in capsys.readouterr().out
    assert main(["patterns", "list"]) == 0
    out = capsys.readouterr().out
    assert "uniform" in out and "team/cli" in out and "library" in out
    assert main(["patterns", "show", "team/cli"]) == 0
    shown = capsys.readouterr().out
    assert yaml.safe_load(shown)["rules"][1]["mlp"] == "moe"
    assert main(["patterns", "delete", "team/cli"]) == 2  # needs --yes
    capsys.readouterr()
    assert main(["patterns", "delete", "team/cli", "--yes"]) == 0
    assert main(["patterns", "show", "team/cli"]) == 2
    assert "team/cli: no such pattern in the library" in capsys.readouterr().err
