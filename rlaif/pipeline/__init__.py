"""Run a pipeline file: validate every input, then the data stages in order (resumably), the export, training, eval, report.

`plan` (planning.py) checks everything before a model loads; `run` (here) is the flow: the SL phase (respond, critique,
the SL-CAI rows), the labelled pairs (judge, score, merged per pair), with `pairs_from` the training it needs and the
RL phase's samples from that model, then the other training stages, eval and report; run.json (runinfo.py) records
each step.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..backends.advice import slow_settings
from ..backends.pool import STARTS, ModelPool, starts_since
from ..export.pairs import merge_pairs
from ..export.rows import PREF_FEATURES, SFT_FEATURES, judged_rows, pair_id, scored_rows, sl_cai_rows, write_dataset
from ..progress import Reporter
from ..rundir import atomic
from ..rundir.guard import guarded
from ..rundir.store import Store, record_key
from ..rundir.versions import weights_fingerprint
from ..spec.config import JudgeConfig
from ..stages.common import StageContext, prompt_format
from ..stages.critique import critique
from ..stages.judge import build_comparisons, judge
from ..stages.judge_stats import CONSISTENCY_WARNING, judge_stats, print_judge_stats
from ..stages.quality import clean_revision, revision_problem
from ..stages.respond import respond
from ..stages.score import best_vs_worst, score
from ..train.stage import check_pairs_from, run_training, trained_model, training_config, training_stages
from . import runinfo
from .planning import Plan, plan

__all__ = ["Plan", "plan", "run", "training_config"]  # training_config: the tests build a stage's config through here


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
    atomic.write_json(p.run_dir / "judge_stats.json", stats)
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
    """The preference rows: judge and score signals (or the SL-CAI revision pairs), one row per pair (rlaif.export.pairs)."""
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
        from ..backends.ray import Cluster

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


@guarded  # the run directory's lock for the whole run; a failure of any kind is recorded in run.json
def run(p: Plan, reporter: Reporter | None = None) -> dict:
    """Run the stages of a validated plan; stored records are reused, so a rerun resumes."""
    _quiet_libraries()
    reporter = reporter or Reporter()
    pipeline, run_dir = p.pipeline, p.run_dir
    cluster = None
    if pipeline.scale.engine == "ray":
        from ..backends.ray import Cluster

        cluster = Cluster(pipeline)  # connects now: an unreachable cluster fails before any model loads
    starts = STARTS.copy()  # this run's engine starts: the difference at each run.json write
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store(run_dir / "records.sqlite")
    info = runinfo.started(p)
    for note in slow_settings(pipeline):  # before any model loads: the user can stop and change it
        reporter.print(f"[yellow]note[/] {note}")
        info.setdefault("notes", []).append(note)
    runinfo.write(run_dir, info)
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
        runinfo.write(run_dir, info)
        trained = run_training(p, reporter, before)
        samples, prefs = rl_phase(ctx, p, fmt, responses, revision_pairs, meta, info, stats, reporter)
    write_dataset(prefs, PREF_FEATURES, run_dir, "prefs")
    info["phases"] = list(getattr(reporter, "phases", []))  # each generation bar: requests, tokens, seconds
    info.update(status="complete", finished=runinfo.now(), seconds=round(time.perf_counter() - t0, 1),
                counts={"prompts": len(p.prompts), "responses": len(responses),
                        **({"rl_responses": len(samples)} if before else {}),
                        "critique_rounds": sum(len(h) for h in (history or {}).values()),
                        "sft_rows": len(sft), "pref_rows": len(prefs), **stats,
                        "records": {s: store.count(s) for s in ("respond", "critique", "judge", "score")},
                        "engine_starts": starts_since(starts)})
    runinfo.write(run_dir, info)
    store.close()
    if rest := [m for m in training_stages(pipeline) if m not in before]:
        runinfo.check_pairs_left(p, rest, info["counts"])
        trained |= run_training(p, reporter, rest)
    if trained:
        info["counts"]["train"] = {m: trained[m] for m in training_stages(pipeline)}
        runinfo.write(run_dir, info)
    if stages.eval:
        from ..evaluate.stage import run_eval

        with reporter:
            info["counts"]["eval"] = run_eval(p, reporter)
        info["counts"]["engine_starts"] = starts_since(starts)  # the eval's engines too
        info["phases"] = list(getattr(reporter, "phases", []))
        runinfo.write(run_dir, info)
    if stages.report:
        from ..report.report import write_report

        info["report"] = str(write_report(run_dir, stages.report.output))
        runinfo.write(run_dir, info)
    return info
