"""JSON / YAML exports: exact round trips, stable layout, safe file handling, CLI.

No torch here except the YAML header test; the standalone Python file is
tested in ``test_export_python.py``.
"""
from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.cli import main as cli_main
from backend.errors import DesignError
from backend.export import (
    compact_dict,
    default_filename,
    export_bytes,
    export_text,
    module_name,
    resolved_dict,
    slugify,
    to_json,
    to_yaml,
    write_export,
)
from backend.plan import resolve_plan
from backend.presets import list_presets
from backend.spec import load_design, parse_design_text

PRESETS = list_presets()

# Hand-written designs covering what the presets may not: patterns, strings with
# an MLP suffix, rules with params, stack-level params, grouped repetition,
# flow, encoder-decoder with cross params.
SYNTHETIC = {
    "pattern": {
        "name": "pattern", "hidden_size": 64, "n_heads": 4, "vocab_size": 100, "max_seq_len": 64,
        "layers": {"n_layers": 6, "pattern": {"name": "alternating", "params": {"kinds": ["self_sdpa", "spectral"], "period": 2}},
                   "params": {"attention": {"adaptive": True}},
                   "repeat": {"mode": "grouped", "groups": [2, 4], "group_factors": [2, 1]}, "flow": {"mode": "learned", "per_layer": True}},
    },
    "string": {
        "name": "string", "hidden_size": 64, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 100, "max_seq_len": 64,
        "layers": {"n_layers": 8, "string": "SPECTRAL,SDPA:MOE*2,DIFF_ATTN", "params": {"mlp": {"num_experts": 4, "top_k": 1}},
                   "rules": [{"when": {"position": "last"}, "norm": "layer"},
                             {"when": {"fraction": [0.0, 0.5], "every": 4}, "params": {"attention": {"adaptive": True}}}],
                   "repeat": {"mode": "layerwise", "factor": 2}},
    },
    "encdec": {
        "name": "encdec", "architecture": "encoder_decoder", "task": "seq2seq", "hidden_size": 32, "n_heads": 2,
        "vocab_size": 50, "max_seq_len": 32, "tie_embeddings": False, "norm_placement": "pre_post", "rope_theta": 500000.0,
        "encoder": {"n_layers": 3, "attention": "linear", "params": {"attention": {"nb_features": 16}},
                    "rules": [{"when": {"every": 2, "offset": 1}, "attention": "frequency", "params": {"attention": {"modes": 4}}}]},
        "decoder": {"n_layers": 2, "mlp": "mlp", "params": {"cross": {"backend": "math"}, "mlp": {"activation": "silu"}},
                    "rules": [{"when": {"range": [1, 2]}, "attention": "causal_linear"}]},
    },
}


def _designs() -> list[tuple[str, object]]:
    return [(f"preset:{n}", n) for n in PRESETS] + [(f"synthetic:{k}", v) for k, v in SYNTHETIC.items()]


DESIGNS = _designs()
IDS = [d[0] for d in DESIGNS]


def stacks_of(design) -> dict:
    """What a resolved round trip must keep: the executed layers (kinds, config,
    sharing) of every stack."""
    return resolve_plan(design).stacks


def model_fields(design) -> dict:
    """Everything outside the stacks' layer assignment."""
    d = design.to_dict()
    for key in ("layers", "encoder", "decoder"):
        if d.get(key):
            d[key] = {k: v for k, v in d[key].items() if k in ("n_layers", "repeat", "flow")}
    return d


@pytest.mark.parametrize("source", [d[1] for d in DESIGNS], ids=IDS)
def test_compact_round_trip_is_identity(source):
    design = load_design(source)
    for fmt, text in (("json", to_json(design)), ("yaml", to_yaml(design, numbers={}))):
        again = parse_design_text(text, fmt)
        assert again == design, fmt
        # idempotent: exporting what was loaded gives the same bytes
        assert (to_json(again) if fmt == "json" else to_yaml(again, numbers={})) == text


@pytest.mark.parametrize("source", [d[1] for d in DESIGNS], ids=IDS)
def test_resolved_round_trip_gives_same_plan(source):
    design = load_design(source)
    plan = resolve_plan(design)
    for fmt, text in (("json", to_json(design, resolved=True)), ("yaml", to_yaml(design, resolved=True, numbers={}))):
        again = parse_design_text(text, fmt)
        assert resolve_plan(again).stacks == plan.stacks, fmt
        assert [layer.signature() for layer in resolve_plan(again).layers] == [layer.signature() for layer in plan.layers]
        assert model_fields(again) == model_fields(design)
        for key, stack in again.stacks().items():
            assert stack.pattern is None and stack.string is None and not stack.rules, key
            assert stack.explicit is not None and len(stack.explicit) == stack.n_layers
            assert stack.repeat == design.stacks()[key].repeat and stack.flow == design.stacks()[key].flow
        if fmt == "json":  # resolving twice changes nothing
            assert to_json(again, resolved=True) == text


