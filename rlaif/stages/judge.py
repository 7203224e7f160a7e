"""Stage `judge` (RL-CAI / RLAIF): soft preference labels from the option log-probabilities of an AI judge.

For a comparison (a, b) and a principle, the judge sees a multiple-choice question and we read
P(A) and P(B) of the next token, normalised over the two options. Scoring both orders, (a, b) and
(b, a), and averaging cancels the judge's position bias; how often the orders disagree is recorded.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from functools import cached_property

from ..backends.base import LogprobsUnavailable, Request, Sampling
from ..config import COMPLETION_STOP, JudgeConfig
from ..constitution import Constitution, Principle
from ..store import record_key
from .common import StageContext, chunks, prompt_format

TEMPLATES = {"completion": "completion/judge.j2", "chat": "chat/judge.j2"}
OPTIONS = ("A", "B")
_VERDICT = re.compile(r"answer is:?\s*\(?\s*([AB])\b|^\W*\(?([AB])\)?(?:\W|$)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Candidate:
    """One answer that takes part in comparisons."""

    key: str  # the record it came from (a response, or a critique round for a revision)
    text: str


@dataclass(frozen=True)
class Comparison:
    """Two answers to the same prompt."""

    prompt_id: str
    messages: tuple
    a: Candidate
    b: Candidate
    kind: str  # "samples" (two sampled responses) or "revision" (initial response vs its revision)

    @cached_property  # asked for once per principle and once per record
    def id(self) -> str:
        """Stable id of the pair, independent of everything else in the run."""
        return record_key(a=self.a.key, b=self.b.key)


# ---- pure functions: the method -------------------------------------------------------------------


def normalise(logprobs: dict[str, float]) -> float | None:
    """P(A) from the log-probabilities of the option tokens, normalised over the options."""
    la, lb = logprobs.get("A", -math.inf), logprobs.get("B", -math.inf)
    if la == -math.inf and lb == -math.inf:
        return None
    top = max(la, lb)
    ea, eb = math.exp(la - top), math.exp(lb - top)
    return ea / (ea + eb)


def parse_verdict(text: str) -> float | None:
    """P(A) from a generated verdict: 1.0 for A, 0.0 for B, None when no verdict can be read."""
    matches = [m.group(1) or m.group(2) for m in _VERDICT.finditer(text or "")]
    if not matches:
        return None
    return 1.0 if matches[-1].upper() == "A" else 0.0  # the last stated verdict is the conclusion


def clamp(p: float | None, bounds: tuple[float, float] | None) -> float | None:
    """Chain-of-thought probabilities sit near 0 or 1; clamping keeps them from dominating averages."""
    if p is None or bounds is None:
        return p
    return min(max(p, bounds[0]), bounds[1])


def combine(p_first: float | None, p_swapped: float | None) -> tuple[float | None, bool | None]:
    """Soft label P(a > b) from both orders, and whether the orders agree on the winner.

    p_first = P(A) with a shown as A; p_swapped = P(A) with b shown as A, so P(a > b) = 1 - p_swapped.
    """
    views = [p for p in (p_first, None if p_swapped is None else 1 - p_swapped) if p is not None]
    label = sum(views) / len(views) if views else None
    agree = None if p_first is None or p_swapped is None else (p_first > 0.5) == (1 - p_swapped > 0.5)
    return label, agree


def draw_principles(constitution: Constitution, seed: int, key: str, k: int) -> list[Principle]:
    """k distinct principles, drawn by weight; the same seed and key give the same draw."""
    rng, pool, drawn = random.Random(f"{seed}:{key}:judge"), list(constitution.principles), []
    for _ in range(min(k, len(pool))):
        pick = rng.choices(range(len(pool)), weights=[p.weight for p in pool], k=1)[0]
        drawn.append(pool.pop(pick))
    return drawn


def build_comparisons(responses: list[dict], finals: dict[str, tuple[str, str]], cfg: JudgeConfig, seed: int) -> list[Comparison]:
    """Pairs of sampled responses (all, or one seeded pair per prompt) plus (initial, revision) pairs."""
    by_prompt: dict[str, list[dict]] = {}
    for r in responses:
        if r["text"]:
            by_prompt.setdefault(r["prompt_id"], []).append(r)
    out = []
    for prompt_id, rs in by_prompt.items():
        pairs = [(x, y) for x, y in itertools.combinations(rs, 2) if x["text"] != y["text"]] if cfg.pairs != "none" else []
        if cfg.pairs == "one" and pairs:
            pairs = [random.Random(f"{seed}:{prompt_id}:pair").choice(pairs)]
        out += [Comparison(prompt_id, tuple(x["messages"]), Candidate(x["key"], x["text"]), Candidate(y["key"], y["text"]), "samples")
                for x, y in pairs]
    if cfg.revisions:
        for r in responses:
            if r["key"] in finals and r["text"]:
                rev_key, rev_text = finals[r["key"]]
                out.append(Comparison(r["prompt_id"], tuple(r["messages"]), Candidate(r["key"], r["text"]),
                                      Candidate(rev_key, rev_text), "revision"))
    return out


# ---- talking to the judge ---------------------------------------------------------------------------


def _request(ctx: StageContext, fmt: str, c: Comparison, first: Candidate, second: Candidate, principle: Principle,
             cfg: JudgeConfig, reasoning: str | None, sampling: Sampling) -> Request:
    text = ctx.templates.render(TEMPLATES[fmt], messages=list(c.messages), principle=principle, response_a=first.text,
                                response_b=second.text, chain_of_thought=cfg.chain_of_thought, reasoning=reasoning)
    if fmt == "chat":
        return Request(messages=({"role": "user", "content": text},), sampling=sampling)
    return Request(prompt=text, sampling=sampling)


def _score(ctx, generator, fmt, jobs, cfg: JudgeConfig, method: list[str]) -> list[tuple[float | None, str]]:
    """P(A) and any raw text for each (comparison, first, second, principle) job."""
    stop = tuple(COMPLETION_STOP) + ("\nTherefore",) if fmt == "completion" else ()
    reasoning = [None] * len(jobs)
    if cfg.chain_of_thought:  # let the judge reason first, greedily
        s = Sampling(temperature=0.0, max_tokens=cfg.cot_max_tokens, stop=stop)
        outs = generator.generate([_request(ctx, fmt, c, f, g, p, cfg, None, s) for c, f, g, p in jobs])
        reasoning = [o.outputs[0].text.strip() for o in outs]
    s = Sampling(temperature=0.0, max_tokens=cfg.max_tokens, stop=stop)
    requests = [_request(ctx, fmt, c, f, g, p, cfg, r, s) for (c, f, g, p), r in zip(jobs, reasoning)]
    bounds = tuple(cfg.cot_clamp) if cfg.chain_of_thought and cfg.cot_clamp else None
    if method[0] != "parse":
        try:
            return [(clamp(normalise(lp), bounds), r or "") for lp, r in zip(generator.logprobs(requests, list(OPTIONS)), reasoning)]
        except (NotImplementedError, LogprobsUnavailable):
            if cfg.method == "logprobs":  # asked for explicitly: say so rather than change the method
                raise
            method[0] = "parse"  # this backend gives no log-probabilities: read generated verdicts instead
    texts = [o.outputs[0].text for o in generator.generate(requests)]
    return [(clamp(parse_verdict(t), bounds), ((r + "\n") if r else "") + t) for t, r in zip(texts, reasoning)]


def judge(ctx: StageContext, generator, comparisons: list[Comparison], cfg: JudgeConfig, format_setting: str = "auto") -> list[dict]:
    """One record per (comparison, principle): p for each order, the soft label, agreement, raw text."""
    fmt = prompt_format(format_setting, generator)
    template = ctx.templates.sha256(TEMPLATES[fmt])
    pool = ctx.constitution.restricted(cfg.principles)
    settings = {"both_orders": cfg.both_orders, "cot": cfg.chain_of_thought, "cot_max_tokens": cfg.cot_max_tokens,
                "clamp": list(cfg.cot_clamp or ()), "method": cfg.method, "max_tokens": cfg.max_tokens}
    plan = []
    for c in comparisons:
        for p in draw_principles(pool, ctx.seed, c.id, cfg.principles_per_comparison):
            key = record_key(stage="judge", a=c.a.key, b=c.b.key, principle=p.sha256, template=template,
                             model=generator.model_id, settings=settings, seed=ctx.seed, format=fmt)
            plan.append((c, p, key))
    records = ctx.store.get_many([k for _, _, k in plan])
    todo = [item for item in plan if item[2] not in records]
    method = [cfg.method if cfg.method != "auto" else "logprobs"]
    if todo:
        advance = ctx.reporter.task("judge", len(todo))
        for chunk in chunks(todo, ctx.batch_size):
            jobs = [(c, c.a, c.b, p) for c, p, _ in chunk]
            if cfg.both_orders:
                jobs += [(c, c.b, c.a, p) for c, p, _ in chunk]
            scored = _score(ctx, generator, fmt, jobs, cfg, method)
            new = {}
            for i, (c, p, key) in enumerate(chunk):
                p_first, raw_first = scored[i]
                p_swapped, raw_swapped = scored[len(chunk) + i] if cfg.both_orders else (None, "")
                label, agree = combine(p_first, p_swapped)
                new[key] = {"comparison_id": c.id, "prompt_id": c.prompt_id, "kind": c.kind, "a_key": c.a.key,
                            "b_key": c.b.key, "principle": p.name, "p_first": p_first, "p_swapped": p_swapped,
                            "label": label, "agree": agree, "orders": 2 if cfg.both_orders else 1, "method": method[0], "model": generator.model_id,
                            "raw_first": raw_first, "raw_swapped": raw_swapped}
            ctx.store.put_many("judge", new)
            records.update(new)
            advance(len(chunk), 0)
    return [records[key] | {"key": key} for _, _, key in plan]
