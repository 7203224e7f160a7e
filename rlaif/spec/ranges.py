"""Numeric ranges of config settings: one Range annotation per field, checked with the key's line by spec.loader.Builder
and by check_ranges() for configs built in Python. Every float must also be finite and every int fit in 64 bits."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Annotated

INT64 = (-(2**63), 2**63 - 1)  # every int setting ends up in C code (torch, vLLM, numpy) that takes at most this


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a number setting must lie in: `n: Annotated[int, Range(1)]`. Builder checks it with the key's line;
    `check_ranges` checks a dataclass built in Python."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False  # the low end itself is not allowed (> rather than >=)
    open_high: bool = False

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"within {'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {_number(self.low)}"
        return f"{'<' if self.open_high else '<='} {_number(self.high)}"

    def problem(self, value) -> str | None:
        """What is wrong with `value`, or None when it lies in the range."""
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return f"must be {self}, got {_number(value)}"
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            return f"must be {self}, got {_number(value)}"
        return None


# the ranges most settings need
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, open_low=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]


def _number(value) -> str:
    if isinstance(value, float) and not (value.is_integer() and abs(value) < 1e16):
        return f"{value:g}"
    return str(int(value))


def _number_problem(tp, value) -> str | None:
    """Checks every int and float setting gets: finite, and within what the C libraries below take."""
    if tp is float and not math.isfinite(value):
        return f"must be a finite number, got {_number(value)}"
    if tp is int and not INT64[0] <= value <= INT64[1]:
        return f"must be within [-2**63, 2**63 - 1], got an integer of {len(str(abs(value)))} digits"
    return None


def _ranges(tp) -> list[Range]:
    """The Range annotations of a field type, looking inside `X | None`."""
    if typing.get_origin(tp) is Annotated:
        return [m for m in tp.__metadata__ if isinstance(m, Range)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [r for a in typing.get_args(tp) for r in _ranges(a)]
    return []


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def check_ranges(obj) -> None:
    """Raise ValueError naming every number field of dataclass `obj` outside its Range, or not finite (call it in
    __post_init__, so configs built in Python are checked like those read from YAML)."""
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        problem = _number_problem(float if isinstance(value, float) else int, value)
        problem = problem or next((p for r in _ranges(_hints(type(obj)).get(f.name)) if (p := r.problem(value))), None)
        if problem:
            problems.append(f"{f.name} {problem}")
    if problems:
        raise ValueError("; ".join(problems))
