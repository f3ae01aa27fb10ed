"""The standalone PyTorch file: one script that rebuilds the design's model.

The file is assembled from the runtime modules themselves (``backend/nn``),
so class names, parameter names and shapes are identical to the backend's
model and a state dict loads either way. The ``backend/nn`` contract
(``common.py``) makes this possible: those files import only torch, the
standard library and siblings through one-line ``from .x import A, B``.

Assembly:

1. the modules the design needs: ``common`` and ``model`` always, the module
   of every attention / MLP / norm / positional kind the plan uses, and the
   sibling modules they import (transitively);
2. ordered so that every module comes after the siblings it imports;
3. top-level imports hoisted into one deduplicated block, sibling imports
   removed (the names are already defined above), module docstrings turned
   into section comments;
4. the design and the model config embedded as data.

Safety: user text (name, description, any string in the design) reaches the
file only inside data literals written with :func:`ascii`, which always
yields a valid, ASCII-only Python string literal, whatever the characters
(quotes, backslashes, newlines, NUL, U+2028, lone surrogates). Nothing the
user wrote goes into a docstring, a comment or an identifier, so the file is
valid Python for every valid design; :func:`render` checks it with
``compile`` before returning it.
"""
from __future__ import annotations

import ast
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..plan import Plan, resolve_plan
from ..registry import ATTENTION, CROSS, MLP, NORM, POSITIONAL
from ..spec import Design
from .files import module_name
from .serialize import compact_dict

NN_DIR = Path(__file__).resolve().parent.parent / "nn"
NN_PACKAGE = "backend.nn"
WIDTH = 100
# Names the template defines; a runtime module defining one of them would clash.
TEMPLATE_NAMES = ("DESIGN", "CONFIG", "build_model", "count_parameters", "main")
ALWAYS = ("common", "model")
RULE = "# " + "=" * 76


class ContractError(RuntimeError):
    """A ``backend/nn`` file breaks the inlining contract (a bug, not bad user input)."""


# ---------------------------------------------------------------------------
# Data literals


def literal(value: Any, indent: int = 0, width: int = WIDTH) -> str:
    """A readable Python literal for plain data (dict/list/tuple/str/int/float/bool/None).

    Strings are written with ``ascii()``; long or multi-line strings are split
    into adjacent literals inside parentheses (one constant to the parser).
    """
    one = _one_line(value)
    if indent + len(one) <= width:
        return one
    pad = " " * indent
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = []
        for k, v in value.items():
            key = _one_line(k)
            one_v = _one_line(v)
            text = one_v if indent + 4 + len(key) + 2 + len(one_v) + 1 <= width else literal(v, indent + 4, width)
            items.append(f"{inner}{key}: {text},")
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        if not value:
            return _one_line(value)
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if all(isinstance(v, (int, float, bool, type(None))) for v in value):
            # numbers fill the lines instead of one per line
            rows, cur = [], ""
            for v in value:
                piece = _one_line(v) + ","
                if cur and len(inner) + len(cur) + 1 + len(piece) > width:
                    rows.append(cur)
                    cur = ""
                cur = f"{cur} {piece}" if cur else piece
            rows.append(cur)
            return open_ + "\n" + "\n".join(inner + r for r in rows) + f"\n{pad}{close}"
        items = [f"{inner}{literal(v, indent + 4, width)}," for v in value]
        return open_ + "\n" + "\n".join(items) + f"\n{pad}{close}"
    if isinstance(value, str):
        chunks = _string_chunks(value, max(20, width - indent - 6))
        if len(chunks) > 1:
            return "(\n" + "\n".join(f"{inner}{ascii(c)}" for c in chunks) + f"\n{pad})"
    return one


