"""`rlaif eval ...`: thin commands over rlaif.evaluate (registered on the main group in rlaif.cli)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..errors import UserError
from ..runlog import capture, echo, verbose_option

LOG_NAME = "eval.log"


def _common(f):
    """Options shared by winrate and harmless: prompts, constitution, judge, generation, output."""
    options = [
        click.option("--prompts", required=True, type=click.Path(dir_okay=True), help="Held-out prompts (JSONL, CSV, text or a saved dataset)."),
        click.option("--constitution", help="Constitution YAML the judge applies (default: the pipeline's)."),
        click.option("--pipeline", "pipeline_file", type=click.Path(dir_okay=False),
                     help="Take the constitution, judge model (any backend, openai included), judge settings, templates and seed from this pipeline."),
        click.option("--judge", help="Judge model: 'default', a directory or a hub id (default: the pipeline's judge, else the "
                     "baseline/model itself, which the output flags as self-preference)."),
        click.option("--prompt-format", type=click.Choice(["auto", "chat", "completion"]), default="auto", show_default=True,
                     help="One prompt format for every answer; auto: the baseline's (chat if its tokenizer has a template)."),
        click.option("--backend", type=click.Choice(["vllm", "hf"]), default="vllm", show_default=True,
                     help="Engine for the answering models (and a --judge given here)."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts."),
        click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True, help="Longest answer."),
        click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0: greedy answers."),
        click.option("--principles", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Principles per judgement; 0: every principle (a result for each)."),
        click.option("--seed", type=int, help="Seed (default: the pipeline's, else 0)."),
        click.option("--output", type=click.Path(), default="outputs/eval", show_default=True,
                     help="Directory for the results (a run's eval/ to show them in its report)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _output(command):
    """--output must be a directory; one inside a run directory (RUN/eval) holds that run's lock while the command runs.
    What the libraries print goes to OUTPUT/eval.log (-v shows it too): the results are `echo`ed to the terminal."""

    @verbose_option
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ..rundir.lock import lock_owner

        output = Path(kwargs["output"])
        if output.exists() and not output.is_dir():
            raise UserError("--output: is a file; give a directory", str(output))
        with lock_owner(output), capture(output / LOG_NAME):
            return command(*args, **kwargs)

    return wrapper


def _model(name: str, backend: str, option: str):
    """A ModelConfig for a model named on the command line; a missing path fails here, naming the option."""
    from ..spec.config import ModelConfig
    from ..backends.pool import check_model_path

    try:
        check_model_path(name)
    except UserError as e:
        raise UserError(f"{option}: {e.message}") from None
    return ModelConfig(model=name, backend=backend, dtype="float32" if backend == "hf" else "auto")


def _session(prompts_file, constitution_file, pipeline_file, seed, limit, output, default_judge, judge, backend, stage):
    """Load and check everything before any model: the session, the prompts, the judge model config, the judge settings."""
    from ..spec.constitution import load_constitution
    from ..spec.inputs import load_prompts
    from ..backends.pool import check_model
    from ..progress import Reporter
    from ..rundir.store import Store
    from ..spec.templates import Templates
    from ..stages.compare import Session

    pipeline = None
    if pipeline_file:
        from ..spec.config import load_pipeline

        pipeline = load_pipeline(pipeline_file)
    if constitution_file is None and pipeline is None:
        raise UserError("give --constitution FILE (or --pipeline FILE to take its constitution)")
    constitution = load_constitution(constitution_file or pipeline.constitution)
    for p in constitution.principles:
        if not p.comparison:
            raise UserError(f"principle {p.name!r} has no `comparison` question, which the judge needs", constitution.path, p.line)
    templates = Templates(pipeline.templates if pipeline else None)
    prompts = load_prompts(prompts_file, limit)
    judge_cfg, judge_settings = None, None
    if judge:
        judge_cfg = _model(judge, backend, "--judge")
    elif pipeline:
        judge_cfg = pipeline.models.judge or pipeline.models.policy
        check_model(judge_cfg, pipeline, "models.judge" if pipeline.models.judge else "models.policy")
        judge_settings = getattr(pipeline.stages, stage)
    else:
        judge_cfg = default_judge
    seed = seed if seed is not None else (pipeline.seed if pipeline else 0)
    Path(output).mkdir(parents=True, exist_ok=True)
    session = Session(constitution, Store(Path(output) / "eval.sqlite"), templates, seed, Reporter(),
                      few_shot=pipeline.few_shot if pipeline else None)
    return session, prompts, judge_cfg, judge_settings


@click.group("eval")
def eval_group():
    """Evaluate: win rate against a baseline, harmlessness, reward-model accuracy, KL from the reference."""


@eval_group.command("winrate")
@click.option("--policy", required=True, help="The trained model: a directory, 'default' or a hub id.")
@click.option("--baseline", required=True, help="What it is compared with, usually its starting point.")
@click.option("--tie-band", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
              help="A soft label within this distance of 0.5 is a tie.")
@_common
@_output
def winrate_command(policy, baseline, tie_band, prompts, constitution, pipeline_file, judge, prompt_format, backend, limit,
                    max_tokens, temperature, principles, seed, output):
    """Both models answer the same prompts in one format; the AI judge compares the answers in both orders.

    Prints the win rate with a 95% bootstrap interval over prompts, ties and per-principle results;
    writes OUTPUT/winrate.json and OUTPUT/winrate.jsonl (one row per prompt). Rerunning resumes.
    """
    from ..spec.config import EvalConfig
    from .winrate import winrate

    eval_settings = EvalConfig(prompts=prompts, limit=limit, max_tokens=max_tokens, temperature=temperature,
                               principles=principles, tie_band=tie_band)
    policy_cfg, baseline_cfg = _model(policy, backend, "--policy"), _model(baseline, backend, "--baseline")
    session, items, judge_cfg, judge_settings = _session(prompts, constitution, pipeline_file, seed, limit, output,
                                                         baseline_cfg, judge, backend, "judge")
    try:
        with session.reporter:
            s = winrate(session, policy_cfg, baseline_cfg, judge_cfg, items, Path(output), eval_settings, judge_settings,
                        fmt=None if prompt_format == "auto" else prompt_format)
    finally:
        session.close()
    echo(f"win rate of {policy} over {baseline}: {_rate(s['win_rate'], s['ci95'])} on {s['judged']} prompts "
               f"({s['wins']} wins, {s['ties']} ties, {s['losses']} losses; {s['identical']} identical answers; "
               f"{s['n'] - s['judged']} unjudged); position consistency {s['position_consistency']}")
    echo(f"both sides: {_how(s['sides']['policy'])}; judge {s['judge']}")
    for name, r in s["per_principle"].items():
        echo(f"  {name:<28} {_rate(r['win_rate'], r['ci95'])}  ({r['wins']}/{r['ties']}/{r['losses']})")
    _warn(s)
    echo(f"wrote {Path(output) / 'winrate.json'}")


@eval_group.command("harmless")
@click.option("--model", "model", required=True, help="The model to test: a directory, 'default' or a hub id.")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="An answer is harmless when the judge's P(harmless) is above this.")
@_common
@_output
def harmless_command(model, threshold, prompts, constitution, pipeline_file, judge, prompt_format, backend, limit, max_tokens,
                     temperature, principles, seed, output):
    """The share of red-team prompts whose answer the AI judge calls harmless: one binary judgement per answer.

    The judge answers a harm question (rlaif/prompts/*/harm.j2) as A or B, read from its log-probabilities, in both
    option orders; writes OUTPUT/harmless.json and .jsonl. --principles does not apply.
    """
    from ..spec.config import EvalConfig
    from .harmless import check_templates
    from .winrate import harmless

    eval_settings = EvalConfig(prompts=prompts, limit=limit, max_tokens=max_tokens, temperature=temperature,
                               principles=principles, threshold=threshold)
    model_cfg = _model(model, backend, "--model")
    session, items, judge_cfg, _ = _session(prompts, constitution, pipeline_file, seed, limit, output, model_cfg, judge,
                                            backend, "score")
    try:
        if items:  # a broken harm.j2 (the pipeline's templates) fails before any model loads
            check_templates(session.templates, items[0].messages)
        with session.reporter:
            s = harmless(session, model_cfg, judge_cfg, items, Path(output), eval_settings,
                         fmt=None if prompt_format == "auto" else prompt_format)
    finally:
        session.close()
    echo(f"harmless: {_rate(s['rate'], s['ci95'])} of {s['rated']} judged answers (P(harmless) > {threshold}, "
               f"mean {s['mean_p_harmless']}; {s['unrated']} unjudged); answers: {_how(s['sides']['answering'])}")
    _warn(s)
    echo(f"wrote {Path(output) / 'harmless.json'}")


@eval_group.command("reward-model")
@click.option("--model", "model", required=True, type=click.Path(file_okay=False), help="A reward model directory (rlaif train reward).")
@click.option("--pairs", required=True, type=click.Path(), help="A run directory, saved preference dataset or JSONL of pairs.")
@click.option("--split", type=click.Choice(["heldout", "all"]), default="heldout", show_default=True,
              help="heldout: the pairs the training held out (from its rlaif_train.json); all: every pair.")
@click.option("--output", type=click.Path(), default="outputs/eval", show_default=True)
@_output
def reward_model_command(model, pairs, split, output):
    """Pairwise accuracy: how often the reward model scores the chosen answer above the rejected one."""
    from ..backends.pool import check_model_path
    from .reward_model import accuracy

    check_model_path(model)
    s = accuracy(model, pairs, Path(output), split)
    echo(f"accuracy {_rate(s['accuracy'], s['ci95'])} on {s['n']} {split} pairs (mean margin {s['mean_margin']})")
    echo(f"wrote {Path(output) / 'reward_model.json'}")


@eval_group.command("kl")
@click.option("--policy", required=True, help="The trained model.")
@click.option("--reference", required=True, help="Its reference (starting point); same tokenizer.")
@click.option("--prompts", required=True, type=click.Path(dir_okay=True))
@click.option("--limit", type=click.IntRange(min=1))
@click.option("--samples", type=click.IntRange(min=1), default=4, show_default=True, help="Answers sampled per prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", type=click.Path(), default="outputs/eval", show_default=True)
@_output
def kl_command(policy, reference, prompts, limit, samples, max_tokens, seed, output):
    """KL(policy || reference) in nats per answer, from answers sampled from the policy (temperature 1)."""
    from ..spec.inputs import load_prompts
    from .kl import policy_kl

    _model(policy, "hf", "--policy"), _model(reference, "hf", "--reference")
    s = policy_kl(policy, reference, load_prompts(prompts, limit), Path(output), samples, max_tokens, seed=seed)
    echo(f"KL(policy || reference) = {s['kl']} nats per answer, 95% CI {s['ci95']}; {s['kl_per_token']} per token "
               f"over {s['tokens']} tokens")
    echo(f"wrote {Path(output) / 'kl.json'}")


def _how(side: dict) -> str:
    """A side's prompt format, stop strings and examples, in a few words."""
    return f"{side['format']} format, {len(side['stop'])} stop strings, few-shot: {side['few_shot']}"


def _warn(summary: dict) -> None:
    for warning in summary.get("warnings", []):
        echo(f"WARNING: {warning}", err=True)


def _rate(value, ci) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
