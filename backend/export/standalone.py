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
3. pruned to what the design uses (:func:`prune`): a class registered with
   ``@register(category, *names)`` stays only when the design uses one of its
   kinds (``backend.build.kinds_used``), then any other top-level function,
   class or assignment that nothing kept refers to goes too (``model.py``,
   ``REGISTRY``, ``register``, ``LayerContext`` and imports always stay); the
   kept statements are copied as their original source text, comments and
   docstrings included;
4. top-level imports hoisted into one deduplicated block, sibling imports
   removed (the names are already defined above), module docstrings turned
   into section comments;
5. the design and the model config embedded as data.

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
    # top-level statements that belong to a plugin's declaration side (imports of backend.*
    # outside backend.nn and what uses them): never inlined
    excluded: frozenset[int] = frozenset()

    @property
    def label(self) -> str:
        return f"backend/nn/{self.name}.py" if self.path.parent == NN_DIR else f"plugin {self.path.name}"


def _nn_absolute(module: str | None) -> str | None:
    """``"backend.nn.common"`` -> ``"common"`` (a plugin's import of a runtime module), else None."""
    prefix = NN_PACKAGE + "."
    if module and module.startswith(prefix) and "." not in module[len(prefix):]:
        return module[len(prefix):]
    return None


def _declaration_side(tree: ast.Module) -> frozenset[int]:
    """Indices of a plugin's statements that import from ``backend`` (outside ``backend.nn``) or use what
    those define, transitively: the kind declaration and its registration, which the export leaves out."""
    tainted: set[str] = set()
    out: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i, node in enumerate(tree.body):
            if i in out:
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] == "backend" and _nn_absolute(m) is None for m in mods):
                    out.add(i)
                    tainted.update((a.asname or a.name).split(".")[0] for a in node.names)
                    changed = True
                continue
            refs = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if refs & tainted:
                out.add(i)
                tainted.update(_defined_names(node) or ())
                changed = True
    return frozenset(out)


def _is_allowed_import(module: str) -> bool:
    top = module.split(".")[0]
    return top == "torch" or top in sys.stdlib_module_names


def read_module(name: str, nn_dir: Path = NN_DIR) -> NNModule:
    from ..plugins import plugin_path

    plugin = plugin_path(name)
    path = plugin if plugin is not None else nn_dir / f"{name}.py"
    if not path.is_file():
        raise ContractError(f"backend/nn/{name}.py does not exist")
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    excluded = _declaration_side(tree) if plugin is not None else frozenset()
    skip = {id(sub) for i in excluded for sub in ast.walk(tree.body[i])}
    deps: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if plugin is not None and isinstance(node, ast.ImportFrom) and _nn_absolute(node.module):
            if node not in tree.body:
                raise ContractError(f"{path.name}:{node.lineno}: import runtime modules at the top level only")
            if _nn_absolute(node.module) not in deps:
                deps.append(_nn_absolute(node.module))
            continue
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
    return NNModule(name, path, source, tree, tuple(deps), excluded)


def module_of(spec: str) -> str:
    """``"backend.nn.attention:SelfSDPA"`` -> ``"attention"``; a loaded plugin's module keeps its name."""
    from ..plugins import plugin_path

    mod = spec.partition(":")[0]
    if plugin_path(mod) is not None:
        return mod
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
        specs += [MLP[sub].module for sub in MLP[layer.mlp].sub_kinds(layer.config.get("mlp", {}))]
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
                raise ContractError(f"{mod.label} and {seen[name]} both define {name!r}; the standalone file needs unique top-level names")
            seen[name] = mod.label


# ---------------------------------------------------------------------------
# Pruning: only the classes and helpers the design uses

# Always kept, whatever refers to them: the registry machinery the model relies on.
ALWAYS_KEEP = ("REGISTRY", "register", "LayerContext")


@dataclass
class Pruning:
    """What :func:`prune` decided, per module: top-level statements (indices
    into ``tree.body``) to leave out, and dict assignments to rewrite."""

    drop: dict[str, set[int]]
    rewrite: dict[str, dict[int, str]]

    def dropped(self, mod: str, index: int) -> bool:
        return index in self.drop.get(mod, set())


