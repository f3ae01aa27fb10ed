"""The layer plan: patterns, string notation, rules, explicit lists, params, repetition, stacks.

Expected layouts are written out by hand from the documented semantics
(DESIGN.md section 3 and the pattern descriptions), not copied from the code.
"""
from __future__ import annotations

import pytest

from backend.errors import DesignError
from backend.plan import PATTERNS, list_patterns, matches, parse_string, register_pattern, resolve_plan, to_string
from backend.spec import When

S, SP, D, T, F, CL = "self_sdpa", "spectral", "diff_attn", "token_param", "self_flex", "causal_linear"


def plan_of(stack: dict, **model):
    return resolve_plan({**model, "layers": stack})


def atts(stack: dict, **model) -> list[str]:
    return [layer.attention for layer in plan_of(stack, **model).layers]


def mlps(stack: dict, **model) -> list[str]:
    return [layer.mlp for layer in plan_of(stack, **model).layers]


def err(stack: dict, **model) -> DesignError:
    with pytest.raises(DesignError) as exc:
        plan_of(stack, **model)
    return exc.value


# ---- named patterns ------------------------------------------------------------


def test_five_seed_patterns_are_registered():
    assert {"uniform", "alternating", "sandwich", "pyramid", "sparse_special"} <= set(list_patterns())


def test_uniform_defaults_to_stack_kinds():
    assert atts({"n_layers": 4, "pattern": "uniform"}) == [S] * 4
    assert atts({"n_layers": 3, "attention": D, "pattern": "uniform"}) == [D] * 3


def test_uniform_params():
    p = plan_of({"n_layers": 3, "pattern": {"name": "uniform", "params": {"attention": SP, "mlp": "moe"}}})
    assert [(l.attention, l.mlp) for l in p.layers] == [(SP, "moe")] * 3


def test_alternating_default_is_stack_attention_then_spectral():
    assert atts({"n_layers": 5, "pattern": "alternating"}) == [S, SP, S, SP, S]


def test_alternating_kinds_period_and_mlps():
    stack = {"n_layers": 7, "pattern": {"name": "alternating", "params": {"kinds": [S, SP, D], "period": 2, "mlps": ["swiglu", "moe"]}}}
    assert atts(stack) == [S, S, SP, SP, D, D, S]
    # the mlps cycle with the same period: groups j = i // 2 -> mlps[j % 2]
    assert mlps(stack) == ["swiglu", "swiglu", "moe", "moe", "swiglu", "swiglu", "moe"]


def test_sandwich_defaults():
    # outer self_sdpa on one layer at each end; inner: the stack's attention,
    # or spectral when that is self_sdpa too
    assert atts({"n_layers": 6, "pattern": "sandwich"}) == [S, SP, SP, SP, SP, S]
    assert atts({"n_layers": 6, "attention": D, "pattern": "sandwich"}) == [S, D, D, D, D, S]


def test_sandwich_params():
    stack = {"n_layers": 6, "pattern": {"name": "sandwich", "params": {"outer": D, "inner": T, "n_outer": 2}}}
    assert atts(stack) == [D, D, T, T, D, D]
    assert atts({"n_layers": 2, "pattern": {"name": "sandwich", "params": {"n_outer": 0, "inner": SP}}}) == [SP, SP]


def test_pyramid_bands():
    # default kinds [spectral, stack attention]: band = i * 2 // n
    assert atts({"n_layers": 5, "pattern": "pyramid"}) == [SP, SP, SP, S, S]
    assert atts({"n_layers": 6, "pattern": {"name": "pyramid", "params": {"kinds": [SP, T, S]}}}) == [SP, SP, T, T, S, S]
    # more kinds than layers: each layer takes band i * k // n
    assert atts({"n_layers": 2, "pattern": {"name": "pyramid", "params": {"kinds": [SP, T, D, S]}}}) == [SP, D]


