"""The kind contract (docs/KINDS.md): a conformance suite parametrised over the registry.

Every attention kind -- the built-ins, the worked example plugin of
docs/KINDS.md and a toy kind defined only in this file -- runs, in each stack
it may run in and for a few configs, through the same checks against
independent references:

* parameters: the declaration's closed form == Σ numel of the real module;
* FLOPs: the declaration's dense count == a ``FlopCounterMode`` trace of the
  module on meta (kinds whose ops the counter sees, FFT formulas registered);
* causal-aware FLOPs: the pairs the declaration says its mask allows == a
  brute-force count of the (query, key) pairs that really influence each
  output of the real module (a Jacobian, not a formula), and the analysis'
  causal figure is built from exactly those pairs;
* decode cache: the predicted bytes == the bytes of the cache tensors the
  model really holds after decoding;
* causality, cached decoding == full forward, a gradient reaches every
  parameter, the standalone export reproduces the output exactly, the string
  notation parses the kind, the app's grid and brush know it.

The toy kind needs no edit anywhere else: that is the proof of the contract.
A source scan fails when a kind name is quoted outside its own module, the
kind declarations, the registry and compat.py.
"""
from __future__ import annotations

import os
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from backend import registry
from backend.analysis import memory
from backend.analysis.counting import count, meta_input
from backend.build import build_model, model_config
from backend.export import export_text
from backend.nn.common import REGISTRY
from backend.plan import parse_string, resolve_plan
from backend.plugins import load_plugin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "sliding_window_kind.py"

# A toy kind that exists only here: an exponentially decayed running mean of v (a linear
# recurrence with a constant decode state), no score matrix, no positions.
TOY = '''
"""Toy mixer: y_t = o(sum_j<=t (1-g) g^(t-j) v_j) per head, g = sigmoid(decay) (test fixture only)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend.nn.common import LayerContext, StateCache, register

from backend.kinds.base import AttentionKind, CacheLayout, ParamInfo
from backend.registry import register_kind


@register("attention", "toy_decay")
class ToyDecay(nn.Module):
    def __init__(self, ctx: LayerContext):
        super().__init__()
        self.h, self.dh = ctx.n_heads, ctx.head_dim
        self.causal = ctx.causal
        self.v_proj = nn.Linear(ctx.hidden_size, ctx.n_heads * ctx.head_dim, bias=False)
        self.o_proj = nn.Linear(ctx.n_heads * ctx.head_dim, ctx.hidden_size, bias=False)
        self.decay = nn.Parameter(torch.full((ctx.n_heads,), float(ctx.params["init"])))

    def new_cache(self, batch, max_len, *, window=0):
        return StateCache()

    def forward(self, x, *, start_pos=0, cache=None, padding_mask=None):
        B, S, _ = x.shape
        v = self.v_proj(x).view(B, S, self.h, self.dh).transpose(1, 2)  # (B, H, S, Dh)
        g = torch.sigmoid(self.decay).to(x.dtype)[:, None, None]  # (H, 1, 1)
        if not self.causal:  # bidirectional: the sequence mean, scaled by the decay gate
            y = (v.mean(dim=2, keepdim=True) * g).expand_as(v)
        elif cache is None:
            t = torch.arange(S, device=x.device)
            lag = (t[:, None] - t[None, :]).clamp(min=0).to(x.dtype)
            w = torch.where(t[:, None] >= t[None, :], (1 - g) * g ** lag, torch.zeros((), dtype=x.dtype))  # (H, S, S)
            y = w @ v
        else:
            state = cache.state.get("h", torch.zeros(B, self.h, self.dh, dtype=x.dtype, device=x.device))
            outs = []
            for i in range(S):
                state = g[:, 0] * state + (1 - g[:, 0]) * v[:, :, i]
                outs.append(state)
            cache.state["h"] = state
            cache.length += S
            y = torch.stack(outs, dim=2)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, self.h * self.dh))


@dataclass(frozen=True)
class ToyDecayKind(AttentionKind):
    cacheable: bool = True
    uses_positions: bool = False

    def flops(self, model, cfg, b, s, *, causal):
        D, H, Dh = model.hidden_size, model.n_heads, model.attn_head_dim
        f = 2 * 2 * b * s * D * H * Dh + (2 * b * H * s * s * Dh if causal else 0)  # v/o + the (S x S) weights @ v
        return f, f

    def param_count(self, model, cfg, *, causal):
        D, H, Dh = model.hidden_size, model.n_heads, model.attn_head_dim
        return 2 * D * H * Dh + H

    def cache(self, model, cfg, dtype_bytes):
        return CacheLayout(state_bytes=model.n_heads * model.attn_head_dim * dtype_bytes)

    def activation_elems(self, model, cfg, s, *, fused):
        return 2 * model.n_heads * model.attn_head_dim, 0.0


register_kind(ToyDecayKind(
    "toy_decay", "attention", f"{__name__}:ToyDecay", "Decayed running mean (test toy).", "none",
    {"init": ParamInfo("float", 1.0, "initial decay logit", -10.0, 10.0)}, abbrev="TOY",
))
'''