def registered_kinds(node: ast.stmt) -> list[tuple[str, str]] | None:
    """``(category, kind)`` pairs of a class decorated ``@register("cat", "kind", ...)``.

    None when the statement is not such a class, or when a ``register`` call
    has anything but string literals (then it cannot be pruned by kind).
    """
    if not isinstance(node, ast.ClassDef):
        return None
    kinds: list[tuple[str, str]] = []
    for dec in node.decorator_list:
        if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name) and dec.func.id == "register":
            args = dec.args
            if dec.keywords or len(args) < 2 or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
                return None
            cat = args[0].value
            kinds += [(cat, a.value) for a in args[1:]]
    return kinds or None


def _defined_names(node: ast.stmt) -> set[str] | None:
    """Names a prunable top-level statement defines; None when it is not prunable."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        names: set[str] = set()
        for t in node.targets:
            elts = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
            if not all(isinstance(e, ast.Name) for e in elts):
                return None
            names.update(e.id for e in elts)
        return names
    if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
        return {node.target.id}
    return None


def _skipped_by_strip(node: ast.stmt, index: int) -> bool:
    """Statements :func:`strip_module` removes anyway (imports, docstring, ``__all__``, main guard)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return True
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
        return True
    return isinstance(node, ast.If) and _is_main_guard(node)


def _dict_value(node: ast.stmt) -> ast.Dict | None:
    """The dict literal of ``NAME = {...}`` (no ``**`` entries), else None."""
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if isinstance(value, ast.Dict) and all(k is not None for k in value.keys):
        return value
    return None


def _references(node: ast.stmt) -> tuple[set[str], set[str]]:
    """(hard, soft) names a statement refers to (``Name`` ids and ``Attribute`` attrs).

    Soft: a bare name used as a value of a top-level dict literal (``{"mlp":
    DenseMLP}``); such an entry can be left out with the class it names.
    """
    soft_nodes: set[int] = set()
    d = _dict_value(node)
    if d is not None:
        soft_nodes = {id(v) for v in d.values if isinstance(v, ast.Name)}
    hard: set[str] = set()
    soft: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (soft if id(sub) in soft_nodes else hard).add(sub.id)
        elif isinstance(sub, ast.Attribute):
            hard.add(sub.attr)
    return hard, soft


def prune(modules: list[NNModule], used: set[tuple[str, str]]) -> Pruning:
    """Which top-level statements of ``modules`` the design does not need.

    ``used``: the ``(category, kind)`` pairs the design's model config uses
    (``backend.build.kinds_used``). Kept: every statement of ``model.py``;
    ``REGISTRY`` / ``register`` / ``LayerContext``; classes registered for a
    used kind (or registered in a way that cannot be read statically); any
    top-level statement that is not a plain definition; and, transitively,
    every definition a kept statement refers to by name or attribute. A class
    registered only for unused kinds is left out even when a kept dict
    literal names it as a value: that dict entry is left out with it.
    """
    # statements are keyed (module name, index in its tree.body)
    nodes: dict[tuple[str, int], ast.stmt] = {}
    defs: dict[str, list[tuple[str, int]]] = {}
    dead: set[tuple[str, int]] = set()  # registered for unused kinds only
    roots: list[tuple[str, int]] = []
    excluded: list[tuple[str, int]] = []
    for mod in modules:
        for i, node in enumerate(mod.tree.body):
            if i in mod.excluded:
                excluded.append((mod.name, i))
                continue
            if _skipped_by_strip(node, i):
                continue
            key = (mod.name, i)
            nodes[key] = node
            names = _defined_names(node)
            if names is None or mod.name == "model":
                roots.append(key)
            kinds = registered_kinds(node)
            if kinds is not None:
                if any(k in used for k in kinds):
                    roots.append(key)
                else:
                    dead.add(key)
            for name in names or ():
                defs.setdefault(name, []).append(key)
    for name in ALWAYS_KEEP:
        roots += defs.get(name, [])

    kept: set[tuple[str, int]] = set()
    work = list(roots)
    while work:
        key = work.pop()
        if key in kept:
            continue
        kept.add(key)
        hard, soft = _references(nodes[key])
        for name in hard:
            work += defs.get(name, [])
        for name in soft:
            work += [e for e in defs.get(name, []) if e not in dead]

    pruning = Pruning(drop={}, rewrite={})
    for key in list(nodes) + excluded:
        if key not in kept:
            pruning.drop.setdefault(key[0], set()).add(key[1])
    kept_names = {name for key in kept for name in (_defined_names(nodes[key]) or ())}
    mod_by_name = {m.name: m for m in modules}
    for key in kept:
        node = nodes[key]
        d = _dict_value(node)
        if d is None:
            continue
        gone = [i for i, v in enumerate(d.values) if isinstance(v, ast.Name) and v.id in defs and v.id not in kept_names]
        if gone:
            pruning.rewrite.setdefault(key[0], {})[key[1]] = _dict_without(mod_by_name[key[0]].source, node, d, set(gone))
    return pruning