def test_sparse_special_defaults():
    # every 4, offset every-1 = 3: layers 3 and 7 are self_sdpa, the rest the stack's kind
    assert atts({"n_layers": 8, "attention": CL, "pattern": "sparse_special"}) == [CL, CL, CL, S, CL, CL, CL, S]
    # stack attention already self_sdpa: base falls back to spectral
    assert atts({"n_layers": 4, "pattern": "sparse_special"}) == [SP, SP, SP, S]


def test_sparse_special_params():
    stack = {"n_layers": 7, "pattern": {"name": "sparse_special", "params": {"special": D, "base": SP, "every": 3, "offset": 0}}}
    assert atts(stack) == [D, SP, SP, D, SP, SP, D]


@pytest.mark.parametrize(
    "pattern, path",
    [
        ("nope", "layers.pattern"),
        ({"name": "nope"}, "layers.pattern.name"),
        ({"name": "uniform", "params": {"kind": SP}}, "layers.pattern.params.kind"),
        ({"name": "alternating", "params": {"kinds": []}}, "layers.pattern.params.kinds"),
        ({"name": "alternating", "params": {"period": 0}}, "layers.pattern.params.period"),
        ({"name": "sparse_special", "params": {"every": "4"}}, "layers.pattern.params.every"),
        ({"name": "uniform", "params": {"attention": "bogus"}}, "layers.pattern"),
    ],
)
def test_pattern_errors(pattern, path):
    e = err({"n_layers": 4, "pattern": pattern})
    assert e.path == path, str(e)


def test_register_custom_pattern():
    name = "test_every_other_diff"
    try:
        register_pattern(name, "diff on odd layers", {}, lambda n, stack, p: [(D if i % 2 else stack.attention, None) for i in range(n)])
        assert name in list_patterns()
        assert atts({"n_layers": 4, "pattern": name}) == [S, D, S, D]
        with pytest.raises(DesignError):
            register_pattern(name, "again", {}, lambda n, s, p: [])
        register_pattern(name, "again", {}, lambda n, s, p: [(SP, "moe", {"mlp": {"top_k": 1}})] * n, replace=True)
        p = plan_of({"n_layers": 2, "pattern": name})
        assert [(l.attention, l.mlp, l.params) for l in p.layers] == [(SP, "moe", {"mlp": {"top_k": 1}})] * 2
    finally:
        PATTERNS.pop(name, None)
    with pytest.raises(DesignError):
        register_pattern("uniform", "replace a built-in", {}, lambda n, s, p: [], replace=True)
    with pytest.raises(DesignError):
        register_pattern("Bad Name", "", {}, lambda n, s, p: [])


# ---- string notation -------------------------------------------------------------


def test_string_counts():
    assert parse_string("SPECTRAL,SDPA*3,TOKEN_PARAM", 5) == [(SP, None), (S, None), (S, None), (S, None), (T, None)]


def test_string_mlp_suffix():
    stack = {"n_layers": 3, "string": "SDPA:MOE*2,SPECTRAL"}
    assert atts(stack) == [S, S, SP]
    assert mlps(stack) == ["moe", "moe", "swiglu"]


def test_string_aliases_and_case():
    assert [a for a, _ in parse_string("SDPA,FLEX,SELF_SDPA,DIFF_ATTN,CAUSAL_LINEAR", 5)] == [S, F, S, D, CL]
    assert [a for a, _ in parse_string("sdpa, spectral * 2", 3)] == [S, SP, SP]


def test_string_tiles_over_divisor():
    assert atts({"n_layers": 6, "string": "SDPA,SPECTRAL"}) == [S, SP] * 3
    assert atts({"n_layers": 8, "string": "SPECTRAL,SDPA*3"}) == [SP, S, S, S] * 2


@pytest.mark.parametrize("text, n", [("SDPA,SPECTRAL*2", 4), ("SDPA*5", 12), ("SDPA*7", 3)])
def test_string_non_divisor_names_both_numbers(text, n):
    e = err({"n_layers": n, "string": text})
    total = sum(int(t.split("*")[1]) if "*" in t else 1 for t in text.split(","))
    assert e.path == "layers.string"
    assert str(total) in e.message and str(n) in e.message


