"""Constitutions: principles in YAML, strictly validated, drawn by weight with a seed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from ..errors import UserError, UserErrors
from .ranges import PositiveFloat, check_ranges
from .loader import Builder, line_of, load_yaml


@dataclass(frozen=True)
class Principle:
    """One principle: how to critique against it, how to revise, and what the judge asks."""

    name: str
    critique: str  # the critique request
    revision: str  # the revision request
    comparison: str | None = None  # the question the pairwise judge answers
    weight: PositiveFloat = 1.0  # relative chance of being drawn for a critique round
    tags: tuple[str, ...] = ()
    line: int | None = dataclasses.field(default=None, compare=False, metadata={"yaml": False})  # for errors

    def __post_init__(self):
        check_ranges(self)  # a weight of 0, inf or nan would break `draw`

    @cached_property  # part of every critique, judge and score key: computed once (the dataclass is frozen)
    def sha256(self) -> str:
        """Hash of the principle's content: records that used it are redone when it changes."""
        return _digest({k: v for k, v in dataclasses.asdict(self).items() if k != "line"})


@dataclass(frozen=True)
class FewShot:
    """A worked example of one critique and revision, shown to the model before the real task."""

    prompt: str
    response: str
    critique: str
    revision: str
    principle: str | None = None  # whose critique/revision requests the example shows; default: the drawn one


@dataclass(frozen=True)
class Turn:
    """One turn of a judge example's conversation."""

    role: Literal["user", "assistant", "system"]
    content: str


