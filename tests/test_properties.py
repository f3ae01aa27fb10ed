"""Property tests over random valid designs (hypothesis).

- the plan's executed depth is what the repetition implies;
- every executed layer points at a valid unique layer;
- spec -> YAML -> spec and spec -> JSON -> spec are identities.
"""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.plan import resolve_plan
from backend.spec import Design, design_from_dict, parse_design_text

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

POSITIONALS = ["rope", "sinusoidal", "learned", "alibi", "none"]
CAUSAL_KINDS = ["self_sdpa", "self_flex", "diff_attn", "token_param", "spectral", "causal_linear"]
BIDIR_KINDS = ["self_sdpa", "self_flex", "diff_attn", "token_param", "spectral", "frequency", "linear", "causal_linear"]
MLP_KINDS = ["swiglu", "geglu", "reglu", "relu2", "mlp", "moe"]
NORMS = ["layer", "rms", "scale", "rezero", "adaptive"]
STRING_NAME = {"self_sdpa": "SDPA", "self_flex": "FLEX"}


def expected_depth(n: int, repeat: dict) -> int:
    mode = repeat["mode"]
    if mode == "none":
        return n
    if mode in ("cycle", "layerwise"):
        return n * repeat["factor"]
    return sum(g * f for g, f in zip(repeat["groups"], repeat["group_factors"]))


@st.composite
def partitions(draw, n: int) -> list[int]:
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(4, n - 1)))) if n > 1 else []
    bounds = [0, *cuts, n]
    return [b - a for a, b in zip(bounds, bounds[1:])]


@st.composite
def whens(draw, n: int) -> dict:
    keys = draw(st.sets(st.sampled_from(["every", "position", "range", "fraction", "layer_idx"]), max_size=2))
    w: dict = {}
    if "every" in keys:
        w["every"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            w["offset"] = draw(st.integers(0, n - 1))
    if "position" in keys:
        w["position"] = draw(st.sampled_from(["first", "last", "middle"]))
    if "range" in keys:
        a = draw(st.integers(0, n - 1))
        w["range"] = [a, draw(st.integers(a + 1, n))]
    if "fraction" in keys:
        a, b = sorted(draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=2, max_size=2, unique=True)))
        w["fraction"] = [a, b]
    if "layer_idx" in keys:
        w["layer_idx"] = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=3)))
    return w