def _dict_without(source: str, node: ast.stmt, d: ast.Dict, skip: set[int]) -> str:
    """``NAME = {...}`` rewritten without the entries at ``skip`` (source text of the rest)."""
    seg = lambda n: ast.get_source_segment(source, n)  # noqa: E731
    head = seg(node.target) if isinstance(node, ast.AnnAssign) else " = ".join(seg(t) for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        head += f": {seg(node.annotation)}"
    items = [f"{seg(k)}: {seg(v)}" for i, (k, v) in enumerate(zip(d.keys, d.values)) if i not in skip]
    one = f"{head} = {{{', '.join(items)}}}"
    if len(one) <= WIDTH and "\n" not in one:
        return one
    return f"{head} = {{\n" + "".join(f"    {item},\n" for item in items) + "}"


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.strip().splitlines()]


def strip_module(mod: NNModule, pruning: Pruning | None = None) -> tuple[list[str], list[str]]:
    """(body lines without top-level imports / docstring / __all__, hoisted import statements).

    With ``pruning``, the statements it drops go too, with the comment lines
    right above them (no blank line between); a comment block standing on its
    own (a section heading) goes when every definition under it, up to the
    next such block, was dropped. Dict assignments it rewrites are replaced.
    Everything kept is the module's own source text.
    """
    lines = mod.source.splitlines()
    drop: set[int] = set()
    replace: dict[int, str] = {}
    hoisted: list[str] = []
    aliases: list[str] = []
    body = mod.tree.body
    doc = ast.get_docstring(mod.tree, clean=True)
    for i, node in enumerate(body):
        if not _skipped_by_strip(node, i) or i in mod.excluded:
            continue
        drop.update(range(node.lineno - 1, node.end_lineno))
        if isinstance(node, ast.ImportFrom) and (node.level or _nn_absolute(node.module)):
            aliases += [f"{a.asname} = {a.name}" for a in node.names if a.asname and a.asname != a.name]
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
            hoisted.append(ast.unparse(node))
    if pruning is not None:
        drop |= _pruned_lines(mod, lines, pruning)
        for index, text in pruning.rewrite.get(mod.name, {}).items():
            node = body[index]
            first = _first_line(node)
            drop.update(range(first, node.end_lineno))
            replace[first] = text
    kept: list[str] = []
    for i, line in enumerate(lines):
        if i in replace:
            kept += replace[i].splitlines()
        elif i not in drop:
            kept.append(line)
    out = [RULE, f"# {mod.label}"] + (["#"] + _comment(doc) if doc else []) + [RULE, ""]
    out += aliases
    # collapse the blank runs left where imports were
    for line in kept:
        if not line.strip() and out and not out[-1].strip() and len(out) >= 2 and not out[-2].strip():
            continue
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return out, hoisted


