"""The seeds' Python API (backend.compat) over spec/plan."""
from __future__ import annotations

import json

import pytest

from backend.compat import (
    LayerConfigBuilder, LayerPattern, LayerSpec, TransformerConfig, get_model_config, list_model_presets,
    normalize_attention, normalize_mlp, normalize_norm,
)
from backend.errors import DesignError
from backend.plan import PATTERNS
from backend.spec import Design

S, SP, D = "self_sdpa", "spectral", "diff_attn"


@pytest.fixture
def custom_pattern():
    created: list[str] = []
    yield created
    for name in created:
        PATTERNS.pop(name, None)


# ---- legacy names -------------------------------------------------------------


@pytest.mark.parametrize("name, causal, expected", [
    ("SDPA", True, (S, {})),
    ("sdpa", True, (S, {})),
    ("SELF_SDPA", True, (S, {})),
    ("FLEX", True, ("self_flex", {})),
    ("flash", True, (S, {"backend": "flash"})),
    ("FLASH", False, (S, {"backend": "flash"})),
    ("xformer", True, (S, {"backend": "efficient"})),
    ("xformers", True, (S, {"backend": "efficient"})),
    ("performer", True, ("causal_linear", {})),
    ("PERFORMER", False, ("linear", {})),
    ("linear", True, ("causal_linear", {})),
    ("DIFF_ATTN", True, (D, {})),
    ("token-param", True, ("token_param", {})),
])
def test_normalize_attention(name, causal, expected):
    assert normalize_attention(name, causal) == expected


def test_normalize_mlp_and_norm():
    assert normalize_mlp("SWIGLU") == ("swiglu", {})
    assert normalize_mlp("gelu") == ("mlp", {"activation": "gelu"})
    assert normalize_mlp("MoE") == ("moe", {})
    assert normalize_norm("RMSNorm") == "rms" and normalize_norm("layernorm") == "layer"


@pytest.mark.parametrize("call, path", [
    (lambda: normalize_attention("bogus", path="attention_types[2]"), "attention_types[2]"),
    (lambda: normalize_mlp("nope", path="mlp_types[0]"), "mlp_types[0]"),
    (lambda: normalize_attention(3), "attention"),
    (lambda: normalize_norm("batch"), "norm"),
])
def test_unknown_names_raise_design_error_naming_the_field(call, path):
    with pytest.raises(DesignError) as exc:
        call()
    assert exc.value.path == path


# ---- TransformerConfig ----------------------------------------------------------


def test_legacy_lists():
    cfg = TransformerConfig(hidden_size=256, n_heads=4, attention_types=["SDPA", "spectral", "flash", "performer"],
                            mlp_types=["swiglu", "moe", "gelu", "SWIGLU"])
    assert cfg.n_layers == 4 and cfg.hidden_size == 256
    assert cfg.attention_types == [S, SP, S, "causal_linear"]
    assert cfg.mlp_types == ["swiglu", "moe", "mlp", "swiglu"]
    info = cfg.get_layer_info()
    assert [i["index"] for i in info] == [0, 1, 2, 3]
    assert info[2]["params"] == {"attention": {"backend": "flash"}, "mlp": {"activation": "gelu"}}
    assert info[2]["config"]["attention"]["backend"] == "flash"
    assert all(i["causal"] and not i["shared"] for i in info)
    assert isinstance(cfg.to_design(), Design) and cfg.to_design().layers.explicit is not None


def test_legacy_lists_in_an_encoder_pick_bidirectional_performer():
    cfg = TransformerConfig(architecture="encoder", task="mlm", attention_types=["performer", "sdpa"])
    assert cfg.attention_types == ["linear", S]


def test_seed_keyword_spellings():
    cfg = TransformerConfig(d_model=128, num_heads=2, num_layers=3, d_ff=300, block_size=256, norm_type="LayerNorm")
    d = cfg.to_design()
    assert (d.hidden_size, d.n_heads, d.layers.n_layers, d.mlp_hidden, d.max_seq_len, d.norm) == (128, 2, 3, 300, 256, "layer")
    assert cfg.d_model == 128 and cfg["n_heads"] == 2 and cfg.kv_heads == 2
    with pytest.raises(AttributeError):
        cfg.no_such_thing  # noqa: B018
    with pytest.raises(KeyError):
        cfg["no_such_thing"]


