"""``python -m backend``: the command-line interface (DESIGN.md section 6).

Every command takes a design file or a preset name. Bad input prints one line
``error: <field path>: <what is wrong>`` on stderr and exits 2; no traceback
(set ``BACKEND_DEBUG=1`` to see one). Heavy imports (torch) happen only inside
the commands that need them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from .errors import DesignError, short_repr

DTYPES = ("fp32", "bf16", "fp16", "int8")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"error: {self.prog}: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # also Python's 4,300-digit limit on int()
        raise argparse.ArgumentTypeError(f"must be an integer, got {short_repr(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {short_repr(value)}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m backend", description="Transformer architecture designer")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="load a file that defines and registers layer kinds (docs/KINDS.md); repeatable; "
                        "also BACKEND_PLUGINS=a.py:b.py")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("plan", help="print the resolved table of executed layers")
    s.add_argument("design", help="design file (YAML/JSON) or preset name")
    s.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("presets", help="list presets").add_argument("--json", action="store_true")
    sub.add_parser("schema", help="print the design JSON Schema")
    sub.add_parser("kinds", help="print the layer registry (kinds and their parameters) as JSON")

    s = sub.add_parser("validate", help="check a design; exit 0 when valid")
    s.add_argument("design")

    s = sub.add_parser("analyze", help="parameters, FLOPs and memory")
    s.add_argument("design")
    s.add_argument("--seq-len", type=_positive, default=None, help="sequence length (default max_seq_len)")
    s.add_argument("--batch", type=_positive, default=1)
    s.add_argument("--dtype", choices=DTYPES, default="bf16", help="dtype for memory figures")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("plan-training", help="per-GPU memory, fit, FLOP conventions and time of a parallel training layout")
    s.add_argument("design")
    s.add_argument("--gpu", default="h100-sxm", help="GPU from the catalogue (backend/training/hardware.py)")
    s.add_argument("--gpus", type=_positive, default=8, help="number of GPUs (dp x tp x pp)")
    s.add_argument("--tp", type=_positive, default=1, help="tensor-parallel degree")
    s.add_argument("--sp", action="store_true", help="sequence parallelism (with tp > 1)")
    s.add_argument("--pp", type=_positive, default=1, help="pipeline-parallel degree (1F1B schedule)")
    s.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=1, help="ZeRO stage (3 = FSDP full sharding)")
    s.add_argument("--recompute", choices=("none", "selective", "full"), default="selective")
    s.add_argument("--seq-len", type=_positive, default=None, help="training sequence length (default max_seq_len)")
    s.add_argument("--micro-batch", type=_positive, default=1, help="sequences per micro-batch per GPU")
    s.add_argument("--global-batch", type=_positive, default=1024, help="sequences per optimizer step")
    s.add_argument("--tokens", type=_positive_float, default=1e12, help="training tokens (e.g. 1e12)")
    s.add_argument("--mfu", type=_positive_float, default=0.4, help="model FLOPs utilisation assumed for time (0-1)")
    s.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="training precision")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("smoke", help="build real weights and run the smoke test")
    s.add_argument("design")
    s.add_argument("--scaled", action="store_true", help="run the width-scaled smoke when the full model exceeds the budget")
    s.add_argument("--budget-gb", type=float, default=None, help="memory budget in GiB (default: a safe fraction of free RAM)")
    s.add_argument("--seq-len", type=int, default=None, help="sequence length to run (default min(max_seq_len, 32)); "
                   "a length the model refuses (past a learned position table) is an error")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("probe", help="train designs briefly on a recall / copy / text probe and compare")
    s.add_argument("design", nargs="+", help="design files or preset names")
    s.add_argument("--task", choices=("mqar", "copy", "induction", "text"), default="mqar")
    s.add_argument("--steps", type=_positive, default=None, help="AdamW steps (default 800)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=_positive, default=None, help="sequences per step (default 32)")
    s.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default 1e-3)")
    s.add_argument("--max-params", type=_positive, default=None,
                   help="width-scale designs with more parameters than this (default 2,000,000)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("export", help="export JSON, YAML or a standalone PyTorch file")
    s.add_argument("design")
    s.add_argument("--format", choices=("json", "yaml", "python", "train", "hf"), required=True,
                   help="train: a standalone train.py (torchrun, DDP / FSDP2) embedding the python file; "
                        "hf: a Hugging Face config.json (llama / mistral / qwen2 / qwen3 / mixtral / gpt2 shapes)")
    s.add_argument("--resolved", action="store_true", help="JSON/YAML: write the explicit per-layer form")
    s.add_argument("-o", "--output", default=None, help="output path (default exports/<name>.<ext>; '-' for stdout)")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")

    s = sub.add_parser("from-code", help="print the design(s) a seed-style Python script builds (migration)")
    s.add_argument("script", help="a Python file written against the seed systems' APIs")
    s.add_argument("--quiet", action="store_true", help="drop the script's own prints (default: sent to stderr)")
    s.add_argument("--compact", action="store_true", help="leave out fields that have their default value")
    s.add_argument("--meta", action="store_true", help="build the script's seed models on the meta device (no weights; "
                                                         "for scripts that only construct models)")

    s = sub.add_parser("import-hf", help="the design of a Hugging Face config.json (see backend/hf for the model types)")
    s.add_argument("config", help="a Hugging Face config.json")
    s.add_argument("-o", "--output", default="-", help="output path (default '-': stdout)")
    s.add_argument("--format", choices=("yaml", "json"), default=None, help="default: from the output suffix, else YAML")
    s.add_argument("--exact", action="store_true", help="refuse configs that need an approximation (e.g. Gemma's embedding scale)")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")
    s.add_argument("--weights", nargs="+", default=None, metavar="FILE",
                   help="a local checkpoint: model.safetensors, its shards, or model.safetensors.index.json; "
                        "writes our state dict (loads strictly into the design's model and its export)")
    s.add_argument("--weights-out", default=None, metavar="PATH",
                   help="where the converted weights go (default: the design path with .safetensors)")

    s = sub.add_parser("library", help="shared design library")
    lib = s.add_subparsers(dest="library_command", required=True, parser_class=_Parser)
    x = lib.add_parser("save", help="save a design as a new revision")
    x.add_argument("design")
    x.add_argument("--author", default=os.environ.get("USER", "anonymous"))
    x.add_argument("-m", "--message", default="")
    x.add_argument("--name", default=None, help="library name (default: the design's name)")
    x = lib.add_parser("list", help="list designs")
    x.add_argument("--search", default=None)
    x.add_argument("--json", action="store_true")
    x = lib.add_parser("show", help="print a revision as YAML")
    x.add_argument("name")
    x.add_argument("--revision", type=_positive, default=None)
    x = lib.add_parser("diff", help="diff two revisions (plan and numbers)")
    x.add_argument("name")
    x.add_argument("rev_a", type=_positive)
    x.add_argument("rev_b", type=_positive)
    x.add_argument("--json", action="store_true")
    x = lib.add_parser("delete", help="delete a design and all its revisions")
    x.add_argument("name")
    x.add_argument("--yes", action="store_true", help="confirm")

    s = sub.add_parser("patterns", help="custom layer patterns in the design library")
    pat = s.add_subparsers(dest="patterns_command", required=True, parser_class=_Parser)
    x = pat.add_parser("list", help="built-in and library patterns")
    x.add_argument("--json", action="store_true")
    x = pat.add_parser("save", help="save a stack's rules as a named pattern (a new revision)")
    x.add_argument("design")
    x.add_argument("--name", required=True, help="pattern name, e.g. team/hybrid-4")
    x.add_argument("--stack", default="layers", help="layers | encoder | decoder (default: layers)")
    x.add_argument("--author", default=os.environ.get("USER", "anonymous"))
    x.add_argument("-m", "--message", default="")
    x.add_argument("--description", default="")
    x = pat.add_parser("show", help="print a pattern's definition as YAML")
    x.add_argument("name")
    x.add_argument("--revision", type=int, default=None)
    x = pat.add_parser("delete", help="delete a pattern and all its revisions")
    x.add_argument("name")
    x.add_argument("--yes", action="store_true", help="confirm")
    return p


def _plan(args: argparse.Namespace) -> int:
    from .plan import resolve_plan

    plan = resolve_plan(args.design)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    d = plan.design
    print(f"{d.name}: {d.architecture}, task {d.task}, hidden {d.hidden_size}, heads {d.n_heads}/{d.kv_heads} kv")
    for name, st in plan.stacks.items():
        r = d.stacks()[name].repeat
        sharing = {"none": "no sharing", "grouped": f"grouped {r.groups} x {r.group_factors}"}.get(r.mode, f"{r.mode} x{r.factor}")
        print(f"\n[{name}] {st.n_unique} unique -> {st.depth} executed ({sharing}){' causal' if st.causal else ''}")
        print(f"{'exec':>5} {'uniq':>5}  {'attention':<14} {'mlp':<8} {'norm':<9} params")
        for layer in st.executed:
            extra = json.dumps(layer.params, sort_keys=True) if layer.params else ""
            print(f"{layer.index:>5} {layer.unique_index:>5}  {layer.attention:<14} {layer.mlp:<8} {layer.norm:<9} {extra}")
    for w in plan.warnings:
        print(f"warning: {w}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from .presets import list_presets, preset_files
    from .spec import parse_design_text

    if args.json:
        print(json.dumps(list_presets()))
        return 0
    for name, path in preset_files().items():
        try:
            d = parse_design_text(path.read_bytes(), "yaml", source=str(path))
            summary = f"{d.architecture:<16} {d.description.splitlines()[0] if d.description else ''}"
        except DesignError as exc:
            summary = f"INVALID: {exc}"
        print(f"{name:<28} {summary}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from .spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _kinds(args: argparse.Namespace) -> int:
    from .registry import schema_json

    print(json.dumps(schema_json(), indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .plan import resolve_plan

    plan = resolve_plan(args.design)
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"ok: {plan.design.name}")
    return 0


def _import_hf(args: argparse.Namespace) -> int:
    """Hugging Face config.json -> a validated design, YAML or JSON; approximations noted on stderr."""
    from pathlib import Path

    from .export.files import atomic_write
    from .hf import import_hf_notes
    from .spec import design_from_dict, read_document

    config = read_document(args.config)
    data, notes = import_hf_notes(config, exact=args.exact)
    design = design_from_dict(data)
    fmt = args.format or ("json" if args.output.lower().endswith(".json") else "yaml")
    text = design.to_json() if fmt == "json" else design.to_yaml()
    for note in notes:
        print(f"note: not modelled: {note}", file=sys.stderr)
    if args.output != "-" and Path(args.output).exists() and not args.force:
        raise DesignError(args.output, "already exists; pass --force to overwrite it")
    if args.weights:  # convert and check before anything is written, so a bad checkpoint leaves no design file
        from .hf.weights import convert, write_weights

        if args.weights_out is None and args.output == "-":
            raise DesignError("--weights-out", "is required when the design goes to stdout (-o -)")
        wpath = Path(args.weights_out) if args.weights_out else Path(args.output).with_suffix(".safetensors")
        if wpath.exists() and not args.force:
            raise DesignError(str(wpath), "already exists; pass --force to overwrite it")
        write_weights(convert(config, design, args.weights), wpath, force=args.force)
        print(f"wrote {wpath}", file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        atomic_write(Path(args.output), text.encode("utf-8"), force=args.force)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module, __package__), func)(args)

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": _plan,
    "presets": _presets,
    "schema": _schema,
    "kinds": _kinds,
    "validate": _validate,
    "analyze": _lazy(".analysis.report", "cli_analyze"),
    "smoke": _lazy(".analysis.smoke", "cli_smoke"),
    "probe": _lazy(".probe.runner", "cli_probe"),
    "plan-training": _lazy(".training.report", "cli_plan_training"),
    "export": _lazy(".export", "cli_export"),
    "library": _lazy(".library", "cli_library"),
    "from-code": _lazy(".seedcode", "cli_from_code"),
    "import-hf": _import_hf,
    "patterns": _lazy(".patterns", "cli_patterns"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .plugins import load_env, load_plugin

        load_env()
        for path in args.plugin:
            load_plugin(path)
        return COMMANDS[args.command](args)
    except DesignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for the user
        if os.environ.get("BACKEND_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (set BACKEND_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
