"""The `rlaif` command line: thin commands over library functions."""

from __future__ import annotations

import sys

import click

from .errors import UserError
from .runlog import verbose_option
from .spec.methods import NAMES


class Group(click.Group):
    """Bad input from the user becomes one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            from .redact import redact

            click.echo(redact(str(e)), err=True)  # an error may quote a server, and a server may quote the key
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished records are saved; run the same command again to resume", err=True)
            sys.exit(130)


def crash_report(kind, error, tb, fallback=sys.__excepthook__) -> None:
    """`sys.excepthook` of the command: a crash whose traceback a log holds (`log_file`, set by rlaif.runlog.capture)
    is two lines on stderr, the error and where the log is; any other is Python's usual traceback. Exit status 1."""
    log_file = getattr(error, "log_file", None)
    if log_file is None:
        return fallback(kind, error, tb)
    from .rundir.guard import failure_reason
    from .redact import redact

    click.echo(redact(f"error: {failure_reason(error)}"), err=True)
    click.echo(f"the traceback and the libraries' output are in {log_file}", err=True)


@click.group(cls=Group)
@click.version_option(package_name="rlaif")
def main():
    """rlaif: turn prompts and a constitution into aligned-model training data, with no human labellers."""
    # the exception itself still propagates (callers and tests see it); only its printing at the top is short
    sys.excepthook = crash_report


@main.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--constitution", help="Constitution YAML (overrides the pipeline's).")
@click.option("--prompts", help="Prompts file or saved dataset (overrides the pipeline's).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts.")
@click.option("--output", help="Run directory (default outputs/<name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a pipeline setting, e.g. stages.respond.n=4.")
@click.option("--force", is_flag=True, help="Write into the output directory even if it is not a run of this pipeline.")
@verbose_option
def run(pipeline, constitution, prompts, limit, output, overrides, force):
    """Run PIPELINE: the stages its `stages:` block names, in this order (docs/architecture.md).

    respond (n answers per prompt), critique (critique and revision rounds: the SFT data), judge (pairwise AI
    preference labels) and score (1-10 ratings); the SFT and preference datasets are exported to the run
    directory; then the training stages sft, reward, dpo, grpo, rloo and ppo, eval (each trained policy against
    the starting model on held-out prompts) and report (one HTML page of the run). With `pairs_from: STAGE` (the CAI
    order: sft) that stage and those it starts from train first; judge and score then label its model's samples.

    Rerunning the same command resumes: finished records are reused, missing ones generated. A directory that is
    not empty and not a run of this pipeline (by its run.json's name) is refused unless --force. What the libraries
    print (vLLM, transformers, TRL, warnings) is appended to RUN/run.log; -v shows it too.
    """
    from .spec.config import load_pipeline
    from .pipeline import plan
    from .pipeline import run as run_plan

    loaded = load_pipeline(pipeline, list(overrides), constitution=constitution, prompts=prompts, limit=limit, output=output)
    p = plan(loaded, force)
    info = run_plan(p)
    c = info["counts"]
    click.echo(f"{c['prompts']} prompts, {c['responses']} responses, {c['critique_rounds']} critique rounds "
               f"in {info['seconds']} s")
    click.echo(f"run directory: {p.run_dir}")
    for name, rows in (("sft", c["sft_rows"]), ("prefs", c["pref_rows"])):
        click.echo(f"  {name:<6}{rows:>5} rows  {p.run_dir / name}/  {p.run_dir / name}.jsonl")
    from .train.stage import stage_output

    for method, m in c.get("train", {}).items():
        click.echo(f"  {method:<6}{m['steps']:>5} steps {stage_output(p.pipeline, p.run_dir, method)}/  "
                   f"(train loss {m['train_loss']:.4f})")
    for name, r in c.get("eval", {}).items():
        value, ci, winrate = r["headline"]["value"], r["headline"]["ci95"], r["headline"]["name"] == "win_rate"
        shown = "n/a" if value is None else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        judged = f", judged by the {' and '.join(r['self_judged'])} model itself" if r.get("self_judged") else ""
        what, alike = ("win rate over the start", "on both sides") if winrate else ("harmless", "as for every model")
        click.echo(f"  eval  {name:<16} {what} {shown} ({r.get('prompt_format')} format {alike}{judged})  "
                   f"{p.run_dir / 'eval' / name}.json")
    for warning in info.get("warnings", []):
        click.echo(f"WARNING: {warning}", err=True)
    if info.get("report"):
        click.echo(f"report: {info['report']}")


@main.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["hf", "jsonl", "parquet"]), default="hf", show_default=True)
@click.option("--out", help="Output directory (default RUN_DIR/export-FORMAT).")
@click.option("--push-to-hub", metavar="REPO", help="Also push to this Hugging Face dataset repo (needs a token).")
@click.option("--for-annotation", "annotation", metavar="FILE",
              help="Instead: write the preference pairs for people as FILE.csv and FILE.jsonl.")
def export_command(run_dir, fmt, out, push_to_hub, annotation):
    """Export RUN_DIR's datasets with a dataset card, or its pairs for human annotation."""
    if annotation:
        from .human.annotate import for_annotation

        csv_path, jsonl_path, n = for_annotation(run_dir, annotation)
        click.echo(f"{n} pairs for annotation: {csv_path}  {jsonl_path}")
        click.echo("annotators fill `verdict` with a, b or tie, and optionally `annotator` and `comment`")
        return
    from .export.publish import export

    out_dir = export(run_dir, fmt, out, push_to_hub)
    click.echo(f"exported to {out_dir} (dataset card: {out_dir / 'README.md'})")


