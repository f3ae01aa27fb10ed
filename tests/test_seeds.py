"""The five seed documents' own Python examples, run as written on ``backend.compat``.

Every ```python block of ``../shared/seeds/*.txt`` (read there at test time, not
copied into the project) is extracted, its imports from the seed packages are
redirected to ``backend.compat`` (``backend.seedcode.rewrite_imports``: nothing
else changes) and the blocks of a seed run in document order in one namespace.
After a block, the shapes and values the seed states are asserted (``CHECKS``),
and every seed model in the namespace must have the parameter count that the
analysis of its design gives for the part of the model it holds.

Visible lists, keyed by (seed, block index):

* ``SKIP``: fragments by construction, with the reason;
* ``GIVEN``: names a block leaves to the reader, defined just before it runs;
* ``META``: blocks at sizes that cost tens of CPU-seconds (hundreds of GFLOPs,
  or a 250M-parameter decoder) run on the meta device: the code runs as written
  and every shape is checked, no weights are allocated. ``test_compat.py`` runs
  the same classes at small sizes with real numbers;
* ``EXPECT_ERROR``: the one documented example that is wrong (seed 000's
  "Example 1" adds up to 15 layers for ``n_layers=16``) must fail with a
  one-line error naming both numbers.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from backend import compat
from backend.analysis.params import param_stats
from backend.errors import DesignError
from backend.plan import resolve_plan
from backend.seedcode import python_blocks, rewrite_imports

SEEDS_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "seeds").resolve()
pytestmark = pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason=f"seed documents not found at {SEEDS_DIR}")

SKIP: dict[tuple[str, int], str] = {
    ("001", 0): "illustrates the residual formula inside a method (`self`, `flow_speed` undefined)",
    ("002", 13): "training loop over an undefined `dataloader` / `criterion`",
    ("004", 11): "undefined `batch_size`, `seq_len`, `pad_positions`; calls a cross-attending decoder without encoder_output",
    ("004", 12): "undefined `batch_size`, `tgt_len`, `src_len`, `pad_positions`",
    ("004", 13): "undefined `embed_source`, `src_tokens`, `output_projection` (and `# ... other params`)",
    ("004", 14): "`EncoderDecoderTransformer(...)` placeholder and undefined `embed`",
    ("004", 15): "undefined `embed`, `token_ids`, `output_projection` (and `# ... other params`)",
    ("004", 16): "undefined `embed`, `tokens`, `classification_head` (and `# ... other params`)",
    ("004", 17): "`d_head`, `log` undefined (a formula, not code)",
    ("004", 23): "undefined `src_mask`, `causal_mask`, `cross_mask`",
}
GIVEN: dict[tuple[str, int], str] = {
    ("002", 3): "query = key = value = torch.randn(2, 4, 10, 16)",
    ("002", 5): "tokens = torch.randn(1, 1, 1)",
    ("003", 2): "pred_length = 4\ncurrent_input = torch.randn(2, 1, 10)\nencoder_output = torch.randn(2, 7, 512)",
}
META: dict[tuple[str, int], str] = {
    ("003", 1): "TransformerDecoder d_model=1024 x 12 layers: 252M parameters (1 GB)",
    ("004", 1): "PerformerEncoder forward at 32 x 100 x 512, 6 layers (~180 GFLOP)",
    ("004", 2): "PerformerDecoder forward at 32 x 50 x 512, 6 layers (~110 GFLOP)",
    ("004", 3): "EncoderDecoderTransformer, 6 + 6 layers, two full passes (~600 GFLOP)",
    ("004", 24): "6 + 6 layers at d_model 512 built twice over",
    ("004", 25): "12 + 6 layers at d_model 512",
}
EXPECT_ERROR: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {
    ("000", 6): ("string", ("15", "16")),
}
PRELUDE = "import torch\nfrom torch import nn\ndevice = torch.device('cpu')\n"
# Seed 003 shows constructor calls only; its classes are the document's subject.
SEED_PRELUDE = {"003": "from backend.compat import TransformerDecoder, TransformerEncoder\n"}

S, SP, TP, DA = "self_sdpa", "spectral", "token_param", "diff_attn"


def _seed_files() -> dict[str, Path]:
    return {p.name[:3]: p for p in sorted(SEEDS_DIR.glob("*.txt"))} if SEEDS_DIR.is_dir() else {}


# ---- expected parameter counts, from the analysis of the design ------------------------


def expected_params(obj: compat._SeedModule) -> int:
    """Parameters of the part of its design's model that ``obj`` holds (analysis, not the module)."""
    design = obj.to_design()
    st = param_stats(resolve_plan(design))
    per = st["per_unique_layer"]
    comp = st["components"]
    flow = comp["other"] - sum(b["other"] for blocks in per.values() for b in blocks)
    assert flow == 0, "seed models have no flow speed"
    final_norm = (comp["norm"] - sum(b["norm"] for blocks in per.values() for b in blocks)) // len(per)

    def stack(name: str) -> int:
        return sum(b["total"] for b in per[name]) + final_norm

    what = obj.part[0]
    if what == "model":
        return st["total"]
    if what == "decoder":
        return st["total"] - stack("encoder")
    if what == "stacks":
        return sum(stack(n) for n in obj.part[1:])
    block = per[obj.part[1]][0]
    return {"block": block["total"], "attention": block["attention"], "mlp": block["mlp"]}[what]