@pytest.mark.parametrize("text, fragment", [
    ("SDPA,BOGUS", "BOGUS"), ("SDPA:FOO", "FOO"), ("SDPA**2", "item 1"), ("SDPA*0,SDPA", "count"), (" , ", "item 1"),
])
def test_string_errors(text, fragment):
    e = err({"n_layers": 2, "string": text})
    assert e.path == "layers.string" and fragment in e.message


def test_to_string_run_length():
    layers = [(S, "swiglu")] * 3 + [(SP, "moe"), (F, "swiglu")]
    text = to_string(layers, default_mlp="swiglu")
    assert text == "SDPA*3,SPECTRAL:MOE,FLEX"
    assert parse_string(text, 5) == [(S, None)] * 3 + [(SP, "moe"), (F, None)]


# ---- rule conditions --------------------------------------------------------------


def hits(when: dict, n: int) -> list[int]:
    w = When(**when)
    return [i for i in range(n) if matches(w, i, n)]


@pytest.mark.parametrize(
    "when, n, expected",
    [
        ({}, 3, [0, 1, 2]),
        ({"every": 3}, 10, [0, 3, 6, 9]),
        ({"every": 3, "offset": 1}, 10, [1, 4, 7]),
        ({"every": 1, "offset": 8}, 10, [8, 9]),
        ({"position": "first"}, 10, [0]),
        ({"position": "last"}, 10, [9]),
        ({"position": "middle"}, 10, [5]),
        ({"position": "middle"}, 7, [3]),
        ({"position": "last"}, 1, [0]),
        ({"range": [2, 5]}, 10, [2, 3, 4]),
        ({"fraction": [0.0, 0.3]}, 10, [0, 1, 2]),
        ({"fraction": [0.5, 1.0]}, 10, [5, 6, 7, 8, 9]),  # b = 1.0 includes the last layer
        ({"fraction": [0.75, 1.0]}, 4, [3]),
        ({"fraction": [0.0, 1.0]}, 1, [0]),
        ({"fraction": [0.9, 1.0]}, 3, []),  # 2/3 < 0.9
        ({"fraction": [0.25, 0.5]}, 8, [2, 3]),
        ({"layer_idx": [0, 2, 9]}, 10, [0, 2, 9]),
        ({"every": 2, "range": [4, 10]}, 10, [4, 6, 8]),
        ({"position": "last", "every": 3}, 10, [9]),
        ({"position": "last", "every": 4}, 10, []),
        ({"fraction": [0.5, 1.0], "layer_idx": [1, 5, 9]}, 10, [5, 9]),
    ],
)
def test_when_conditions(when, n, expected):
    assert hits(when, n) == expected
    # and the same through a rule in a plan
    got = [i for i, a in enumerate(atts({"n_layers": n, "rules": [{"when": when, "attention": SP}]})) if a == SP]
    assert got == expected


def test_later_rules_win_and_override_only_their_fields():
    stack = {"n_layers": 4, "rules": [
        {"attention": SP, "mlp": "moe"},
        {"when": {"position": "first"}, "attention": D},
        {"when": {"layer_idx": [3]}, "mlp": "relu2"},
    ]}
    p = plan_of(stack)
    assert [(l.attention, l.mlp) for l in p.layers] == [(D, "moe"), (SP, "moe"), (SP, "moe"), (SP, "relu2")]
    assert p.warnings == ()


def test_rules_apply_after_pattern_and_string():
    assert atts({"n_layers": 4, "string": "SPECTRAL*4", "rules": [{"when": {"position": "last"}, "attention": S}]}) == [SP, SP, SP, S]
    assert atts({"n_layers": 4, "pattern": "sandwich", "rules": [{"when": {"position": "first"}, "attention": D}]}) == [D, SP, SP, S]


def test_warning_for_rule_matching_nothing():
    p = plan_of({"n_layers": 10, "rules": [{"when": {"position": "last", "every": 4}, "attention": SP}]})
    assert [l.attention for l in p.layers] == [S] * 10
    assert p.warnings == ("layers.rules[0] matches no layer",)


