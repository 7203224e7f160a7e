"""Two sets of answers to the same prompts, judged against each other: what `rlaif eval winrate` and the
training-time reward-hacking watch (train/watch.py) share.

A `Session` holds the constitution, templates, record store and engines of one comparison; `answers` runs the
respond stage for one side in one prompt format (`decoding` says how, equally for both sides); `compare` runs the
judge stage on the pairs in both orders (identical answers are ties, not sent); `win_rates` turns the labels into a
win rate with ties counted half, per prompt and per principle.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..backends.pool import ModelPool, resolve_model
from ..rundir.store import Store
from ..rundir.versions import weights_fingerprint
from ..spec.config import COMPLETION_STOP, JudgeConfig, ModelConfig, RespondConfig
from ..spec.constitution import Constitution
from ..spec.inputs import Prompt
from ..spec.templates import Templates
from ..stats import bootstrap_ci
from .common import StageContext, prompt_format
from .judge import Candidate, Comparison, draw_principles, judge
from .respond import respond


class _Quiet:
    """A reporter without bars, for callers that have no live display (training-time checks)."""

    def task(self, description: str, total: int):
        return lambda done, tokens: None

    def print(self, *args, **kwargs) -> None:
        pass


@dataclass
class Session:
    """What one evaluation shares: constitution, templates, a record store, the loaded engines."""

    constitution: Constitution
    store: Store
    templates: Templates = field(default_factory=Templates)
    seed: int = 0
    reporter: object = field(default_factory=_Quiet)
    pool: ModelPool | None = None
    batch_size: int = 64
    few_shot: int | None = None  # base models answer after the constitution's examples, as in the pipeline

    def context(self, answering: bool = False) -> StageContext:
        """The StageContext the stages expect; `answering`: the examples show their revisions as the answers."""
        constitution = self.constitution
        if answering:  # evaluation never primes a model with the examples' flawed responses
            constitution = replace(constitution, few_shot=tuple(dataclasses.replace(ex, response=ex.revision)
                                                                for ex in constitution.few_shot))
        return StageContext(self.store, constitution, self.templates, self.reporter, self.seed, self.batch_size,
                            self.few_shot)

    def engine(self, cfg: ModelConfig):
        """The generator for `cfg`, loaded once; a local model's id carries a fingerprint of its files."""
        self.pool = self.pool or ModelPool(self.seed)
        generator = self.pool.get(cfg)
        fingerprint = weights_fingerprint(cfg.model)
        if fingerprint and not generator.model_id.endswith(fingerprint):  # weights retrained in place get new records
            generator.model_id = f"{generator.model_id}@{fingerprint}"
        return generator

    def release(self, cfg: ModelConfig, keep: tuple = ()) -> None:
        """Free `cfg`'s engine unless a later phase needs it (one in-process vLLM engine at a time)."""
        if self.pool and cfg in self.pool.engines and cfg not in keep:
            self.pool.engines.pop(cfg).close()

    def close(self) -> None:
        """Shut the engines and the store."""
        if self.pool:
            self.pool.close()
        self.store.close()


def decoding(session: Session, fmt: str, max_tokens: int, temperature: float) -> dict:
    """How a side's answers are produced: prompt format, stop strings, examples, sampling. Equal on both sides."""
    examples = session.constitution.few_shot
    shown = len(examples[: session.few_shot] if session.few_shot is not None else examples) if fmt == "completion" else 0
    return {"format": fmt, "stop": list(COMPLETION_STOP if fmt == "completion" else ()),
            "few_shot": f"{shown} examples, revisions as the answers" if shown else "none", "temperature": temperature,
            "top_p": 1.0, "max_tokens": max_tokens}


def answers(session: Session, generator, prompts: list[Prompt], max_tokens: int, temperature: float, fmt: str) -> list[dict]:
    """One answer per prompt from `generator` in format `fmt` (the respond stage, so stored answers are reused)."""
    stop = decoding(session, fmt, max_tokens, temperature)["stop"]
    cfg = RespondConfig(n=1, temperature=temperature, top_p=1.0, max_tokens=max_tokens, stop=tuple(stop))
    return respond(session.context(answering=True), generator, prompts, cfg, fmt)


def side(model_id: str, got: list[dict], how: dict) -> dict:
    """What one side of a comparison was: its model, how it answered, and how its answers ended."""
    return {"model": model_id, **how, "formats_used": sorted({a["format"] for a in got}),
            "finish_reasons": dict(Counter(a["finish_reason"] for a in got))}