# ---- per-block checks: what the seeds state -----------------------------------------------


def _att(cfg: Any) -> list[str]:
    return list(cfg.attention_types)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _c000_3(ns):
    layers = ns["custom_pattern"].generate_layers(12)
    # every 3rd (0, 3, 6, 9) spectral; i/12 in [0.4, 0.6) (5, 6, 7) token_param; last diff_attn
    assert [l.attention_type for l in layers] == [SP, S, S, SP, S, TP, TP, TP, S, SP, S, DA]


def _c001_1(ns):
    assert {"tiny", "small", "medium", "large", "medium_cycle", "medium_layerwise", "medium_one_layer", "medium_flow",
            "medium_layerwise_flow"} <= set(ns["presets"])
    assert ns["repeat_config"].transformer.layer_repeat_mode == "layerwise"
    assert ns["model_config"].transformer.hidden_dim == ns["model_config"].to_design().hidden_size


def _c001_2(ns):
    t = ns["model_config"].transformer
    assert (t.repeat_factor, t.layer_repeat_mode) == (4, "layerwise")
    d = ns["model_config"].to_design()
    assert (d.layers.repeat.mode, d.layers.repeat.factor, d.layers.n_layers) == ("layerwise", 4, 2)
    assert [s.unique_index for s in t.layer_specs] == [0] * 4 + [1] * 4


def _c001_3(ns):
    d = ns["model_config"].to_design()
    assert (d.input_dim, d.hidden_size, d.n_heads, d.dropout, d.activation) == (2, 96, 3, 0.1, "gelu")
    assert (d.layers.n_layers, d.layers.repeat.mode, d.layers.repeat.factor, d.task) == (3, "cycle", 4, "cluster_centers")
    assert ns["model_config"].transformer is ns["transformer_config"]


def _c002_4(ns):
    assert _shape(ns["output1"]) == (1, 10, 1) and _shape(ns["output2"]) == (1, 1, 1)
    assert ns["model"].to_design().kv_heads == 2  # gqa default: num_heads // 2
    assert ns["model"]._cache.length == 11


def _c002_6(ns):
    assert _shape(ns["target"]) == (1, 11, 1) and _shape(ns["output"]) == (1, 10, 1)
    assert ns["model"].to_design().layers is None and ns["model"].to_design().decoder.mlp == "moe"


