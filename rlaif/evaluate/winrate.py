"""`rlaif eval winrate` and `rlaif eval harmless`: the trained policy against its starting point, judged by the AI judge.

Both models answer the same held-out prompts in ONE prompt format (the baseline's, i.e. the start's), with the
same stop strings and decoding (greedy by default); a base model's few-shot transcript shows the constitution's
examples with their *revisions* as the answers, never the flawed responses. The judge compares each pair of
answers in both orders (the judge stage, so every judge option applies), under every principle unless told to
draw fewer. The result records each side's format, stop strings and decoding, and says when the judge is one of
the compared models (self-preference). All records go to an SQLite store in the output directory, so an
interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..rundir import atomic
from ..spec.config import EvalConfig, JudgeConfig, ModelConfig
from ..spec.constitution import Constitution
from ..spec.inputs import Prompt
from ..stages.common import prompt_format
from ..stages.judge_stats import CONSISTENCY_WARNING
from ..stages.compare import Session, answers, compare, decoding, resolve_format, self_judged, side, win_rates

def _judge_config(judge_cfg: JudgeConfig | None, constitution: Constitution, principles: int) -> JudgeConfig:
    """Both orders always; k principles per comparison (0: every principle, so each gets a per-principle result)."""
    base = judge_cfg or JudgeConfig()
    pool = constitution.restricted(base.principles).principles
    k = len(pool) if principles == 0 else min(principles, len(pool))
    return replace(base, both_orders=True, principles_per_comparison=k)


def headline(name: str, value: float | None, ci95: list | None, unit: str = "rate") -> dict:
    """Every eval summary's main number in one shape, which the report and `rlaif run` read (docs/evaluation.md)."""
    # name: the summary key it repeats (per_principle rows hold the same key); unit: "rate" (a share) or "nats" (KL)
    return {"name": name, "value": value, "ci95": ci95, "unit": unit}


def winrate(session: Session, policy: ModelConfig, baseline: ModelConfig, judge_model: ModelConfig, prompts: list[Prompt],
            out_dir: Path, settings: EvalConfig, judge_cfg: JudgeConfig | None = None, name: str = "winrate",
            fmt: str | None = None) -> dict:
    """Answer with both models in one format, judge both orders, write <name>.json and <name>.jsonl; the summary.

    `settings`: max_tokens, temperature, principles and tie_band are read. `fmt`: the prompt format of both sides;
    None: the baseline's (`auto`: chat if its tokenizer has a template).
    """
    max_tokens, temperature, tie_band = settings.max_tokens, settings.temperature, settings.tie_band
    jcfg = _judge_config(judge_cfg, session.constitution, settings.principles)
    fmt = fmt or resolve_format(session, baseline)
    how = decoding(session, fmt, max_tokens, temperature)
    got, sides = {}, {}
    for role, cfg, later in (("policy", policy, (baseline, judge_model)), ("baseline", baseline, (judge_model,))):
        generator = session.engine(cfg)
        got[role] = answers(session, generator, prompts, max_tokens, temperature, fmt)
        sides[role] = side(generator.model_id, got[role], how)
        session.release(cfg, keep=later)
    judge_generator = session.engine(judge_model)
    judged = compare(session, judge_generator, prompts, got["policy"], got["baseline"], jcfg, judge_model.prompt_format)
    overall, rows, per_principle = win_rates(prompts, got["policy"], got["baseline"], judged, tie_band, session.seed)
    same, warnings = self_judged(judge_generator.model_id, {r: s["model"] for r, s in sides.items()})
    if overall["position_consistency"] is not None and overall["position_consistency"] < CONSISTENCY_WARNING:
        warnings.append(f"the judge's position consistency on these pairs is {overall['position_consistency']:.2f} "
                        f"(below {CONSISTENCY_WARNING}): its verdicts are close to chance")
    summary = {"kind": "winrate", "headline": headline("win_rate", overall["win_rate"], overall["ci95"]),
               "policy": sides["policy"]["model"], "baseline": sides["baseline"]["model"],
               "judge": judge_generator.model_id, "self_judged": same, "prompt_format": fmt,
               "sides": {"policy": sides["policy"], "baseline": sides["baseline"]},
               "constitution": session.constitution.name, "constitution_sha256": session.constitution.sha256,
               "prompts": len(prompts), "principles_per_comparison": jcfg.principles_per_comparison, "tie_band": tie_band,
               "max_tokens": max_tokens, "temperature": temperature, "seed": session.seed, **overall,
               "per_principle": per_principle, "warnings": warnings}
    _write(out_dir, name, summary, rows)
    return summary


def harmless(session: Session, model: ModelConfig, judge_model: ModelConfig, prompts: list[Prompt], out_dir: Path,
             settings: EvalConfig, name: str = "harmless", fmt: str | None = None) -> dict:
    """Share of red-team prompts whose answer the judge calls harmless (one binary A/B judgement per answer).

    `settings`: threshold, max_tokens and temperature are read. `fmt`: the answers' prompt format (pass the start's
    so that start and trained models answer alike); None: the model's own. See rlaif.evaluate.harmless for the judgement.
    """
    from .harmless import MIN_OPTION_MASS, harmless_summary, judge_harm

    max_tokens, temperature = settings.max_tokens, settings.temperature
    fmt = fmt or resolve_format(session, model)
    how = decoding(session, fmt, max_tokens, temperature)
    generator = session.engine(model)
    got = answers(session, generator, prompts, max_tokens, temperature, fmt)
    model_id = generator.model_id
    session.release(model, keep=(judge_model,))
    judge_generator = session.engine(judge_model)
    judge_fmt = prompt_format(judge_model.prompt_format, judge_generator)
    records = judge_harm(session.context(), judge_generator, judge_fmt, got)
    counts, rows = harmless_summary(prompts, got, records, settings.threshold)
    same, warnings = self_judged(judge_generator.model_id, {"answering": model_id})
    if counts["mean_option_mass"] is not None and counts["mean_option_mass"] < MIN_OPTION_MASS:
        warnings.append(f"the judge puts only {counts['mean_option_mass']:.2f} of its probability on A or B (mean): "
                        "it is mostly not answering the harm question, so the rate is unreliable")
    summary = {"kind": "harmless", "headline": headline("rate", counts["rate"], counts["ci95"]), "model": model_id,
               "judge": judge_generator.model_id, "self_judged": same,
               "question": "rlaif/prompts/{completion,chat}/harm.j2, both option orders", "prompt_format": fmt,
               "sides": {"answering": side(model_id, got, how)}, "constitution": session.constitution.name,
               "constitution_sha256": session.constitution.sha256, **counts, "warnings": warnings}
    _write(out_dir, name, summary, rows)
    return summary


def _write(out_dir: Path, name: str, summary: dict, rows: list[dict]) -> None:
    """`<name>.jsonl` (one row per prompt), then `<name>.json` (the summary), each written atomically (rlaif.rundir.atomic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_jsonl(out_dir / f"{name}.jsonl", rows)
    atomic.write_json(out_dir / f"{name}.json", summary)
