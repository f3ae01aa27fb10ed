"""The standalone Python export: a fresh interpreter rebuilds the same model.

For every preset the exported file is run in ONE fresh interpreter (``python
-I``, cwd a temporary folder, no PYTHONPATH: the project is not importable
there), which for each preset:

* runs the file as ``__main__`` and reads the printed parameter count (it
  must equal the backend's model built on the meta device);
* loads the backend model's state dict (saved here with ``torch.save``;
  presets over ~5M parameters use a width-scaled copy of the design) with
  ``strict=True`` and compares outputs in eval mode (``torch.allclose``), and
  KV-cached greedy generation for token decoders.

One subprocess for all presets keeps the torch import (~2-3 s) to one.
Hostile names and descriptions are fuzzed with hypothesis: the file parses,
its AST equals that of a plain-named export up to string constants, and it
runs without side effects.
"""
from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from backend.build import build_model  # noqa: E402
from backend.export import export_bytes, export_text  # noqa: E402
from backend.export.standalone import literal, modules_for, render  # noqa: E402
from backend.plan import resolve_plan  # noqa: E402
from backend.presets import list_presets
from backend.spec import load_preset  # noqa: E402
from backend.spec import Design, load_design  # noqa: E402

PRESETS = list_presets()
SMALL = 5_000_000  # parameters; bigger presets are checked through a width-scaled copy
SEQ = 16
BATCH = 2


# ---------------------------------------------------------------------------
# Helpers


@functools.lru_cache(maxsize=None)
def rendered(name: str) -> str:
    return render(load_preset(name))


def data_section(text: str) -> str:
    """DESIGN and CONFIG: the only place user text goes."""
    return text[text.index("\nDESIGN = "):text.index("\n# backend/nn/common.py")]


def meta_params(design) -> int:
    return sum(p.numel() for p in build_model(design, device="meta").parameters())


_SCALE_PARAMS = {"hidden": 96, "num_param_tokens": 16, "nb_features": 32, "modes": 8, "window": 8, "prefix_len": 4,
                 # MoE width / experts and MLA sizes (deepseek_v2_lite: 64 experts, kv_lora_rank 512)
                 "shared_hidden": 96, "num_experts": 8, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
                 "qk_rope_head_dim": 8, "v_head_dim": 16,
                 # SSM sizes (nemotron_h_8b: 8 groups of Mamba-2 heads; jamba_v0_1: dt_rank 256)
                 "head_dim": 16, "n_groups": 2, "d_state": 16, "dt_rank": 8,
                 # qwen3_next_80b_a3b: top-10 routing, 16 / 32 Gated DeltaNet heads of 128
                 "top_k": 2, "num_key_heads": 2, "num_value_heads": 4, "key_head_dim": 16, "value_head_dim": 16}


