"""Atomic writes: every file a run relies on is written whole under a per-process temporary name, fsync'd, then renamed.

One file: `write_text` / `write_json` / `write_jsonl` / `open_text` (a reader sees the old file or the new one, never a
part). Several files and directories that belong together (a dataset's `name/` and `name.jsonl`; merge-human's
`merged/`, `merged.jsonl`, `human_agreement.json`, `human_rejects.jsonl`): a `Commit`. It stages them all in
`ROOT/.commit.PID.HEX.tmp/`, writes the list of names there, and renames that directory to `ROOT/.commit-pending`:
that rename is the commit point. Then each entry is moved into place (an old directory first to
`.commit-pending/NAME.old`), and the pending directory is removed. `finish(ROOT)` redoes the moves of a commit a kill
interrupted (it is idempotent), so after a kill the group is the previous one (killed before the commit point) or the
new one (after it), never a mix. Every rlaif command that writes into a run, or reads such a group, calls `finish`
under the run's lock first (rlaif.rundir.lock). Local filesystems only: rename and fsync are what make this safe.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Self

PENDING = ".commit-pending"
MANIFEST = ".commit-names.json"
FAULT_ENV = "RLAIF_FAULT"  # tests: kill -9 (or pause) this process at a named point, to check what a crash leaves
_TEMP = re.compile(r"^\.(?:.+\.)?(\d+)\.[0-9a-f]{8}\.tmp$")  # .NAME.PID.HEX.tmp and .commit.PID.HEX.tmp


def fault(point: str) -> None:
    """Test hook: with RLAIF_FAULT=POINT this process kills itself with SIGKILL here; POINT:pause sleeps instead."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted == point:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"{point}:pause":
        time.sleep(float(os.environ.get("RLAIF_FAULT_PAUSE", "30")))


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """A temporary name beside `path`, unique to this process (two writers never share one)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's data to disk (a directory: its entries, so a rename survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def open_text(path: str | Path, newline: str | None = None):
    """A text file opened for writing; on success it is fsync'd and renamed over `path`, on failure removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        fault(f"write:{path.name}")
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically."""
    with open_text(path) as f:
        f.write(text)


def write_json(path: str | Path, data, indent: int | None = 2) -> None:
    """Replace `path` with `data` as JSON atomically."""
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    """Replace `path` with one JSON object per line atomically."""
    with open_text(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


class Commit:
    """Entries written under `path(name)` are published into ROOT together by `publish()`, or not at all."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        finish(self.root)  # a commit a kill interrupted goes first: its names would collide with ours
        self.stage = self.root / f".commit.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        self.stage.mkdir()

    def path(self, name: str) -> Path:
        """Where to write entry `name` (a file or a directory) before it is published."""
        return self.stage / name

    def publish(self) -> None:
        """Make every staged entry visible at once (the rename of the staging directory is the commit point)."""
        names = sorted(os.listdir(self.stage))
        _fsync_tree(self.stage)
        write_json(self.stage / MANIFEST, names)
        fault("commit:staged")
        os.rename(self.stage, self.root / PENDING)
        _fsync(self.root)
        finish(self.root)

    def abandon(self) -> None:
        """Drop what was staged (nothing was published)."""
        shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.publish()
        else:
            self.abandon()


def finish(root: str | Path) -> None:
    """Complete a commit that was interrupted after its commit point (idempotent: safe to repeat after another kill)."""
    root = Path(root)
    pending = root / PENDING
    if not pending.is_dir():
        return
    names = json.loads((pending / MANIFEST).read_text(encoding="utf-8"))  # written whole before the commit point
    for name in names:
        new, target, old = pending / name, root / name, pending / f"{name}.old"
        if not new.exists():  # already moved in
            continue
        if new.is_dir() and not new.is_symlink():
            if target.exists() or target.is_symlink():  # still the previous one: `new` has not moved in yet
                os.rename(target, old)
                fault(f"commit:moved-out:{name}")
            os.rename(new, target)
        else:
            os.replace(new, target)
        fault(f"commit:moved-in:{name}")
    _fsync(root)
    shutil.rmtree(pending)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def recover(root: str | Path) -> None:
    """Finish an interrupted commit in ROOT and remove the temporary files and staging directories of dead processes."""
    root = Path(root)
    finish(root)
    for entry in root.iterdir():
        m = _TEMP.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
