"""Spot degenerate revisions: small base models often echo the request or copy a worked example."""

from __future__ import annotations

import difflib
import re

COPY_RATIO = 0.8  # difflib similarity above which a text counts as a copy


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _similar(a: str, b: str) -> bool:
    a, b = _norm(a), _norm(b)
    return bool(a and b) and (a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= COPY_RATIO)


def repetitive(text: str, n: int = 4, min_unique: float = 0.5) -> bool:
    """True when most word n-grams repeat (a generation loop)."""
    words = _norm(text).split()
    if len(words) < 3 * n:
        return False
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) < min_unique


def revision_problem(revision: str, initial: str, requests: list[str], examples: list[str]) -> str | None:
    """Why a revision is unusable as a training target, or None if it looks like a real answer."""
    if not revision.strip():
        return "empty"
    if _norm(revision) == _norm(initial):
        return "unchanged"
    # base models often answer a revision request with another request ("Rewrite the response so ...")
    openings = {" ".join(_norm(r).split()[:3]) for r in requests if len(r.split()) >= 3}
    if any(_similar(revision, r) for r in requests) or " ".join(_norm(revision).split()[:3]) in openings:
        return "echoes_request"
    if any(_similar(revision, e) for e in examples):
        return "copies_example"
    if repetitive(revision):
        return "repetitive"
    return None
