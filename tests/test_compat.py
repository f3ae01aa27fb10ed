"""The seeds' Python API (backend.compat) over spec/plan."""
from __future__ import annotations

import json

import pytest

from backend.compat import (
    ClusterPredictionConfig, LayerConfigBuilder, LayerPattern, LayerSpec, TransformerConfig, get_model_config,
    list_model_presets,
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


# ---- seed 000: custom params, condition dicts, config files ---------------------------------


def test_custom_params_translate_or_fail_naming_the_field():
    cfg = TransformerConfig(hidden_size=64, n_heads=2, layer_config={"layers": [
        {"attention_type": "spectral", "mlp_type": "swiglu",
         "custom_params": {"attention": {"use_fft": True, "adaptive": True}, "mlp": {"expansion_ratio": 2.5}}}]})
    assert cfg.layer_specs[0].params == {"attention": {"adaptive": True}, "mlp": {"hidden": 160}}
    for custom, path in [({"attention": {"use_fft": False}}, "layer_specs[0].custom_params.attention.use_fft"),
                         ({"attention": {"no_such": 1}}, "layer_specs[0].custom_params.attention.no_such"),
                         ({"cache": {"x": 1}}, "layer_specs[0].custom_params.cache")]:
        with pytest.raises(DesignError) as exc:
            TransformerConfig(layer_config={"layers": [{"attention_type": "spectral", "custom_params": custom}]})
        assert exc.value.path == path


def test_layer_pattern_takes_the_documented_condition_dicts():
    p = LayerPattern(name="doc", base_attention="self_sdpa", base_mlp="swiglu", overrides=[
        {"condition": {"every": 2, "offset": 1}, "attention_type": "spectral"},
        {"condition": {"layer_idx": [0]}, "mlp_type": "moe"},  # mlp only: the attention stays
    ])
    layers = p.generate_layers(4)
    assert [(l.attention, l.mlp) for l in layers] == [(S, "moe"), (SP, "swiglu"), (S, "swiglu"), (SP, "swiglu")]
    with pytest.raises(DesignError) as exc:
        LayerPattern(name="bad", overrides=["every 3"])
    assert exc.value.path == "overrides[0]"


def test_seed_000_config_files(tmp_path):
    (tmp_path / "layers.yaml").write_text("layers:\n  - attention_type: spectral\n    mlp_type: swiglu\n"
                                          "  - attention_type: self_sdpa\n    mlp_type: relu2\n")
    cfg = TransformerConfig.from_config_file(config_file=tmp_path / "layers.yaml", hidden_size=128, n_heads=4)
    assert (cfg.attention_types, cfg.mlp_types, cfg.hidden_size) == ([SP, S], ["swiglu", "relu2"], 128)
    (tmp_path / "p.json").write_text(json.dumps({"pattern": {"name": "alternating", "n_layers": 4,
                                                             "params": {"base_attention": "self_sdpa", "base_mlp": "relu2"}}}))
    cfg = TransformerConfig.from_config_file(str(tmp_path / "p.json"), hidden_size=64, n_heads=2)
    assert cfg.attention_types == [S, "token_param"] * 2 and cfg.mlp_types == ["relu2"] * 4


def test_seed_000_example_1_error_names_both_numbers():
    with pytest.raises(DesignError) as exc:
        TransformerConfig.from_string_pattern("SPECTRAL,SDPA*3,SPECTRAL,SDPA*2,DIFF_ATTN*2,SDPA*2,SPECTRAL,SDPA*3",
                                              n_layers=16, hidden_size=768, n_heads=12)
    assert exc.value.path == "string" and "15" in exc.value.message and "16" in exc.value.message


# ---- seed 001: transformer fields, ClusterPredictionConfig, preset files ----------------------


def test_seed_001_fields_read_and_write():
    mc = get_model_config("medium_cycle")
    t = mc.transformer
    assert (t.hidden_dim, t.num_layers, t.layer_repeat_mode, t.repeat_factor) == (256, 2, "cycle", 8)
    t.repeat_factor = 3
    assert mc.to_design().layers.repeat.factor == 3 and mc.n_executed_layers == 6
    t.layer_repeat_mode = "none"  # the factor is kept but inert, as in seed 001
    assert mc.n_executed_layers == 2 and t.repeat_factor == 3
    t.layer_repeat_mode = "layerwise"
    assert [s.unique_index for s in mc.layer_specs] == [0, 0, 0, 1, 1, 1]
    t.use_flow_predictor = True
    assert mc.to_design().layers.flow.mode == "learned" and t.flow_predictor_type == "dummy"
    t.flow_predictor_type = "mlp"
    assert mc.to_design().layers.flow.mode == "predicted"
    t.hidden_dim = 128
    assert mc.to_design().hidden_size == 128
    with pytest.raises(DesignError) as exc:
        t.repeat_factor = 0
    assert exc.value.path == "repeat_factor"
    with pytest.raises(DesignError) as exc:
        t.no_such_field = 1
    assert exc.value.path == "no_such_field"


def test_cluster_prediction_config():
    t = TransformerConfig(input_dim=3, hidden_dim=32, num_layers=2, num_heads=2, layer_repeat_mode="grouped",
                          layer_groups=[1, 1], group_repeat_factors=[2, 3])
    d = t.to_design()
    assert (d.input_dim, d.dropout, d.bias, d.layers.repeat.mode) == (3, 0.1, True, "grouped")  # seed 001 defaults
    c = ClusterPredictionConfig(transformer=t, prediction_type="assignments", num_clusters=5)
    d = c.to_design()
    assert (d.task, d.output_dim) == ("cluster_assignments", 5) and c.n_executed_layers == 5
    with pytest.raises(DesignError) as exc:
        ClusterPredictionConfig(transformer=t, prediction_type="assignments")
    assert exc.value.path == "num_clusters"
    with pytest.raises(DesignError) as exc:
        TransformerConfig(hidden_dim=32, num_heads=2, n_layers=3)
    assert exc.value.path == "n_layers"


def test_adding_a_preset_file_makes_it_appear(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKEND_PRESETS_DIR", str(tmp_path))
    assert "custom_model" not in list_model_presets()
    (tmp_path / "defaults.json").write_text(json.dumps({"custom_model": {
        "description": "Custom model configuration", "prediction_type": "centers",
        "transformer": {"input_dim": 2, "hidden_dim": 96, "num_layers": 3, "num_heads": 3, "dropout": 0.1,
                        "activation": "gelu", "use_flash_attn": True, "layer_repeat_mode": "cycle", "repeat_factor": 4}}}))
    (tmp_path / "my_design.yaml").write_text("name: my_design\nlayers: {n_layers: 2}\n")
    assert {"custom_model", "my_design"} <= set(list_model_presets())
    cm = get_model_config("custom_model")
    assert (cm.transformer.hidden_dim, cm.transformer.repeat_factor, cm.n_executed_layers) == (96, 4, 12)
    assert cm.to_design().name == "custom_model"
    assert get_model_config("my_design").transformer.n_layers == 2


# ---- seeds 002-004: real numbers at small sizes, against references ------------------------

import math  # noqa: E402

import torch  # noqa: E402

from backend import compat  # noqa: E402
from backend.build import build_model  # noqa: E402


def _reference_attention(x, attn, causal):
    """softmax(q k^T / sqrt(d)) v with the module's own projections (Vaswani et al. 2017, eq. 1)."""
    B, S, _ = x.shape
    m = attn.module
    H, KV, Dh = m.n_heads, m.n_kv_heads, m.head_dim
    q = m.q_proj(x).view(B, S, H, Dh).transpose(1, 2)
    k = m.k_proj(x).view(B, S, KV, Dh).transpose(1, 2).repeat_interleave(H // KV, dim=1)
    v = m.v_proj(x).view(B, S, KV, Dh).transpose(1, 2).repeat_interleave(H // KV, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    if causal:
        scores = scores.masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, H * Dh)
    return m.o_proj(out)


@pytest.mark.parametrize("kind, groups, kv", [("mha", None, 4), ("mqa", None, 1), ("gqa", None, 2), ("gqa", 4, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_layers_match_the_formula(kind, groups, kv, causal):
    torch.manual_seed(0)
    attn = compat.get_attention(kind, embed_dim=16, num_heads=4, num_groups=groups, apply_causal_mask=causal)
    assert attn.module.n_kv_heads == kv and attn.module.k_proj.out_features == kv * 4
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(attn(x, x, x), _reference_attention(x, attn, causal))
    with pytest.raises(DesignError) as exc:
        attn(x, torch.randn(2, 5, 16), torch.randn(2, 5, 16))
    assert exc.value.path == "key"
    if causal:  # the layer's KV cache: token by token equals the full causal pass
        cached = compat.get_attention(kind, embed_dim=16, num_heads=4, num_groups=groups, apply_causal_mask=True,
                                      use_kv_cache=True)
        cached.load_state_dict(attn.state_dict())
        steps = [cached(x[:, :2], expanding_context=True)] + [cached(x[:, t:t + 1], expanding_context=True) for t in (2, 3, 4)]
        torch.testing.assert_close(torch.cat(steps, 1), attn(x))


def test_causal_mask_and_sdpa():
    mask = compat.create_causal_mask(4)
    assert mask.dtype == torch.bool and torch.equal(mask, torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool())
    q, k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8)
    ref = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(compat.scaled_dot_product_attention(q, k, v, mask=mask), ref)
    torch.testing.assert_close(compat.scaled_dot_product_attention(q, k, v, mask=mask.float()), ref)


def test_moe_layer_loss_and_capacity():
    torch.manual_seed(0)
    moe = compat.MOE(embed_dim=8, ffn_latent_dim=16, num_experts=4, capacity=2, alpha=0.5, topk=1)
    x = torch.randn(3, 4, 8)
    y, aux = moe(x)
    assert y.shape == x.shape and aux.dim() == 0
    logits = moe.module.router(x.reshape(-1, 8))
    f = torch.nn.functional.one_hot(logits.argmax(-1), 4).float().mean(0)  # fraction of tokens per expert
    p = logits.softmax(-1).mean(0)  # mean routing probability
    torch.testing.assert_close(aux, 0.5 * (f * p).sum())  # seed 002: alpha * sum_i f_i p_i
    assert int(moe.module.last_counts.max()) <= 2  # capacity: tokens per expert and batch
    assert moe.to_design().layers.params.mlp["capacity"] == 2


def test_ffn_config_errors():
    with pytest.raises(DesignError) as exc:
        compat.FFNConfig(embed_dim=8, latent_dim=16, use_moe=True)
    assert exc.value.path == "ffn_config.num_experts"
    with pytest.raises(DesignError) as exc:
        compat.TransformerModel(input_dim=2, embed_dim=16, ffn_latent_dim=32, num_layers=1, num_heads=2, output_dim=1,
                                ffn_config=compat.FFNConfig(embed_dim=8, latent_dim=32))
    assert exc.value.path == "ffn_config.embed_dim" and "16" in exc.value.message and "8" in exc.value.message


def _ar(**kw):
    torch.manual_seed(0)
    m = compat.AutoregressiveTransformerModel(input_dim=2, embed_dim=16, ffn_latent_dim=32, num_layers=2, num_heads=4,
                                              output_dim=3, apply_causal_mask=True, max_seq_len=6,
                                              attention_type="gqa", use_kv_cache=True, **kw)
    return m.eval()


def test_autoregressive_kv_cache_matches_the_full_pass():
    m = _ar()
    x = torch.randn(2, 6, 2)
    full = m(x)
    assert full.shape == (2, 6, 3) and m.generate_next_token(x).shape == (2, 1, 3)
    torch.testing.assert_close(m.generate_next_token(x), full[:, -1:])
    steps = [m(x[:, :3], expanding_context=True)] + [m(x[:, t:t + 1], expanding_context=True) for t in range(3, 6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # sliding window of max_seq_len: after 8 tokens, the last one sees only the last 6
    m.reset_cache()
    y = torch.randn(2, 8, 2)
    for t in range(8):
        last = m(y[:, t:t + 1], expanding_context=False)
    assert m._cache.layers[0]["self"].k.shape[2] == 6
    assert torch.isfinite(last).all()


def test_encoder_decoder_incremental_decode_matches_full_decode():
    torch.manual_seed(0)
    m = compat.EncoderDecoder(input_dim=1, embed_dim=16, ffn_latent_dim=32, num_encoder_layers=1, num_decoder_layers=2,
                              num_heads=4, output_dim=1, attention_type="mqa", use_kv_cache=True,
                              ffn_config=compat.FFNConfig(16, 32, use_moe=True, num_experts=2, capacity=64, topk=1)).eval()
    src, tgt = torch.randn(2, 5, 1), torch.randn(2, 1, 1)
    memory = m.encode(src)
    assert memory.shape == (2, 5, 16)
    for _ in range(4):
        out = m.decode(tgt, memory, expanding_context=True)
        torch.testing.assert_close(out, m.decode(tgt, memory), atol=1e-5, rtol=1e-5)
        tgt = torch.cat([tgt, out[:, -1:, :]], dim=1)
    torch.testing.assert_close(m(src, tgt), m.decode(tgt, memory))
    with pytest.raises(DesignError):
        compat.EncoderDecoder(input_dim=1, embed_dim=16, ffn_latent_dim=32, num_encoder_layers=1, num_decoder_layers=1,
                              num_heads=4, output_dim=1, apply_causal_mask=False)


def test_seed_003_forward_one_step_matches_decode():
    torch.manual_seed(0)
    dec = compat.TransformerDecoder(input_size=3, output_size=2, d_model=16, nhead=4, num_layers=2, dim_feedforward=32,
                                    dropout=0.0, norm_strategy="post_norm", use_adaptive_ln="rms").eval()
    memory, tgt = torch.randn(2, 4, 16), torch.randn(2, 5, 3)
    state: dict = {}
    outs = []
    for t in range(5):
        o, state = dec.forward_one_step(tgt=tgt[:, t:t + 1], memory=memory, incremental_state=state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), dec(tgt, memory), atol=1e-5, rtol=1e-5)
    layer = state["layers"][1]
    assert layer["self_attn"]["key"].shape == (2, 5, 16) and layer["cross_attn"]["key"].shape == (2, 4, 16)
    # the state's cross keys are the decoder's projection of the memory
    k = dec.module.stacks["decoder"].blocks[1].cross.k_proj(memory)
    torch.testing.assert_close(layer["cross_attn"]["key"], k)
    assert "encoder" not in dec.module.stacks and dec.to_design().encoder.n_layers == 2


def test_seed_modules_are_their_designs_model():
    """The design an object gives rebuilds its module: same state-dict names and shapes, same outputs."""
    torch.manual_seed(0)
    enc = compat.TransformerEncoder(input_size=3, d_model=16, nhead=2, num_layers=2, dim_feedforward=24, dropout=0.0,
                                    att_type="flash", use_swiglu=False, activation="swish").eval()
    full = build_model(enc.to_design()).eval()
    full.load_state_dict(enc.module.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(full(x).output, enc(x))
    pe = compat.PerformerEncoder(d_model=16, num_layers=2, num_heads=2, d_ff=2, dropout=0.0, nb_features=8,
                                 activation=compat.ActivationFunctions.GEGLU, use_scalenorm=True).eval()
    full = build_model(pe.to_design()).eval()
    missing = full.load_state_dict(pe.module.state_dict(), strict=False)
    assert set(missing.missing_keys) == {k for k in full.state_dict() if not k.startswith("stacks.")}
    h = torch.randn(2, 5, 16)
    torch.testing.assert_close(full.stacks["layers"](h)[0], pe(h))


def test_performer_seq2seq_small_real_run_and_fixed_projections():
    torch.manual_seed(0)
    common = {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 2, "dropout": 0.0, "nb_features": 8,
              "feature_redraw_interval": 1}
    m = compat.EncoderDecoderTransformer(encoder_params={**common, "attention_type": "linear"},
                                         decoder_params={**common, "attention_type": "causal_linear",
                                                         "activation": compat.ActivationFunctions.SWIGLU})
    src, tgt = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
    out = m(src, tgt)
    assert out.shape == (2, 4, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    proj = m.module.stacks["encoder"].blocks[0].attn.projection
    before = proj.clone()
    m(src, tgt)
    m(src, tgt)  # training mode, interval 1: redrawn
    assert not torch.equal(before, proj)
    m.encoder.fix_projection_matrices_()
    m.decoder.fix_projection_matrices_()
    fixed = proj.clone()
    m(src, tgt)
    m(src, tgt)
    assert torch.equal(fixed, proj) and m.to_design().encoder.params.attention["fix_projection"] is True
    with pytest.raises(DesignError) as exc:
        compat.EncoderDecoderTransformer(encoder_params={"d_model": 16, "num_heads": 2},
                                         decoder_params={"d_model": 32, "num_heads": 2})
    assert exc.value.path == "decoder_params.d_model" and "16" in exc.value.message and "32" in exc.value.message
    with pytest.raises(DesignError) as exc:
        compat.PerformerDecoder(d_model=16, num_heads=2, attention_type="linear")  # bidirectional in a causal stack
    with pytest.raises(DesignError) as exc:
        compat.PerformerEncoder(d_model=16, num_heads=2, nb_feature=8)
    assert exc.value.path == "nb_feature"


def test_performer_decoder_only_and_cross_masks():
    torch.manual_seed(0)
    lm = compat.PerformerDecoder(d_model=16, num_layers=1, num_heads=2, use_cross_attention=False, nb_features=8)
    assert lm.to_design().architecture == "decoder" and lm(torch.randn(2, 3, 16), use_causal_mask=True).shape == (2, 3, 16)
    dec = compat.PerformerDecoder(d_model=16, num_layers=1, num_heads=2, nb_features=8, dropout=0.0).eval()
    tgt, mem = torch.randn(2, 3, 16), torch.randn(2, 4, 16)
    cross = torch.ones(2, 3, 4)
    cross[:, :, 3] = 0  # the last source position is padding
    torch.testing.assert_close(dec(tgt, encoder_output=mem, cross_attn_mask=cross),
                               dec(tgt, encoder_output=mem[:, :3]))
    with pytest.raises(DesignError) as exc:
        dec(tgt)
    assert exc.value.path == "encoder_output"


def test_readme_migration_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Migrating from the seed systems"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {"torch": torch}
    exec(code, ns)  # noqa: S102
    assert ns["state"]["layers"][0]["self_attn"]["key"].shape == (2, 1, 512)
    assert ns["model"].to_design().decoder.params.attention["fix_projection"] is True


def test_from_code_cli(tmp_path, capsys):
    from backend.cli import main
    from backend.spec import parse_design_text

    script = tmp_path / "snippet.py"
    script.write_text(
        "from models.transformer.modeling_transformer import TransformerConfig\n"
        "from config.model import ClusterPredictionConfig, TransformerConfig as T001\n"
        "cfg = TransformerConfig.from_string_pattern(pattern='SPECTRAL,SDPA', n_layers=4, hidden_size=64, n_heads=2)\n"
        "t = T001(input_dim=2, hidden_dim=32, num_layers=2, num_heads=2, layer_repeat_mode='cycle', repeat_factor=3)\n"
        "c = ClusterPredictionConfig(transformer=t, prediction_type='centers')\n"
        "print('hello from the script')\n")
    assert main(["from-code", str(script), "--compact"]) == 0
    out, err = capsys.readouterr()
    docs = out.split("---\n")
    assert len(docs) == 2 and docs[0].startswith("# TransformerConfig") and docs[1].startswith("# ClusterPredictionConfig")
    first, second = (parse_design_text(d) for d in docs)
    assert first.layers.string == "SPECTRAL,SDPA" and second.layers.repeat.factor == 3
    assert "hello from the script" in err and "hello" not in out
    for body, expected in [
        ("from models.transformer.modeling_transformer import TransformerConfig\n"
         "TransformerConfig.from_string_pattern(pattern='SDPA*3', n_layers=4)\n", "string: counts add up to 3"),
        ("x = 1\ny = undefined_name\n", "bad.py:2: NameError"),
        ("x = 1\n", "built no seed-style config or model"),
    ]:
        bad = tmp_path / "bad.py"
        bad.write_text(body)
        assert main(["from-code", str(bad)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and expected in err and err.count("\n") == 1, err
    assert main(["from-code", str(tmp_path / "missing.py")]) == 2


def test_rewrite_imports_keeps_lines_and_other_imports():
    from backend.seedcode import rewrite_imports

    src = ("import torch\nfrom torch import nn\nfrom config.registry import get_model_config\n"
           "    from transformer.attention.mha import (\n        MultiHeadAttention,\n    )\n"
           "import models.transformer.layer_config as lc\nfrom modelsx import y\n")
    out = rewrite_imports(src).splitlines()
    assert out == ["import torch", "from torch import nn", "from backend.compat import get_model_config",
                   "    from backend.compat import (", "        MultiHeadAttention,", "    )",
                   "import backend.compat as lc", "from modelsx import y"]


def test_performer_encoder_keeps_the_kind_it_was_given():
    small = {"d_model": 16, "num_heads": 2, "num_layers": 1}
    m = compat.EncoderDecoderTransformer(encoder_params={**small, "attention_type": "causal_linear"}, decoder_params=small)
    assert (m.to_design().encoder.attention, m.to_design().decoder.attention) == ("causal_linear", "causal_linear")
    bare = compat.PerformerDecoder(d_model=16, num_heads=2, num_layers=1)  # its design's mirror encoder is bidirectional
    assert (bare.to_design().encoder.attention, bare.to_design().decoder.attention) == ("linear", "causal_linear")
