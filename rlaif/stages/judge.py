"""Stage `judge` (RL-CAI / RLAIF): soft preference labels from the option log-probabilities of an AI judge.

For a comparison (a, b) and a principle, the judge sees a multiple-choice question and we read
P(A) and P(B) of what comes next (in context, spellings summed: backends/options.py), normalised over the
two options. When P(A) + P(B), the option mass, is below `min_option_mass` the judge meant to say something
else ("**", "<think>", "The"), and that order gets no label. Scoring both orders, (a, b) and (b, a), and
averaging cancels the judge's position bias; how often the orders disagree is recorded.

The constitution's worked comparisons (`judge_few_shot`) come first, each the same question with its answer:
completion text before the question (completion/judge_examples.j2), or earlier (user, assistant) turns for a
chat judge. Either way the two orders of a comparison, and every comparison under one principle, share them as
one prefix, which the engine's prefix cache computes once.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from functools import cached_property

from ..backends.base import LogprobsUnavailable, Request, Sampling
from ..spec.config import COMPLETION_STOP, JudgeConfig
from ..spec.constitution import Constitution, Principle
from ..rundir.store import record_key
from .common import StageContext, prompt_format, resume

TEMPLATES = {"completion": "completion/judge.j2", "chat": "chat/judge.j2"}
REPLY = "chat/judge_reply.j2"  # a chat judge's reply starts with this; the letter is read after it
# the worked comparisons: completion text that includes judge.j2 per example; a chat example's answer turn
EXAMPLES = {"completion": "completion/judge_examples.j2", "chat": "chat/judge_example_reply.j2"}
OPTIONS = ("A", "B")
# How option probabilities are read, in every judge record key: records read the old way (first token out of
# context, bf16 logits on hf, no mass check) must not mix with these. Bump when the reading changes meaning.
READING = "in-context-v2"
# Verdicts in generated text (the parse method). Letters are case-sensitive ("the answer is b" is no verdict);
# the last verdict in the text wins.
_VERDICTS = (
    # "The answer is: (A)", "Answer: B", "Option B", "Response B is better", "my choice is (A)"
    re.compile(r"(?i:\b(?:answer|option|response|choice|verdict)\b)(?:\s+is)?\s*:?\s*\**\(?([AB])(?![\w'’])"),
    re.compile(r"\(([AB])\)"),  # "(B)" anywhere: "I pick (B)"
    # a line that starts with the letter ("B", "B)", "**A**", "A.", "A is better") but not the article
    # ("A response like B is better") nor a turn label ("A: ...")
    re.compile(r"^[ \t*]*\(?([AB])(?:\)|\*|(?=[ \t]*[.,;!]?[ \t]*$)|(?=[.,;!]\s)|(?=\s+(?:is|wins|because)\b))", re.MULTILINE),
    re.compile(r"(?<![\w(])([AB])\)?\s+(?:is|seems|looks)\s+(?:better|preferable|the better)\b"),  # "... B is better"
)


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


def option_mass(logprobs: dict[str, float]) -> float:
    """P(A) + P(B): how much of what the judge would say next is one of the options."""
    return sum(math.exp(logprobs.get(o, -math.inf)) for o in OPTIONS)


def read_options(logprobs: dict[str, float], min_mass: float) -> tuple[float | None, float]:
    """(P(A) normalised over the options, option mass); P(A) is None when the mass is below `min_mass`."""
    mass = option_mass(logprobs)
    return (normalise(logprobs) if mass >= min_mass and mass > 0 else None), mass


def parse_verdict(text: str) -> float | None:
    """P(A) from a generated verdict: 1.0 for A, 0.0 for B, None when no verdict can be read."""
    found = [(m.start(1), m.group(1)) for pattern in _VERDICTS for m in pattern.finditer(text or "")]
    if not found:
        return None
    return 1.0 if max(found)[1] == "A" else 0.0  # the last stated verdict is the conclusion


def clamp(p: float | None, bounds: tuple[float, float] | None) -> float | None:
    """Chain-of-thought probabilities sit near 0 or 1; clamping keeps them from dominating averages."""
    if p is None or bounds is None:
        return p
    return min(max(p, bounds[0]), bounds[1])


def combine(p_first: float | None, p_swapped: float | None) -> tuple[float | None, bool | None, int]:
    """Soft label P(a > b) from both orders, whether the orders agree on the winner, and how many orders were scored.

    p_first = P(A) with a shown as A; p_swapped = P(A) with b shown as A, so P(a > b) = 1 - p_swapped.
    `agree` is None unless both orders were scored and each picked a winner: an exact 0.5 is a tie, which is
    neither agreement nor disagreement. With one order missing the label is that order's alone (position bias
    included), and the count says so.
    """
    views = [p for p in (p_first, None if p_swapped is None else 1 - p_swapped) if p is not None]
    label = sum(views) / len(views) if views else None
    decided = p_first is not None and p_swapped is not None and 0.5 not in (p_first, p_swapped)
    agree = (p_first > 0.5) == (1 - p_swapped > 0.5) if decided else None
    return label, agree, len(views)


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


def judge_examples(constitution: Constitution, principle: Principle) -> list[dict]:
    """The worked comparisons shown before a question under `principle`, each with its own principle's question."""
    out = []
    for ex in constitution.judge_few_shot:
        shown = constitution.principle(ex.principle) if ex.principle else principle
        out.append({"messages": ex.conversation(), "comparison": shown.comparison, "response_a": ex.response_a,
                    "response_b": ex.response_b, "preferred": ex.preferred})
    return out


