"""Spot degenerate revisions: small base models often echo the request or copy a worked example; chat critics add preambles."""

from __future__ import annotations

import difflib
import re

COPY_RATIO = 0.8  # difflib similarity above which a text counts as a copy

# A chat critic's lead-in before the revised text ("Sure! Here's a revised response:", "Revised answer:"). Only a
# lead-in that names the response/answer/version/revision ends in a colon and is stripped: "Here's how to bake
# bread:" is an answer, not a preamble.
_NOUN = r"(?:response|answer|reply|version|revision|rewrite)"
_ADJECTIVE = r"(?:revised|rewritten|improved|updated|corrected|edited|new|better|safer)"
_PREAMBLE = re.compile(
    r"^\W*(?:(?:sure|okay|ok|certainly|of course|absolutely|alright)\b[\s!,.]*)?"
    rf"(?:(?:here(?:'s|’s| is)|below is)\s+(?:(?:a|an|the|my)\s+)?(?:{_ADJECTIVE}\s+)?{_NOUN}\b[^:\n]{{0,80}}"
    rf"|{_ADJECTIVE}\s+{_NOUN}|(?:response|answer|revision|rewrite))\s*:[\s*\"'”]*",
    re.IGNORECASE,
)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _similar(a: str, b: str) -> bool:
    a, b = _norm(a), _norm(b)
    return bool(a and b) and (a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= COPY_RATIO)


def clean_revision(text: str) -> str:
    """The revision without a chat critic's preamble ("Here is a revised response:"); otherwise unchanged."""
    text = (text or "").strip()
    match = _PREAMBLE.match(text)
    return text[match.end():].strip() if match else text


def repetitive(text: str, n: int = 4, min_unique: float = 0.5) -> bool:
    """True when most word n-grams repeat (a generation loop)."""
    words = _norm(text).split()
    if len(words) < 3 * n:
        return False
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) < min_unique


def revision_problem(revision: str, initial: str, requests: list[str], examples: list[str], user_turns: list[str] = (),
                     finish_reason: str | None = None) -> str | None:
    """Why a revision is unusable as a training target, or None if it looks like a real answer.

    `examples` are every text of the few-shot examples (prompts included), `user_turns` the conversation's own
    user messages, `finish_reason` the revision's ("length": cut at max_tokens, so it ends mid-sentence).
    """
    if not revision.strip():
        return "empty"
    if _norm(revision) == _norm(initial):
        return "unchanged"
    if finish_reason == "length":
        return "truncated"
    # base models often answer a revision request with another request ("Rewrite the response so ...")
    openings = {" ".join(_norm(r).split()[:3]) for r in requests if len(r.split()) >= 3}
    if any(_similar(revision, r) for r in requests) or " ".join(_norm(revision).split()[:3]) in openings:
        return "echoes_request"
    if any(_similar(revision, u) for u in user_turns):
        return "echoes_prompt"
    if any(_similar(revision, e) for e in examples):
        return "copies_example"
    if repetitive(revision):
        return "repetitive"
    return None