def test_compact_keeps_the_user_structure():
    d = load_design(SYNTHETIC["string"])
    c = compact_dict(d)
    stack = c["layers"]
    assert stack["string"] == "SPECTRAL,SDPA:MOE*2,DIFF_ATTN"
    assert stack["rules"][0] == {"when": {"position": "last"}, "norm": "layer"}
    assert stack["repeat"] == {"mode": "layerwise", "factor": 2}
    assert "explicit" not in stack and "pattern" not in stack
    # defaults are left out, headline fields kept, field order follows the schema
    assert "bias" not in c and "dropout" not in c
    assert list(c)[:4] == ["name", "architecture", "task", "vocab_size"]
    p = compact_dict(load_design(SYNTHETIC["pattern"]))["layers"]
    assert p["pattern"] == {"name": "alternating", "params": {"kinds": ["self_sdpa", "spectral"], "period": 2}}


def test_resolved_lists_every_unique_layer():
    r = resolved_dict(load_design(SYNTHETIC["string"]))["layers"]
    assert list(r) == ["n_layers", "attention", "mlp", "explicit", "repeat"]
    layers = r["explicit"]
    assert [e["attention"] for e in layers] == ["spectral", "self_sdpa", "self_sdpa", "diff_attn"] * 2
    assert layers[1]["mlp"] == "moe" and layers[1]["params"]["mlp"] == {"num_experts": 4, "top_k": 1}
    assert layers[0]["params"] == {"attention": {"adaptive": True}}  # rule on layer 0 (every 4 in the first half)
    assert layers[-1]["norm"] == "layer" and all(e["norm"] in ("rms", "layer") for e in layers)
    e = resolved_dict(load_design(SYNTHETIC["encdec"]))
    assert [x["attention"] for x in e["encoder"]["explicit"]] == ["linear", "frequency", "linear"]
    assert e["decoder"]["explicit"][0]["params"]["cross"] == {"backend": "math"}


def test_yaml_is_block_style_with_a_comment_header():
    d = load_design(SYNTHETIC["string"])
    text = to_yaml(d, numbers={"params": 1234567, "params_embedding": 6400, "flops_forward": 1.5e9, "flops_training": 4.5e9, "seq_len": 64})
    head = text.split("name:")[0]
    assert all(line.startswith("#") for line in head.splitlines())
    assert "parameters: 1,234,567 (1,228,167 non-embedding)" in head
    assert "forward FLOPs per sequence of 64 tokens: 1.500e+09" in head
    assert "\nlayers:\n  n_layers: 8\n" in text  # block style, indented
    assert "    - {when: {position: last}, norm: layer}" in text  # short flat items inline
    assert yaml.safe_load(text) == compact_dict(d)
    # the header never carries user text
    hostile = d.model_copy(update={"name": "x\n: evil", "description": "# not a comment\nline"})
    head = to_yaml(hostile, numbers={}).split("name:")[0]
    assert "evil" not in head and "not a comment" not in head
    assert parse_design_text(to_yaml(hostile, numbers={}), "yaml") == hostile


def test_yaml_multiline_description_is_a_literal_block():
    d = load_design({**SYNTHETIC["pattern"], "description": "first line\nsecond line\n"})
    text = to_yaml(d, numbers={})
    assert "description: |\n  first line\n  second line\n" in text
    assert parse_design_text(text, "yaml") == d


# Hostile text: control characters, quotes, backslashes, YAML/JSON syntax,
# line separators, non-ASCII. (Lone surrogates are not valid design text:
# the schema rejects them, so they never reach an export.)
HOSTILE = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=("Cs",)),
        st.sampled_from(list("\"'\\\n\r\t\x00\x0b\x0c\x1b\x85\u2028\u2029\ufeff#:-{}[]&*!|>%@`")),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HOSTILE.filter(lambda s: len(s) >= 1), description=HOSTILE)
def test_hostile_strings_round_trip_through_json_and_yaml(name, description):
    base = load_design(SYNTHETIC["pattern"])
    d = base.model_copy(update={"name": name, "description": description})
    d = load_design(d.to_dict())  # validated like a loaded file
    for resolved in (False, True):
        j = to_json(d, resolved)
        assert json.loads(j) == json.loads(json.dumps(compact_dict(d) if not resolved else resolved_dict(d)))
        assert parse_design_text(j, "json").name == name
        y = to_yaml(d, resolved, numbers={})
        back = parse_design_text(y, "yaml")
        assert back.name == name and back.description == description
        if not resolved:
            assert parse_design_text(j, "json") == d and back == d


# ---------------------------------------------------------------------------
# File names and writing


@pytest.mark.parametrize("name, slug", [
    ("hybrid-demo", "hybrid-demo"),
    ("Modèle: v2/β", "modele-v2"),
    ("../../etc/passwd", "etc-passwd"),
    (".hidden", "hidden"),
    ("...", "design"),
    ("💥", "design"),
    ("CON", "con-design"),
    ("a" * 300, "a" * 80),
    ("x\x00y\nz", "x-y-z"),
])
def test_slugify_is_safe(name, slug):
    assert slugify(name) == slug
    assert "/" not in slug and not slug.startswith(".")