@dataclass(frozen=True)
class JudgeExample:
    """A worked pairwise comparison with its answer, shown to the judge before the real one (CAI §4.1)."""

    response_a: str
    response_b: str
    preferred: Literal["A", "B"]  # the option the judge should pick
    prompt: str | None = None  # the human turn; or `messages` for a longer conversation
    messages: tuple[Turn, ...] = ()  # a conversation that ends with the human turn the responses answer
    principle: str | None = None  # whose `comparison` question the example shows; default: the judged one

    def conversation(self) -> list[dict]:
        """The example's conversation as chat messages."""
        return [{"role": t.role, "content": t.content} for t in self.messages] or [{"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class Constitution:
    """A named set of principles with optional few-shot examples."""

    name: str
    principles: tuple[Principle, ...]
    description: str = ""
    few_shot: tuple[FewShot, ...] = ()
    judge_few_shot: tuple[JudgeExample, ...] = ()  # worked comparisons shown before every pairwise judge question
    path: str = dataclasses.field(default="", compare=False, metadata={"yaml": False})

    @property
    def sha256(self) -> str:
        """Hash of the content (not the file's formatting)."""
        content = {"name": self.name, "description": self.description, "few_shot": [dataclasses.asdict(f) for f in self.few_shot],
                   "principles": [p.sha256 for p in self.principles]}
        if self.judge_few_shot:  # only when present: a constitution without judge examples keeps the hash it had
            content["judge_few_shot"] = [dataclasses.asdict(e) for e in self.judge_few_shot]
        return _digest(content)

    def principle(self, name: str) -> Principle:
        """The principle called `name`."""
        for p in self.principles:
            if p.name == name:
                return p
        raise UserError(f"no principle named {name!r} (have: {', '.join(p.name for p in self.principles)})", self.path)

    def restricted(self, names: tuple[str, ...]) -> Constitution:
        """The same constitution with only the named principles (all of them when `names` is empty)."""
        return dataclasses.replace(self, principles=tuple(self.principle(n) for n in names)) if names else self

    def draw(self, seed: int, key: str) -> Principle:
        """Draw a principle by weight; the same (seed, key) always gives the same principle."""
        rng = random.Random(f"{seed}:{key}")  # str seeds are hashed with SHA-512: stable across runs
        return rng.choices(self.principles, weights=[p.weight for p in self.principles], k=1)[0]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def load_constitution(path: str | Path) -> Constitution:
    """Load and validate a constitution file; every problem is reported with its line."""
    path = str(path)
    data = load_yaml(path, "constitution")
    builder = Builder(path)
    try:
        constitution = builder.build(Constitution, data, line=1)
    except UserError:
        constitution = None
    _check(data, builder)
    if builder.errors:
        raise UserErrors(builder.errors) if len(builder.errors) > 1 else builder.errors[0]
    lines = data["principles"].item_lines
    principles = tuple(dataclasses.replace(p, line=line) for p, line in zip(constitution.principles, lines))
    return dataclasses.replace(constitution, path=path, principles=principles)


def _check(data, b: Builder) -> None:
    """Checks beyond types and ranges: non-empty text, a non-empty principle list, unique names."""
    if isinstance(data.get("name"), str) and not data["name"].strip():
        b.error("name", "must not be empty", line_of(data, "name"))
    principles = data.get("principles")
    if isinstance(principles, list):
        if not principles:
            b.error("principles", "the list is empty; a constitution needs at least one principle", line_of(data, "principles"))
        seen: dict[str, int] = {}
        for i, p in enumerate(principles):
            if not isinstance(p, dict):
                continue
            where = f"principles[{i}]"
            for key in ("name", "critique", "revision", "comparison"):
                if isinstance(p.get(key), str) and not p[key].strip():
                    b.error(f"{where}.{key}", "must not be empty", line_of(p, key))
            name = p.get("name")
            if isinstance(name, str) and name in seen:
                b.error(f"{where}.name", f"duplicate principle name {name!r} (first defined on line {seen[name]})", line_of(p, "name"))
            elif isinstance(name, str):
                seen[name] = line_of(p, "name")
    names = {p.get("name") for p in principles or [] if isinstance(p, dict)} if isinstance(principles, list) else set()
    for i, ex in enumerate(data.get("few_shot") or []):
        if isinstance(ex, dict) and isinstance(ex.get("principle"), str) and ex["principle"] not in names:
            b.error(f"few_shot[{i}].principle", f"no principle named {ex['principle']!r}", line_of(ex, "principle"))
        if isinstance(ex, dict):
            for key, value in ex.items():
                if isinstance(value, str) and not value.strip():
                    b.error(f"few_shot[{i}].{key}", "must not be empty", line_of(ex, key))
    _check_judge_examples(data, b)


def _check_judge_examples(data, b: Builder) -> None:
    """`judge_few_shot`: one conversation each, non-empty text, two different responses, a principle that can be judged."""
    principles = {p.get("name"): p for p in data.get("principles") or [] if isinstance(p, dict)} \
        if isinstance(data.get("principles"), list) else {}
    examples = data.get("judge_few_shot")
    for i, ex in enumerate(examples if isinstance(examples, list) else []):
        if not isinstance(ex, dict):
            continue
        where = f"judge_few_shot[{i}]"
        for key in ("prompt", "response_a", "response_b", "principle"):
            if isinstance(ex.get(key), str) and not ex[key].strip():
                b.error(f"{where}.{key}", "must not be empty", line_of(ex, key))
        has_prompt, turns = ex.get("prompt") is not None, ex.get("messages")
        if has_prompt and turns is not None:
            b.error(where, "give `prompt` or `messages`, not both", line_of(ex, "messages"))
        elif not has_prompt and turns is None:
            b.error(where, "needs a `prompt` (the human turn) or `messages` (a conversation ending with one)", line_of(examples, i))
        if isinstance(turns, list):
            if not turns:
                b.error(f"{where}.messages", "the list is empty", line_of(ex, "messages"))
            for j, t in enumerate(turns):
                if isinstance(t, dict) and isinstance(t.get("content"), str) and not t["content"].strip():
                    b.error(f"{where}.messages[{j}].content", "must not be empty", line_of(t, "content"))
            last = turns[-1] if turns else None
            if isinstance(last, dict) and last.get("role") in ("assistant", "system"):
                b.error(f"{where}.messages[{len(turns) - 1}]", f"the last turn must be the user's (the responses answer it), "
                        f"got {last['role']!r}", line_of(turns, len(turns) - 1))
        a, bb = ex.get("response_a"), ex.get("response_b")
        if isinstance(a, str) and a.strip() and isinstance(bb, str) and a.strip() == bb.strip():
            b.error(f"{where}.response_b", "is the same text as response_a: the example shows no preference", line_of(ex, "response_b"))
        name = ex.get("principle")
        if isinstance(name, str) and name.strip():
            if name not in principles:
                b.error(f"{where}.principle", f"no principle named {name!r}", line_of(ex, "principle"))
            elif not principles[name].get("comparison"):
                b.error(f"{where}.principle", f"principle {name!r} has no `comparison` question for the example to show",
                        line_of(ex, "principle"))
