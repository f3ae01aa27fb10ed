"""The design spec: defaults, cross-field validation, errors naming fields, JSON Schema."""
from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from backend.errors import DesignError
from backend.presets import list_presets, preset_files
from backend.spec import Design, design_from_dict, json_schema, load_design, parse_design_text

BASE = {"layers": {"n_layers": 2}}


def make(**over):
    data = {"layers": {"n_layers": 2}}
    for k, v in over.items():
        data[k] = v
    return design_from_dict(data)


def error_of(data) -> DesignError:
    with pytest.raises(DesignError) as exc:
        design_from_dict(data)
    return exc.value


# ---- defaults ------------------------------------------------------------------


def test_tie_embeddings_default_is_automatic_and_never_an_error():
    """A default must never make a design invalid: non-token tasks that never mention it are untied."""
    seed_style = make(task="cluster_centers", vocab_size=None, input_dim=2, output_dim=4, layers={"n_layers": 2})
    assert seed_style.tie_embeddings is None and not seed_style.tied
    clf = make(architecture="encoder", task="classification", output_dim=3, layers={"n_layers": 2})
    assert not clf.tied
    assert make(layers={"n_layers": 2}).tied  # lm with a vocabulary: tied


def test_defaults_match_design_md():
    d = make()
    assert (d.name, d.architecture, d.task) == ("untitled", "decoder", "lm")
    assert (d.vocab_size, d.input_dim, d.output_dim) == (32000, None, None)
    assert (d.hidden_size, d.n_heads, d.n_kv_heads, d.head_dim, d.mlp_hidden) == (512, 8, None, None, None)
    assert d.expansion_ratio == 4.0 and d.activation == "gelu"
    assert (d.max_seq_len, d.positional, d.rope_theta) == (2048, "rope", 10000.0)
    assert (d.norm, d.norm_placement, d.norm_eps) == ("rms", "pre", 1e-5)
    assert (d.bias, d.qkv_bias, d.tie_embeddings, d.final_norm, d.dropout) == (False, False, None, True, 0.0)
    assert d.tied  # automatic: tied for a token-predicting task with a vocabulary
    s = d.layers
    assert (s.attention, s.mlp, s.norm, s.pattern, s.string, s.explicit, s.rules) == ("self_sdpa", "swiglu", None, None, None, None, [])
    assert s.repeat.mode == "none" and s.repeat.factor == 1 and s.flow.mode == "none"
    assert d.encoder is None and d.decoder is None


def test_derived_properties():
    d = make(hidden_size=768, n_heads=12, n_kv_heads=4)
    assert d.kv_heads == 4 and d.attn_head_dim == 64 and d.ffn_hidden == 3072
    assert make(n_kv_heads=None).kv_heads == 8
    assert make(head_dim=128).attn_head_dim == 128
    assert make(mlp_hidden=1000).ffn_hidden == 1000
    assert make(expansion_ratio=2.5, hidden_size=100, n_heads=5).ffn_hidden == 250


def test_frozen():
    d = make()
    with pytest.raises(Exception):
        d.hidden_size = 3  # type: ignore[misc]


def test_to_dict_roundtrip_and_exclude_defaults():
    d = make(hidden_size=256, n_heads=4)
    assert design_from_dict(d.to_dict()) == d
    assert design_from_dict(json.loads(d.to_json())) == d
    assert design_from_dict(yaml.safe_load(d.to_yaml())) == d
    small = d.to_dict(exclude_defaults=True)
    assert small["hidden_size"] == 256 and "norm_eps" not in small


# ---- cross-field validation -------------------------------------------------


