"""What the stages share: seeds, chunking, prompt formats and few-shot examples."""

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