def _one_line(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(float(value))  # shortest repr: round-trips exactly
        return f'float("{value!r}")'  # inf / -inf / nan
    if isinstance(value, str):
        return ascii(str(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_one_line(k)}: {_one_line(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_one_line(v) for v in value) + "]"
    if isinstance(value, tuple):
        body = ", ".join(_one_line(v) for v in value)
        return f"({body},)" if len(value) == 1 else f"({body})"
    raise TypeError(f"cannot embed {type(value).__name__} as a literal")


def _string_chunks(text: str, width: int) -> list[str]:
    """Split at line ends, then at about ``width`` escaped characters (by code point)."""
    chunks: list[str] = []
    for line in re.split(r"(?<=\n)", text):
        cur = ""
        for ch in line:
            if cur and len(ascii(cur + ch)) - 2 > width:
                chunks.append(cur)
                cur = ""
            cur += ch
        if cur:
            chunks.append(cur)
    return chunks or [""]


# ---------------------------------------------------------------------------
# Runtime modules


@dataclass
class NNModule:
    name: str
    path: Path
    source: str
    tree: ast.Module
    deps: tuple[str, ...]  # sibling modules it imports


def _is_allowed_import(module: str) -> bool:
    top = module.split(".")[0]
    return top == "torch" or top in sys.stdlib_module_names


def read_module(name: str, nn_dir: Path = NN_DIR) -> NNModule:
    path = nn_dir / f"{name}.py"
    if not path.is_file():
        raise ContractError(f"backend/nn/{name}.py does not exist")
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    deps: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level != 1 or not node.module:
                    raise ContractError(f"{path.name}:{node.lineno}: use `from .module import A, B` for siblings")
                if node not in tree.body:
                    raise ContractError(f"{path.name}:{node.lineno}: sibling import inside a block; only top-level `from .x import` can be inlined")
                if node.module not in deps:
                    deps.append(node.module)
            elif not _is_allowed_import(node.module or ""):
                raise ContractError(f"{path.name}:{node.lineno}: imports {node.module!r}; only torch and the standard library are allowed")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_allowed_import(alias.name):
                    raise ContractError(f"{path.name}:{node.lineno}: imports {alias.name!r}; only torch and the standard library are allowed")
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            fn = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if fn in ("import_module", "__import__"):
                raise ContractError(f"{path.name}:{node.lineno}: dynamic import; the standalone file cannot follow it")
    return NNModule(name, path, source, tree, tuple(deps))


def module_of(spec: str) -> str:
    """``"backend.nn.attention:SelfSDPA"`` -> ``"attention"``."""
    mod = spec.partition(":")[0]
    prefix = NN_PACKAGE + "."
    if not mod.startswith(prefix) or "." in mod[len(prefix):]:
        raise ContractError(f"kind module {spec!r} is not a file of backend/nn")
    return mod[len(prefix):]


def modules_for(plan: Plan) -> list[str]:
    """Runtime modules (file stems) the plan's kinds live in, before sibling closure."""
    d = plan.design
    names: list[str] = list(ALWAYS)
    specs = [POSITIONAL[d.positional].module, NORM[d.norm].module]
    for layer in plan.layers:
        specs += [ATTENTION[layer.attention].module, MLP[layer.mlp].module, NORM[layer.norm].module]
        if layer.cross:
            specs.append(CROSS.module)
        if layer.mlp == "moe":
            specs.append(MLP[layer.config["mlp"]["expert"]].module)
    for spec in specs:
        name = module_of(spec)
        if name not in names:
            names.append(name)
    return names


def ordered_modules(roots: Iterable[str], nn_dir: Path = NN_DIR) -> list[NNModule]:
    """The roots plus their sibling imports, each after its dependencies (stable order)."""
    loaded: dict[str, NNModule] = {}
    out: list[NNModule] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in loaded:
            return
        if name in visiting:
            raise ContractError(f"circular sibling imports: {' -> '.join(visiting + [name])}")
        visiting.append(name)
        mod = read_module(name, nn_dir)
        for dep in mod.deps:
            visit(dep)
        visiting.pop()
        loaded[name] = mod
        out.append(mod)

    # `common` first, `model` last among equals: the assembly reads bottom-up.
    roots = list(roots)
    for name in ["common"] + [r for r in roots if r not in ("common", "model")] + (["model"] if "model" in roots else []):
        visit(name)
    return out


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
    names.discard("__all__")
    return names


def check_collisions(modules: list[NNModule]) -> None:
    seen: dict[str, str] = {name: "the export template" for name in TEMPLATE_NAMES}
    for mod in modules:
        for name in sorted(_top_level_names(mod.tree)):
            if name in seen:
                raise ContractError(f"backend/nn/{mod.name}.py and {seen[name]} both define {name!r}; the standalone file needs unique top-level names")
            seen[name] = f"backend/nn/{mod.name}.py"


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.strip().splitlines()]


def strip_module(mod: NNModule) -> tuple[list[str], list[str]]:
    """(body lines without top-level imports / docstring / __all__, hoisted import statements)."""
    lines = mod.source.splitlines()
    drop: set[int] = set()
    hoisted: list[str] = []
    aliases: list[str] = []
    body = mod.tree.body
    doc = ast.get_docstring(mod.tree, clean=True)
    if doc is not None and body and isinstance(body[0], ast.Expr):
        drop.update(range(body[0].lineno - 1, body[0].end_lineno))
    for node in body:
        span = range(node.lineno - 1, node.end_lineno)
        if isinstance(node, ast.ImportFrom) and node.level:
            drop.update(span)
            aliases += [f"{a.asname} = {a.name}" for a in node.names if a.asname and a.asname != a.name]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            drop.update(span)
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                hoisted.append(ast.unparse(node))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            drop.update(span)
        elif isinstance(node, ast.If) and _is_main_guard(node):
            drop.update(span)
    kept = [line for i, line in enumerate(lines) if i not in drop]
    out = [RULE, f"# backend/nn/{mod.name}.py"] + (["#"] + _comment(doc) if doc else []) + [RULE, ""]
    out += aliases
    # collapse the blank runs left where imports were
    for line in kept:
        if not line.strip() and out and not out[-1].strip() and len(out) >= 2 and not out[-2].strip():
            continue
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return out, hoisted


def _is_main_guard(node: ast.If) -> bool:
    t = node.test
    return isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"


def _sort_imports(stmts: list[str]) -> list[str]:
    """Deduplicated imports, ``from x import`` of one module merged; stdlib block, then torch."""
    plain: set[str] = set()
    froms: dict[str, set[str]] = {}
    for stmt in stmts:
        node = ast.parse(stmt).body[0]
        if isinstance(node, ast.ImportFrom):
            names = froms.setdefault(node.module or "", set())
            names.update(a.name if not a.asname else f"{a.name} as {a.asname}" for a in node.names)
        else:
            plain.update(ast.unparse(ast.Import(names=[a])) for a in node.names)

    def block(is_torch: bool) -> list[str]:
        mine = lambda mod: (mod.split(".")[0] == "torch") == is_torch  # noqa: E731
        out = sorted(p for p in plain if mine(p.split()[1]))
        out += [f"from {m} import {', '.join(sorted(froms[m]))}" for m in sorted(froms) if mine(m)]
        return out

    std, torch_ = block(False), block(True)
    return std + ([""] if std and torch_ else []) + torch_


# ---------------------------------------------------------------------------
# The backend side: config and model (imported lazily: they need torch)


def model_config(plan: Plan) -> dict[str, Any]:
    from ..build import model_config as backend_model_config

    return backend_model_config(plan)


def build_backend_model(design: Design | Plan, device: str = "meta"):
    """The backend's model for ``design`` (``backend.build.build_model``)."""
    from ..build import build_model

    return build_model(design, device=device)


# ---------------------------------------------------------------------------
# The file

HEADER = '''\
"""Standalone PyTorch model, exported by the transformer architecture designer.

Plain PyTorch: this file imports only torch and the standard library.

    python {module}.py                 # build on the meta device, print the parameter count
    python {module}.py --device cpu    # build with real weights

    from {module} import build_model
    model = build_model(device="cpu")

``DESIGN`` below is the design this file was made from (load it back with the
designer); ``CONFIG`` is the model configuration the classes read. Class,
parameter and buffer names match the designer's own model, so a state dict
saved from either loads into the other. The runtime classes follow, one
section per source module, then ``build_model``.
"""
'''

ENTRY = '''\
# ============================================================================
# Entry points
# ============================================================================


def build_model(device: str | torch.device | None = None, dtype: torch.dtype | None = None, init: bool = True) -> nn.Module:
    """The model described by CONFIG.

    ``device``: "cpu" (default), "cuda", ... or "meta" (shapes only: nothing is
    allocated or initialised). Real weights get the designer's initialisation
    (``Transformer.init_weights``) unless ``init`` is False.
    """
    device = torch.device(device if device is not None else "cpu")
    with torch.device(device):
        model = Transformer(CONFIG)
    if device.type != "meta" and init:
        model.init_weights()
    if dtype is not None:
        model = model.to(dtype)
    return model


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a shared or tied tensor counts once)."""
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the exported model and print its parameter count.")
    parser.add_argument("--device", default="meta", help="meta (no memory, default), cpu, cuda, ...")
    args = parser.parse_args(argv)
    model = build_model(device=args.device)
    print(f"parameters: {count_parameters(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def render(design: Design | Plan, *, nn_dir: Path = NN_DIR) -> str:
    """The standalone Python source for ``design`` (validated with ``compile``)."""
    plan = design if isinstance(design, Plan) else resolve_plan(design)
    cfg = model_config(plan)
    modules = ordered_modules(modules_for(plan), nn_dir)
    check_collisions(modules)
    sections: list[str] = []
    hoisted: list[str] = ["import argparse", "import sys", "import torch", "from torch import nn"]
    for mod in modules:
        body, imports = strip_module(mod)
        sections.append("\n".join(body))
        hoisted += imports
    data = [
        RULE,
        "# The design (data only; load it back with the designer) and the model config",
        RULE,
        "",
        f"DESIGN = {literal(compact_dict(plan.design))}",
        "",
        f"CONFIG = {literal(cfg)}",
    ]
    # The file name is a slug of the design name: [a-z0-9_] only, safe in a docstring.
    module = module_name(plan.design.name)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", module):
        raise ContractError(f"unsafe module name {module!r}")
    text = (
        HEADER.replace("{module}", module)
        + "from __future__ import annotations\n\n"
        + "\n".join(_sort_imports(hoisted))
        + "\n\n\n"
        + "\n".join(data)
        + "\n\n\n"
        + "\n\n\n".join(sections)
        + "\n\n\n"
        + ENTRY
    )
    try:
        compile(text, "<standalone export>", "exec", dont_inherit=True)
    except SyntaxError as exc:  # a bug in the exporter or a runtime module, never user input
        raise ContractError(f"the generated file does not compile: {exc}") from None
    return text


__all__ = ["render", "literal", "modules_for", "ordered_modules", "build_backend_model", "ContractError"]
