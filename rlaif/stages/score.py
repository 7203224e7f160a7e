"""Stage `score` (pointwise, d-RLAIF): a 1-10 rating as the probability-weighted mean over the ratings' tokens.

The judge reads "1".."10" after "Rating (1 to 10): " (a chat judge's reply is opened with it), in context
(backends/options.py): "10" is one token on some tokenizers and "1" then "0" on others, and P(1) excludes the
"10"s either way. When the ratings together get less than `min_digit_mass` of what comes next, the judge is not
giving a number and the item is unrated. Every candidate answer to a prompt is rated on the same principle(s).
"""

from __future__ import annotations

import math

from ..backends.base import Request, Sampling
from ..spec.config import ScoreConfig
from ..spec.constitution import Principle
from ..rundir.store import record_key
from .common import StageContext, prompt_format, resume
from .judge import READING, draw_principles

TEMPLATES = {"completion": "completion/score.j2", "chat": "chat/score.j2"}
REPLY = "chat/score_reply.j2"  # a chat judge's reply starts with this; the number is read after it
RATINGS = [str(d) for d in range(1, 11)]


def expected_rating(logprobs: dict[str, float], min_mass: float = 0.0) -> tuple[float | None, dict[int, float], float]:
    """Mean rating, its distribution over 1..10, and the digit mass P(1) + ... + P(10), from the ratings' log-probabilities.

    The mean is None when the mass is below `min_mass` (the distribution is still given, for inspection).
    """
    mass = {int(r): math.exp(logprobs.get(r, -math.inf)) for r in RATINGS}
    total = sum(mass.values())
    if total <= 0:
        return None, {}, 0.0
    probs = {k: v / total for k, v in mass.items() if v > 0}
    mean = sum(k * p for k, p in probs.items()) if total >= min_mass else None
    return mean, probs, total


def request(templates, fmt: str, messages: list, response: str, principle: Principle, sampling: Sampling) -> Request:
    """The rating question; a chat judge's reply is opened with chat/score_reply.j2, the number read right after it."""
    text = templates.render(TEMPLATES[fmt], messages=list(messages), response=response, principle=principle)
    if fmt == "chat":
        return Request(messages=({"role": "user", "content": text},), sampling=sampling, prefix=templates.render(REPLY))
    return Request(prompt=text, sampling=sampling)


def rate(templates, generator, fmt: str, items: list[tuple[list, str, Principle]],
         min_mass: float = 0.0) -> list[tuple[float | None, dict, float]]:
    """(rating, distribution, digit mass) for each (messages, response, principle) item; one batched call."""
    s = Sampling(temperature=0.0, max_tokens=1)
    requests = [request(templates, fmt, *item, s) for item in items]
    return [expected_rating(lp, min_mass) for lp in generator.logprobs(requests, RATINGS)]


def score(ctx: StageContext, generator, targets: list[dict], cfg: ScoreConfig, format_setting: str = "auto") -> list[dict]:
    """One record per (target, principle): the mean rating, its distribution and the digit mass. Targets: key,
    text, prompt_id, messages; the principles are drawn per prompt, so a prompt's candidates share them."""
    fmt = prompt_format(format_setting, generator)
    template = ctx.templates.sha256(TEMPLATES[fmt])
    reply = ctx.templates.sha256(REPLY) if fmt == "chat" else None
    pool = ctx.constitution.restricted(cfg.principles)
    settings = {"reading": READING, "min_digit_mass": cfg.min_digit_mass, "logit_dtype": getattr(generator, "logit_dtype", None)}
    plan = []
    for t in targets:
        for p in draw_principles(pool, ctx.seed, t["prompt_id"] + ":score", cfg.principles_per_item):
            key = record_key(stage="score", input=t["key"], principle=p.sha256, template=template, reply=reply,
                             model=generator.model_id, seed=ctx.seed, format=fmt, settings=settings)
            plan.append((t, p, key))

    def make(chunk: list, _advance) -> dict[str, dict]:
        rated = rate(ctx.templates, generator, fmt, [(t["messages"], t["text"], p) for t, p, _ in chunk], cfg.min_digit_mass)
        return {key: {"target_key": t["key"], "prompt_id": t["prompt_id"], "principle": p.name, "score": s,
                      "probs": {str(k): v for k, v in probs.items()}, "digit_mass": mass,
                      "logit_dtype": settings["logit_dtype"], "model": generator.model_id}
                for (t, p, key), (s, probs, mass) in zip(chunk, rated)}

    records = resume(ctx, "score", plan, lambda item: [item[2]], make, count=True, generator=generator)
    return [records[key] | {"key": key} for _, _, key in plan]




def best_vs_worst(targets: list[dict], records: list[dict], min_gap: float) -> list[tuple[dict, dict, float, float]]:
    """Per prompt, (best, worst, best score, worst score) by mean score, when the gap is at least `min_gap`."""
    scores: dict[str, list[float]] = {}
    for r in records:
        if r["score"] is not None:
            scores.setdefault(r["target_key"], []).append(r["score"])
    by_prompt: dict[str, list[tuple[float, dict]]] = {}
    for t in targets:
        if t["key"] in scores:
            by_prompt.setdefault(t["prompt_id"], []).append((sum(scores[t["key"]]) / len(scores[t["key"]]), t))
    pairs = []
    for rated in by_prompt.values():
        rated.sort(key=lambda x: x[0])
        (low, worst), (high, best) = rated[0], rated[-1]
        if len(rated) >= 2 and high - low >= max(min_gap, 1e-9) and best["text"] != worst["text"]:
            pairs.append((best, worst, high, low))
    return pairs