@pytest.mark.parametrize(
    "data, field",
    [
        ({**BASE, "n_heads": 7}, "n_heads"),  # 512 % 7
        ({**BASE, "n_kv_heads": 3}, "n_kv_heads"),  # 8 % 3
        ({**BASE, "n_kv_heads": 16}, "n_kv_heads"),
        ({**BASE, "hidden_size": 96, "n_heads": 4, "head_dim": 9}, "head_dim"),  # rope needs even head_dim
        ({"architecture": "encoder_decoder", "task": "seq2seq", "encoder": {"n_layers": 2}}, "decoder"),
        ({"architecture": "encoder_decoder", "task": "seq2seq", "decoder": {"n_layers": 2}}, "encoder"),
        ({"architecture": "encoder_decoder", "task": "seq2seq", **BASE, "encoder": {"n_layers": 1}, "decoder": {"n_layers": 1}}, "layers"),
        ({"architecture": "decoder"}, "layers"),
        ({**BASE, "encoder": {"n_layers": 2}}, "encoder"),
        ({**BASE, "architecture": "encoder"}, "task"),  # lm on an encoder
        ({**BASE, "task": "mlm"}, "task"),  # mlm on a decoder
        ({**BASE, "vocab_size": None}, "vocab_size"),  # neither tokens nor features
        ({**BASE, "input_dim": 3}, "vocab_size"),  # both
        ({**BASE, "task": "regression", "tie_embeddings": False}, "output_dim"),
        ({**BASE, "task": "regression", "output_dim": 1, "tie_embeddings": True}, "tie_embeddings"),
        ({**BASE, "task": "cluster_centers", "output_dim": 4, "tie_embeddings": False}, "input_dim"),
        ({**BASE, "expansion_ratio": 64.0, "hidden_size": 65536, "n_heads": 8}, "expansion_ratio"),
        ({"layers": {"n_layers": 2, "string": "SDPA*2", "pattern": "uniform"}}, "layers.string"),
        ({"layers": {"n_layers": 2, "explicit": [{}]}}, "layers.explicit"),
        ({"layers": {"n_layers": 3, "repeat": {"mode": "grouped", "groups": [1, 1], "group_factors": [2, 2]}}}, "layers.repeat.groups"),
        ({"layers": {"n_layers": 2, "repeat": {"mode": "grouped", "groups": [1, 1], "group_factors": [2]}}}, "layers.repeat.group_factors"),
        ({"layers": {"n_layers": 2, "repeat": {"mode": "none", "factor": 2}}}, "layers.repeat.factor"),
        ({"layers": {"n_layers": 2, "repeat": {"mode": "cycle", "factor": 2, "groups": [2]}}}, "layers.repeat.groups"),
        ({"layers": {"n_layers": 1024, "repeat": {"mode": "cycle", "factor": 5}}}, "layers.repeat"),
        ({"layers": {"n_layers": 2, "rules": [{"when": {"offset": 1}}]}}, "layers.rules[0].when.offset"),
        ({"layers": {"n_layers": 2, "rules": [{"when": {"range": [3, 1]}}]}}, "layers.rules[0].when.range"),
        ({"layers": {"n_layers": 2, "rules": [{"when": {"fraction": [0.5, 0.5]}}]}}, "layers.rules[0].when.fraction"),
        ({"layers": {"n_layers": 2, "rules": [{"when": {"layer_idx": [-1]}}]}}, "layers.rules[0].when.layer_idx"),
        ({"layers": {"n_layers": 2, "attention": "softmax"}}, "layers.attention"),
        ({"layers": {"n_layers": 2, "mlp": "ffn"}}, "layers.mlp"),
        ({"layers": {"n_layers": 2, "norm": "batch"}}, "layers.norm"),
    ],
)
def test_cross_field_errors_name_the_field(data, field):
    err = error_of(data)
    assert err.path == field, str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        ({**BASE, "hidden_size": "512"}, "hidden_size", "integer"),
        ({**BASE, "hidden_size": 512.0}, "hidden_size", "integer"),
        ({**BASE, "hidden_size": True}, "hidden_size", "integer"),
        ({**BASE, "bias": "yes"}, "bias", "true or false"),
        ({**BASE, "dropout": "0.1"}, "dropout", "number"),
        ({**BASE, "rope_theta": float("nan")}, "rope_theta", "finite"),
        ({**BASE, "hidden_size": 0}, "hidden_size", ">= 1"),
        ({**BASE, "hidden_size": 10**7}, "hidden_size", "<= 65536"),
        ({**BASE, "dropout": 1.0}, "dropout", "< 1"),
        ({**BASE, "positional": "rotary"}, "positional", "rotary"),
        ({**BASE, "hiden_size": 3}, "hiden_size", "unknown key"),
        ({"layers": {"n_layers": 0}}, "layers.n_layers", ">= 1"),
        ({"layers": {"n_layers": 10**9}}, "layers.n_layers", "<= 1024"),
        ({"layers": {}}, "layers.n_layers", "required"),
        ({"layers": {"n_layers": 2, "rules": [{"when": {"every": 0}}]}}, "layers.rules[0].when.every", ">= 1, got 0"),
        ({"layers": {"n_layers": 2, "rules": [{"when": {"range": [0, "x"]}}]}}, "layers.rules[0].when.range[1]", "integer"),
        ({"layers": {"n_layers": 2, "pattern": {"name": "uniform", "parms": {}}}}, "layers.pattern.parms", "unknown key"),
        ({"layers": {"n_layers": 2, "pattern": 5}}, "layers.pattern", "pattern name"),
        ({"layers": {"n_layers": 2, "params": {"attentio": {}}}}, "layers.params.attentio", "unknown key"),
        ({"layers": {"n_layers": 2, "flow": {"mode": "fast"}}}, "layers.flow.mode", "fast"),
        ({"layers": {"n_layers": 2, "repeat": {"mode": "grouped", "groups": [True, 1], "group_factors": [1, 1]}}},
         "layers.repeat.groups[0]", "integer"),
    ],
)
def test_field_errors_name_field_and_value(data, field, fragment):
    err = error_of(data)
    assert err.path == field, str(err)
    assert fragment in err.message


