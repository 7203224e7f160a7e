"""What a command may write where: a run directory belongs to one pipeline; exports never land on the run's own files.

The rules (docs/architecture.md, "Run directory"):
- `rlaif run` writes into a directory only when it is new, empty (rlaif's lock and record store aside), or holds a
  run.json whose `name` is this pipeline's `name` (a rerun resumes it). Anything else is refused before any model
  loads, unless `--force`. A pipeline's `name` must be usable as one directory name under outputs/.
- `rlaif export` and `rlaif report --output` refuse a target that resolves (symlinks and `..` followed) to the run
  directory, to a directory holding it, or to anything inside one of the run's own entries (RUN_ENTRIES).
- A failure of `pipeline.run`, of any kind, is recorded in run.json as `status: failed` with a one-line `error`.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from pathlib import Path

from . import atomic
from ..spec.config import Stages
from ..errors import UserError
from .lock import LOCK_NAME, run_lock
from ..runlog import capture

LOG_NAME = "run.log"  # what the libraries said during the run (rlaif.runlog); appended, never exported
STORE_FILES = ("records.sqlite", "records.sqlite-wal", "records.sqlite-shm", "records.sqlite-journal")
# what rlaif itself keeps in a run directory; exports and reports must never be written over these
RUN_ENTRIES = frozenset({
    "run.json", *STORE_FILES, "sft", "sft.jsonl", "prefs", "prefs.jsonl", "merged", "merged.jsonl", "judge_stats.json",
    "scores.jsonl", "human_agreement.json", "human_rejects.jsonl", "annotation_order.json", "report", "eval",
    LOCK_NAME, LOG_NAME, atomic.PENDING, *Stages.TRAINING,
})


def check_name(pipeline) -> None:
    """`name` names the directory outputs/<name>: not empty, one path component, not hidden."""
    name, (file, line) = pipeline.name, pipeline.where("name")
    if not name.strip():
        raise UserError("name: must not be empty (the run directory is outputs/<name>)", file, line)
    if "/" in name or "\\" in name or ".." in name or name.startswith(".") or "\0" in name:
        raise UserError(f"name: {name!r} must be one directory name under outputs/ (no '/', '..' or leading '.'); "
                        "to put the run elsewhere, set `output:` or pass --output", file, line)


def read_run_json(run_dir: str | Path) -> dict:
    """RUN/run.json as a dict; a missing, unreadable or malformed one is a UserError naming the file and line."""
    path = Path(run_dir) / "run.json"
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserError("is a file, not a run directory", str(run_dir))
    if not path.is_file():
        raise UserError("not a run directory (no run.json)", str(run_dir))
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"run.json is not valid JSON: {e.msg}", str(path), e.lineno) from None
    except UnicodeDecodeError as e:
        raise UserError(f"run.json is not UTF-8 text ({e.reason})", str(path), 1) from None
    except OSError as e:
        raise UserError(f"run.json cannot be read ({e.strerror})", str(path)) from None
    if not isinstance(info, dict):
        raise UserError("run.json must hold a JSON object", str(path), 1)
    return info


def check_writable(path: Path) -> None:
    """The directory (or, if it does not exist yet, its nearest existing parent) accepts new files."""
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserError(f"the run directory is not writable ({e.strerror})", str(path)) from None


def check_run_dir(run_dir: Path, pipeline, force: bool = False) -> None:
    """Plan time: RUN is a directory this pipeline may write into, with readable run.json and records (see module doc)."""
    from .store import check_store

    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("is a file, not a run directory: choose another `output:` / --output", str(run_dir))
    if run_dir.is_dir():
        try:
            entries = {e.name for e in run_dir.iterdir()}
        except OSError as e:
            raise UserError(f"the run directory cannot be read ({e.strerror})", str(run_dir)) from None
        foreign = entries - {LOCK_NAME, LOG_NAME, *STORE_FILES}  # what a run killed before its run.json leaves
        hint = "choose another `output:` / --output, or pass --force to write into it anyway"
        if foreign and not force:
            if "run.json" not in entries:
                raise UserError(f"the directory is not empty and holds no run.json, so it is not a run of {pipeline.name!r}; "
                                f"{hint}", str(run_dir))
            try:
                owner = read_run_json(run_dir).get("name")
            except UserError as e:
                raise UserError(f"{e.message}: cannot tell whose run this is; fix or remove it, or pass --force",
                                e.file, e.line) from None
            if owner != pipeline.name:
                raise UserError(f"holds the run of pipeline {owner!r}, not {pipeline.name!r}; {hint}", str(run_dir))
    check_writable(run_dir)
    if (run_dir / "records.sqlite").is_file():
        check_store(run_dir / "records.sqlite")


def check_targets(run_dir: str | Path, targets: list[Path], option: str) -> None:
    """No target resolves to the run directory, to a directory holding it, or into one of the run's own entries."""
    run = Path(os.path.realpath(run_dir))
    for target in targets:
        real = Path(os.path.realpath(target))
        if real == run or run.is_relative_to(real):
            raise UserError(f"{option}: {target} would replace the run directory {run_dir}; write outside it", str(target))
        if real.is_relative_to(run) and real.relative_to(run).parts[0] in RUN_ENTRIES:
            own = real.relative_to(run).parts[0]
            raise UserError(f"{option}: {target} is the run's own {own!r}; write it elsewhere", str(target))


def failure_reason(error: BaseException) -> str:
    """One line saying why a run stopped."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; run the same command again to resume"
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= 500 else line[:497] + "..."


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def record_failure(path: Path, before: bytes | None, error: BaseException) -> None:
    """Mark run.json `status: failed` with the reason, keeping everything else it records (counts, models, ...)."""
    if isinstance(error, SystemExit) and error.code in (0, None):
        return
    now = _read(path)
    try:
        info = json.loads(now) if now else None
    except ValueError:
        return
    # unchanged and not `running`: this attempt stopped before writing run.json, which still describes an earlier run
    if not isinstance(info, dict) or (now == before and info.get("status") != "running"):
        return
    try:
        atomic.write_json(path, info | {"status": "failed", "error": failure_reason(error),
                                        "failed": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError:  # a full or read-only disk must not hide the error that stopped the run
        pass


def guarded(run):
    """Decorator for `pipeline.run`: hold the run directory's lock throughout, library output appended to RUN/run.log
    under it; record any failure in run.json."""

    @functools.wraps(run)
    def wrapper(p, *args, **kwargs):
        with run_lock(p.run_dir), capture(p.run_dir / LOG_NAME):
            path = p.run_dir / "run.json"
            before = _read(path)
            try:
                return run(p, *args, **kwargs)
            except BaseException as e:
                record_failure(path, before, e)
                raise

    return wrapper
