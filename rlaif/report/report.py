"""`rlaif report RUN_DIR`: one HTML page (rlaif/prompts/report/report.html.j2) with PNG plots and tables of the whole run."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import matplotlib

from ..rundir import atomic
from ..errors import UserError
from ..rundir.guard import check_targets
from ..rundir.lock import run_lock
from ..spec.templates import Templates
from ..rundir.reader import RunDir
from .sections import SECTIONS, section
from .tables import cell, key_values, table

TEMPLATE = "report/report.html.j2"
FIGURES = "figures-"  # each report's figures live in their own FIGURES<id>/ beside report.html
MARKER = ".rlaif-report"  # inside a figures directory: rlaif wrote it, so the next report may remove it
OURS = "<title>rlaif report:"  # in a report.html that rlaif wrote (the template's title)


def summary(run: RunDir) -> dict:
    """The page header: what the run is (name, models, constitution, seed) and its main counts."""
    info = run.info
    constitution = info.get("constitution") if isinstance(info.get("constitution"), dict) else {}
    prompts = info.get("prompts") if isinstance(info.get("prompts"), dict) else {}
    models = info.get("models") if isinstance(info.get("models"), dict) else {}
    facts = [("status", info.get("status")), ("started", info.get("started")), ("finished", info.get("finished")),
             ("seconds", info.get("seconds")), ("seed", info.get("seed")),
             ("constitution", f"{constitution.get('name')} ({constitution.get('path')}, "
                              f"sha256 {str(constitution.get('sha256'))[:12]})" if constitution else None),
             ("prompts", f"{prompts.get('path')} ({prompts.get('count')} prompts)" if prompts else None),
             *((f"{role} model", model) for role, model in models.items()),
             ("rlaif", info.get("rlaif_version")), ("run directory", str(run.path))]
    counts = info.get("counts") if isinstance(info.get("counts"), dict) else {}
    judge = counts.get("judge") if isinstance(counts.get("judge"), dict) else {}
    score = counts.get("score") if isinstance(counts.get("score"), dict) else {}
    train = counts.get("train") if isinstance(counts.get("train"), dict) else {}
    pairs = counts.get("pairs") if isinstance(counts.get("pairs"), dict) else {}
    ties = pairs.get("dropped", {}).get("tie") if isinstance(pairs.get("dropped"), dict) else None
    cards = [("prompts", counts.get("prompts")), ("responses", counts.get("responses")),
             ("critique rounds", counts.get("critique_rounds")), ("SFT rows", counts.get("sft_rows")),
             ("preference rows", counts.get("pref_rows")), ("judge comparisons", judge.get("comparisons")),
             ("ratings", score.get("ratings")), ("duplicate pairs merged", pairs.get("duplicates_merged")),
             ("pair conflicts", pairs.get("conflicts")), ("ties dropped", ties),
             *((f"{method} steps", m.get("steps")) for method, m in train.items() if isinstance(m, dict))]
    return {"name": str(info.get("name") or run.path.name), "facts": [(k, cell(v)) for k, v in facts if v is not None],
            "cards": [(k, cell(v)) for k, v in cards if v is not None]}


def details(run: RunDir, out: Path) -> dict:
    """Everything else run.json holds (settings, counts, templates, versions) and the files of the run directory."""
    info = run.info
    tables = []
    for key, title in (("config", "Pipeline settings (run.json config)"), ("counts", "Counts (run.json counts)"),
                       ("templates", "Template sha256 (run.json templates)"), ("versions", "Package versions")):
        if isinstance(info.get(key), dict):
            tables.append(key_values(title, info[key]))
    known = {"config", "counts", "templates", "versions", "constitution", "prompts", "models"}
    rest = {k: v for k, v in info.items() if k not in known}
    tables.append(key_values("Other run.json fields", rest))
    tables.append(table("Files in the run directory", ["file", "bytes"], run.files()))
    return section("details", "Run details", tables=tables)


def warnings(run: RunDir, sections: list[dict]) -> list[str]:
    """What a reader must see first: an unfinished run, the run's warnings (a judge near chance), the sections' (reward
    hacking, self-judged or unreliable evaluations), files that could not be read."""
    out = []
    if run.info.get("status") != "complete":
        out.append(f"the run is not complete (status: {run.info.get('status')}); the report shows what exists so far")
    run_warnings = run.info.get("warnings")
    out += [str(w) for w in run_warnings] if isinstance(run_warnings, list) else []  # e.g. a judge near chance
    out += [f"{s['title'].lower()}: {w}" for s in sections for w in s["warnings"]]
    out += [f"could not read {p}" for p in run.problems]
    return out


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write OUTPUT/report.html (default RUN_DIR/report/) with its figures beside it; return the page's path.

    The figures are drawn into a temporary directory, renamed to OUTPUT/figures-<id>/, then report.html is replaced
    (the moment the new report appears); only then are earlier figures-*/ directories (those holding MARKER) removed.
    A failed report leaves the previous one whole; files the report did not write are never touched.
    """
    run_path = Path(run_dir)
    out = Path(output) if output else run_path / "report"
    RunDir(run_path)  # a directory that is no run is refused before anything is written into it
    check_output(run_path, out)
    with _lock(run_path, out):
        run = RunDir(run_path)
        out.mkdir(parents=True, exist_ok=True)
        atomic.recover(out)  # the temporary figures directory of a report that was killed
        name = FIGURES + secrets.token_hex(4)
        tmp = atomic.temp_path(out / name)
        tmp.mkdir()
        try:
            with matplotlib.rc_context({"text.parse_math": False}):  # names and prompts are text, never mathtext
                sections = [build(run, tmp) for build in SECTIONS] + [details(run, tmp)]
            for f in (f for s in sections for f in s["figures"]):
                f["file"] = f"{name}/{f['file']}"
            html = Templates(autoescape=True).render(TEMPLATE, summary=summary(run), sections=sections,
                                                     warnings=warnings(run, sections),
                                                     generated=time.strftime("%Y-%m-%d %H:%M:%S %z"))
            if any(s["figures"] for s in sections):
                (tmp / MARKER).write_text("figures of an rlaif report; the next report removes this directory\n")
                atomic._fsync_tree(tmp)
                os.rename(tmp, out / name)
            path = out / "report.html"
            atomic.write_text(path, html)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in out.glob(FIGURES + "*"):
            if old.name != name and (old / MARKER).is_file():
                shutil.rmtree(old, ignore_errors=True)
    return path


def check_output(run_path: Path, out: Path) -> None:
    """OUTPUT is a directory, not inside the run's other files, and its report.html (if any) was written by rlaif."""
    if out.exists() and not out.is_dir():
        raise UserError("report output: is a file; give a directory", str(out))
    if os.path.realpath(out) != os.path.realpath(run_path / "report"):
        check_targets(run_path, [out], "report output")
    page = out / "report.html"
    if page.is_file():
        with open(page, encoding="utf-8", errors="replace") as f:
            if OURS not in f.read(4096):
                raise UserError("report output: holds a report.html that rlaif did not write; choose another directory",
                                str(page))


def _lock(run_path: Path, out: Path):
    """The run's lock: always when the report goes inside the run; else when the run can take it (it may be read-only)."""
    if Path(os.path.realpath(out)).is_relative_to(os.path.realpath(run_path)):
        return run_lock(run_path)
    try:
        with tempfile.TemporaryFile(dir=run_path):
            pass
    except OSError:
        return nullcontext()
    return run_lock(run_path)