def _c002_10(ns):
    kv = {k: ns[k].to_design().kv_heads for k in ("mha", "mqa", "gqa", "gqa_mqa_like", "gqa_balanced", "gqa_mha_like")}
    assert kv == {"mha": 8, "mqa": 1, "gqa": 4, "gqa_mqa_like": 1, "gqa_balanced": 4, "gqa_mha_like": 8}
    x = torch.randn(2, 5, 64)
    assert all(_shape(ns[k](x)) == (2, 5, 64) for k in kv)


def _c002_12(ns):
    # the block defines the class; it builds and returns (x, aux_loss) as the seed shows
    m = ns["TransformerWithMOE"](embed_dim=32, num_experts=4)
    y, aux = m(torch.randn(2, 3, 32))
    assert _shape(y) == (2, 3, 32) and aux.dim() == 0


def _c003_0(ns):
    d = ns["encoder"].to_design()
    assert (d.input_dim, d.hidden_size, d.n_heads, d.layers.n_layers) == (7, 512, 8, 6)
    assert (d.layers.mlp, d.norm, d.norm_placement, d.gradient_checkpointing) == ("swiglu", "rms", "pre", True)
    assert d.layers.params.attention == {"backend": "efficient"}  # xformer: the memory-efficient SDPA kernel


def _c003_2(ns):
    out, state = ns["output"], ns["incremental_state"]
    assert _shape(out) == (2, 1, 5)
    assert len(state["layers"]) == 6  # one shared layer executed 6 times, each with its own cache
    assert all(set(e) == {"self_attn", "cross_attn"} for e in state["layers"])
    assert _shape(state["layers"][0]["self_attn"]["key"]) == (2, 4, 512)  # [B, T, D] after 4 steps
    assert _shape(state["layers"][5]["cross_attn"]["value"]) == (2, 7, 512)
    d = ns["model"].to_design()
    assert (d.decoder.n_layers, d.decoder.repeat.mode, d.decoder.repeat.factor, d.final_norm) == (1, "cycle", 6, False)


def _c004_0(ns):
    enc, dec = ns["encoder_layer"].to_design(), ns["decoder_layer"].to_design()
    assert (enc.architecture, enc.layers.attention, enc.layers.mlp) == ("encoder", "linear", "mlp")
    assert (dec.architecture, dec.decoder.attention, dec.decoder.mlp) == ("encoder_decoder", "causal_linear", "swiglu")
    assert ns["decoder_layer"].module.cross is not None and ns["encoder_layer"].module.cross is None
    x, mem = torch.randn(2, 5, 512), torch.randn(2, 7, 512)
    assert _shape(ns["decoder_layer"](x, encoder_output=mem)) == (2, 5, 512)


def _c004_19(ns):
    d = ns["model"].to_design()
    assert d.encoder.params.attention["fix_projection"] and d.decoder.params.attention["fix_projection"]
    assert all(m.fix_projection for m in ns["model"].modules() if hasattr(m, "redraw_projection"))