# ---- talking to the judge ---------------------------------------------------------------------------


def render_examples(ctx: StageContext, fmt: str, examples: list[dict]) -> str | tuple:
    """The examples as they precede the question: completion text, or earlier (user, assistant) chat turns."""
    if fmt == "completion":
        return ctx.templates.render(EXAMPLES["completion"], examples=examples)
    # a chat judge sees each example as an earlier exchange in the very form it must answer in (few-shot as
    # multi-turn); chat/judge.j2 is rendered as it is for the real question, so a chat prompt without examples is
    # the one it always was, and the opened reply (chat/judge_reply.j2) still comes right after the last user turn
    turns = []
    for ex in examples:
        ask = ctx.templates.render(TEMPLATES["chat"], messages=ex["messages"], principle=ex, response_a=ex["response_a"],
                                   response_b=ex["response_b"], chain_of_thought=False, reasoning=None)
        turns += [{"role": "user", "content": ask},
                  {"role": "assistant", "content": ctx.templates.render(EXAMPLES["chat"], preferred=ex["preferred"])}]
    return tuple(turns)


def request(ctx: StageContext, fmt: str, c: Comparison, first: Candidate, second: Candidate, principle: Principle,
            cfg: JudgeConfig, reasoning: str | None, sampling: Sampling, answer: bool, shots: str | tuple | None = None) -> Request:
    """The judge's question after the worked examples; `answer`: the reply must start with the verdict (chat: opened
    with chat/judge_reply.j2). `shots`: the examples already rendered for `principle` (render_examples)."""
    if shots is None:
        shots = render_examples(ctx, fmt, judge_examples(ctx.constitution, principle))
    text = ctx.templates.render(TEMPLATES[fmt], messages=list(c.messages), principle=principle, response_a=first.text,
                                response_b=second.text, chain_of_thought=cfg.chain_of_thought, reasoning=reasoning)
    if fmt == "chat":
        prefix = ctx.templates.render(REPLY) if answer else ""
        return Request(messages=(*shots, {"role": "user", "content": text}), sampling=sampling, prefix=prefix)
    return Request(prompt=shots + text, sampling=sampling)


Scored = tuple[float | None, float | None, str]  # P(A) (None: no usable answer), option mass (None: parsed), raw text


def _score(ctx, generator, fmt, jobs, cfg: JudgeConfig, method: str) -> list[Scored]:
    """P(A), the option mass and any raw text for each (comparison, first, second, principle) job."""
    stop = tuple(COMPLETION_STOP) + ("\nTherefore",) if fmt == "completion" else ()
    shots: dict[str, str | tuple] = {}  # the examples, rendered once per principle

    def ask(job, reasoning, s, answer):
        c, f, g, p = job
        if p.name not in shots:
            shots[p.name] = render_examples(ctx, fmt, judge_examples(ctx.constitution, p))
        return request(ctx, fmt, c, f, g, p, cfg, reasoning, s, answer, shots[p.name])

    reasoning = [None] * len(jobs)
    if cfg.chain_of_thought:  # let the judge reason first, greedily
        s = Sampling(temperature=0.0, max_tokens=cfg.cot_max_tokens, stop=stop)
        outs = generator.generate([ask(job, None, s, False) for job in jobs])
        reasoning = [o.outputs[0].text.strip() for o in outs]
    s = Sampling(temperature=0.0, max_tokens=cfg.max_tokens, stop=stop)
    bounds = tuple(cfg.cot_clamp) if cfg.chain_of_thought and cfg.cot_clamp else None
    if method == "logprobs":
        requests = [ask(job, r, s, True) for job, r in zip(jobs, reasoning)]
        read = [read_options(lp, cfg.min_option_mass) for lp in generator.logprobs(requests, list(OPTIONS))]
        return [(clamp(p, bounds), mass, r or "") for (p, mass), r in zip(read, reasoning)]
    # a verdict in the judge's own words: no reply prefix, so a chat judge may say it however it likes
    requests = [ask(job, r, s, False) for job, r in zip(jobs, reasoning)]
    texts = [o.outputs[0].text for o in generator.generate(requests)]
    return [(clamp(parse_verdict(t), bounds), None, ((r + "\n") if r else "") + t) for t, r in zip(texts, reasoning)]