PLUGIN_KINDS = ("toy_decay", "sliding_sdpa")


@pytest.fixture(scope="module", autouse=True)
def plugin_kinds(tmp_path_factory):
    """Register the example plugin and the toy kind for this module; unregister afterwards."""
    toy = tmp_path_factory.mktemp("toy") / "toy_kind.py"
    toy.write_text(TOY, encoding="utf-8")
    env = os.environ.get("BACKEND_PLUGINS")
    load_plugin(EXAMPLE)
    load_plugin(toy)
    yield
    for name in PLUGIN_KINDS:
        registry.ATTENTION.pop(name, None)
        REGISTRY["attention"].pop(name, None)
    for alias in [a for a, k in registry.ATTENTION_ALIASES.items() if k in PLUGIN_KINDS]:
        del registry.ATTENTION_ALIASES[alias]
    from backend import plugins

    for path in [p for p, m in plugins._LOADED.items() if "sliding_window_kind" in m or "toy_kind" in m]:
        del plugins._LOADED[path]
    if env is None:
        os.environ.pop("BACKEND_PLUGINS", None)
    else:
        os.environ["BACKEND_PLUGINS"] = env


BUILTIN = list(registry.ATTENTION)
KINDS = BUILTIN + list(PLUGIN_KINDS)
# a few configs per kind: defaults, and one that exercises its own params (windows, sizes)
CONFIGS = {
    "self_sdpa": [{}, {"window": 3}, {"qk_norm": True}, {"sinks": True}, {"sinks": True, "window": 3}, {"scale": 0.5},
                  {"output_gate": True, "qk_norm": True},
                  {"qk_norm": True, "qk_norm_over": "projection"}, {"rotary_fraction": 0.5, "rope_theta": 500.0},
                  {"rotary_fraction": 0.5, "rotary_interleaved": True}],  # GPT-J's partial interleaved rotary
    "self_flex": [{}, {"window": 3, "prefix_len": 2}, {"softcap": 5.0, "alibi": True}],
    "diff_attn": [{}],
    "token_param": [{"num_param_tokens": 5}],
    "spectral": [{}, {"adaptive": True}],
    "frequency": [{"modes": 3}],
    "linear": [{"nb_features": 6}],
    "causal_linear": [{"nb_features": 6}],
    "sliding_sdpa": [{"size": 3}, {"size": 40}],
    "toy_decay": [{}],
    "mla": [{}, {"q_lora_rank": 12, "kv_lora_rank": 10, "qk_nope_head_dim": 6, "qk_rope_head_dim": 4, "v_head_dim": 5,
             "rope_interleave": False, "latent_norm_eps": 1e-6},
            {"q_lora_rank": 6, "yarn_factor": 4.0, "yarn_original_max": 6, "yarn_mscale": 0.707, "yarn_mscale_all_dim": 1.0}],
    "mamba2": [{"d_state": 4, "head_dim": 8, "chunk_size": 5}, {"d_state": 3, "head_dim": 16, "n_groups": 2, "chunk_size": 64, "d_conv": 3}],
    "mamba": [{"d_state": 4, "chunk_size": 5}, {"d_state": 3, "expand": 1, "dt_rank": 5, "bc_norm": True, "chunk_size": 64, "d_conv": 3}],
    "gated_deltanet": [{"num_key_heads": 2, "num_value_heads": 4, "key_head_dim": 4, "value_head_dim": 3, "chunk_size": 5},
                       {"num_key_heads": 3, "num_value_heads": 3, "key_head_dim": 8, "value_head_dim": 8, "conv_kernel": 2,
                        "chunk_size": 64}],
}
D, H, KV, L, S, B = 32, 4, 2, 24, 12, 2


