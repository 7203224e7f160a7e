"""Options read in context: which tokens spell each option right after a prompt, and what their probabilities sum to.

A judge reads P("A") after "The answer is: (". The id to read is the one the tokenizer produces when "A" is
actually written there, not tokenizer("A")[0] out of context (on SentencePiece with a dummy prefix that is "▁A",
or a bare "▁"). So each option is tokenized together with the prompt, and its tokens are what follows the longest
common prefix of the two tokenizations. Usually that prefix is the whole prompt; when the tokenizer merges the
prompt's last characters with the option (byte-level BPE turns a trailing " " plus "7" into "Ġ7"), the option is
read one token earlier, after the shorter context.

Spellings: the option written with a leading space (" A", "▁A", "ĠA") is the same answer; the probabilities of
both spellings are summed (there is no leading-space spelling when the prompt already ends in whitespace). An
option of several tokens ("10" on a digit-split tokenizer) has the product of its tokens' probabilities, each
read after the ones before it; a tokenizer with a single "10" token reads that token. Options are alternatives:
where one option's tokens begin another's ("1" and "1","0"), the shorter one keeps only the mass that is not
the longer one, so P(1) + P(10) is the mass of the token "1".

The hf and vllm backends share this; the openai backend sees token strings only (backends/openai.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .base import Request

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Spelling:
    """One way of writing an option after a prompt: the context the model conditions on, then the option's tokens."""

    option: str
    context: tuple[int, ...]
    tokens: tuple[int, ...]


def prompt_text(tokenizer, request: Request) -> str:
    """The text the model continues: the raw prompt, or the chat template with an open assistant turn; then the prefix."""
    if request.messages is None:
        return request.prompt + request.prefix
    text = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
    return text + request.prefix  # the assistant's reply starts with the prefix: continue that turn


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt; BOS is added unless the text (a rendered chat template) already spells it out."""
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def spellings(tokenizer, text: str, options: list[str]) -> list[Spelling]:
    """Every spelling of every option after `text`, tokenized in context."""
    encode = lambda s: text_ids(tokenizer, s)  # noqa: E731
    base, specials = encode(text), set(tokenizer.all_special_ids)
    out: list[Spelling] = []
    for option in options:
        variants = [option] if not text or text[-1].isspace() or option[:1].isspace() else [option, " " + option]
        for variant in variants:
            ids = encode(text + variant)
            k = 0
            while k < min(len(base), len(ids)) and base[k] == ids[k]:
                k += 1
            new = ids[k:]
            while new and new[-1] in specials:  # an EOS the tokenizer appends to every text is not part of the option
                new.pop()
            spelling = Spelling(option, tuple(ids[:k]), tuple(new))
            if new and spelling not in out:
                out.append(spelling)
    return out


def reads(plan: list[Spelling]) -> dict[tuple[int, ...], set[int]]:
    """The next-token log-probabilities a plan needs: context -> token ids to read after it."""
    wanted: dict[tuple[int, ...], set[int]] = {}
    for s in plan:
        for i, token in enumerate(s.tokens):
            wanted.setdefault(s.context + s.tokens[:i], set()).add(token)
    return wanted


def logsumexp(values) -> float:
    """log(sum(exp(v))) without overflow; -inf for no values."""
    values = [v for v in values if v > NEG_INF]
    if not values:
        return NEG_INF
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_minus(a: float, b: float) -> float:
    """log(exp(a) - exp(b)), -inf when b >= a."""
    if b == NEG_INF:
        return a
    if b >= a:
        return NEG_INF
    return a + math.log1p(-math.exp(b - a))


def option_logprobs(plan: list[Spelling], options: list[str], logprob: Callable[[tuple, int], float]) -> dict[str, float]:
    """log P(option) for each option: spellings summed, multi-token spellings chained, shared beginnings split.

    `logprob(context, token)` is log P(token | context) from the model.
    """
    whole = {}
    for s in plan:
        whole[s] = sum(logprob(s.context + s.tokens[:i], t) for i, t in enumerate(s.tokens))
    result = {o: NEG_INF for o in options}
    for s in plan:
        longer = [x for x in plan if x.option != s.option and x.context == s.context and len(x.tokens) > len(s.tokens)
                  and x.tokens[: len(s.tokens)] == s.tokens]
        # extensions of an extension are inside it already: subtract only the outermost ones
        outer = [x for x in longer if not any(y is not x and x.tokens[: len(y.tokens)] == y.tokens for y in longer)]
        own = log_minus(whole[s], logsumexp(whole[x] for x in outer))
        result[s.option] = logsumexp([result[s.option], own])
    return result