CHECKS: dict[tuple[str, int], Callable[[dict[str, Any]], Any]] = {
    ("000", 0): lambda ns: (_att(ns["config"]) == [S, TP] * 6 and ns["config"].hidden_size == 512),
    ("000", 1): lambda ns: _att(ns["config"]) == [SP, S, S, S, TP, S, S, DA, S, S, S, S],
    ("000", 2): lambda ns: (_att(ns["config"]) == [SP, S, TP] and ns["config"].mlp_types == ["swiglu"] * 3
                            and any("param_sharing" in w for w in ns["config"].warnings)),
    ("000", 3): _c000_3,
    ("000", 4): lambda ns: (ns["config"].layer_specs[0].params == {"mlp": {"hidden": 2048}}
                            and _att(ns["config"]) == [SP]),
    ("000", 5): lambda ns: [l.attention_type for l in ns["layers"]] == [S, TP] * 4,
    ("000", 7): lambda ns: _att(ns["config"]) == [TP if i % 4 == 3 else S for i in range(24)],
    ("000", 8): lambda ns: [l.attention_type for l in ns["custom_pattern"].generate_layers(12)] == [SP] * 4 + [S] * 4 + [TP] * 2 + [DA] * 2,
    ("000", 9): lambda ns: _att(ns["config"]) == [S, TP, S],
    ("000", 10): lambda ns: "Layer 2: self_sdpa + swiglu" in ns["__stdout__"],
    ("001", 1): _c001_1,
    ("001", 2): _c001_2,
    ("001", 3): _c001_3,
    ("002", 0): lambda ns: _shape(ns["output"]) == (32, 1),
    ("002", 1): lambda ns: (_shape(ns["output"]) == (32, 16, 1) and _shape(ns["next_token"]) == (32, 1, 1)
                            and ns["model"].to_design().layers.mlp == "moe"),
    ("002", 2): lambda ns: (_shape(ns["encoder_output"]) == (32, 16, 64) and _shape(ns["decoder_output"]) == (32, 20, 1)
                            and _shape(ns["output"]) == (32, 20, 1)),
    ("002", 3): lambda ns: (torch.equal(ns["mask"], torch.ones(10, 10).tril().bool())
                            and _shape(ns["attention_output"]) == (2, 4, 10, 16)),
    ("002", 4): _c002_4,
    ("002", 5): lambda ns: ns["model"]._cache.layers[0]["self"].window == 128,
    ("002", 6): _c002_6,
    ("002", 7): lambda ns: ns["attn"].to_design().kv_heads == 8,
    ("002", 8): lambda ns: ns["attn"].to_design().kv_heads == 1,
    ("002", 9): lambda ns: ns["attn"].to_design().kv_heads == 4,
    ("002", 10): _c002_10,
    ("002", 11): lambda ns: (_shape(ns["output"]) == (4, 32, 512) and ns["aux_loss"].dim() == 0
                             and "Output shape: torch.Size([4, 32, 512])" in ns["__stdout__"]),
    ("002", 12): _c002_12,
    ("003", 0): _c003_0,
    ("003", 1): lambda ns: (ns["decoder"].to_design().decoder.n_layers == 12
                            and ns["decoder"].to_design().mlp_hidden == 4096),
    ("003", 2): _c003_2,
    ("004", 0): _c004_0,
    ("004", 1): lambda ns: _shape(ns["encoded"]) == (32, 100, 512),
    ("004", 2): lambda ns: _shape(ns["decoded"]) == (32, 50, 512),
    ("004", 3): lambda ns: (_shape(ns["output"]) == (32, 50, 512) and _shape(ns["encoded"]) == (32, 100, 512)
                            and _shape(ns["decoded"]) == (32, 50, 512)),
    ("004", 10): lambda ns: ns["activation"] is compat.ActivationFunctions.RELU,
    ("004", 19): _c004_19,
    ("004", 24): lambda ns: (ns["model"].to_design().encoder.attention, ns["model"].to_design().decoder.attention)
                 == (S, "causal_linear"),
    ("004", 25): lambda ns: (ns["model"].to_design().encoder.n_layers, ns["model"].to_design().decoder.n_layers) == (12, 6),
}


# ---- the runner -----------------------------------------------------------------------------