def cases():
    for name in KINDS:
        for i, cfg in enumerate(CONFIGS.get(name, [{}])):
            for causal in (True, False):
                yield pytest.param(name, causal, cfg, id=f"{name}-{'causal' if causal else 'bidir'}-{i}")


def info_of(name: str):
    return registry.ATTENTION[name]


def design(name: str, causal: bool, cfg: dict, *, n_layers: int = 2) -> dict:
    return {"name": f"conf-{name}", "architecture": "decoder" if causal else "encoder", "task": "lm" if causal else "mlm",
            "vocab_size": 50, "hidden_size": D, "n_heads": H, "n_kv_heads": KV, "max_seq_len": L,
            "layers": {"n_layers": n_layers, "attention": name, "mlp": "swiglu", "params": {"attention": cfg}}}


def runs_in(name: str, causal: bool) -> bool:
    info = info_of(name)
    return info.causal if causal else info.bidirectional


def skip_unless_runs(name: str, causal: bool) -> None:
    if not runs_in(name, causal):
        pytest.skip(f"{name} does not run in a {'causal' if causal else 'bidirectional'} stack (its declaration says so)")


def real_model(d: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(d).double().eval()
    _perturb(model)
    return model


def _perturb(model: torch.nn.Module) -> None:
    """Generic weights: move identity-ish initial values (filters, gains, zero-init gates) off their start."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def tokens(b: int = B, s: int = S, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 50, (b, s), generator=torch.Generator().manual_seed(seed))


def attn_module(model, layer: int = 0):
    return model.stacks["layers"].blocks[layer].attn


# ---------------------------------------------------------------------------
# Counts


@pytest.mark.parametrize("name,causal,cfg", cases())
def test_param_count_closed_form_equals_module(name, causal, cfg):
    skip_unless_runs(name, causal)
    plan = resolve_plan(design(name, causal, cfg))
    layer = plan.layers[0]
    model = build_model(plan, device="meta")
    attn = attn_module(model)
    declared = info_of(name).param_count(plan.design, layer.config["attention"], causal=causal)
    assert declared == sum(p.numel() for p in attn.parameters())
    # and the whole model's unique count matches the analysis
    from backend.analysis import analyze

    assert analyze(plan)["params"]["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,causal,cfg", cases())
def test_dense_flops_closed_form_equals_trace(name, causal, cfg):
    skip_unless_runs(name, causal)
    plan = resolve_plan(design(name, causal, cfg))
    layer = plan.layers[0]
    attn = attn_module(build_model(plan, device="meta"))
    for b, s in ((1, S), (B, 7)):
        traced = count(lambda h: attn(h), meta_input(b, s, D))[0]
        dense, _ = info_of(name).flops(plan.design, layer.config["attention"], b, s, causal=causal)
        assert dense == pytest.approx(traced, rel=1e-12, abs=1.0), (b, s)  # the counter rounds FFT counts to integers


def brute_force_pairs(attn: torch.nn.Module, s: int) -> int:
    """(query, key) pairs through which key j influences output i, found by differentiation."""
    x = torch.randn(1, s, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    y = attn(x)
    pairs = 0
    for i in range(s):
        (grad,) = torch.autograd.grad(y[0, i].square().sum(), x, retain_graph=True)
        pairs += int((grad[0].abs().sum(-1) > 1e-12).sum())
    return pairs


@pytest.mark.parametrize("name,causal,cfg", cases())
def test_causal_pairs_equal_brute_force_of_the_modules_own_mask(name, causal, cfg):
    skip_unless_runs(name, causal)
    info = info_of(name)
    if not info.softmax:
        pytest.skip(f"{name} has no score matrix: its causal-aware count is its dense count")
    d = design(name, causal, cfg)
    model = real_model(d)
    plan = resolve_plan(d)
    acfg = plan.layers[0].config["attention"]
    for s in (S, 5):
        assert info.pairs(acfg, s, causal=causal) == brute_force_pairs(attn_module(model), s), s
    # the analysis' causal-aware figure uses exactly those pairs: dense - c (S^2 - pairs)
    from backend.analysis.flops import flop_stats

    r = flop_stats(plan, S, 1)
    dense, causal_aware = info.flops(plan.design, acfg, 1, S, causal=causal)
    n = plan.design.layers.n_layers
    assert r["components"]["attention"] == pytest.approx(n * dense)
    assert r["components_causal"]["attention"] == pytest.approx(n * causal_aware)


def test_window_named_differently_gives_the_right_causal_flops_and_kv_bytes():
    """The measured case of the issue: a SelfSDPA subclass whose window is `size` == self_sdpa with `window`."""
    from backend.analysis import analyze

    ref = analyze(design("self_sdpa", True, {"window": 16}), seq_len=L)
    new = analyze(design("sliding_sdpa", True, {"size": 16}), seq_len=L)
    assert new["flops"]["forward_causal"] == ref["flops"]["forward_causal"] < ref["flops"]["forward"]
    assert new["memory"]["kv_cache_bytes_at_seq_len"] == ref["memory"]["kv_cache_bytes_at_seq_len"] > 0


# ---------------------------------------------------------------------------
# The model as built


def _held_bytes(obj) -> int:
    """Bytes of the distinct tensors a cache object holds (tensors, or dicts of them)."""
    seen: set[int] = set()
    n = 0
    for value in vars(obj).values():
        for t in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                n += t.numel() * t.element_size()
    return n


@pytest.mark.parametrize("name,causal,cfg", [c for c in cases() if c.values[1]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_predicted_cache_bytes_equal_real_cache_tensors(name, causal, cfg, dtype):
    skip_unless_runs(name, causal)
    if not info_of(name).cacheable:
        pytest.skip(f"{name} does not decode with a cache (its declaration says so)")
    d = design(name, causal, cfg)
    torch.manual_seed(0)
    model = build_model(d, dtype=dtype).eval()
    prompt, steps = 4, 7
    cache = model.new_cache(B, prompt + steps)
    with torch.no_grad():
        model.forward_one_step(tokens(B, prompt), cache, 0)
        for i in range(steps):
            model.forward_one_step(tokens(B, 1, seed=10 + i), cache, prompt + i)
    assert not cache.recompute
    held = sum(_held_bytes(c) for entry in cache.layers for c in entry.values() if c is not None)
    dt = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    predicted = memory.kv_cache(resolve_plan(d), dt, seq_len=prompt + steps, batch=B)["at_seq_len_bytes"]
    assert held == predicted


@pytest.mark.parametrize("name,causal,cfg", [c for c in cases() if c.values[1]])
def test_causality_and_cached_decoding_equal_full_forward(name, causal, cfg):
    skip_unless_runs(name, causal)
    info = info_of(name)
    d = design(name, causal, cfg)
    model = real_model(d)
    seq = tokens()
    with torch.no_grad():
        full = model(seq).output
        changed = seq.clone()
        changed[:, 8:] = (changed[:, 8:] + 7) % 50
        later = model(changed).output
    prefix = int(cfg.get("prefix_len", 0))  # a prefix-LM prefix attends bidirectionally
    assert torch.allclose(full[:, max(prefix, 0):8], later[:, max(prefix, 0):8], atol=1e-10), "a later token changed an earlier output"
    if prefix == 0:
        assert torch.allclose(full[:, :8], later[:, :8], atol=1e-10)
    if not info.cacheable:
        return
    cache = model.new_cache(B, S)
    outs = []
    with torch.no_grad():
        start = max(prefix, 3)
        outs.append(model.forward_one_step(seq[:, :start], cache, 0))
        for i in range(start, S):
            outs.append(model.forward_one_step(seq[:, i:i + 1], cache, i))
    stepped = torch.cat(outs, dim=1)
    assert torch.allclose(stepped, full, atol=1e-8, rtol=1e-6), (stepped - full).abs().max()


@pytest.mark.parametrize("name,causal,cfg", cases())
def test_gradient_reaches_every_parameter(name, causal, cfg):
    skip_unless_runs(name, causal)
    model = real_model(design(name, causal, cfg)).train()
    out = model(tokens()).output
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("name", KINDS)
def test_standalone_export_reproduces_the_output_exactly(name, tmp_path):
    causal = runs_in(name, True)
    d = design(name, causal, CONFIGS.get(name, [{}])[0])
    model = real_model(d)
    path = tmp_path / "exported.py"
    path.write_text(export_text(d, "python"), encoding="utf-8")
    ns = runpy.run_path(str(path), run_name="exported")
    exported = ns["build_model"](device="cpu").double().eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    seq = tokens()
    with torch.no_grad():
        assert torch.equal(exported(seq).output, model(seq).output)


@pytest.mark.parametrize("name", KINDS)
def test_string_notation_and_app_know_the_kind(name):
    info = info_of(name)
    assert parse_string(f"{name.upper()}*2", 2) == [(name, None)] * 2
    assert parse_string(f"{info.token}", 1) == [(name, None)]
    sys.path.insert(0, str(ROOT / "app"))
    try:
        import grid
    finally:
        sys.path.remove(str(ROOT / "app"))
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", grid.color("attention", name))
    assert grid.abbrev("attention", name) == info.short
    from backend.diagram import attention_fill

    assert re.fullmatch(r"#[0-9A-F]{6}", attention_fill(name))


def test_app_brush_offers_a_plugin_kind():
    """The designer builds its brush and widgets from the registry: a plugin kind appears unchanged."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    options = [opt for sb in at.selectbox for opt in (sb.options or [])]
    assert "toy_decay" in options and "sliding_sdpa" in options


def test_model_config_has_every_key_and_no_downstream_defaults():
    """One home for defaults: the config the model reads is complete; a missing key is refused."""
    from backend.nn.model import CONFIG_KEYS, Transformer

    cfg = model_config(design("self_sdpa", True, {}))
    assert set(CONFIG_KEYS) <= set(cfg)
    del cfg["tie_embeddings"]
    with pytest.raises(KeyError, match="tie_embeddings"):
        Transformer(cfg)


def test_cli_loads_the_example_plugin(tmp_path):
    import subprocess

    f = tmp_path / "swa.yaml"
    f.write_text(
        "name: swa\nvocab_size: 100\nhidden_size: 32\nn_heads: 4\nn_kv_heads: 2\nmax_seq_len: 64\n"
        "layers:\n  n_layers: 2\n  string: SWA,SDPA\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "BACKEND_PLUGINS"}
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "backend", *a], cwd=ROOT, capture_output=True,  # noqa: E731
                                          text=True, timeout=120, **kw)
    ok = run("--plugin", str(EXAMPLE), "analyze", str(f), "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    import json

    r = json.loads(ok.stdout)
    assert [x["attention"] for x in r["layers"]] == ["sliding_sdpa", "self_sdpa"]
    via_env = run("analyze", str(f), "--json", env={**env, "BACKEND_PLUGINS": str(EXAMPLE)})
    assert via_env.returncode == 0 and json.loads(via_env.stdout)["flops"] == r["flops"]
    missing = run("analyze", str(f), env=env)
    assert missing.returncode == 2 and "SWA" in missing.stderr and "Traceback" not in missing.stderr
    bad = run("--plugin", str(tmp_path / "nope.py"), "presets", env=env)
    assert bad.returncode == 2 and "nope.py" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------
# The source scan: nothing outside a kind's own module names it

EXEMPT = ("backend/nn/", "backend/kinds/", "backend/registry.py", "backend/compat.py")


def _scanned_names() -> set[str]:
    """Kind names of every category, less those that are also design keywords (``mlp``, ``none``, ``layer``...):
    a quoted keyword cannot be told apart from a kind name."""
    from backend.spec import json_schema

    schema = json_schema()
    words: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            words.update(k for k in node if isinstance(k, str))
            for key in ("enum", "const", "default"):
                v = node.get(key)
                if isinstance(v, list):
                    words.update(x for x in v if isinstance(x, str))
                elif isinstance(v, str):
                    words.add(v)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    kinds = {n for reg in registry.REGISTRIES.values() for n in reg if n not in PLUGIN_KINDS}
    keywords = words - {n for reg in registry.REGISTRIES.values() for n in reg} | {"mlp", "none", "layer", "learned", "scale"}
    return {n for n in kinds if n not in keywords}


def test_no_kind_name_is_quoted_outside_its_own_module():
    names = _scanned_names()
    assert {"self_sdpa", "spectral", "causal_linear", "moe", "swiglu", "rms", "rope", "alibi"} <= names
    pattern = re.compile(r"""['"](%s)['"]""" % "|".join(map(re.escape, sorted(names))))
    hits = []
    for root in ("backend", "app"):
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(EXEMPT):
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if rel.startswith("backend/hf/") and line.startswith("MODEL_TYPES ="):
                    continue  # Hugging Face model types (``mamba2``), not kind names
                for m in pattern.finditer(line):
                    hits.append(f"{rel}:{lineno}: {m.group(0)}")
    assert not hits, "kind names quoted outside the kinds (ask the registry instead):\n" + "\n".join(hits)


def test_no_import_cycles_in_backend():
    """Module-level imports of backend/ form no cycle (function-level imports are not hidden cycles either)."""
    import ast

    graph: dict[str, set[str]] = {}
    base = ROOT / "backend"
    for path in base.rglob("*.py"):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")
                    target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("backend"):
                    deps.add(target)
                    deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("backend"))
        graph[mod] = deps
    known = set(graph)
    graph = {m: {d for d in ds if d in known and d != m} for m, ds in graph.items()}
    # a package's __init__ importing its own submodules is not a cycle
    graph = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# ---------------------------------------------------------------------------
