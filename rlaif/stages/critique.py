"""Stage `critique` (SL-CAI): rounds of critique then revision, one drawn principle per round."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from ..backends.base import Request, Sampling
from ..spec.config import COMPLETION_STOP, CritiqueConfig
from ..spec.constitution import Principle
from .quality import clean_revision
from ..rundir.store import record_key
from .common import StageContext, derive_seed, few_shot_examples, prompt_format, resume

TEMPLATES = {
    "completion": ("completion/critique.j2", "completion/revise.j2"),
    "chat": ("chat/critique_request.j2", "chat/revision_request.j2"),
}


def critique_request(ctx: StageContext, fmt: str, messages: list, answer: str, principle: Principle, s: Sampling) -> Request:
    """Ask the critic to criticise `answer` against `principle`."""
    if fmt == "chat":
        ask = ctx.templates.render(TEMPLATES["chat"][0], principle=principle)
        return Request(messages=(*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": ask}), sampling=s)
    text = ctx.templates.render(TEMPLATES["completion"][0], messages=messages, response=answer, principle=principle,
                                few_shot=few_shot_examples(ctx, principle))
    return Request(prompt=text, sampling=s)


def revision_request(ctx: StageContext, fmt: str, messages: list, answer: str, critique: str, principle: Principle, s: Sampling) -> Request:
    """Ask the critic to rewrite `answer` so that it fixes what `critique` found."""
    if fmt == "chat":
        first = critique_request(ctx, fmt, messages, answer, principle, s)
        ask = ctx.templates.render(TEMPLATES["chat"][1], principle=principle)
        return Request(messages=(*first.messages, {"role": "assistant", "content": critique}, {"role": "user", "content": ask}), sampling=s)
    text = ctx.templates.render(TEMPLATES["completion"][1], messages=messages, response=answer, critique=critique,
                                principle=principle, few_shot=few_shot_examples(ctx, principle))
    return Request(prompt=text, sampling=s)


def _nonempty(rnd: dict, previous: str, messages: list) -> str | None:
    return None if clean_revision(rnd["revision"]) else "empty"


def _round(ctx: StageContext, generator, fmt: str, base: Sampling, rnd: int, chunk: list, crit_bar, rev_bar) -> dict[str, dict]:
    """One round's records for a chunk of (response, principle, key, answer): the critiques, then the revisions."""
    asks = [critique_request(ctx, fmt, r["messages"], answer, p, replace(base, seed=derive_seed(ctx.seed, key, "critique")))
            for r, p, key, answer in chunk]
    crits = [c.outputs[0] for c in generator.generate(asks, crit_bar)]
    asks = [revision_request(ctx, fmt, r["messages"], answer, c.text.strip(), p, replace(base, seed=derive_seed(ctx.seed, key, "revision")))
            for (r, p, key, answer), c in zip(chunk, crits)]
    revs = [c.outputs[0] for c in generator.generate(asks, rev_bar)]
    return {
        key: {
            "response_key": r["key"], "prompt_id": r["prompt_id"], "round": rnd, "principle": p.name,
            "input": answer, "critique": c.text.strip(), "revision": v.text.strip(),
            "critique_tokens": c.tokens, "revision_tokens": v.tokens,
            "critique_finish": c.finish_reason, "revision_finish": v.finish_reason, "model": generator.model_id,
        }
        for (r, p, key, answer), c, v in zip(chunk, crits, revs)
    }


def critique(ctx: StageContext, generator, responses: list[dict], cfg: CritiqueConfig, format_setting: str = "auto",
             problem=None) -> dict[str, list[dict]]:
    """Every round of every response, by response key; a round revises the last *usable* revision.

    `problem(round_record, previous_answer, messages)` says why a revision is unusable (None: usable; default:
    only an empty one is unusable). A later round is never built on an unusable revision: its input stays the
    last usable answer (preamble stripped) and its key chains on that answer's record, not on the bad round's.
    """
    problem = problem or _nonempty
    fmt = prompt_format(format_setting, generator)
    stop = cfg.stop if cfg.stop is not None else (COMPLETION_STOP if fmt == "completion" else ())
    settings = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "stop": list(stop)}
    if cfg.min_p:  # in the key only when set: records sampled without it keep their keys
        settings["min_p"] = cfg.min_p
    template = ctx.templates.sha256(*TEMPLATES[fmt])
    pool = ctx.constitution.restricted(cfg.principles)
    few_shot = [list(e.values()) for e in few_shot_examples(ctx, None)] if fmt == "completion" else []
    base = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, min_p=cfg.min_p, max_tokens=cfg.max_tokens, stop=tuple(stop))

    history: dict[str, list[dict]] = {r["key"]: [] for r in responses}
    state = {r["key"]: (r["key"], r["text"]) for r in responses}  # (input record key, current answer)
    for rnd in range(1, cfg.rounds + 1):
        plan = []
        for r in responses:
            prev_key, answer = state[r["key"]]
            principle = pool.draw(ctx.seed, f"{r['key']}:{rnd}")
            key = record_key(stage="critique", input=prev_key, round=rnd, principle=principle.sha256, template=template,
                             few_shot=few_shot, model=generator.model_id, sampling=settings, seed=ctx.seed, format=fmt)
            plan.append((r, principle, key, answer))
        records = resume(ctx, "critique", plan, lambda item: [item[2]], partial(_round, ctx, generator, fmt, base, rnd),
                         bars=(f"critique round {rnd}", f"revision round {rnd}"), generator=generator)
        for r, _, key, answer in plan:
            rec = records[key] | {"key": key}
            history[r["key"]].append(rec)
            # an unusable revision is kept in the records, but the next round works on the last usable answer
            if problem(rec, answer, r["messages"]) is None:
                state[r["key"]] = (key, clean_revision(rec["revision"]))
    return history