def test_warning_for_rule_fully_overridden():
    p = plan_of({"n_layers": 4, "rules": [
        {"when": {"every": 2}, "attention": SP},
        {"attention": D},
        {"when": {"position": "first"}, "mlp": "moe"},
    ]})
    assert p.warnings == ("layers.rules[0] is fully overridden by later rules",)
    # partially overridden: no warning
    p = plan_of({"n_layers": 4, "rules": [{"attention": SP}, {"when": {"position": "first"}, "attention": D}]})
    assert p.warnings == ()


@pytest.mark.parametrize(
    "when, path",
    [
        ({"layer_idx": [1, 12]}, "layers.rules[0].when.layer_idx"),
        ({"range": [5, 11]}, "layers.rules[0].when.range"),
        ({"every": 2, "offset": 10}, "layers.rules[0].when.offset"),
    ],
)
def test_rules_outside_the_stack_are_errors(when, path):
    e = err({"n_layers": 10, "rules": [{"when": when, "attention": SP}]})
    assert e.path == path and "10" in e.message


def test_rule_with_unknown_kind_names_rule():
    assert err({"n_layers": 2, "rules": [{"attention": "bogus"}]}).path == "layers.rules[0].attention"
    assert err({"n_layers": 2, "rules": [{}, {"norm": "batch"}]}).path == "layers.rules[1].norm"


# ---- explicit lists and params -----------------------------------------------------


def test_explicit_list_with_defaults():
    p = plan_of({"n_layers": 3, "mlp": "geglu", "explicit": [
        {"attention": SP},
        {},
        {"attention": D, "mlp": "moe", "norm": "layer", "params": {"mlp": {"num_experts": 4}}},
    ]})
    assert [(l.attention, l.mlp, l.norm) for l in p.layers] == [(SP, "geglu", "rms"), (S, "geglu", "rms"), (D, "moe", "layer")]
    assert p.layers[2].params == {"mlp": {"num_experts": 4}}
    assert p.layers[2].config["mlp"]["num_experts"] == 4 and p.layers[2].config["mlp"]["top_k"] == 2


def test_explicit_then_rules():
    assert atts({"n_layers": 2, "explicit": [{"attention": SP}, {"attention": D}], "rules": [{"when": {"position": "last"}, "attention": S}]}) == [SP, S]


def test_stack_norm_default_and_model_norm():
    assert {l.norm for l in plan_of({"n_layers": 2}, norm="layer").layers} == {"layer"}
    assert {l.norm for l in plan_of({"n_layers": 2, "norm": "scale"}, norm="layer").layers} == {"scale"}


def test_stack_params_merge_with_rule_params():
    p = plan_of({"n_layers": 3, "params": {"attention": {"window": 128}}, "rules": [
        {"when": {"layer_idx": [1]}, "params": {"attention": {"backend": "flash"}}},
        {"when": {"layer_idx": [2]}, "params": {"attention": {"window": 64}}},
    ]})
    assert [l.params for l in p.layers] == [
        {"attention": {"window": 128}},
        {"attention": {"window": 128, "backend": "flash"}},
        {"attention": {"window": 64}},
    ]
    assert p.layers[0].config["attention"] == {"window": 128, "backend": "auto", "qk_norm": False, "sinks": False, "scale": None,
                                               "output_gate": False, "qk_norm_over": "head", "rotary_fraction": 1.0,
                                               "rope_theta": None, "rotary_interleaved": False}


def test_stack_params_reach_only_kinds_that_take_them():
    p = plan_of({"n_layers": 2, "params": {"attention": {"window": 32}}, "rules": [{"when": {"position": "first"}, "attention": SP}]})
    assert p.layers[0].params == {} and p.layers[0].config["attention"] == {"adaptive": False}
    assert p.layers[1].params == {"attention": {"window": 32}}


def test_stack_param_no_layer_takes_is_error():
    assert err({"n_layers": 2, "params": {"attention": {"nb_features": 8}}}).path == "layers.params.attention.nb_features"