# MLP kinds and the MoE options: the same references (Σ numel, a FlopCounterMode trace on
# meta with the data-free routing, causality, cached decoding, gradients, the standalone export)

MLP_CONFIGS = {
    "geglu": [{}, {"gelu_approximate": "tanh"}],  # Gemma's GeGLU
    "mlp": [{"gelu_approximate": "tanh", "bias": True}, {"bias": False}],  # GPT-J / BLOOM's dense MLP
    "swiglu_clamped": [{}, {"limit": 0.05, "alpha": 2.0}],  # a tight clamp: the clamps really act
    "moe": [
        {"num_experts": 4, "top_k": 2},
        {"num_experts": 4, "top_k": 2, "shared_experts": 1, "shared_hidden": 40, "shared_gate": True,
         "norm_topk_prob": False},  # Qwen2-MoE
        {"num_experts": 4, "top_k": 2, "router_bias": True, "expert_bias": True, "expert": "swiglu_clamped",
         "swiglu_limit": 0.05},  # gpt-oss
        {"num_experts": 8, "top_k": 2, "shared_experts": 2, "shared_hidden": 12, "norm_topk_prob": False,
         "n_group": 4, "topk_group": 2, "routed_scale": 2.5},  # DeepSeek-V2 group_limited_greedy
        {"num_experts": 8, "top_k": 3, "shared_experts": 1, "scoring": "sigmoid", "score_bias": True,
         "n_group": 4, "topk_group": 2, "routed_scale": 2.5},  # DeepSeek-V3 noaux_tc
    ],
}


