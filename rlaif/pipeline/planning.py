"""Plan time: every input of a pipeline validated, and its run directory chosen, before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backends.pool import check_model, check_prompt_tokens
from ..backends.ray import check_scale
from ..errors import UserError
from ..rundir.guard import check_name, check_run_dir
from ..spec.config import Pipeline
from ..spec.constitution import Constitution, load_constitution
from ..spec.inputs import Prompt, load_prompts
from ..spec.templates import Templates
from ..stages.preview import check_templates
from ..train.stage import check_pairs_from, training_config, training_stages


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

    `force`: write into a directory that is not this pipeline's run (rlaif.rundir.guard).
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
        from ..evaluate.stage import check as check_eval

        check_eval(pipeline)
    if pipeline.stages.report:  # a report.html rlaif did not write would stop the run at its very end
        from ..report.report import check_output

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