def test_top_level_must_be_mapping():
    for data in ([1, 2], "text", 3, None):
        assert error_of(data).path == "<design>"


def test_parse_text_sniffs_json_and_yaml():
    assert parse_design_text('{"layers": {"n_layers": 3}}').layers.n_layers == 3
    assert parse_design_text("layers:\n  n_layers: 3\n").layers.n_layers == 3


def test_python_tags_rejected():
    with pytest.raises(DesignError, match="Python object tags"):
        parse_design_text("layers: !!python/object/apply:os.system ['true']\n")


def test_load_design_accepts_design_dict_path_preset(tmp_path):
    d = make()
    assert load_design(d) is d
    assert load_design({"layers": {"n_layers": 2}}) == d
    f = tmp_path / "x.yaml"
    f.write_text(d.to_yaml())
    assert load_design(str(f)) == d
    assert load_design("tiny").name == "tiny"
    with pytest.raises(DesignError, match="no such file"):
        load_design(str(tmp_path / "missing.yaml"))
    with pytest.raises(DesignError, match="preset"):
        load_design("no_such_preset_name")


# ---- JSON Schema -------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_schema(repo_root):
    out = subprocess.run([sys.executable, "-m", "backend", "schema"], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_schema_is_valid_json_schema(cli_schema):
    jsonschema.Draft202012Validator.check_schema(cli_schema)
    assert cli_schema == json.loads(json.dumps(json_schema()))
    props = cli_schema["properties"]
    for key in ("name", "architecture", "task", "vocab_size", "hidden_size", "n_heads", "layers", "encoder", "decoder"):
        assert key in props
    assert cli_schema.get("additionalProperties") is False


@pytest.mark.parametrize("preset", list_presets())
def test_schema_validates_every_preset(cli_schema, preset):
    data = yaml.safe_load(preset_files()[preset].read_text())
    jsonschema.Draft202012Validator(cli_schema).validate(data)


def test_schema_rejects_unknown_key(cli_schema):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"layers": {"n_layers": 2}, "hiden_size": 3}, cli_schema)