def mlp_cases():
    for name, cfgs in MLP_CONFIGS.items():
        for i, cfg in enumerate(cfgs):
            yield pytest.param(name, cfg, id=f"{name}-{i}")


def mlp_design(name: str, cfg: dict, *, n_layers: int = 2) -> dict:
    return {"name": f"conf-{name}", "vocab_size": 50, "hidden_size": D, "n_heads": H, "n_kv_heads": KV, "max_seq_len": L,
            "mlp_hidden": 24, "layers": {"n_layers": n_layers, "mlp": name, "params": {"mlp": cfg}}}


def _mlp_module(model, layer: int = 0):
    return model.stacks["layers"].blocks[layer].mlp


@pytest.mark.parametrize("name,cfg", mlp_cases())
def test_mlp_param_count_and_flops_equal_module(name, cfg):
    from backend.analysis import analyze

    plan = resolve_plan(mlp_design(name, cfg))
    model = build_model(plan, device="meta")
    mlp = _mlp_module(model)
    info = registry.MLP[name]
    mcfg = plan.layers[0].config["mlp"]
    assert info.param_count(plan.design, mcfg) == sum(p.numel() for p in mlp.parameters())
    assert analyze(plan)["params"]["total"] == sum(p.numel() for p in model.parameters())
    for b, s in ((1, S), (B, 7)):
        traced = count(lambda h: mlp(h), meta_input(b, s, D))[0]
        assert info.flops(plan.design, mcfg, b, s) == traced, (b, s)
    from backend.analysis.flops import flop_stats

    assert flop_stats(plan, S, 1)["components"]["mlp"] == 2 * info.flops(plan.design, mcfg, 1, S)