def resolve_format(session: Session, cfg: ModelConfig, setting: str | None = None) -> str:
    """The one prompt format of a comparison: `setting`, else `cfg`'s, with `auto` decided by `cfg`'s model.

    A local model's tokenizer alone says whether it has a chat template, so its engine need not be started
    first (the answering order then keeps one in-process engine at a time).
    """
    setting = setting or cfg.prompt_format
    if setting != "auto":
        return setting
    if cfg.backend not in ("openai", "scripted") and not (session.pool and cfg in session.pool.engines):  # no files to read
        path = resolve_model(cfg.model)
        if Path(path).is_dir():
            from transformers import AutoTokenizer

            return "chat" if AutoTokenizer.from_pretrained(path).chat_template else "completion"
    return prompt_format(setting, session.engine(cfg))


def self_judged(judge_id: str, sides: dict[str, str]) -> tuple[list[str], list[str]]:
    """Which sides the judge itself is, and the warning that says so (self-preference bias)."""
    same = [role for role, model_id in sides.items() if model_id == judge_id]
    warnings = [f"the judge is the {role} model itself ({judge_id}): judges tend to prefer their own answers "
                "(self-preference bias); give another judge (--judge, models.judge) for an independent verdict" for role in same]
    return same, warnings


def outcome(label: float | None, tie_band: float) -> float | None:
    """1 for a win, 0 for a loss, 0.5 for a tie (label within tie_band of 0.5); None when the judge gave no label."""
    if label is None:
        return None
    return 1.0 if label > 0.5 + tie_band else 0.0 if label < 0.5 - tie_band else 0.5


def summarise(labels: list[float | None], tie_band: float, seed: int = 0) -> dict:
    """Win rate (ties count half) with a bootstrap interval over prompts, counts, and the mean soft label."""
    outcomes = [o for o in (outcome(x, tie_band) for x in labels) if o is not None]
    soft = [x for x in labels if x is not None]
    return {"n": len(labels), "judged": len(outcomes), "wins": outcomes.count(1.0), "losses": outcomes.count(0.0),
            "ties": outcomes.count(0.5), "win_rate": round(sum(outcomes) / len(outcomes), 4) if outcomes else None,
            "ci95": bootstrap_ci(outcomes, seed), "mean_label": round(sum(soft) / len(soft), 4) if soft else None}


def compare(session: Session, judge_generator, prompts: list[Prompt], first: list[dict], second: list[dict],
            judge_cfg: JudgeConfig, format_setting: str = "auto") -> dict[str, list[dict]]:
    """Judge records per prompt id for answer pairs (first = a, second = b).

    Identical answers are not sent to the judge: they get one tie record (label 0.5) per principle the judge
    would have drawn, so the overall and the per-principle rates treat them the same way.
    """
    comparisons = [Comparison(p.id, p.messages, Candidate(a["key"], a["text"]), Candidate(b["key"], b["text"]), "eval")
                   for p, a, b in zip(prompts, first, second)]
    by_prompt: dict[str, list[dict]] = {}
    differ = [c for c in comparisons if c.a.text != c.b.text]
    for r in judge(session.context(), judge_generator, differ, judge_cfg, format_setting):
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    pool = session.constitution.restricted(judge_cfg.principles)
    for c in comparisons:
        if c.a.text == c.b.text:
            by_prompt[c.prompt_id] = [{"prompt_id": c.prompt_id, "principle": p.name, "label": 0.5, "agree": None,
                                       "identical": True}
                                      for p in draw_principles(pool, session.seed, c.id, judge_cfg.principles_per_comparison)]
    return by_prompt


def win_rates(prompts: list[Prompt], first: list[dict], second: list[dict], judged: dict[str, list[dict]],
              tie_band: float, seed: int = 0) -> tuple[dict, list[dict], dict]:
    """Win rate of `first` over `second`: overall, one row per prompt, and per principle (same tie rule for both)."""
    rows, per_principle = [], {}
    for p, a, b in zip(prompts, first, second):
        records = judged.get(p.id, [])
        labels = [r["label"] for r in records if r["label"] is not None]
        identical = a["text"] == b["text"]
        label = 0.5 if identical else (sum(labels) / len(labels) if labels else None)  # the principle ensemble
        for r in records:
            per_principle.setdefault(r["principle"], []).append(r["label"])
        rows.append({"prompt_id": p.id, "prompt": p.messages[-1]["content"], "policy": a["text"], "baseline": b["text"],
                     "policy_finish": a.get("finish_reason"), "baseline_finish": b.get("finish_reason"),
                     "label": label, "outcome": outcome(label, tie_band), "identical": identical,
                     "orders_agree": [r["agree"] for r in records if not identical],
                     "principles": {r["principle"]: r["label"] for r in records}})
    overall = summarise([r["label"] for r in rows], tie_band, seed)
    overall["identical"] = sum(r["identical"] for r in rows)
    agree = [x for r in rows for x in r["orders_agree"] if x is not None]
    overall["position_consistency"] = round(sum(agree) / len(agree), 4) if agree else None
    principles = {name: summarise(labels, tie_band, seed) for name, labels in sorted(per_principle.items())}
    return overall, rows, principles