def _first_line(node: ast.stmt) -> int:
    """0-based index of a statement's first line, decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1


def _pruned_lines(mod: NNModule, lines: list[str], pruning: Pruning) -> set[int]:
    """Line indices (0-based) of the statements ``pruning`` drops, with their comments."""
    body = mod.tree.body
    spans: list[tuple[int, int]] = []  # (first, last) line index of each statement, decorators included
    for node in body:
        spans.append((_first_line(node), node.end_lineno - 1))
    inside = {i for first, last in spans for i in range(first, last + 1)}
    is_comment = lambda i: 0 <= i < len(lines) and lines[i].startswith("#") and i not in inside  # noqa: E731

    drop: set[int] = set()
    attached: set[int] = set()
    for index, (first, last) in enumerate(spans):
        above = []
        i = first - 1
        while is_comment(i):
            above.append(i)
            i -= 1
        attached.update(above)
        if pruning.dropped(mod.name, index):
            drop.update(range(first, last + 1))
            drop.update(above)
    # free-standing comment blocks (section headings): each governs the
    # statements after it up to the next block; dropped when all of those were
    free = [i for i in range(len(lines)) if is_comment(i) and i not in attached]
    blocks: list[list[int]] = []
    for i in free:
        if blocks and blocks[-1][-1] == i - 1:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    for b, block in enumerate(blocks):
        end = blocks[b + 1][0] if b + 1 < len(blocks) else len(lines)
        governed = [index for index, (first, _) in enumerate(spans) if block[-1] < first < end]
        if governed and all(pruning.dropped(mod.name, index) for index in governed):
            drop.update(block)
    return drop


def _has_code(mod: NNModule, pruning: Pruning) -> bool:
    """Whether anything of ``mod`` besides imports and its docstring survives pruning."""
    return any(not _skipped_by_strip(node, i) and not pruning.dropped(mod.name, i) and i not in mod.excluded
               for i, node in enumerate(mod.tree.body))


def _is_main_guard(node: ast.If) -> bool:
    t = node.test
    return isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"


def used_imports(stmts: list[str], body: str) -> list[str]:
    """The import statements (one alias each on return) whose bound name ``body`` refers to.

    A bound name is the alias, else the first component of the module path
    (``import torch.utils.checkpoint`` binds ``torch``). Referring to it means
    any ``Name`` node in ``body``'s AST, annotations included, so an import
    left out here could only have been dead code in the kept classes.
    """
    used = {n.id for n in ast.walk(ast.parse(body)) if isinstance(n, ast.Name)}
    out: list[str] = []
    for stmt in stmts:
        node = ast.parse(stmt).body[0]
        for a in node.names:
            bound = a.asname or a.name.split(".")[0]
            if bound not in used:
                continue
            if isinstance(node, ast.ImportFrom):
                out.append(ast.unparse(ast.ImportFrom(module=node.module, names=[a], level=node.level)))
            else:
                out.append(ast.unparse(ast.Import(names=[a])))
    return out


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


def kinds_used(cfg: dict[str, Any]) -> set[tuple[str, str]]:
    from ..build import kinds_used as backend_kinds_used

    return backend_kinds_used(cfg)


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
    pruning = prune(modules, kinds_used(cfg))
    sections: list[str] = []
    hoisted: list[str] = ["import argparse", "import sys", "import torch", "from torch import nn"]
    for mod in modules:
        section, imports = strip_module(mod, pruning)
        hoisted += imports
        if _has_code(mod, pruning):
            sections.append("\n".join(section))
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
    body = "\n".join(data) + "\n\n\n" + "\n\n\n".join(sections) + "\n\n\n" + ENTRY
    text = (
        HEADER.replace("{module}", module)
        + "from __future__ import annotations\n\n"
        + "\n".join(_sort_imports(used_imports(hoisted, body)))
        + "\n\n\n"
        + body
    )
    try:
        compile(text, "<standalone export>", "exec", dont_inherit=True)
    except SyntaxError as exc:  # a bug in the exporter or a runtime module, never user input
        raise ContractError(f"the generated file does not compile: {exc}") from None
    return text


__all__ = ["render", "literal", "modules_for", "ordered_modules", "prune", "build_backend_model", "ContractError"]