def test_changing_kind_drops_params_of_the_old_kind():
    p = plan_of({"n_layers": 2, "rules": [
        {"params": {"attention": {"window": 64}}},
        {"when": {"position": "first"}, "attention": SP},
    ]})
    assert p.layers[0].attention == SP and p.layers[0].params == {}
    assert p.layers[1].params == {"attention": {"window": 64}}


@pytest.mark.parametrize(
    "stack, path",
    [
        ({"n_layers": 2, "rules": [{"params": {"attention": {"windw": 3}}}]}, "layers.rules[0].params.attention.windw"),
        ({"n_layers": 2, "rules": [{"params": {"attention": {"window": -3}}}]}, "layers.rules[0].params.attention.window"),
        ({"n_layers": 2, "params": {"mlp": {"hidden": 0}}}, "layers.params.mlp.hidden"),
        ({"n_layers": 2, "mlp": "moe", "params": {"mlp": {"top_k": 9, "num_experts": 8}}}, "layers.params.mlp.top_k"),
        ({"n_layers": 1, "explicit": [{"params": {"mlp": {"num_experts": 2}}}]}, "layers.explicit[0].params.mlp.num_experts"),
        ({"n_layers": 2, "params": {"cross": {"backend": "flash"}}}, "layers.params.cross"),
    ],
)
def test_param_errors_name_the_path(stack, path):
    e = err(stack)
    assert e.path == path, str(e)


def test_causality_checks():
    e = err({"n_layers": 2, "attention": "linear"})
    assert e.path == "layers.attention" and "causal_linear" in e.message
    assert err({"n_layers": 2, "rules": [{"when": {"position": "last"}, "attention": "frequency"}]}).path == "layers.rules[0].attention"
    enc = plan_of({"n_layers": 2, "attention": "linear"}, architecture="encoder", task="mlm")
    assert [l.attention for l in enc.layers] == ["linear"] * 2 and not enc.layers[0].causal


# ---- repetition -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "repeat, expected",
    [
        ({"mode": "none"}, [0, 1, 2]),
        ({"mode": "cycle", "factor": 2}, [0, 1, 2, 0, 1, 2]),
        ({"mode": "layerwise", "factor": 2}, [0, 0, 1, 1, 2, 2]),
        ({"mode": "cycle", "factor": 1}, [0, 1, 2]),
        ({"mode": "grouped", "groups": [1, 2], "group_factors": [3, 2]}, [0, 0, 0, 1, 2, 1, 2]),
        ({"mode": "grouped", "groups": [2, 1], "group_factors": [1, 3]}, [0, 1, 2, 2, 2]),
    ],
)
def test_repetition_mapping(repeat, expected):
    p = plan_of({"n_layers": 3, "explicit": [{"attention": S}, {"attention": SP}, {"attention": D}], "repeat": repeat})
    st = p.stacks["layers"]
    assert [l.unique_index for l in p.layers] == expected
    assert [l.index for l in p.layers] == list(range(len(expected)))
    assert [l.attention for l in p.layers] == [[S, SP, D][u] for u in expected]
    assert st.n_unique == 3 and st.depth == len(expected) == p.design.layers.executed_depth
    assert [l.index for l in st.unique] == [0, 1, 2]


def test_seed_medium_cycle_preset():
    p = resolve_plan("medium_cycle")
    assert p.stacks["layers"].n_unique == 2 and p.stacks["layers"].depth == 16
    assert [l.unique_index for l in p.layers] == [0, 1] * 8


def test_flow_settings_validated():
    assert plan_of({"n_layers": 2, "flow": {"mode": "predicted", "per_layer": True, "hidden": 16}}).design.layers.flow.hidden == 16
    assert err({"n_layers": 2, "flow": {"mode": "learned", "hidden": 0}}).path == "layers.flow.hidden"
    assert err({"n_layers": 2, "flow": {"mode": "constant", "speed": 0.5}}).path == "layers.flow.speed"


# ---- encoder_decoder ------------------------------------------------------------------