def run_seed(seed: str, path: Path, workdir: Path) -> dict[str, list]:
    """Run every block of one seed in one namespace; returns what ran / was skipped."""
    text = path.read_text(encoding="utf-8")
    yaml_blocks = re.findall(r"^```yaml[ \t]*\n(.*?)^```", text, re.S | re.M)
    if seed == "000":  # the config file block 2 loads is the document's own YAML example
        (workdir / "my_config.yaml").write_text(yaml_blocks[0])
    ns: dict[str, Any] = {"__name__": f"seed_{seed}"}
    exec(PRELUDE + SEED_PRELUDE.get(seed, ""), ns)  # noqa: S102
    report: dict[str, list] = {"ran": [], "skipped": [], "meta": [], "errors": []}
    checked: set[int] = set()
    for i, block in enumerate(python_blocks(text)):
        key = (seed, i)
        if key in SKIP:
            report["skipped"].append((i, SKIP[key]))
            continue
        if key in GIVEN:
            exec(GIVEN[key], ns)  # noqa: S102
        code = compile(rewrite_imports(block), f"<seed {seed} block {i}>", "exec")
        meta = key in META
        out = io.StringIO()
        ctx = contextlib.ExitStack()
        if meta:
            ns["device"] = torch.device("meta")
            ctx.enter_context(torch.device("meta"))
            ctx.enter_context(compat.default_device("meta"))
        with ctx, contextlib.redirect_stdout(out):
            if key in EXPECT_ERROR:
                field, numbers = EXPECT_ERROR[key]
                with pytest.raises(DesignError) as exc:
                    exec(code, ns)  # noqa: S102
                assert exc.value.path == field and all(n in exc.value.message for n in numbers), str(exc.value)
                assert "\n" not in str(exc.value)
                report["errors"].append(i)
            else:
                exec(code, ns)  # noqa: S102
        ns["device"] = torch.device("cpu")
        ns["__stdout__"] = out.getvalue()
        report["meta" if meta else "ran"].append(i)
        if key in CHECKS:  # a check returns False or raises when the seed's statement does not hold
            assert CHECKS[key](ns) is not False, f"seed {seed} block {i}: what the seed states does not hold"
        for value in list(ns.values()):
            if isinstance(value, compat._SeedModule) and id(value) not in checked:
                checked.add(id(value))
                actual = sum(p.numel() for p in value.parameters())
                assert actual == expected_params(value), (seed, i, type(value).__name__, value.part)
    return report


@pytest.mark.filterwarnings("ignore:.*param_sharing.*no counterpart")  # seed 000's YAML; asserted in CHECKS
@pytest.mark.parametrize("seed", ["000", "001", "002", "003", "004"])
def test_seed_examples_run_as_written(seed, tmp_path, monkeypatch):
    files = _seed_files()
    assert seed in files, f"seed {seed} missing from {SEEDS_DIR}"
    monkeypatch.chdir(tmp_path)
    report = run_seed(seed, files[seed], tmp_path)
    n = len(python_blocks(files[seed].read_text(encoding="utf-8")))
    assert len(report["ran"]) + len(report["meta"]) + len(report["skipped"]) == n
    print(f"seed {seed}: {n} blocks, {len(report['ran'])} run, {len(report['meta'])} on meta, "
          f"{len(report['skipped'])} skipped ({len(report['errors'])} expected to fail)")


def test_the_lists_name_real_blocks():
    files = _seed_files()
    counts = {s: len(python_blocks(p.read_text(encoding="utf-8"))) for s, p in files.items()}
    for table in (SKIP, GIVEN, META, EXPECT_ERROR, CHECKS):
        for seed, i in table:
            assert seed in counts and 0 <= i < counts[seed], (seed, i)
    assert not set(SKIP) & (set(GIVEN) | set(META) | set(CHECKS))
    assert sum(counts.values()) == 58 and len(SKIP) == 10


def test_from_code_prints_the_design_of_a_seed_script(tmp_path):
    """The migration path: a seed-style script in, its model's design out (CLI)."""
    import subprocess
    import sys

    block = python_blocks(_seed_files()["002"].read_text(encoding="utf-8"))[0]
    script = tmp_path / "snippet.py"
    script.write_text("import torch\n" + block)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "backend", "from-code", str(script)], capture_output=True, text=True,
                          cwd=root, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from backend.spec import parse_design_text

    design = parse_design_text(proc.stdout.split("\n", 1)[1])  # after the "# TransformerModel" header
    assert (design.task, design.input_dim, design.hidden_size, design.output_dim, design.layers.n_layers) == \
        ("regression", 8, 32, 1, 2)