@st.composite
def stacks(draw, causal: bool, positional: str = "rope") -> dict:
    kinds = CAUSAL_KINDS if causal else BIDIR_KINDS
    if positional == "alibi":  # Performer kinds have no score matrix to bias: refused by validation
        kinds = [k for k in kinds if k not in ("linear", "causal_linear")]
    n = draw(st.integers(1, 12))
    stack: dict = {"n_layers": n, "attention": draw(st.sampled_from(kinds)), "mlp": draw(st.sampled_from(MLP_KINDS))}
    if draw(st.booleans()):
        stack["norm"] = draw(st.sampled_from(NORMS))
    form = draw(st.sampled_from(["none", "pattern", "string", "explicit"]))
    if form == "pattern":
        stack["pattern"] = draw(st.sampled_from(["uniform", "alternating", "sandwich", "pyramid", "sparse_special"]))
    elif form == "string":
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        total = draw(st.sampled_from(divisors))
        items, left = [], total
        while left:
            c = draw(st.integers(1, left))
            name = draw(st.sampled_from(kinds))
            token = STRING_NAME.get(name, name.upper())
            if draw(st.booleans()):
                token += ":" + draw(st.sampled_from(MLP_KINDS)).upper()
            items.append(token if c == 1 else f"{token}*{c}")
            left -= c
        stack["string"] = ",".join(items)
    elif form == "explicit":
        stack["explicit"] = [
            {k: v for k, v in {"attention": draw(st.sampled_from(kinds) | st.none()),
                               "mlp": draw(st.sampled_from(MLP_KINDS) | st.none())}.items() if v is not None}
            for _ in range(n)
        ]
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        rule: dict = {"when": draw(whens(n))}
        for key, pool in (("attention", kinds), ("mlp", MLP_KINDS), ("norm", NORMS)):
            if draw(st.booleans()):
                rule[key] = draw(st.sampled_from(pool))
        if draw(st.booleans()):
            rule["params"] = {"mlp": {"hidden": draw(st.integers(1, 256))}}  # every MLP kind takes `hidden`
        rules.append(rule)
    if rules:
        stack["rules"] = rules
    mode = draw(st.sampled_from(["none", "cycle", "layerwise", "grouped"]))
    if mode in ("cycle", "layerwise"):
        stack["repeat"] = {"mode": mode, "factor": draw(st.integers(1, 6))}
    elif mode == "grouped":
        groups = draw(partitions(n))
        stack["repeat"] = {"mode": "grouped", "groups": groups,
                           "group_factors": draw(st.lists(st.integers(1, 4), min_size=len(groups), max_size=len(groups)))}
    else:
        stack["repeat"] = {"mode": "none"}
    if draw(st.booleans()):
        stack["flow"] = {"mode": draw(st.sampled_from(["none", "constant", "learned", "predicted"])),
                         "per_layer": draw(st.booleans()),
                         "value": draw(st.floats(-10, 10, allow_nan=False, allow_infinity=False))}
    return stack


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@st.composite
def designs(draw) -> dict:
    arch = draw(st.sampled_from(["decoder", "encoder", "encoder_decoder"]))
    n_heads = draw(st.sampled_from([1, 2, 4, 8]))
    head_dim = draw(st.sampled_from([4, 8, 16]))  # diff_attn with rotary positions needs head_dim % 4 == 0
    data: dict = {
        "name": draw(text),
        "description": draw(st.text(max_size=60, alphabet=st.characters(blacklist_categories=("Cs",)))),
        "architecture": arch,
        "task": {"decoder": "lm", "encoder": "mlm", "encoder_decoder": "seq2seq"}[arch],
        "vocab_size": draw(st.integers(2, 50000)),
        "hidden_size": n_heads * head_dim,
        "n_heads": n_heads,
        "n_kv_heads": draw(st.sampled_from([None] + [k for k in (1, 2, 4, 8) if n_heads % k == 0])),
        "expansion_ratio": draw(st.floats(0.5, 8, allow_nan=False)),
        "max_seq_len": draw(st.sampled_from([64, 128, 2048])),
        "positional": draw(st.sampled_from(POSITIONALS)),
        "norm": draw(st.sampled_from(NORMS)),
        "norm_placement": draw(st.sampled_from(["pre", "post", "pre_post", "post_sublayer"])),
        "norm_eps": draw(st.floats(1e-12, 0.1, allow_nan=False)),
        "dropout": draw(st.floats(0, 0.9, allow_nan=False)),
        "bias": draw(st.booleans()),
        "tie_embeddings": draw(st.booleans()),
        "embed_scale": draw(st.booleans()),
    }
    if data["task"] in ("lm", "mlm", "seq2seq"):
        data["logit_softcap"] = draw(st.sampled_from([0.0, 0.5, 30.0]))
    if arch != "encoder_decoder" and data["norm_placement"] != "post":
        data["parallel_residual"] = draw(st.booleans())
        if data["parallel_residual"] and data["norm_placement"] == "pre":
            data["parallel_shared_norm"] = draw(st.booleans())
    data["norm_bias"] = draw(st.sampled_from([None, True, False]))
    if data["norm_placement"] == "pre" and not data.get("parallel_residual"):
        data["first_attn_norm"] = draw(st.booleans())  # ModernBERT's first layer without an attention pre-norm
    if arch == "encoder_decoder":
        data["encoder"] = draw(stacks(causal=False, positional=data["positional"]))
        data["decoder"] = draw(stacks(causal=True, positional=data["positional"]))
    else:
        data["layers"] = draw(stacks(causal=arch == "decoder", positional=data["positional"]))
    return data


@SETTINGS
@given(designs())
def test_plan_depth_and_unique_indices(data):
    plan = resolve_plan(data)
    for name, st_plan in plan.stacks.items():
        stack = data[name]
        n = stack["n_layers"]
        assert st_plan.depth == expected_depth(n, stack["repeat"])
        assert st_plan.n_unique == n
        assert [l.index for l in st_plan.executed] == list(range(st_plan.depth))
        assert all(0 <= l.unique_index < n for l in st_plan.executed)
        # every unique layer runs at least once, and each executed layer is its unique layer's copy
        assert {l.unique_index for l in st_plan.executed} == set(range(n))
        for l in st_plan.executed:
            u = st_plan.unique[l.unique_index]
            assert (l.attention, l.mlp, l.norm, l.params) == (u.attention, u.mlp, u.norm, u.params)
    assert len(plan.layers) == sum(expected_depth(data[s]["n_layers"], data[s]["repeat"]) for s in plan.stacks)


@SETTINGS
@given(designs())
def test_yaml_roundtrip_is_identity(data):
    design = design_from_dict(data)
    again = parse_design_text(design.to_yaml(), "yaml")
    assert again == design
    assert parse_design_text(design.to_yaml(exclude_defaults=True), "yaml") == design


@SETTINGS
@given(designs())
def test_json_roundtrip_is_identity(data):
    design = design_from_dict(data)
    assert parse_design_text(design.to_json(), "json") == design
    assert Design.model_validate(json.loads(design.to_json())) == design
