"""An instant scripted backend: canned text of plausible length and canned option log-probabilities, no model.

For measuring rlaif's own bookkeeping (bench/overhead.py) and for tests that need a generator but not a model.
Replies are deterministic functions of the request: the same request always gets the same reply, and requests
with different seeds or prompts get different texts (so the judge finds pairs to compare).
"""

from __future__ import annotations

import math
import zlib

from .base import Completion, Output, ProgressFn, Request

LOREM = ("the answer depends on what you need so here is a careful and safe way to think about it step by step "
         "first consider the goal then the risks and finally what a helpful reply would say to someone who asked ").split()


class ScriptedGenerator:
    """Replies at once: `words` words per output (at most max_tokens), one token per word."""

    logit_dtype = None  # no model: no precision to speak of

    def __init__(self, words: int = 60, chat: bool = False, model_id: str = "scripted", option_mass: float = 0.9):
        self.words, self.has_chat_template, self.model_id = words, chat, model_id
        self.option_mass = option_mass  # how much of the next-token mass the options get together

    def __repr__(self) -> str:
        return f"ScriptedGenerator({self.model_id!r})"

    def generate(self, requests: list[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """A canned completion per request, `n` different outputs each; progress reported once per call."""
        out = []
        for r in requests:
            s, h = r.sampling, _hash(r)
            count = min(self.words, s.max_tokens)
            outputs = tuple(Output(text=_text(h + i, count), tokens=count, finish_reason="stop") for i in range(s.n))
            out.append(Completion(outputs=outputs, prompt_tokens=len(_prompt_text(r)) // 4))
        if progress:
            progress(len(requests), sum(o.tokens for c in out for o in c.outputs))
        return out

    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """Log-probabilities that differ by request and option, like a real judge's; `option_mass` in all."""
        out = []
        for r in requests:
            scores = [math.exp(-((_hash(r) + 7 * j) % 11) / 4) for j in range(len(options))]
            out.append({o: math.log(self.option_mass * s / sum(scores)) if self.option_mass > 0 else -math.inf
                        for o, s in zip(options, scores)})
        return out

    def close(self) -> None:
        """Nothing to free."""


def _prompt_text(r: Request) -> str:
    return (r.prompt if r.prompt is not None else "\n".join(m["content"] for m in r.messages)) + r.prefix


def _hash(r: Request) -> int:
    # the whole prompt (and the seed) decides the reply; crc32 because this runs once per request in the benchmark
    return zlib.crc32(_prompt_text(r).encode()) ^ (r.sampling.seed or 0)


def _text(h: int, count: int) -> str:
    start = h % len(LOREM)
    words = [LOREM[(start + i) % len(LOREM)] for i in range(count)]
    return f"Reply {h:x}: " + " ".join(words)