@main.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("--output", type=click.Path(),
              help="Directory for report.html and its plots (default RUN_DIR/report); files the report did not write are kept.")
def report_command(run_dir, output):
    """Write an HTML report of RUN_DIR: label distributions, judge bias, human agreement, training curves, evaluations."""
    from .report.report import write_report

    click.echo(write_report(run_dir, output))


@main.command("merge-human")
@click.argument("run_dir", type=click.Path())
@click.argument("labels", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Choice(["human-overrides", "ai-where-missing", "weighted"]), default="human-overrides",
              show_default=True, help="How human votes and AI labels combine (see docs/human.md).")
@click.option("--weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="weighted: the human vote's share of the mixed label.")
@click.option("--strict", is_flag=True, help="Any bad row is fatal (exit 2) and nothing is merged.")
@click.option("--argilla-question", help="Argilla exports: the question holding the verdicts (default: the first answered).")
@verbose_option
def merge_human_command(run_dir, labels, policy, weight, strict, argilla_question):
    """Merge human LABELS (verdict files, TRL preference files, Argilla exports) into RUN_DIR.

    Writes RUN_DIR/merged/ and merged.jsonl, human_agreement.json and human_rejects.jsonl.
    Merging the same file again changes nothing.
    """
    from .human.merge import merge_human

    s = merge_human(run_dir, list(labels), policy, weight, strict, argilla_question)
    a = s["agreement"]
    click.echo(f"{s['votes_read']} votes read, {s['rejects']} bad rows ({s['rejects_file']}), {s['votes_stored']} votes stored")
    click.echo(f"merged: {s['merged_rows']} pairs {s['sources']} (policy {policy}); dropped {s['dropped'] or 'none'}")
    click.echo(f"AI-human agreement on {a['pairs']} pairs: {a['agreement']}, Cohen's kappa {a['cohen_kappa']}, "
               f"{len(a['conflicts'])} conflicts; confusion (AI -> human) {a['confusion']}")


@main.command("train")
@click.argument("method", type=click.Choice(NAMES))
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. trl.max_steps=10.")
@verbose_option
def train_command(method, config, overrides):
    """Train a model: sft, reward, dpo, grpo, rloo (TRL) or ppo (rlaif's own), as CONFIG says (docs/training.md).

    CONFIG is checked whole before any weights load; the model, tokenizer and rlaif_train.json go to its output_dir,
    what the libraries print to OUTPUT_DIR/train.log (-v shows it too).
    """
    from .runlog import echo
    from .train import train
    from .train.config import load_train_config

    cfg = load_train_config(config, method, list(overrides))
    m = train(cfg, log=echo)
    accuracy = m.get("eval_accuracy")
    held_out = f", held-out accuracy {accuracy:.3f} on {m['eval_pairs']} pairs" if accuracy is not None else ""
    click.echo(f"{method}: {m['steps']} steps, train loss {m['train_loss']:.4f}{held_out}")
    click.echo(f"saved to {cfg.output_dir}")


@main.group()
def constitution():
    """Check constitutions and see the prompts they produce."""


@constitution.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file):
    """Validate FILE: exit 0, or print FILE:LINE: message and exit 2."""
    from .spec.constitution import load_constitution

    c = load_constitution(file)
    click.echo(f"{file}: ok ({len(c.principles)} principles, {len(c.few_shot)} few-shot examples, {len(c.judge_few_shot)} judge examples, sha256 {c.sha256[:12]})")


@constitution.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--principle", "name", help="Show this principle (default: every principle).")
@click.option("--format", "fmt", type=click.Choice(["completion", "chat"]), default="completion", show_default=True,
              help="completion: few-shot Human:/Assistant: prompts for base models; chat: chat-model turns.")
@click.option("--templates", type=click.Path(file_okay=False), help="Directory of templates overriding rlaif/prompts/.")
@click.option("--prompt", default="<prompt>", show_default=True, help="The user prompt to show.")
@click.option("--response", default="<response>", show_default=True, help="The answer being critiqued.")
def show(file, name, fmt, templates, prompt, response):
    """Print the exact prompts that would be sent for each principle of FILE."""
    from .spec.constitution import load_constitution
    from .stages.preview import render_prompts

    c = load_constitution(file)
    principles = [c.principle(name)] if name else list(c.principles)
    click.echo(render_prompts(c, principles, fmt, templates, prompt, response))


@main.group()
def models():
    """Manage the embedded default model."""


@models.command()
@click.option("--force", is_flag=True, help="Convert again even if the cached model exists.")
def prepare(force):
    """Convert the bundled Gemma 3 270M GGUF into a cached Hugging Face model directory."""
    from .backends.default_model import prepare as prepare_model

    click.echo(prepare_model(force=force))


from .evaluate.commands import eval_group  # noqa: E402  (the eval commands live with the evaluation code)

main.add_command(eval_group)

if __name__ == "__main__":  # last: `python -m rlaif.cli` must see every command, eval included
    main()
