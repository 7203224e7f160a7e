"""run.json, the run's record of itself: config, constitution and template hashes, models, versions, then counts.

Written when the run starts, again before the training it needs mid-run, when its datasets are written, and after
each later stage (training, eval, report), so a run that fails late still says what it made.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..rundir import atomic
from ..rundir.versions import versions
from .planning import Plan

ALL_TEMPLATES = (
    "completion/respond.j2", "completion/critique.j2", "completion/revise.j2",
    "chat/critique_request.j2", "chat/revision_request.j2", "completion/judge.j2", "chat/judge.j2",
    "completion/score.j2", "chat/score.j2", "chat/judge_reply.j2", "chat/score_reply.j2",
)


def now() -> str:
    """The time as run.json records it (`started`, `finished`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def started(p: Plan) -> dict:
    """run.json of a run that has just started: what it was asked to do, and with which files and packages."""
    pipeline = p.pipeline
    return {
        "rlaif_version": __version__, "name": pipeline.name, "status": "running", "started": now(),
        "seed": pipeline.seed, "config": pipeline.snapshot(),
        "constitution": {"path": p.constitution.path, "name": p.constitution.name, "sha256": p.constitution.sha256},
        "templates": {name: p.templates.sha256(name) for name in ALL_TEMPLATES},
        "prompts": {"path": pipeline.prompts, "count": len(p.prompts)},
        "models": {}, "versions": versions(),
    }


def write(run_dir: Path, info: dict) -> None:
    """Replace RUN/run.json with `info` (atomically: a reader sees the old file or the new one)."""
    atomic.write_json(run_dir / "run.json", info)


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
