"""Pipeline stage `eval`: after training, each trained policy against the starting model on held-out prompts.

Results go to <run>/eval/: winrate-<method>.json(l), and with `harmless:` harmless-start.json(l) and
harmless-<method>.json(l); the records to <run>/eval/eval.sqlite, so a rerun reuses every answer and judgement.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..spec.methods import POLICIES, listing
from ..spec.inputs import load_prompts
from ..rundir.store import Store
from ..spec.templates import Templates
from .harmless import check_templates as check_harm_templates


def eval_policies(pipeline) -> list[str]:
    """The training stages whose models the eval stage compares with the start; checked at plan time."""
    cfg = pipeline.stages.eval
    trained = [m for m in POLICIES if getattr(pipeline.stages, m) is not None]
    for name in cfg.policies:
        if name not in trained:
            raise UserError(f"stages.eval.policies: {name!r} is not a training stage of this pipeline", *pipeline.where("stages.eval"))
    policies = list(cfg.policies) or trained
    if not policies:
        raise UserError(f"stages.eval: no trained policy to evaluate; add a training stage ({listing(POLICIES)})",
                        *pipeline.where("stages.eval"))
    return policies


def _path(pipeline, value: str | None) -> str | None:
    """A prompts path as given if it exists from here, else relative to the pipeline file."""
    from ..spec.config import resolve_path

    return None if value is None else resolve_path(value, Path(pipeline.file).resolve().parent)


def check(pipeline) -> None:
    """Plan-time checks: the policies to evaluate, the prompt files (a bad row names its file and line), and with
    `harmless:` the harm question (harm.j2) built on the first red-team prompt."""
    eval_policies(pipeline)
    cfg = pipeline.stages.eval
    loaded = {}
    for key in ("prompts", "harmless"):
        path = _path(pipeline, getattr(cfg, key))
        if path is not None and not Path(path).exists():
            raise UserError(f"stages.eval.{key}: {getattr(cfg, key)!r} not found", *pipeline.where("stages.eval"))
        if path is not None:
            loaded[key] = load_prompts(path, cfg.limit)
    if loaded.get("harmless"):
        check_harm_templates(Templates(pipeline.templates), loaded["harmless"][0].messages)


def answer_everything(session, models: list, prompt_sets: list[list], cfg, fmt: str, keep: tuple = ()) -> None:
    """Each model answers every prompt set while its engine is up, then frees it (unless in `keep`): one start per
    model; the win-rate and harmless phases after it find their answers stored and start no answering engine."""
    from ..stages.compare import answers

    for model in dict.fromkeys(models):  # a model listed twice answers once
        generator = session.engine(model)
        for prompts in prompt_sets:
            if prompts:
                answers(session, generator, prompts, cfg.max_tokens, cfg.temperature, fmt)
        session.release(model, keep=keep)


def run_eval(p, reporter) -> dict:
    """Win rate of each trained policy over the starting model (and harmlessness when asked); summaries by file name.

    Every answer, the start's and each trained policy's, is written in the start's prompt format with the same stop
    strings and decoding (a trained model would otherwise run in the chat format its saved template gives it).
    """
    from ..train.stage import trained_model
    from ..stages.compare import Session, resolve_format
    from .winrate import harmless, winrate

    pipeline, cfg = p.pipeline, p.pipeline.stages.eval
    out = p.run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    session = Session(p.constitution, Store(out / "eval.sqlite"), p.templates, pipeline.seed, reporter,
                      few_shot=pipeline.few_shot)
    start = pipeline.models.policy
    judge_settings = pipeline.stages.judge
    prompts = load_prompts(_path(pipeline, cfg.prompts), cfg.limit)
    results, policies = {}, eval_policies(pipeline)
    red = load_prompts(_path(pipeline, cfg.harmless), cfg.limit) if cfg.harmless else []
    try:
        fmt = resolve_format(session, start)
        models = [trained_model(pipeline, p.run_dir, m) for m in policies] + [start]
        answer_everything(session, models, [prompts, red], cfg, fmt, keep=(pipeline.judge_model,))
        for method in policies:
            trained = trained_model(pipeline, p.run_dir, method)
            reporter.print(f"eval: {method} ({trained.model}) against the start on {len(prompts)} held-out prompts, "
                           f"both in {fmt} format")
            s = winrate(session, trained, start, pipeline.judge_model, prompts, out, cfg, judge_settings,
                        name=f"winrate-{method}", fmt=fmt)
            results[f"winrate-{method}"] = {k: s[k] for k in ("headline", "win_rate", "ci95", "wins", "ties", "losses",
                                                              "judged", "prompt_format", "self_judged", "warnings")}
        if cfg.harmless:
            for name, model in [("start", start)] + [(m, trained_model(pipeline, p.run_dir, m)) for m in policies]:
                s = harmless(session, model, pipeline.judge_model, red, out, cfg, name=f"harmless-{name}", fmt=fmt)
                results[f"harmless-{name}"] = {k: s[k] for k in ("headline", "rate", "ci95", "harmless", "rated",
                                                                 "prompt_format", "self_judged", "warnings")}
    finally:
        session.close()
    for name, r in results.items():
        for warning in r["warnings"]:
            reporter.print(f"[bold red]WARNING[/] eval {name}: {warning}")
    return results