def test_file_names():
    assert default_filename("Hybrid Demo", "json") == "hybrid-demo.json"
    assert default_filename("Hybrid Demo", "yaml", resolved=True) == "hybrid-demo.resolved.yaml"
    assert default_filename("Hybrid Demo", "python") == "hybrid_demo.py"
    assert module_name("7b model") == "model_7b_model"
    with pytest.raises(DesignError, match="format"):
        default_filename("x", "toml")


def test_export_bytes_for_download_buttons():
    name, data, mime = export_bytes(SYNTHETIC["string"], "json")
    assert (name, mime) == ("string.json", "application/json")
    assert json.loads(data) == compact_dict(load_design(SYNTHETIC["string"]))
    name, data, mime = export_bytes(SYNTHETIC["string"], "yaml", resolved=True, numbers={})
    assert name == "string.resolved.yaml" and mime == "application/yaml" and data.startswith(b"# ")
    with pytest.raises(DesignError, match="format"):
        export_text(SYNTHETIC["string"], "xml")


def test_write_export_never_overwrites_without_force(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKEND_EXPORTS_DIR", str(tmp_path / "exports"))
    path = write_export(SYNTHETIC["string"], "json")
    assert path == tmp_path / "exports" / "string.json"
    first = path.read_bytes()
    other = {**SYNTHETIC["string"], "description": "changed"}
    with pytest.raises(DesignError, match="already exists"):
        write_export(other, "json")
    assert path.read_bytes() == first  # untouched
    write_export(other, "json", force=True)
    assert json.loads(path.read_bytes())["description"] == "changed"
    # a folder as target gets the default name; no temp files are left behind
    out = write_export(SYNTHETIC["string"], "yaml", path=tmp_path, numbers={})
    assert out == tmp_path / "string.yaml"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["string.json", "string.yaml"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import backend.export.files as files

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", boom)
    with pytest.raises(DesignError, match="No space left"):
        write_export(SYNTHETIC["string"], "json", path=tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_cli_export(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BACKEND_EXPORTS_DIR", str(tmp_path))
    src = tmp_path / "design.json"
    src.write_text(json.dumps(SYNTHETIC["pattern"]))
    assert cli_main(["export", str(src), "--format", "json"]) == 0
    assert load_design(tmp_path / "pattern.json") == load_design(SYNTHETIC["pattern"])
    capsys.readouterr()
    assert cli_main(["export", str(src), "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["export", str(src), "--format", "json", "--force"]) == 0
    out = tmp_path / "sub" / "r.json"
    assert cli_main(["export", str(src), "--format", "json", "--resolved", "-o", str(out)]) == 0
    assert resolve_plan(load_design(out)).stacks == resolve_plan(SYNTHETIC["pattern"]).stacks
    capsys.readouterr()
    assert cli_main(["export", str(src), "--format", "json", "-o", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == compact_dict(load_design(SYNTHETIC["pattern"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: {n_layers: 0}\n")
    assert cli_main(["export", str(bad), "--format", "yaml"]) == 2
    assert "layers.n_layers" in capsys.readouterr().err
    assert not (tmp_path / "untitled.yaml").exists()


# ---------------------------------------------------------------------------
# The backend/nn inlining contract (read as text: no torch needed)


def test_every_runtime_module_can_be_inlined():
    from backend.export.standalone import NN_DIR, check_collisions, ordered_modules

    names = sorted(p.stem for p in NN_DIR.glob("*.py") if p.stem != "__init__")
    mods = ordered_modules(names)  # raises ContractError naming the file and line
    assert {m.name for m in mods} == set(names)
    assert mods[0].name == "common" and mods[-1].name == "model"
    for i, m in enumerate(mods):  # every module after the siblings it imports
        assert set(m.deps) <= {x.name for x in mods[:i]}
    check_collisions(mods)


@pytest.mark.parametrize("source, message", [
    ("import numpy as np\n", "only torch and the standard library"),
    ("from backend.nn.common import register\n", "only torch and the standard library"),
    ("def f():\n    from .common import register\n", "inside a block"),
    ("from . import common\n", "from .module import"),
    ("import importlib\nX = importlib.import_module('x')\n", "dynamic import"),
    ("from .common import register\nREGISTRY = {}\n", "both define 'REGISTRY'"),
])
def test_contract_violations_are_named(tmp_path, source, message):
    from backend.export.standalone import NN_DIR, ContractError, check_collisions, ordered_modules

    (tmp_path / "common.py").write_text((NN_DIR / "common.py").read_text())
    (tmp_path / "bad.py").write_text(source)
    with pytest.raises(ContractError, match=message):
        check_collisions(ordered_modules(["common", "bad"], nn_dir=tmp_path))