def test_encoder_decoder_stacks():
    p = resolve_plan({
        "architecture": "encoder_decoder", "task": "seq2seq",
        "encoder": {"n_layers": 2, "attention": "linear"},
        "decoder": {"n_layers": 3, "params": {"cross": {"backend": "flash"}}, "repeat": {"mode": "cycle", "factor": 2},
                    "rules": [{"when": {"position": "last"}, "attention": D}]},
    })
    assert list(p.stacks) == ["encoder", "decoder"]
    enc, dec = p.stacks["encoder"], p.stacks["decoder"]
    assert [(l.stack, l.attention, l.causal, l.cross) for l in enc.executed] == [("encoder", "linear", False, False)] * 2
    assert [l.attention for l in dec.executed] == [S, S, D] * 2
    assert all(l.causal and l.cross for l in dec.executed)
    assert dec.executed[0].config["cross"] == {"backend": "flash", "scale": None}
    assert len(p.layers) == 2 + 6 and p.layers[0].stack == "encoder" and p.layers[-1].stack == "decoder"


def test_encoder_decoder_errors_name_the_stack():
    base = {"architecture": "encoder_decoder", "task": "seq2seq", "encoder": {"n_layers": 2}}
    with pytest.raises(DesignError) as e:
        resolve_plan({**base, "decoder": {"n_layers": 2, "attention": "linear"}})
    assert e.value.path == "decoder.attention"
    with pytest.raises(DesignError) as e:
        resolve_plan({**base, "decoder": {"n_layers": 2, "rules": [{"when": {"layer_idx": [2]}}]}})
    assert e.value.path == "decoder.rules[0].when.layer_idx"


def test_plan_to_dict_shape():
    d = plan_of({"n_layers": 2, "rules": [{"when": {"position": "first"}, "attention": SP}]}).to_dict()
    assert set(d) == {"layers", "warnings"}
    assert {"index", "unique_index", "attention", "mlp", "norm", "params"} <= set(d["layers"][0])
    assert d["layers"][0]["attention"] == SP and d["warnings"] == []


def test_plan_is_pure():
    stack = {"n_layers": 4, "pattern": "alternating", "rules": [{"when": {"every": 2}, "mlp": "moe"}]}
    assert plan_of(stack).to_dict() == plan_of(stack).to_dict()


@pytest.mark.parametrize("kind,arch", [("linear", "encoder"), ("causal_linear", "decoder")])
def test_alibi_with_performer_is_refused_at_the_attention_field(kind, arch):
    task = "mlm" if arch == "encoder" else "lm"
    e = err({"n_layers": 2, "attention": kind}, architecture=arch, task=task, positional="alibi")
    assert e.path == "layers.attention" and "alibi" in str(e)
    # set by a rule: the error names that rule's attention field
    e = err({"n_layers": 2, "rules": [{"when": {"layer_idx": [1]}, "attention": kind}]}, architecture=arch, task=task,
            positional="alibi")
    assert e.path == "layers.rules[0].attention"
    assert resolve_plan({"architecture": arch, "task": task, "positional": "rope", "layers": {"n_layers": 2, "attention": kind}})


def test_a_learned_score_bias_no_layer_takes_is_refused():
    """Found by tests/test_accepted_runs.py: t5_bias over a stack of token_param layers built a table that no
    gradient reached (smoke: 'missing: pos.weight'). Refused at validation, naming the positional field; the
    real model confirms the table would be unused."""
    import torch

    from backend.build import build_model

    d = {"name": "idle", "vocab_size": 8, "hidden_size": 8, "n_heads": 2, "max_seq_len": 4, "positional": "t5_bias",
         "layers": {"n_layers": 1, "attention": "token_param"}}
    with pytest.raises(DesignError, match=r"^positional: 't5_bias' .* no layer of layers"):
        resolve_plan(d)
    # a softmax layer takes it: accepted, and the table learns
    ok = {**d, "layers": {"n_layers": 2, "string": "TOKEN_PARAM,SDPA"}}
    m = build_model(ok)
    m(torch.randint(0, 8, (1, 4))).output.sum().backward()
    assert m.pos.weight.grad is not None and m.pos.weight.grad.abs().sum() > 0