@pytest.mark.parametrize("kwargs, path", [
    ({"n_layers": 2, "hidden_sise": 64}, "hidden_sise"),
    ({"attention_types": ["sdpa", "bogus"]}, "attention_types[1]"),
    ({"attention_types": ["sdpa"], "mlp_types": ["moe", "moe"]}, "mlp_types"),
    ({"attention_types": ["sdpa", "sdpa"], "n_layers": 3}, "attention_types"),
    ({"attention_types": []}, "attention_types"),
    ({"attention_types": "sdpa"}, "attention_types"),
    ({}, "n_layers"),
    ({"n_layers": 2, "n_heads": 7}, "n_heads"),  # the spec's own validation
    ({"attention_types": ["sdpa"], "string": "SDPA"}, "attention_types"),
])
def test_config_errors_name_the_field(kwargs, path):
    with pytest.raises(DesignError) as exc:
        TransformerConfig(**kwargs)
    assert exc.value.path == path, str(exc.value)


def test_from_pattern_routes_pattern_params():
    cfg = TransformerConfig.from_pattern("sparse_special", 8, attention="performer", every=2, hidden_size=128, n_heads=4)
    assert cfg.attention_types == ["causal_linear", S] * 4
    assert cfg.to_design().layers.pattern.params == {"every": 2}
    cfg = TransformerConfig.from_pattern("alternating", 4, kinds=["SDPA", "FFT"])
    assert cfg.attention_types == [S, SP, S, SP]
    with pytest.raises(DesignError) as exc:
        TransformerConfig.from_pattern("zigzag", 4)
    assert exc.value.path == "pattern"


def test_from_string_pattern():
    cfg = TransformerConfig.from_string_pattern("SPECTRAL,SDPA*3,TOKEN_PARAM")
    assert cfg.n_layers == 5 and cfg.attention_types == [SP, S, S, S, "token_param"]
    assert cfg.to_design().layers.string == "SPECTRAL,SDPA*3,TOKEN_PARAM"  # kept in the notation
    cfg = TransformerConfig.from_string_pattern("SDPA,SPECTRAL", n_layers=6)
    assert cfg.attention_types == [S, SP] * 3
    # legacy names become an explicit list with their params
    cfg = TransformerConfig.from_string_pattern("FLASH:MOE,PERFORMER*2")
    assert cfg.attention_types == [S, "causal_linear", "causal_linear"] and cfg.mlp_types[0] == "moe"
    assert cfg.layer_specs[0].params == {"attention": {"backend": "flash"}}
    with pytest.raises(DesignError) as exc:
        TransformerConfig.from_string_pattern("SDPA,SPECTRAL*2", n_layers=4)
    assert exc.value.path == "string" and "3" in exc.value.message and "4" in exc.value.message


def test_from_config_file_design_and_flat(tmp_path):
    design_file = tmp_path / "d.yaml"
    design_file.write_text("name: d\nlayers:\n  n_layers: 3\n  repeat: {mode: cycle, factor: 2}\n")
    cfg = TransformerConfig.from_config_file(design_file)
    assert cfg.n_layers == 3 and cfg.n_executed_layers == 6 and cfg.effective_layers == 6
    assert [l.unique_index for l in cfg.layer_specs] == [0, 1, 2, 0, 1, 2]
    assert all(i["shared"] for i in cfg.get_layer_info())
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"hidden_size": 64, "n_heads": 2, "attention_types": ["sdpa", "fft"], "mlp_types": ["swiglu", "moe"]}))
    cfg = TransformerConfig.from_config_file(flat)
    assert cfg.attention_types == [S, SP] and cfg.hidden_size == 64
    with pytest.raises(DesignError):
        TransformerConfig.from_config_file(tmp_path / "missing.yaml")


def test_layer_specs_are_objects():
    cfg = TransformerConfig(n_layers=2, rules=[{"when": {"position": "last"}, "attention": "spectral"}])
    specs = cfg.layer_specs
    assert all(isinstance(s, LayerSpec) for s in specs)
    assert specs[1].attention_type == SP and specs[1].mlp_type == "swiglu" and specs[1].norm == "rms"
    assert specs[1].to_dict()["index"] == 1


