"""What the stages share: seeds, chunking, prompt formats, few-shot examples and the resume loop."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..spec.constitution import Constitution, Principle
from ..progress import Reporter
from ..rundir.store import Store
from ..spec.templates import Templates


@dataclass
class StageContext:
    """Everything a stage needs besides its generator and its own settings."""

    store: Store
    constitution: Constitution
    templates: Templates
    reporter: Reporter
    seed: int = 0
    batch_size: int = 64
    few_shot: int | None = None  # how many of the constitution's examples to show


def derive_seed(*parts) -> int:
    """A 31-bit seed from any JSON-able parts: each request gets its own reproducible stream."""
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def chunks(items: list, size: int):
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prompt_format(setting: str, generator) -> str:
    """`chat` for models with a chat template, `completion` (Human:/Assistant:) for base models."""
    if setting != "auto":
        return setting
    return "chat" if generator.has_chat_template else "completion"


def few_shot_examples(ctx: StageContext, principle: Principle | None) -> list[dict]:
    """The constitution's worked examples, with the critique and revision requests they illustrate."""
    examples = ctx.constitution.few_shot[: ctx.few_shot] if ctx.few_shot is not None else ctx.constitution.few_shot
    out = []
    for ex in examples:
        shown = ctx.constitution.principle(ex.principle) if ex.principle else principle
        out.append(
            {
                "prompt": ex.prompt,
                "response": ex.response,
                "critique": ex.critique,
                "revision": ex.revision,
                "critique_request": shown.critique if shown else "",
                "revision_request": shown.revision if shown else "",
            }
        )
    return out


def resume(ctx: StageContext, stage: str, plan: list, keys, make, missing=None, bars: tuple[str, ...] = (),
           count: bool = False, generator=None) -> dict[str, dict]:
    """The stored records of `plan`, the missing ones made and committed chunk by chunk (the resume contract)."""
    # keys(item): its record keys. missing(item, stored): what is left to make of it, or None; by default the item
    # unless one of its keys is stored (a judge record made by either method counts). make(chunk, *advances): the
    # new records by key, with one progress bar per name in `bars`; `count` advances the first bar once a chunk is
    # committed, for calls that report no progress of their own (logprobs). Each chunk is committed before the next
    # is made, so a kill loses at most the chunk in flight and a rerun makes exactly what is not stored yet.
    # `generator`: the engine `make` uses; one that starts on first use (backends/pool.LazyEngine) is started before
    # the bars, so that a bar times the generation, not the engine's start, and nothing starts when nothing is missing.
    records = ctx.store.get_many([k for item in plan for k in keys(item)])
    missing = missing or (lambda item, stored: None if any(k in stored for k in keys(item)) else item)
    todo = [left for item in plan if (left := missing(item, records)) is not None]
    if todo:
        if hasattr(type(generator), "started"):
            generator.started()
        advances = [ctx.reporter.task(name, len(todo)) for name in bars or (stage,)]
        for chunk in chunks(todo, ctx.batch_size):
            new = make(chunk, *advances)
            ctx.store.put_many(stage, new)
            records.update(new)
            if count:
                advances[0](len(chunk), 0)
    return records
