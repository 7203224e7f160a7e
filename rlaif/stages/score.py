"""Stage `score` (pointwise, d-RLAIF): a 1-10 rating as the probability-weighted mean over the digit tokens."""

from __future__ import annotations

import math

from ..backends.base import Request, Sampling
from ..config import ScoreConfig
from ..constitution import Principle
from ..store import record_key
from .common import StageContext, chunks, prompt_format
from .judge import draw_principles

TEMPLATES = {"completion": "completion/score.j2", "chat": "chat/score.j2"}
DIGITS = [str(d) for d in range(1, 10)]


def expected_rating(first: dict[str, float], zero_after_one: float | None) -> tuple[float | None, dict[int, float]]:
    """Mean rating and its distribution over 1..10 from digit log-probabilities.

    `first` holds the log-probabilities of "1".."9" as the first token; "10" shares its first token
    with "1", so `zero_after_one` (log P("0" | "1")) splits that mass: P(10) = P("1") * P("0" | "1").
    """
    mass = {int(d): math.exp(first[d]) for d in DIGITS if first.get(d, -math.inf) > -math.inf}
    if not mass:
        return None, {}
    if 1 in mass and zero_after_one is not None and zero_after_one > -math.inf:
        p0 = math.exp(zero_after_one)
        mass[10], mass[1] = mass[1] * p0, mass[1] * (1 - p0)
    total = sum(mass.values())
    probs = {k: v / total for k, v in sorted(mass.items())}
    return sum(k * p for k, p in probs.items()), probs


def rate(templates, generator, fmt: str, items: list[tuple[list, str, Principle]]) -> list[tuple[float | None, dict]]:
    """Rate each (messages, response, principle) item; batched: two log-probability calls in all."""
    s = Sampling(temperature=0.0, max_tokens=1)

    def request(messages, response, principle, suffix=""):
        text = templates.render(TEMPLATES[fmt], messages=list(messages), response=response, principle=principle)
        if fmt == "chat":
            return Request(messages=({"role": "user", "content": text},), sampling=s)
        return Request(prompt=text + suffix, sampling=s)

    firsts = generator.logprobs([request(*item) for item in items], DIGITS)
    if fmt == "completion":  # "10" = "1" then "0": ask what follows a "1"
        zeros = [lp["0"] for lp in generator.logprobs([request(*item, suffix="1") for item in items], ["0"])]
    else:  # a chat turn cannot be continued mid-reply through the seam, so "10" folds into "1" (noted in the docs)
        zeros = [None] * len(items)
    return [expected_rating(f, z) for f, z in zip(firsts, zeros)]


def score(ctx: StageContext, generator, targets: list[dict], cfg: ScoreConfig, format_setting: str = "auto") -> list[dict]:
    """One record per (target, principle): the mean rating and its distribution. Targets: key, text, messages."""
    fmt = prompt_format(format_setting, generator)
    template = ctx.templates.sha256(TEMPLATES[fmt])
    pool = ctx.constitution.restricted(cfg.principles)
    plan = []
    for t in targets:
        for p in draw_principles(pool, ctx.seed, t["key"] + ":score", cfg.principles_per_item):
            key = record_key(stage="score", input=t["key"], principle=p.sha256, template=template,
                             model=generator.model_id, seed=ctx.seed, format=fmt)
            plan.append((t, p, key))
    records = ctx.store.get_many([k for _, _, k in plan])
    todo = [item for item in plan if item[2] not in records]
    if todo:
        advance = ctx.reporter.task("score", len(todo))
        for chunk in chunks(todo, ctx.batch_size):
            rated = rate(ctx.templates, generator, fmt, [(t["messages"], t["text"], p) for t, p, _ in chunk])
            new = {key: {"target_key": t["key"], "prompt_id": t["prompt_id"], "principle": p.name, "score": s,
                         "probs": {str(k): v for k, v in probs.items()}, "model": generator.model_id}
                   for (t, p, key), (s, probs) in zip(chunk, rated)}
            ctx.store.put_many("score", new)
            records.update(new)
            advance(len(chunk), 0)
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