def test_roundtrip_through_design_and_files(tmp_path):
    cfg = TransformerConfig(hidden_size=64, n_heads=2, attention_types=["flash", "fft"])
    assert TransformerConfig(cfg.to_design()) == cfg
    path = cfg.save(tmp_path / "c.json")
    assert TransformerConfig.from_config_file(path) == cfg
    path = cfg.save(tmp_path / "c.yaml")
    assert TransformerConfig.from_config_file(path) == cfg
    assert TransformerConfig(cfg.to_design(), hidden_size=128).hidden_size == 128


# ---- LayerPattern / LayerConfigBuilder -----------------------------------------


def test_layer_pattern_overrides():
    p = LayerPattern("hybrid_demo", "demo", "SDPA", "swiglu",
                     {"every:3": "spectral", -1: ("flash", "moe"), "first": {"attention": "diff"}, (4, 6): "FLEX"})
    layers = p.generate_layers(7)
    assert [l.attention for l in layers] == [D, S, S, SP, "self_flex", "self_flex", S]
    assert [l.mlp for l in layers] == ["swiglu"] * 6 + ["moe"]
    assert layers[6].params == {"attention": {"backend": "flash"}}
    assert [l.index for l in layers] == list(range(7))


def test_layer_pattern_more_conditions():
    p = LayerPattern("conds", "", "fft", None, [("middle", "sdpa"), ("fraction:0.75:1.0", "diff"), ("range:0:2", "flex")])
    assert [l.attention for l in p.generate_layers(8)] == ["self_flex", "self_flex", SP, SP, S, SP, D, D]
    assert [l.mlp for l in p.generate_layers(2)] == [None, None]  # the stack's default MLP


@pytest.mark.parametrize("kwargs, path", [
    ({"base_attention": "bogus"}, "base_attention"),
    ({"base_mlp": "bogus"}, "base_mlp"),
    ({"overrides": {"sometimes": "sdpa"}}, "overrides['sometimes']"),
    ({"overrides": {2: "bogus"}}, "overrides[2]"),
])
def test_layer_pattern_errors(kwargs, path):
    with pytest.raises(DesignError) as exc:
        LayerPattern("bad", "", **{"base_attention": "sdpa", **kwargs})
    assert exc.value.path == path


def test_add_custom_pattern_and_use_it(custom_pattern):
    p = LayerPattern("edges_spectral", "spectral at both ends", "sdpa", None, {"first": "spectral", "last": "performer"})
    LayerConfigBuilder.add_custom_pattern(p)
    custom_pattern.append(p.name)
    assert LayerConfigBuilder.list_patterns()["edges_spectral"] == "spectral at both ends"
    cfg = TransformerConfig.from_pattern("edges_spectral", 4)
    assert cfg.attention_types == [SP, S, S, "causal_linear"]  # performer -> causal in a decoder
    enc = TransformerConfig.from_pattern("edges_spectral", 3, architecture="encoder", task="mlm")
    assert enc.attention_types == [SP, S, "linear"]
    # a design file naming the pattern resolves in this process too
    assert TransformerConfig(n_layers=2, pattern="edges_spectral").attention_types == [SP, "causal_linear"]
    with pytest.raises(DesignError):
        LayerConfigBuilder.add_custom_pattern(LayerPattern("uniform", "", "sdpa"))


def test_builder_lists_strings_patterns():
    specs = LayerConfigBuilder.from_lists(["sdpa", "fft"], ["moe", "ffn"])
    assert [(s.attention, s.mlp, s.index) for s in specs] == [(S, "moe", 0), (SP, "mlp", 1)]
    specs = LayerConfigBuilder.from_string_pattern("SDPA,XFORMER*2", n_layers=6)
    assert [s.attention for s in specs] == [S] * 6 and specs[1].params == {"attention": {"backend": "efficient"}}
    assert [s.attention for s in LayerConfigBuilder.from_pattern("sandwich", 4)] == [S, SP, SP, S]
    assert [s.attention for s in LayerConfigBuilder.from_pattern("alternating", 3, kinds=["performer", "sdpa"], causal=False)] == ["linear", S, "linear"]
    cfg = TransformerConfig(layer_specs=specs, hidden_size=64, n_heads=2)
    assert cfg.n_layers == 6 and cfg.layer_specs[1].params == {"attention": {"backend": "efficient"}}
    with pytest.raises(DesignError) as exc:
        LayerConfigBuilder.from_lists(["sdpa", "sdpa"], ["moe"])
    assert exc.value.path == "mlp_types"


