"""Run a pipeline file: validate every input, then the data stages in order (resumably), the export, training, eval, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import __version__
from .rundir import atomic
from .spec.config import JudgeConfig, Pipeline
from .spec.constitution import Constitution, load_constitution
from .errors import UserError
from .train.stage import check_pairs_from, run_training, trained_model, training_config, training_stages
from .export.rows import PREF_FEATURES, SFT_FEATURES, judged_rows, pair_id, scored_rows, sl_cai_rows, write_dataset
from .rundir.guard import check_name, check_run_dir, guarded
from .stages.judge_stats import CONSISTENCY_WARNING, judge_stats, print_judge_stats
from .spec.inputs import Prompt, load_prompts
from .backends.pool import ModelPool, check_model, check_prompt_tokens
from .export.pairs import merge_pairs
from .progress import Reporter
from .stages.quality import clean_revision, revision_problem
from .backends.ray import check_scale
from .stages.preview import check_templates
from .stages.common import StageContext, prompt_format
from .stages.critique import critique
from .stages.judge import build_comparisons, judge
from .stages.score import best_vs_worst, score
from .stages.respond import respond
from .rundir.store import Store, record_key
from .spec.templates import Templates
from .rundir.versions import versions, weights_fingerprint

ALL_TEMPLATES = (
    "completion/respond.j2", "completion/critique.j2", "completion/revise.j2",
    "chat/critique_request.j2", "chat/revision_request.j2", "completion/judge.j2", "chat/judge.j2",
    "completion/score.j2", "chat/score.j2", "chat/judge_reply.j2", "chat/score_reply.j2",
)


@dataclass
class Plan:
    """Everything validated before a model is loaded."""

    pipeline: Pipeline
    constitution: Constitution
    templates: Templates
    prompts: list[Prompt]
    run_dir: Path


def plan(pipeline: Pipeline, force: bool = False) -> Plan:
    """Validate the constitution, templates, prompts, stages, model paths and the run directory; load nothing heavy.

    `force`: write into a directory that is not this pipeline's run (rlaif.guard).
    """
    check_name(pipeline)
    constitution = load_constitution(pipeline.constitution)
    if pipeline.stages.respond is None:
        raise UserError("stages: `respond` is required (the other stages work on its responses)", *pipeline.where("stages"))
    if pipeline.stages.critique:
        for name in pipeline.stages.critique.principles:
            if name not in {p.name for p in constitution.principles}:
                raise UserError(f"stages.critique.principles: no principle named {name!r} in {constitution.path}",
                                *pipeline.where("stages.critique.principles"))
    if pipeline.stages.judge:
        _check_judge(pipeline, constitution)
    if pipeline.stages.score:
        _check_comparisons(constitution, pipeline.stages.score.principles, "score", pipeline)
    run_dir = Path(pipeline.output or Path("outputs") / pipeline.name)
    check_run_dir(run_dir, pipeline, force)
    for method in training_stages(pipeline):  # checked now, though their dataset is made by this run
        training_config(pipeline, run_dir, method, check_dataset=False)
    check_pairs_from(pipeline, run_dir)
    if pipeline.stages.eval:
        from .evaluate.stage import check as check_eval

        check_eval(pipeline)
    if pipeline.stages.report:  # a report.html rlaif did not write would stop the run at its very end
        from .report.report import check_output

        check_output(run_dir, Path(pipeline.stages.report.output or run_dir / "report"))
    templates = Templates(pipeline.templates)
    prompts = load_prompts(pipeline.prompts, pipeline.limit)
    sample = prompts[0].messages if prompts else ({"role": "user", "content": "<prompt>"},)
    check_templates(templates, constitution, sample, pipeline.few_shot, pipeline.stages.judge)  # the stages' own builders
    check_prompt_tokens(pipeline, prompts)
    roles = [(role, cfg) for role, cfg in vars(pipeline.models).items() if cfg is not None]
    for role, cfg in roles:
        check_model(cfg, pipeline, f"models.{role}")
    check_scale(pipeline)
    return Plan(pipeline, constitution, templates, prompts, run_dir)


def revision_checker(p: Plan):
    """Why a revision is unusable: empty or unchanged always; truncated, echoes and copies when drop_degenerate is on."""
    examples = [t for ex in p.constitution.few_shot for t in (ex.prompt, ex.response, ex.revision, ex.critique)]
    requests = [t for q in p.constitution.principles for t in (q.critique, q.revision)]  # any principle's, not only the drawn one

    def problem(rnd: dict, previous: str, messages: list) -> str | None:
        text = clean_revision(rnd["revision"])  # a chat critic's "Here is a revised response:" is not part of the answer
        if not p.pipeline.drop_degenerate:
            return "empty" if not text else "unchanged" if text == previous else None
        users = [m["content"] for m in messages if m["role"] == "user"]
        return revision_problem(text, previous, requests, examples, users, rnd.get("revision_finish"))

    return problem


def _check_judge(pipeline: Pipeline, constitution: Constitution) -> None:
    """The judge needs pairs to compare and a comparison question for every principle it may draw."""
    cfg, respond = pipeline.stages.judge, pipeline.stages.respond
    if cfg.pairs != "none" and respond.n < 2:
        file, line = pipeline.where("stages.respond.n")
        raise UserError(f"stages.judge compares sampled responses, so stages.respond.n must be >= 2 (it is {respond.n}); "
                        "or set stages.judge.pairs: none to judge only (initial, revision) pairs",
                        file, line or pipeline.where("stages.judge")[1])
    if cfg.pairs == "none" and not (cfg.revisions and pipeline.stages.critique):
        raise UserError("stages.judge has nothing to compare: pairs is none and there are no (initial, revision) pairs "
                        "(needs a critique stage and revisions: true)", *pipeline.where("stages.judge"))
    _check_comparisons(constitution, cfg.principles, "judge", pipeline)


def _check_comparisons(constitution: Constitution, names: tuple[str, ...], stage: str, pipeline: Pipeline) -> None:
    """Every principle a judging stage may draw exists and has a comparison question."""
    for name in names:
        if name not in {p.name for p in constitution.principles}:
            raise UserError(f"stages.{stage}.principles: no principle named {name!r} in {constitution.path}",
                            *pipeline.where(f"stages.{stage}.principles"))
    for p in constitution.principles:
        if (not names or p.name in names) and not p.comparison:
            raise UserError(f"principle {p.name!r} has no `comparison` question, which stage {stage} needs", constitution.path, p.line)


def _write_json(path: Path, data: dict) -> None:
    atomic.write_json(path, data)


def run_judge(ctx, judge_model, p: Plan, samples: list[dict], responses: list[dict], revision_pairs: list[dict], meta: dict,
              reporter, warnings: list[str]) -> tuple[list, dict]:
    """Judge pairs of `samples` and (initial, revision) pairs of `responses`; write judge_stats.json; the judged rows.

    `samples` are the SL-phase responses, or the RL-phase ones with `pairs_from`; the revision pairs are always the
    SL phase's. A judge whose two orders agree less often than CONSISTENCY_WARNING adds a warning.
    """
    cfg = p.pipeline.stages.judge
    finals = {row["response_key"]: (row["revision_key"], row["chosen"][0]["content"]) for row in revision_pairs}
    comparisons = (build_comparisons(samples, {}, replace(cfg, revisions=False), p.pipeline.seed)
                   + build_comparisons(responses, finals, replace(cfg, pairs="none"), p.pipeline.seed))
    records = judge(ctx, judge_model, comparisons, cfg, p.pipeline.judge_model.prompt_format)
    lengths = {c.a.key: len(c.a.text) for c in comparisons} | {c.b.key: len(c.b.text) for c in comparisons}
    stats = judge_stats(records, lengths)
    _write_json(p.run_dir / "judge_stats.json", stats)
    print_judge_stats(reporter.console, stats)
    consistency = stats["overall"].get("position_consistency")
    if consistency is not None and consistency < CONSISTENCY_WARNING:
        warnings.append(f"the judge's position consistency is {consistency:.2f} (below {CONSISTENCY_WARNING}): its two orders "
                        "pick the same answer little more often than chance, so its labels are mostly noise")
        reporter.print(f"[bold red]WARNING[/] {warnings[-1]}")
    rows, pair_stats = judged_rows(comparisons, records, meta | {"judge_model": judge_model.model_id})
    return rows, pair_stats | {"overall": stats["overall"]}


def run_score(ctx, judge_model, p: Plan, samples: list[dict], revision_pairs: list[dict], meta: dict) -> tuple[list, dict]:
    """Rate responses (and final revisions), write scores.jsonl, return best-vs-worst rows and counts."""
    cfg = p.pipeline.stages.score
    targets = [{k: r[k] for k in ("key", "text", "prompt_id", "messages")} for r in samples if r["text"]]
    if cfg.targets == "all":
        targets += [{"key": record_key(final=row["chosen"][0]["content"], prompt=row["prompt_id"]),
                     "text": row["chosen"][0]["content"], "prompt_id": row["prompt_id"], "messages": row["prompt"]}
                    for row in revision_pairs]
    records = score(ctx, judge_model, targets, cfg, p.pipeline.judge_model.prompt_format)
    atomic.write_jsonl(p.run_dir / "scores.jsonl",
                       ({k: r[k] for k in ("target_key", "prompt_id", "principle", "score", "probs", "digit_mass", "model")} for r in records))
    rows = scored_rows(best_vs_worst(targets, records, cfg.min_gap), meta) if cfg.best_vs_worst else []
    rated = [r["score"] for r in records if r["score"] is not None]
    low = sum(r["score"] is None and r["digit_mass"] > 0 for r in records)  # read, but the ratings got too little mass
    return rows, {"items": len(targets), "ratings": len(records), "unrated": len(records) - len(rated), "low_digit_mass": low,
                  "mean_score": round(sum(rated) / len(rated), 3) if rated else None, "pairs": len(rows)}


def label_pairs(ctx, pool: ModelPool, p: Plan, samples: list[dict], responses: list[dict], revision_pairs: list[dict],
                meta: dict, info: dict, stats: dict, reporter) -> list[dict]:
    """The preference rows: judge and score signals (or the SL-CAI revision pairs), one row per pair (rlaif.pairs)."""
    stages, rows = p.pipeline.stages, [] if p.pipeline.stages.judge else list(revision_pairs)
    if stages.judge or stages.score:
        judge_model = pool.get(p.pipeline.judge_model)
        info["models"]["judge"] = judge_model.model_id
    if stages.judge:
        judged, stats["judge"] = run_judge(ctx, judge_model, p, samples, responses, revision_pairs, meta, reporter,
                                           info.setdefault("warnings", []))
        rows += judged
    if stages.score:
        scored, stats["score"] = run_score(ctx, judge_model, p, samples, revision_pairs, meta | {"judge_model": judge_model.model_id})
        rows += scored
    cut = {(r["prompt_id"], r["text"]) for r in samples + responses if r.get("finish_reason") == "length"}
    j = stages.judge or JudgeConfig()
    prefs, stats["pairs"] = merge_pairs(rows, pair_id, j.tie_band, j.drop_ties, j.drop_inconsistent, j.min_margin,
                                        frozenset(cut) if p.pipeline.drop_degenerate else frozenset())
    return prefs


def rl_phase(ctx, p: Plan, fmt: str, responses: list[dict], revision_pairs: list[dict], meta: dict, info: dict, stats: dict,
             reporter) -> tuple[list[dict], list[dict]]:
    """With `pairs_from`: the trained stage's model answers the prompts (the start policy's prompt format and stop
    strings), then the judge and scorer label those samples; (samples, preference rows)."""
    cfg = trained_model(p.pipeline, p.run_dir, p.pipeline.pairs_from)
    cluster = None
    if p.pipeline.scale.engine == "ray":
        from .backends.ray import Cluster

        cluster = Cluster(p.pipeline)
    pool = ModelPool(seed=p.pipeline.seed, cluster=cluster)
    try:
        with reporter:
            sampler = pool.get(cfg)
            sampler.model_id = f"{sampler.model_id}@{weights_fingerprint(cfg.model)}"  # retrained weights: new records
            info["models"]["pairs_from"] = sampler.model_id
            samples = respond(ctx, sampler, p.prompts, p.pipeline.stages.respond, fmt)
            pool.engines.pop(cfg).close()  # one in-process engine at a time
            prefs = label_pairs(ctx, pool, p, samples, responses, revision_pairs, meta | {"samples_model": sampler.model_id},
                                info, stats, reporter)
    finally:
        pool.close()
    return samples, prefs


def _quiet_libraries() -> None:
    """Our progress bars say what is happening; the libraries' own bars would bury them (their logs go to run.log)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def check_pairs_left(p: Plan, methods: list[str], counts: dict) -> None:
    """A pair-trained stage on this run's pairs when none survived: say why (from the counts), not only "no rows"."""
    users = [m for m in methods if m in ("dpo", "reward") and "dataset" not in (getattr(p.pipeline.stages, m) or {})]
    if not users or counts["pref_rows"]:
        return
    dropped = {k: v for k, v in counts.get("pairs", {}).get("dropped", {}).items() if v}
    why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items()) or "no pair was labelled"
    judge = p.pipeline.stages.judge
    hint = (f"; ties are labels within tie_band {judge.tie_band} of 0.5: keep them as weak pairs with "
            "stages.judge.drop_ties: false, or judge with a stronger model (models.judge)") if dropped.get("tie") and judge else ""
    consistency = counts.get("judge", {}).get("overall", {}).get("position_consistency")
    seen = f" (the judge's position consistency is {consistency:.2f})" if consistency is not None else ""
    raise UserError(f"stages.{users[0]}: no preference pairs to train on: {why}{seen}{hint}; the datasets are in {p.run_dir}",
                    *p.pipeline.where(f"stages.{users[0]}"))