def _score_first_usable(ctx, generator, fmt, jobs, cfg: JudgeConfig, methods: list[str]) -> tuple[list[Scored], str]:
    """The scored jobs and the method that scored them (the first of `methods`; `parse` when `auto` finds no logprobs)."""
    try:
        return _score(ctx, generator, fmt, jobs, cfg, methods[0]), methods[0]
    except (NotImplementedError, LogprobsUnavailable):
        if methods[0] != "logprobs" or len(methods) == 1:  # asked for explicitly: say so rather than change the method
            raise
        # this backend gives no log-probabilities: read generated verdicts instead
        return _score(ctx, generator, fmt, jobs, cfg, "parse"), "parse"


def _records(chunk, scored: list[Scored], cfg: JudgeConfig, method: str, generator) -> dict[str, dict]:
    """One record per (comparison, principle) of the chunk, from its scored orders."""
    new = {}
    for i, (c, p, key) in enumerate(chunk):
        p_first, mass_first, raw_first = scored[i]
        p_swapped, mass_swapped, raw_swapped = scored[len(chunk) + i] if cfg.both_orders else (None, None, "")
        label, agree, scored_orders = combine(p_first, p_swapped)
        new[key] = {"comparison_id": c.id, "prompt_id": c.prompt_id, "kind": c.kind, "a_key": c.a.key, "b_key": c.b.key,
                    "principle": p.name, "p_first": p_first, "p_swapped": p_swapped, "option_mass_first": mass_first,
                    "option_mass_swapped": mass_swapped, "label": label, "agree": agree,
                    "orders": 2 if cfg.both_orders else 1, "orders_scored": scored_orders, "method": method,
                    "logit_dtype": getattr(generator, "logit_dtype", None) if method == "logprobs" else None,
                    "model": generator.model_id, "raw_first": raw_first, "raw_swapped": raw_swapped}
    return new


def judge(ctx: StageContext, generator, comparisons: list[Comparison], cfg: JudgeConfig, format_setting: str = "auto") -> list[dict]:
    """One record per (comparison, principle): p and option mass for each order, the soft label, agreement, raw text.

    The key names the method actually used: with `auto`, log-probabilities, or parsed verdicts once the backend
    turns out to have none; a record made either way is reused.
    """
    fmt = prompt_format(format_setting, generator)
    template = ctx.templates.sha256(TEMPLATES[fmt])
    reply = ctx.templates.sha256(REPLY) if fmt == "chat" else None
    pool = ctx.constitution.restricted(cfg.principles)
    methods = ["logprobs", "parse"] if cfg.method == "auto" else [cfg.method]
    shown: dict[str, dict] = {}  # principle name -> the key part for its examples

    def examples_part(p: Principle) -> dict:
        # the examples rendered under `p` and their template; no part at all without examples, so the keys of a
        # constitution without `judge_few_shot` are the ones they always were
        if p.name not in shown:
            examples = judge_examples(ctx.constitution, p)
            shown[p.name] = {"examples": record_key(examples=examples, template=ctx.templates.sha256(EXAMPLES[fmt]))} if examples else {}
        return shown[p.name]

    def key(c: Comparison, p: Principle, method: str) -> str:
        settings = {"both_orders": cfg.both_orders, "cot": cfg.chain_of_thought, "cot_max_tokens": cfg.cot_max_tokens,
                    "clamp": list(cfg.cot_clamp or ()), "method": method}
        if method == "logprobs":
            settings |= {"reading": READING, "min_option_mass": cfg.min_option_mass,
                         "logit_dtype": getattr(generator, "logit_dtype", None)}
        else:
            settings |= {"max_tokens": cfg.max_tokens, "parser": READING}
        return record_key(stage="judge", a=c.a.key, b=c.b.key, principle=p.sha256, template=template, reply=reply,
                          model=generator.model_id, settings=settings, seed=ctx.seed, format=fmt, **examples_part(p))

    plan = [(c, p, [key(c, p, m) for m in methods]) for c in comparisons
            for p in draw_principles(pool, ctx.seed, c.id, cfg.principles_per_comparison)]
    usable = methods  # once a chunk falls back to `parse`, the later ones do not try log-probabilities again

    def make(chunk: list, _advance) -> dict[str, dict]:
        nonlocal usable
        jobs = [(c, c.a, c.b, p) for c, p, _ in chunk]
        if cfg.both_orders:
            jobs += [(c, c.b, c.a, p) for c, p, _ in chunk]
        scored, method = _score_first_usable(ctx, generator, fmt, jobs, cfg, usable)
        usable = usable[usable.index(method):]
        return _records([(c, p, keys[methods.index(method)]) for c, p, keys in chunk], scored, cfg, method, generator)

    records = resume(ctx, "judge", plan, lambda item: item[2], make, count=True, generator=generator)
    out = []
    for _, _, keys in plan:
        k = next(k for k in keys if k in records)  # log-probabilities first, where both exist
        out.append(records[k] | {"key": k})
    return out
