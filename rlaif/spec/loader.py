"""Strict YAML -> frozen dataclasses, with the line of every key kept for error messages."""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Annotated

import yaml

from ..errors import UserError, UserErrors
from .ranges import _hints, _number_problem, _ranges

# Limits on what a YAML file may make the loader build. A real constitution or pipeline has a few hundred nodes
# and nests a few levels; a "billion laughs" file (aliases of aliases) expands to 10**9 nodes from 1 KB of text.
MAX_YAML_NODES = 100_000  # nodes after expanding aliases
MAX_YAML_DEPTH = 100  # nesting levels (PyYAML's composer recurses once per level)
MAX_YAML_BYTES = 16 * 2**20  # a constitution or pipeline file; the largest shipped one is a few KB


class YamlMap(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.line: int | None = None
        self.key_lines: dict = {}  # a map made by `--set` has no lines: errors fall back to the container's
        self.from_set: set = set()  # keys that came from `--set`, not from the file


class YamlList(list):
    """A list that remembers its own line and the line of each item (1-based)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.line: int | None = None
        self.item_lines: list = []


class _Short(reprlib.Repr):
    """reprlib that also shortens the loader's own containers (it only knows dict and list by name)."""

    def repr_YamlMap(self, x, level):
        return self.repr_dict(x, level)

    def repr_YamlList(self, x, level):
        return self.repr_list(x, level)


_SHORT = _Short()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 3


def short(value) -> str:
    """repr() cut to one short line: error messages quote values, and a value may be megabytes (or an alias bomb)."""
    return _SHORT.repr(value)


def _expanded_size(root) -> None:
    """Refuse a document whose aliases expand it past MAX_YAML_NODES, before anything is constructed."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node) -> int:  # depth is bounded by MAX_YAML_DEPTH, so plain recursion is safe here
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in busy:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to a node that contains it (a recursive structure)",
                                                    node.start_mark)
        busy.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        busy.discard(id(node))
        if n > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(None, None, f"aliases expand this value to more than {MAX_YAML_NODES:,} nodes "
                                                    "(an alias bomb?)", node.start_mark)
        sizes[id(node)] = n
        return n

    size(root)


class _LineLoader(yaml.SafeLoader):
    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node):
        _expanded_size(node)
        return super().construct_document(node)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:  # Python refuses int() of more than 4,300 digits
            raise yaml.constructor.ConstructorError(None, None, f"integer too long ({e})".split(";")[0], node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        out = YamlMap()
        out.line = node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                raise yaml.constructor.ConstructorError(None, None, f"a key must be a scalar, got {type(key).__name__}", key_node.start_mark)
            if key in out:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            out[key] = self.construct_object(value_node, deep=True)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out

    def construct_sequence(self, node, deep=False):
        out = YamlList(self.construct_object(child, deep=True) for child in node.value)
        out.line, out.item_lines = node.start_mark.line + 1, [c.start_mark.line + 1 for c in node.value]
        return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _LineLoader.construct_yaml_int)


def parse_yaml(text: str, file: str):
    """YAML text -> data with lines (bounded: see MAX_YAML_NODES, MAX_YAML_DEPTH); any problem is a UserError with a line."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        if context and (mark is None or mark.line >= len(text.splitlines())):
            mark = context  # an error found at the end of the file started where the context opened
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if getattr(e, "context", None):
            problem = f"{e.context}: {problem}"
        raise UserError(f"invalid YAML: {problem}", file, mark.line + 1 if mark else 1) from None
    except RecursionError:  # a safety net: the depth limit above should come first
        raise UserError(f"invalid YAML: nested too deeply (limit {MAX_YAML_DEPTH} levels)", file, 1) from None


def load_yaml(path: str | Path, what: str = "file") -> YamlMap:
    """Read a YAML file whose top level must be a mapping; any problem is a UserError with a line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found" if not path.exists() else f"{what} is not a regular file", str(path))
    if path.stat().st_size > MAX_YAML_BYTES:
        raise UserError(f"{what} is {path.stat().st_size:,} bytes; the limit is {MAX_YAML_BYTES:,}", str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark (Windows editors) is not content
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"not UTF-8 text ({e.reason} at byte {e.start})", str(path), line) from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise UserError(f"{what} is empty", str(path), 1)
    if not isinstance(data, YamlMap):
        raise UserError(f"the top level of a {what} must be a mapping, got {type(data).__name__}", str(path), 1)
    return data


def line_of(container, key) -> int | None:
    """Line of a key in a YamlMap or an index in a YamlList, else the container's own line."""
    if isinstance(container, YamlMap) and key in container.key_lines:
        return container.key_lines[key]
    if isinstance(container, YamlList) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", None)


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (list, tuple):
        return "list"  # YAML's word for it
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


class Builder:
    """Builds a dataclass tree from YAML data, collecting every error instead of stopping at the first."""

    def __init__(self, file: str):
        self.file = file
        self.errors: list[UserError] = []
        self.lines: dict[str, int | None] = {}  # dotted key -> line, for errors found after building

    def error(self, where: str, message: str, line: int | None):
        self.errors.append(UserError(f"{where}: {message}" if where else message, self.file, line))

    def build(self, cls, data, where: str = "", line: int | None = None):
        """Return an instance of dataclass `cls` from `data`; raise UserErrors if anything was wrong."""
        value = self._dataclass(cls, data, where, line)
        if self.errors:
            raise UserErrors(self.errors) if len(self.errors) > 1 else self.errors[0]
        return value

    def _dataclass(self, cls, data, where, line):
        if not isinstance(data, dict):
            self.error(where, f"expected a mapping, got {type(data).__name__}", line)
            return None
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("yaml", True)}
        for key in data:
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(fields)})"
                hint += " (from --set)" if key in getattr(data, "from_set", ()) else ""
                # a key from --set has no line: name the section's own key line
                self.error(where, f"unknown key {key!r}{hint}", getattr(data, "key_lines", {}).get(key) or line)
        kwargs = {}
        for name, f in fields.items():
            sub = f"{where}.{name}" if where else name
            if name in data:
                self.lines[sub] = line_of(data, name)
                kwargs[name] = self._value(hints[name], data[name], sub, line_of(data, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(where, f"missing required field {name!r}", getattr(data, "line", line))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:  # __post_init__ checks, or fields already reported
            if not self.errors:
                self.error(where, str(e), getattr(data, "line", line))
            return None

    def _value(self, tp, value, where, line):
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Annotated:
            before = len(self.errors)
            out = self._value(args[0], value, where, line)
            if out is not None and len(self.errors) == before:
                problem = next((p for r in _ranges(tp) if (p := r.problem(out))), None)
                if problem:
                    self.error(where, problem, line)
            return out
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1:
                return self._value(inner[0], value, where, line)
            for a in inner:  # first alternative that fits without errors
                probe = Builder(self.file)
                out = probe._value(a, value, where, line)
                if not probe.errors:
                    return out
            self.error(where, f"expected {' or '.join(_type_name(a) for a in inner)}, got {short(value)}", line)
            return None
        if origin is typing.Literal:
            if value not in args:
                self.error(where, f"must be one of {', '.join(map(repr, args))}, got {short(value)}", line)
            return value
        if origin in (list, tuple):
            if not isinstance(value, list):
                self.error(where, f"expected a list, got {type(value).__name__}", line)
                return ()
            item_tp = args[0]
            return tuple(self._value(item_tp, v, f"{where}[{i}]", line_of(value, i)) for i, v in enumerate(value))
        if origin is dict:
            if not isinstance(value, dict):
                self.error(where, f"expected a mapping, got {type(value).__name__}", line)
                return {}
            return {k: self._value(args[1], v, f"{where}.{k}", line_of(value, k)) for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, value, where, line)
        if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an int too large for a float
                value = math.inf
        if tp is typing.Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
            problem = _number_problem(tp, value)
            if problem:
                self.error(where, problem, line)
                return None
            return value
        self.error(where, f"expected {_type_name(tp)}, got {type(value).__name__} {short(value)}", line)
        return None
