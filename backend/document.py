"""YAML / JSON documents -> plain data, with limits that act while parsing.

An upload or file is checked on its bytes first (size, NUL bytes, UTF-8), then
parsed with bounds enforced as the parser goes, so a hostile document is
rejected after a bounded amount of work instead of after building it whole:

* YAML: libyaml's event parser (PyYAML's pure-Python one when libyaml is
  missing) under PyYAML's Python composer, which counts nodes and nesting as
  it composes (``MAX_NODES``, ``MAX_DEPTH``). libyaml's own composer is not
  used: it recurses in C and crashes the process on ``[[[[...`` (seen with
  PyYAML 6.0.3), and cannot be stopped after N nodes. Measured on this
  machine: a 3.9 MB YAML list is rejected in ~0.8 s CPU / ~90 MB peak RSS
  instead of 43 s / 870 MB with a full ``safe_load``.
* JSON: the C decoder, counting members in ``object_pairs_hook``.
* Both: a duplicate key in a mapping is an error naming the key (the last
  one no longer wins silently); after parsing, the value count including
  YAML alias expansion is bounded again (alias bombs compose small).

No torch, no pydantic: :mod:`backend.spec` validates the data.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Union

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode
from yaml.resolver import Resolver

from .errors import DesignError, short_repr

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # values in a document; a 1,024-layer explicit design has ~20,000
MAX_DEPTH = 64  # nesting; a design nests 6 deep

try:  # libyaml's event parser; pure Python otherwise (same results, several times slower)
    from yaml.cyaml import CParser as _EventParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _EventParser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: Any):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _TooLarge(Exception):
    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int | None = None):
        self.key, self.line = key, line
        super().__init__(key)


class _BoundedLoader(Composer, SafeConstructor, Resolver, _EventParser):
    """Safe YAML loader: Python composer (bounded) over the event parser; ``1e-5`` is a float (YAML 1.2)."""

    def __init__(self, stream: Any):
        _EventParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooLarge(f"has more than {MAX_NODES} values; designs are far smaller")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # the document's root is at depth 1 here, 0 in _check_size
                raise _TooLarge("is nested too deeply")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # Duplicates among the mapping's own keys; keys brought in by a ``<<`` merge
        # may be overridden, as YAML's merge key intends.
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
                except TypeError:  # unhashable: the base class reports it
                    pass
        return super().construct_mapping(node, deep=deep)


_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _json_pairs(counter: list[int]):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counter[0] += len(pairs) + 1
        if counter[0] > MAX_NODES:
            raise _TooLarge(f"has more than {MAX_NODES} values; designs are far smaller")
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise _DuplicateKey(key)
            out[key] = value
        return out

    return hook


def _check_bytes(text: str | bytes, source: str) -> str:
    """Size, binary and encoding checks on the raw input -> text."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise DesignError(source, f"is {len(text)} bytes; designs are limited to {MAX_FILE_BYTES}")
        if b"\x00" in text:
            raise DesignError(source, "is a binary file, not YAML or JSON")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DesignError(source, f"is not UTF-8 text (byte {exc.start})") from None
    if len(text) > MAX_FILE_BYTES:
        raise DesignError(source, f"is {len(text)} characters; designs are limited to {MAX_FILE_BYTES}")
    if "\x00" in text:
        raise DesignError(source, "is a binary file, not YAML or JSON")
    if not text.strip():
        raise DesignError(source, "is empty; a design needs at least `layers: {n_layers: N}`")
    return text


def parse_document(text: str | bytes, fmt: str | None = None, source: str = "<text>") -> Any:
    """YAML (safe, bounded) or JSON text -> plain data; ``fmt`` 'yaml', 'json' or None (sniffed)."""
    text = _check_bytes(text, source)
    if fmt is None:
        fmt = "json" if text.lstrip()[:1] in "{[" else "yaml"
    try:
        if fmt == "json":
            data = json.loads(text, object_pairs_hook=_json_pairs([0]))
        else:
            loader = _BoundedLoader(text)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except _TooLarge as exc:
        raise DesignError(source, exc.message) from None
    except _DuplicateKey as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise DesignError(source, f"duplicate key {short_repr(exc.key)}{where}; each key may appear once") from None
    except json.JSONDecodeError as exc:
        raise DesignError(source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "python/" in str(exc) or "!!python" in text:
            problem = "Python object tags are not allowed (the file is loaded with safe_load)"
        raise DesignError(source, f"invalid YAML{where}: {short_repr(problem, 120)}") from None
    except RecursionError:
        raise DesignError(source, "is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise DesignError(source, f"invalid {fmt.upper()}: {short_repr(str(exc).splitlines()[0], 120)}") from None
    _check_size(data, source)
    return data


def _check_size(data: Any, source: str) -> None:
    """Values counted with YAML aliases expanded (a few aliased nodes can stand for billions), iteratively.

    A container's size is added before its children are queued, so a huge
    list is refused without a work item per element.
    """
    count, stack = 1, [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DesignError(source, "is nested too deeply")
        if isinstance(node, dict):
            count, children = count + 2 * len(node), node.values()  # keys and values
        elif isinstance(node, list):
            count, children = count + len(node), node
        else:
            continue
        if count > MAX_NODES:
            raise DesignError(source, f"has more than {MAX_NODES} values (YAML aliases expanded); designs are far smaller")
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))


def read_document(path: Union[str, Path]) -> Any:
    """A YAML/JSON file -> plain data (format from the suffix, else sniffed); the size is checked before reading."""
    path = Path(path)
    if not path.is_file():
        raise DesignError(str(path), "no such file")
    fmt = "json" if path.suffix.lower() == ".json" else "yaml" if path.suffix.lower() in (".yaml", ".yml") else None
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DesignError(str(path), f"is {size} bytes; designs are limited to {MAX_FILE_BYTES}")
    return parse_document(path.read_bytes(), fmt, source=str(path))


__all__ = ["MAX_FILE_BYTES", "MAX_NODES", "MAX_DEPTH", "parse_document", "read_document"]