@guarded  # the run directory's lock for the whole run; a failure of any kind is recorded in run.json
def run(p: Plan, reporter: Reporter | None = None) -> dict:
    """Run the stages of a validated plan; stored records are reused, so a rerun resumes."""
    _quiet_libraries()
    reporter = reporter or Reporter()
    pipeline, run_dir = p.pipeline, p.run_dir
    cluster = None
    if pipeline.scale.engine == "ray":
        from .backends.ray import Cluster

        cluster = Cluster(pipeline)  # connects now: an unreachable cluster fails before any model loads
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store(run_dir / "records.sqlite")
    info = {
        "rlaif_version": __version__, "name": pipeline.name, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": pipeline.seed, "config": pipeline.snapshot(),
        "constitution": {"path": p.constitution.path, "name": p.constitution.name, "sha256": p.constitution.sha256},
        "templates": {name: p.templates.sha256(name) for name in ALL_TEMPLATES},
        "prompts": {"path": pipeline.prompts, "count": len(p.prompts)},
        "models": {}, "versions": versions(),
    }
    _write_json(run_dir / "run.json", info)
    pool = ModelPool(seed=pipeline.seed, cluster=cluster)
    ctx = StageContext(store, p.constitution, p.templates, reporter, pipeline.seed, pipeline.batch_size, pipeline.few_shot)
    stages = pipeline.stages
    before = check_pairs_from(pipeline, run_dir)  # the stages that train before the RL-phase pairs are sampled
    problem = revision_checker(p)
    t0 = time.perf_counter()
    try:
        with reporter:
            policy = pool.get(pipeline.models.policy)
            info["models"]["policy"] = policy.model_id
            fmt = prompt_format(pipeline.models.policy.prompt_format, policy)
            responses = respond(ctx, policy, p.prompts, stages.respond, fmt)
            history = None
            if stages.critique:
                critic = pool.get(pipeline.critic)
                info["models"]["critic"] = critic.model_id
                history = critique(ctx, critic, responses, stages.critique, pipeline.critic.prompt_format, problem)
            meta = {"constitution_sha256": p.constitution.sha256, "seed": pipeline.seed, **{f"{k}_model": v for k, v in info["models"].items()}}
            sft, revision_pairs, stats = sl_cai_rows(responses, history, meta, problem, drop_truncated=pipeline.drop_degenerate)
            if not before:
                samples, prefs = responses, label_pairs(ctx, pool, p, responses, responses, revision_pairs, meta, info, stats, reporter)
    finally:
        pool.close()
    write_dataset(sft, SFT_FEATURES, run_dir, "sft")
    trained = {}
    if before:  # the CAI order: SL-CAI data, then SFT, then pairs sampled from the SFT model
        _write_json(run_dir / "run.json", info)
        trained = run_training(p, reporter, before)
        samples, prefs = rl_phase(ctx, p, fmt, responses, revision_pairs, meta, info, stats, reporter)
    write_dataset(prefs, PREF_FEATURES, run_dir, "prefs")
    info.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=round(time.perf_counter() - t0, 1),
                counts={"prompts": len(p.prompts), "responses": len(responses),
                        **({"rl_responses": len(samples)} if before else {}),
                        "critique_rounds": sum(len(h) for h in (history or {}).values()),
                        "sft_rows": len(sft), "pref_rows": len(prefs), **stats,
                        "records": {s: store.count(s) for s in ("respond", "critique", "judge", "score")}})
    _write_json(run_dir / "run.json", info)
    store.close()
    if rest := [m for m in training_stages(pipeline) if m not in before]:
        check_pairs_left(p, rest, info["counts"])
        trained |= run_training(p, reporter, rest)
    if trained:
        info["counts"]["train"] = {m: trained[m] for m in training_stages(pipeline)}
        _write_json(run_dir / "run.json", info)
    if stages.eval:
        from .evaluate.stage import run_eval

        with reporter:
            info["counts"]["eval"] = run_eval(p, reporter)
        _write_json(run_dir / "run.json", info)
    if stages.report:
        from .report.report import write_report

        info["report"] = str(write_report(run_dir, stages.report.output))
        _write_json(run_dir / "run.json", info)
    return info