def test_builder_json_and_yaml(tmp_path):
    text = '[{"attention": "spectral", "params": {"attention": {"adaptive": true}}}, ["flash", "moe"], "SDPA"]'
    specs = LayerConfigBuilder.from_json(text)
    assert [(s.attention, s.mlp) for s in specs] == [(SP, None), (S, "moe"), (S, None)]
    assert specs[0].params == {"attention": {"adaptive": True}}
    f = tmp_path / "layers.yaml"
    f.write_text("layers:\n  - spectral\n  - {attention: diff, mlp: relu2}\n")
    assert [(s.attention, s.mlp) for s in LayerConfigBuilder.from_yaml(f)] == [(SP, None), (D, "relu2")]
    assert [s.attention for s in LayerConfigBuilder.from_yaml("layers: [fft, sdpa]\n")] == [SP, S]
    g = tmp_path / "design.json"
    g.write_text(json.dumps({"layers": {"n_layers": 3, "string": "SDPA,SPECTRAL*2"}}))
    assert [s.attention for s in LayerConfigBuilder.from_json(g)] == [S, SP, SP]
    with pytest.raises(DesignError) as exc:
        LayerConfigBuilder.from_json('[{"attention": "bogus"}]')
    assert exc.value.path == "layers[0].attention"
    with pytest.raises(DesignError):
        LayerConfigBuilder.from_yaml("layers: !!python/object/apply:os.system ['true']")


# ---- seed 001 registry ------------------------------------------------------------


SEED_001 = {
    # name: (hidden, unique layers, executed layers, repeat mode, flow mode)
    "tiny": (64, 2, 2, "none", "none"),
    "small": (128, 4, 4, "none", "none"),
    "medium": (256, 8, 8, "none", "none"),
    "large": (512, 12, 12, "none", "none"),
    "medium_cycle": (256, 2, 16, "cycle", "none"),
    "medium_layerwise": (256, 4, 16, "layerwise", "none"),
    "medium_one_layer": (256, 1, 16, "cycle", "none"),
    "medium_flow": (256, 8, 8, "none", "learned"),
    "medium_layerwise_flow": (256, 4, 16, "layerwise", "learned"),
}


@pytest.mark.parametrize("name", sorted(SEED_001))
def test_seed_001_presets(name):
    hidden, unique, executed, mode, flow = SEED_001[name]
    assert name in list_model_presets()
    cfg = get_model_config(name)
    d = cfg.to_design()
    assert (d.architecture, d.task, d.vocab_size, d.input_dim, d.output_dim) == ("encoder", "cluster_centers", None, 2, 8)
    assert d.hidden_size == hidden and cfg.n_layers == unique and cfg.n_executed_layers == executed
    assert d.layers.repeat.mode == mode and d.layers.flow.mode == flow
    assert d.description.startswith(f"Seed 001 {name}")


def test_seed_001_layerwise_mapping():
    assert [s.unique_index for s in get_model_config("medium_layerwise").layer_specs] == [i // 4 for i in range(16)]
    assert {s.unique_index for s in get_model_config("medium_one_layer").layer_specs} == {0}


@pytest.mark.parametrize("name, n_layers", [("research", 16), ("efficient", 24), ("hybrid", 12)])
def test_seed_000_examples(name, n_layers):
    cfg = get_model_config(name)
    assert cfg.n_layers == n_layers and cfg.warnings == []
    assert len(set(cfg.attention_types)) >= 2  # they mix kinds


def test_seed_000_efficient_is_sparse_special():
    d = get_model_config("efficient").to_design()
    assert d.layers.pattern.name == "sparse_special"


def test_get_model_config_unknown():
    with pytest.raises(DesignError, match="unknown preset"):
        get_model_config("no_such_model")
