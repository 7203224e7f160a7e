"""`rlaif report RUN_DIR`: one HTML page (prompts/report/report.html.j2) with PNG plots and tables of the whole run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..templates import Templates
from .rundir import RunDir
from .sections import SECTIONS, section
from .tables import cell, key_values, table

TEMPLATE = "report/report.html.j2"


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
    """Write OUTPUT/report.html (default RUN_DIR/report/) with its figures beside it; return the page's path."""
    run = RunDir(run_dir)
    out = Path(output) if output else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("fig-*.png"):  # figures of an earlier report that this one may not redraw
        old.unlink()
    sections = [build(run, out) for build in SECTIONS] + [details(run, out)]
    html = Templates(autoescape=True).render(TEMPLATE, summary=summary(run), sections=sections, warnings=warnings(run, sections),
                                             generated=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
