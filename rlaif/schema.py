"""Strict YAML -> frozen dataclasses, with the line of every key kept for error messages."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path

import yaml

from .errors import UserError, UserErrors


class YamlMap(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict


class YamlList(list):
    """A list that remembers its own line and the line of each item (1-based)."""

    line: int | None = None
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        out = YamlMap()
        out.line, out.key_lines = node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
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


def load_yaml(path: str | Path, what: str = "file") -> YamlMap:
    """Read a YAML file whose top level must be a mapping; any problem is a UserError with a line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text ({e.reason} at byte {e.start})", str(path), 1) from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        if context and (mark is None or mark.line >= len(text.splitlines())):
            mark = context  # an error found at the end of the file started where the context opened
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if getattr(e, "context", None):
            problem = f"{e.context}: {problem}"
        raise UserError(f"invalid YAML: {problem}", str(path), mark.line + 1 if mark else 1) from None
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
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("yaml", True)}
        for key in data:
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(fields)})"
                self.error(where, f"unknown key {key!r}{hint}", line_of(data, key))
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
            self.error(where, f"expected {' or '.join(_type_name(a) for a in inner)}, got {value!r}", line)
            return None
        if origin is typing.Literal:
            if value not in args:
                self.error(where, f"must be one of {', '.join(map(repr, args))}, got {value!r}", line)
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
            return float(value)
        if tp is typing.Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
            return value
        self.error(where, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}", line)
        return None