def _scale_params(obj):
    if isinstance(obj, dict):
        return {k: (min(v, _SCALE_PARAMS[k]) if k in _SCALE_PARAMS and isinstance(v, int) and not isinstance(v, bool) and v > 0
                    else _scale_params(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scale_params(v) for v in obj]
    return obj


def scaled(design: Design) -> Design:
    """A narrow copy of ``design``: same depth, kinds, sharing and options; hidden 64, 4 heads."""
    d = _scale_params(design.to_dict())
    kv = design.kv_heads
    d.update(hidden_size=64, n_heads=4, head_dim=None, n_kv_heads=None if design.n_kv_heads is None else (4 if kv == design.n_heads else 1 if kv == 1 else 2))
    if d.get("mlp_hidden"):
        d["mlp_hidden"] = 128
    if d.get("vocab_size"):
        d["vocab_size"] = min(d["vocab_size"], 512)
    d["max_seq_len"] = min(d["max_seq_len"], 256)
    if d.get("input_dim"):
        d["input_dim"] = min(d["input_dim"], 16)
    if d.get("output_dim"):
        d["output_dim"] = min(d["output_dim"], 16)
    return load_design(d)


def _inputs(design: Design, gen: torch.Generator, seq: int) -> torch.Tensor:
    if design.vocab_size:
        return torch.randint(0, design.vocab_size, (BATCH, seq), generator=gen)
    return torch.randn(BATCH, seq, design.input_dim, generator=gen)


def reference(design: Design) -> dict:
    """Backend model (real weights), inputs and its outputs, as torch.save-able data."""
    torch.manual_seed(0)
    model = build_model(design, device="cpu").eval()
    gen = torch.Generator().manual_seed(1)
    seq = min(SEQ, design.max_seq_len)
    x = _inputs(design, gen, seq)
    ref = {"state_dict": model.state_dict(), "x": x, "tgt": None, "prompt": None}
    with torch.no_grad():
        if design.architecture == "encoder_decoder":
            ref["tgt"] = _inputs(design, gen, seq)
            ref["out"] = model(x, ref["tgt"]).output
        else:
            ref["out"] = model(x).output
        if design.task in ("lm", "seq2seq"):
            n_prompt, n_new = min(4, seq // 2), min(6, seq // 2)
            ref["prompt"] = torch.randint(0, design.vocab_size, (BATCH, n_prompt), generator=gen)
            ref["n_new"] = n_new
            src = x if design.architecture == "encoder_decoder" else None
            ref["generated"] = model.generate(ref["prompt"], n_new, src=src) if src is not None else model.generate(ref["prompt"], n_new)
    return ref


def clean_env() -> dict[str, str]:
    """The environment of a user's shell, minus anything pointing at this project."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BACKEND_"))}


def run_fresh(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


# The checker that runs in the fresh interpreter. It imports nothing of the project.
DRIVER = textwrap.dedent('''
    import contextlib, importlib.util, io, json, runpy, sys, time, traceback
    import torch

    def load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    def run_main(path):
        buf = io.StringIO()
        argv = sys.argv
        sys.argv = [path]
        try:
            with contextlib.redirect_stdout(buf):
                try:
                    runpy.run_path(path, run_name="__main__")
                except SystemExit as exc:
                    if exc.code not in (None, 0):
                        raise
        finally:
            sys.argv = argv
        return buf.getvalue()

    results = {"backend_importable": importlib.util.find_spec("backend") is not None}
    for i, job in enumerate(json.load(open(sys.argv[1]))):
        t0 = time.perf_counter()
        res = results[job["name"]] = {}
        try:
            d = job["dir"]
            res["stdout"] = run_main(d + "/full.py")
            full = load(d + "/full.py", f"export_full_{i}")
            res["params_meta"] = full.count_parameters(full.build_model(device="meta"))
            small = load(d + "/small.py", f"export_small_{i}") if job["scaled"] else full
            ref = torch.load(d + "/ref.pt", weights_only=True)
            torch.manual_seed(123)  # different init: everything must come from the state dict
            model = small.build_model(device="cpu").eval()
            sd = model.state_dict()
            res["same_keys"] = sorted(sd) == sorted(ref["state_dict"])
            res["same_shapes"] = all(sd[k].shape == v.shape for k, v in ref["state_dict"].items() if k in sd)
            model.load_state_dict(ref["state_dict"], strict=True)
            with torch.no_grad():
                out = model(ref["x"], ref["tgt"]).output if ref["tgt"] is not None else model(ref["x"]).output
            res["max_abs_diff"] = float((out - ref["out"]).abs().max())
            res["allclose"] = bool(torch.allclose(out, ref["out"], rtol=1e-5, atol=1e-5))
            if ref["prompt"] is not None:
                kw = {"src": ref["x"]} if ref["tgt"] is not None else {}
                gen = model.generate(ref["prompt"], ref["n_new"], **kw)
                res["generate_equal"] = bool(torch.equal(gen, ref["generated"]))
        except Exception:
            res["error"] = traceback.format_exc()
        res["seconds"] = time.perf_counter() - t0
    results["backend_loaded"] = any(m == "backend" or m.startswith("backend.") for m in sys.modules)
    print(json.dumps(results))
''')


# ---------------------------------------------------------------------------
# One fresh interpreter for all presets


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("standalone")
    jobs, prep_errors, info = [], {}, {}
    for name in PRESETS:
        try:
            design = load_preset(name)
            folder = work / name
            folder.mkdir()
            text = rendered(name)
            (folder / "full.py").write_text(text, encoding="utf-8")
            n = meta_params(design)
            small = design if n < SMALL else scaled(design)
            if small is not design:
                (folder / "small.py").write_text(render(small), encoding="utf-8")
            torch.save(reference(small), folder / "ref.pt")
            jobs.append({"name": name, "dir": str(folder), "scaled": small is not design})
            info[name] = {"params": n, "bytes": len(text), "scaled": small is not design,
                          "small_params": meta_params(small) if small is not design else n}
        except Exception:
            prep_errors[name] = traceback.format_exc()
    (work / "jobs.json").write_text(json.dumps(jobs))
    (work / "driver.py").write_text(DRIVER)
    t0 = time.perf_counter()
    proc = run_fresh(["driver.py", "jobs.json"], cwd=work, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"results": results, "errors": prep_errors, "info": info, "wall": wall}


def test_fresh_interpreter_cannot_import_the_project(fresh_run):
    assert fresh_run["results"]["backend_importable"] is False
    assert fresh_run["results"]["backend_loaded"] is False


@pytest.mark.parametrize("name", PRESETS)
def test_standalone_matches_backend(fresh_run, name):
    assert name not in fresh_run["errors"], fresh_run["errors"].get(name)
    res = fresh_run["results"][name]
    assert "error" not in res, res["error"]
    params = fresh_run["info"][name]["params"]
    assert res["stdout"] == f"parameters: {params}\n"
    assert res["params_meta"] == params
    assert res["same_keys"] and res["same_shapes"]
    assert res["allclose"], f"max |diff| {res['max_abs_diff']}"
    if load_preset(name).task in ("lm", "seq2seq"):
        assert res["generate_equal"]


# ---------------------------------------------------------------------------
# The file itself (in-process, no subprocess)


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import left in the file"
            out.add((node.module or "").split(".")[0])
    return out


@pytest.mark.parametrize("name", PRESETS)
def test_file_is_plain_torch(name):
    text = rendered(name)
    # user data is ASCII-escaped; only the runtime modules' own docs may use UTF-8
    assert data_section(text).isascii()
    tree = ast.parse(text)
    assert _imports(tree) - {"torch"} <= set(sys.stdlib_module_names) | {"__future__"}
    defs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert {"build_model", "count_parameters", "main", "Transformer"} <= defs
    # DESIGN and CONFIG are literal data
    data = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name) and t.id in ("DESIGN", "CONFIG")}
    assert load_design(ast.literal_eval(data["DESIGN"])) == load_preset(name)
    assert ast.literal_eval(data["CONFIG"])["stacks"]


def test_only_the_modules_the_design_uses():
    tiny = {"name": "t", "hidden_size": 32, "n_heads": 2, "vocab_size": 50, "max_seq_len": 32, "norm": "layer",
            "layers": {"n_layers": 2, "mlp": "mlp"}}
    text = render(load_design(tiny))
    assert "# backend/nn/mlp.py" in text and "# backend/nn/moe.py" not in text
    assert "class MoE" not in text and "# backend/nn/spectral.py" not in text
    assert modules_for(resolve_plan(tiny))[:2] == ["common", "model"]
    moe = {**tiny, "layers": {"n_layers": 2, "mlp": "moe", "params": {"mlp": {"num_experts": 2, "top_k": 1, "expert": "relu2"}}}}
    text = render(load_design(moe))
    assert text.index("# backend/nn/mlp.py") < text.index("# backend/nn/moe.py") < text.index("# backend/nn/model.py")


# Pruning: only the classes the design uses. The expected sets are written by
# hand from the designs: the model assembly (model.py) plus the one class per
# kind the design names (and the bases / caches those need).
_MODEL_CLASSES = {"LayerContext", "ModelOutput", "Block", "FlowSpeed", "Stack", "ModelCache", "Transformer",
                  "HeadTransform"}  # BERT's MLM head transform (issue 12)
_EXPECTED_CLASSES = {
    # rope (a _Marker), rms, self_sdpa (KV cache), swiglu
    "llama2_7b": {"_Marker", "RoPE", "RMSNorm", "SelfSDPA", "KVCache", "GatedMLP"},
    # learned positions, layer norm, self_sdpa, plain two-layer mlp
    "gpt2_small": {"LearnedPositions", "LayerNorm", "SelfSDPA", "KVCache", "DenseMLP"},
    # llama's kinds plus the mixture of experts with swiglu experts
    "mixtral_8x7b": {"_Marker", "RoPE", "RMSNorm", "SelfSDPA", "KVCache", "MoE", "GatedMLP"},
    # encoder-decoder: alibi, rms, self_sdpa, cross-attention, plain mlp
    "t5_style": {"_Marker", "ALiBi", "RMSNorm", "SelfSDPA", "CrossAttention", "KVCache", "DenseMLP"},
    # encoder-decoder: rope, rms, self_sdpa, cross-attention, swiglu
    "encdec_kv_cache": {"_Marker", "RoPE", "RMSNorm", "SelfSDPA", "CrossAttention", "KVCache", "GatedMLP"},
}


def _with_option_classes(expected: set[str]) -> set[str]:
    """SelfSDPA refers to RMSNorm (its ``qk_norm`` option), so a file with SelfSDPA keeps RMSNorm too."""
    return expected | ({"RMSNorm"} if "SelfSDPA" in expected else set())


def _top_level(text: str) -> tuple[set[str], set[str], dict[str, ast.AST]]:
    """(class names, function names, assigned name -> value node) at the top of ``text``."""
    tree = ast.parse(text)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assigns = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assigns.update({n.target.id: n.value for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)})
    return classes, funcs, assigns


@pytest.mark.parametrize("name", sorted(_EXPECTED_CLASSES))
def test_only_the_classes_the_design_uses(name):
    classes, funcs, assigns = _top_level(rendered(name))
    assert classes == _MODEL_CLASSES | _with_option_classes(_EXPECTED_CLASSES[name])
    # never the unused norms, nor cross-attention in a decoder-only model
    assert not {"ScaleNorm", "ReZero", "AdaptiveNorm", "StateCache", "PerformerAttention", "SpectralMixer"} & classes
    assert ("CrossAttention" in classes) == (name in ("t5_style", "encdec_kv_cache"))
    # the registry machinery always stays
    assert {"REGISTRY", "register", "LayerContext"} <= set(assigns) | funcs | classes
    assert {"build_model", "count_parameters", "main"} <= funcs


def test_unused_helpers_go_with_their_classes():
    _, funcs, assigns = _top_level(rendered("llama2_7b"))
    # mlp.py's MoE-expert factory and squared ReLU serve nothing in a swiglu decoder
    assert not {"make_mlp", "relu2", "linear"} & funcs
    assert "MLP_CLASSES" not in assigns  # (ACTIVATIONS stays: model.py's HeadTransform, always kept, reads it)
    assert {"ffn_width", "rope_cos_sin", "apply_rope", "repeat_kv", "add_qkvo"} <= funcs
    assert "GATES" in assigns
    # mixtral keeps the expert factory; its class table names only the classes kept
    classes, funcs, assigns = _top_level(rendered("mixtral_8x7b"))
    assert {"make_mlp", "ffn_width"} <= funcs and "relu2" not in funcs
    table = assigns["MLP_CLASSES"]
    assert {ast.literal_eval(k) for k in table.keys} == {"swiglu", "geglu", "reglu"}
    assert {v.id for v in table.values} == {"GatedMLP"}
    # gpt2: DenseMLP needs ACTIVATIONS and relu2 (its kind "relu2" branch), not the gated table
    _, funcs, assigns = _top_level(rendered("gpt2_small"))
    assert "relu2" in funcs and "ACTIVATIONS" in assigns and "GATES" not in assigns


def test_kept_code_is_the_original_source_text():
    """Kept classes are copied verbatim (comments, docstrings, layout), not regenerated."""
    text = rendered("llama2_7b")
    for stem, names in {"norms": ("RMSNorm",), "attention": ("SelfSDPA", "sdpa"), "mlp": ("GatedMLP",), "common": ("KVCache", "register")}.items():
        source = (Path(__file__).resolve().parent.parent / "backend" / "nn" / f"{stem}.py").read_text(encoding="utf-8")
        for node in ast.parse(source).body:
            if getattr(node, "name", None) in names:
                assert ast.get_source_segment(source, node) in text, (stem, node.name)
    assert "self.w2 = nn.Linear(h, d, bias=ctx.bias)  # down (residual output)" in text  # inline comments survive


_TINY = {"name": "t", "hidden_size": 32, "n_heads": 2, "vocab_size": 50, "max_seq_len": 32, "norm": "layer",
         "layers": {"n_layers": 2, "mlp": "mlp"}}
_CUSTOM = {
    "scale_sinusoidal": ({"norm": "scale", "positional": "sinusoidal"}, {"ScaleNorm", "SinusoidalPositions", "SelfSDPA", "KVCache", "DenseMLP"}),
    "rezero": ({"norm": "rezero"}, {"ReZero", "_Marker", "RoPE", "SelfSDPA", "KVCache", "DenseMLP"}),
    "adaptive_alibi": ({"norm": "adaptive", "positional": "alibi"}, {"AdaptiveNorm", "_Marker", "ALiBi", "SelfSDPA", "KVCache", "DenseMLP"}),
    "moe_relu2": ({"layers": {"n_layers": 2, "mlp": "moe", "params": {"mlp": {"num_experts": 2, "top_k": 1, "expert": "relu2"}}}},
                  {"LayerNorm", "_Marker", "RoPE", "SelfSDPA", "KVCache", "MoE", "DenseMLP"}),
    # issue 12 decoder blocks: OLMo 2's post-sublayer norms and whole-projection QK-norm; GPT-NeoX's parallel
    # residual and partial rotary with a layer's own theta; Gemma's embedding scale and tanh GeGLU
    "olmo2_blocks": ({"norm": "rms", "norm_placement": "post_sublayer", "layers": {"n_layers": 2, "mlp": "mlp", "params": {
        "attention": {"qk_norm": True, "qk_norm_over": "projection"}}}}, {"_Marker", "RoPE", "RMSNorm", "SelfSDPA", "KVCache", "DenseMLP"}),
    "neox_gemma_blocks": ({"parallel_residual": True, "embed_scale": True, "logit_softcap": 2.0, "layers": {"n_layers": 2, "mlp": "geglu", "params": {
        "attention": {"rotary_fraction": 0.5, "rope_theta": 500.0}, "mlp": {"gelu_approximate": "tanh"}}}},
        {"LayerNorm", "_Marker", "RoPE", "SelfSDPA", "KVCache", "GatedMLP"}),
    "falcon_blocks": ({"parallel_residual": True, "parallel_shared_norm": True, "norm_bias": True},
                      {"LayerNorm", "_Marker", "RoPE", "SelfSDPA", "KVCache", "DenseMLP"}),
    # issue 12 GPT-J / BLOOM: the partial interleaved rotary, unbiased attention with a biased tanh-GELU MLP and
    # logit bias; ALiBi with an embedding norm
    "gptj_blocks": ({"parallel_residual": True, "parallel_shared_norm": True, "norm_bias": True, "head_bias": True,
                     "layers": {"n_layers": 2, "mlp": "mlp", "params": {
                         "attention": {"rotary_fraction": 0.5, "rotary_interleaved": True},
                         "mlp": {"gelu_approximate": "tanh", "bias": True}}}},
                    {"LayerNorm", "_Marker", "RoPE", "SelfSDPA", "KVCache", "DenseMLP"}),
    "bloom_blocks": ({"positional": "alibi", "embed_norm": True, "bias": True, "layers": {"n_layers": 2, "mlp": "mlp",
                      "params": {"mlp": {"gelu_approximate": "tanh"}}}},
                     {"LayerNorm", "_Marker", "ALiBi", "SelfSDPA", "KVCache", "DenseMLP"}),
    "performer_encoder": ({"architecture": "encoder", "task": "mlm", "layers": {"n_layers": 2, "attention": "linear"}},
                          {"LayerNorm", "_Marker", "RoPE", "_FavorBase", "PerformerAttention", "GatedMLP"}),
    # ModernBERT (issue 12): no pre-norm before the first attention, local layers with their own window and theta
    "modernbert_blocks": ({"architecture": "encoder", "task": "mlm", "first_attn_norm": False, "embed_norm": True,
                           "head_transform": True, "head_bias": True, "layers": {"n_layers": 3, "mlp": "geglu", "rules": [
                               {"when": {"layer_idx": [1, 2]}, "params": {"attention": {"window": 3, "rope_theta": 10.0}}}]}},
                          {"LayerNorm", "_Marker", "RoPE", "SelfSDPA", "KVCache", "GatedMLP"}),
}


def _load_exported(text: str, tmp_path: Path, name: str):
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_pruned_export_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.mark.parametrize("case", sorted(_CUSTOM))
def test_pruned_file_for_other_kinds_matches_backend(case, tmp_path):
    """Kinds no preset uses: the pruned file keeps exactly their classes and still matches the backend."""
    extra, expected = _CUSTOM[case]
    design = load_design({**_TINY, **extra})
    text = render(design)
    classes, funcs, assigns = _top_level(text)
    assert classes == _MODEL_CLASSES | _with_option_classes(expected)
    if case == "moe_relu2":
        assert {ast.literal_eval(k) for k in assigns["MLP_CLASSES"].keys} == {"relu2", "mlp"}
    module = _load_exported(text, tmp_path, case)
    torch.manual_seed(0)
    ref = build_model(design, device="cpu").eval()
    model = module.build_model(device="cpu").eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randint(0, design.vocab_size, (BATCH, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x).output, ref(x).output, atol=1e-6)


def test_export_bytes_python():
    name, data, mime = export_bytes(PRESETS[0], "python")
    assert name.endswith(".py") and name.replace(".py", "").isidentifier() and mime == "text/x-python"
    compile(data, name, "exec")


# Plain data round-trips through the literal writer: floats exactly, nesting, long strings.
_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=150),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=10), inner, max_size=8),
    max_leaves=60,
)


@settings(max_examples=200, deadline=None)
@given(_DATA)
def test_literal_round_trips(value):
    text = literal(value)
    assert text.isascii()
    back = ast.literal_eval(text)
    assert back == value or (value != value)
    if isinstance(value, float):
        assert repr(back) == repr(value)


# ---------------------------------------------------------------------------
# Hostile names and descriptions

HOSTILE = st.lists(
    st.one_of(
        st.characters(exclude_categories=("Cs",)),
        st.sampled_from(list("\"'\\\n\r\t\x00\x0b\x0c\x1b\x7f\x85\u2028\u2029\ufeff{}#`$")),
        st.sampled_from(['"""', "'''", "\\N{", "\\u", "\n#", "\nimport os\n", '"); import os; ("', "\r\n"]),
    ),
    max_size=40,
).map("".join)

BASE = {"name": "x", "hidden_size": 32, "n_heads": 2, "vocab_size": 50, "max_seq_len": 32, "layers": {"n_layers": 2}}


def _shape(text: str) -> str:
    """The AST with every string constant blanked: what the file *does*."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = "<str>"
    return ast.dump(tree)


def _hostile_design(name: str, description: str) -> Design:
    return load_design({**BASE, "name": name, "description": description})


def test_hostile_strings_are_only_data(tmp_path):
    reference = {}  # description empty or not -> reference AST shape
    texts: list[tuple[str, str, str]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(name=HOSTILE.filter(lambda s: 1 <= len(s) <= 200), description=HOSTILE)
    def check(name, description):
        design = _hostile_design(name, description)
        text = export_text(design, "python")
        assert data_section(text).isascii()
        compile(text, "<hostile>", "exec", dont_inherit=True)
        key = bool(description)
        if key not in reference:
            reference[key] = _shape(export_text(_hostile_design("plain", "plain" if key else ""), "python"))
        assert _shape(text) == reference[key]
        # the strings come back exactly
        tree = ast.parse(text)
        data = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name) and t.id in ("DESIGN", "CONFIG")}
        assert data["DESIGN"]["name"] == name and data["DESIGN"].get("description", "") == description
        assert data["CONFIG"]["name"] == name
        if len(texts) < 12 or (len(texts) < 24 and len(name) + len(description) > 40):
            texts.append((name, description, text))

    check()
    # Run a sample in one fresh interpreter: each file as __main__ in its own empty folder.
    jobs = []
    for i, (_, _, text) in enumerate(texts):
        folder = tmp_path / f"h{i}"
        folder.mkdir()
        (folder / "model.py").write_text(text, encoding="utf-8")
        jobs.append(str(folder))
    driver = textwrap.dedent('''
        import contextlib, io, json, os, runpy, sys
        out = []
        for folder in json.loads(sys.argv[1]):
            os.chdir(folder)
            buf = io.StringIO()
            sys.argv = ["model.py"]
            with contextlib.redirect_stdout(buf):
                try:
                    runpy.run_path("model.py", run_name="__main__")
                except SystemExit as exc:
                    assert exc.code in (None, 0), exc.code
            out.append([buf.getvalue(), sorted(os.listdir("."))])
        print(json.dumps(out))
    ''')
    (tmp_path / "driver.py").write_text(driver)
    proc = run_fresh(["-B", "driver.py", json.dumps(jobs)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = meta_params(_hostile_design("x", ""))
    for stdout, listing in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert stdout == f"parameters: {expected}\n"
        assert listing == ["model.py"]


def test_hostile_file_runs_as_a_script(tmp_path):
    """The real command line: ``python model.py`` in an empty folder prints one line and writes nothing."""
    name = '"""\'\'\'\\ \x00 \u2028 \ud7ff é 💥 \n# comment\nimport os; os.system("touch pwned")'
    design = _hostile_design(name[:200], 'x"""); open("pwned", "w"); ("""\r\n\\N{BULLET}\\')
    fname, data, _ = export_bytes(design, "python")
    assert "/" not in fname and not fname.startswith(".")
    (tmp_path / fname).write_bytes(data)
    proc = run_fresh([fname], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == f"parameters: {meta_params(design)}\n" and proc.stderr == ""
    assert sorted(os.listdir(tmp_path)) == [fname]


def test_report_sizes_and_times(fresh_run, capsys):
    """Not a check: prints export sizes and per-preset times (pytest -s shows them)."""
    with capsys.disabled():
        print(f"\nfresh interpreter for {len(PRESETS)} presets: {fresh_run['wall']:.1f} s")
        for name, info in fresh_run["info"].items():
            res = fresh_run["results"].get(name, {})
            print(f"  {name:<24} params {info['params']:>14,}  file {info['bytes']:>7,} B  "
                  f"{'scaled ' + format(info['small_params'], ',') if info['scaled'] else 'full':<18} {res.get('seconds', 0):.2f} s")


def test_yaml_header_carries_the_real_parameter_count():
    design = load_preset(PRESETS[0])
    head = export_text(design, "yaml").split("\nname:")[0]
    assert f"parameters: {meta_params(design):,}" in head
    assert load_design(export_text(design, "yaml")) == design


def test_cli_python_export(tmp_path, capsys):
    from backend.cli import main as cli_main

    out = tmp_path / "m.py"
    assert cli_main(["export", PRESETS[0], "--format", "python", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == rendered(PRESETS[0])
    assert cli_main(["export", PRESETS[0], "--format", "python", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["export", PRESETS[0], "--format", "python", "-o", str(out), "--force"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["m.py"]


@pytest.mark.parametrize("name", ["diff_transformer", "performer_small", "llama2_7b", "timeseries_encoder"])
def test_every_import_is_used_and_unused_ones_go(name):
    tree = ast.parse(rendered(name))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    bound = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
            for a in node.names:
                bound[a.asname or a.name.split(".")[0]] = ast.unparse(node)
    assert {"torch", "nn", "sys", "argparse"} <= set(bound)
    assert not set(bound) - names, {b: bound[b] for b in set(bound) - names}
    # neither diff_attn nor the Performer uses F.sdpa's kernel choice or warnings
    if name in ("diff_transformer", "performer_small"):
        assert not {"sdpa_kernel", "SDPBackend"} & set(bound)
    if name == "llama2_7b":
        assert {"sdpa_kernel", "SDPBackend"} <= set(bound)


def test_used_imports_keeps_only_bound_names_the_body_refers_to():
    from backend.export.standalone import used_imports

    stmts = ["import math", "from typing import Any, Callable", "import torch.nn.functional as F", "import torch.utils.checkpoint"]
    body = "def f(x: Any) -> Any:\n    return F.relu(x)\n"
    assert used_imports(stmts, body) == ["from typing import Any", "import torch.nn.functional as F"]
    # ``import torch.utils.checkpoint`` binds ``torch``: kept when torch is referred to
    assert used_imports(stmts, "y = torch.utils.checkpoint.checkpoint") == ["import torch.utils.checkpoint"]
