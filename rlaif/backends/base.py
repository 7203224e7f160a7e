"""The one seam to models: requests in, completions out, in batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request; `n` completions are drawn from the same prompt."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0  # drop tokens below min_p x the top token's probability; 0: off
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Request:
    """One prompt to complete: `messages` for chat models, or a raw `prompt` for base models.

    `prefix`: text the reply starts with. Generation and log-probabilities continue after it: for a chat request
    the assistant's turn is opened and the prefix written into it (a judge's "The answer is: (").
    """

    sampling: Sampling = field(default_factory=Sampling)
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None
    prefix: str = ""

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a Request needs exactly one of `prompt` or `messages`")


@dataclass(frozen=True)
class Output:
    """One sampled continuation: its text (stop string removed) and how many tokens it used."""

    text: str
    tokens: int
    finish_reason: str = "stop"  # "stop" (EOS or stop string), "length", or "prompt_too_long" (nothing generated)


@dataclass(frozen=True)
class Completion:
    """The `n` outputs of one request, and the prompt's length in tokens."""

    outputs: tuple[Output, ...]
    prompt_tokens: int


# Called after each finished chunk of a batch with (requests done, generated tokens in the chunk).
ProgressFn = Callable[[int, int], None]


class Generator(Protocol):
    """What every backend provides. Stages talk to models only through this."""

    model_id: str  # what the model is, for record keys and provenance
    has_chat_template: bool
    logit_dtype: str | None  # precision the option log-probabilities are read at ("float32", "bfloat16"); None: unknown

    def generate(self, requests: list[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """Complete every request; results are in request order."""
        ...

    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """Per request, log P(the option is what comes next | prompt and prefix) for each option.

        Options are tokenized in context; the spellings of an option (with and without a leading space) are
        summed; a multi-token option ("10") is the product of its tokens' probabilities. Where one option's
        tokens begin another's ("1" and "10"), the shorter one excludes the longer. -inf where nothing could be
        read (a prompt longer than the context). Sampling settings are ignored. backends/options.py.
        """
        ...

    def close(self) -> None:
        """Free the engine and its memory."""
        ...


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; return the text and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LogprobsUnavailable(Exception):
    """The backend (e.g. an HTTP server) returns no log-probabilities; callers fall back to parsing text."""