@pytest.mark.parametrize("name,cfg", mlp_cases())
def test_mlp_causal_decoding_gradients_and_export(name, cfg, tmp_path):
    d = mlp_design(name, cfg)
    model = real_model(d)
    if cfg.get("score_bias"):  # a buffer: give it values, so selection differs from the weights' scores
        with torch.no_grad():
            for block in model.stacks["layers"].blocks:
                block.mlp.score_bias.copy_(0.02 * torch.randn(block.mlp.num_experts, generator=torch.Generator().manual_seed(4)))
    seq = tokens()
    with torch.no_grad():
        full = model(seq).output
        changed = seq.clone()
        changed[:, 8:] = (changed[:, 8:] + 7) % 50
        assert torch.allclose(full[:, :8], model(changed).output[:, :8], atol=1e-10)
        cache = model.new_cache(B, S)
        outs = [model.forward_one_step(seq[:, :3], cache, 0)]
        outs += [model.forward_one_step(seq[:, i:i + 1], cache, i) for i in range(3, S)]
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-8, rtol=1e-6)
    model.train()
    model(tokens(4, L, seed=2)).output.square().mean().backward()  # enough tokens to reach every routed expert
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    path = tmp_path / "exported.py"
    path.write_text(export_text(d, "python"), encoding="utf-8")
    exported = runpy.run_path(str(path), run_name="exported")["build_model"](device="cpu").double().eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    with torch.no_grad():
        assert torch.equal(exported(seq).output, model(seq).output)


@pytest.mark.parametrize("name,cfg", mlp_cases())
def test_mlp_meta_saved_bytes_equal_real_saved_tensors(name, cfg):
    """The data-free routing on meta saves what real routing saves: within the 5 % of the other kinds, 10 % with
    group-limited routing (real routing then leaves whole groups of experts idle for a batch of 32 tokens, and an
    idle expert saves none of its per-call tensors, which the even dealing on meta gives every expert)."""
    from test_training_plan import _check_as_built

    d = mlp_design(name, cfg, n_layers=1)
    d["max_seq_len"] = 64
    _check_as_built(d, rel=0.1 if cfg.get("n_group", 1) > 1 else 0.05)
