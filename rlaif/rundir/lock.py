"""One writer per run directory: an exclusive `fcntl.flock` on RUN/.rlaif.lock for every command that writes into it.

`rlaif run` (its training, eval and report stages included), `merge-human`, `export` into the run (annotation files,
`--out` inside it), `report`, `eval --output` inside a run and `train` with its output_dir inside a run each hold it
for their whole duration. A second command fails at once with one line naming the holder's pid and command. The
kernel releases a flock when its holder exits however it exits (kill -9 included), so a dead holder never blocks.
A process may take the lock it already holds again (the run's report stage writes the report while `run` holds it).
Taking the lock first finishes what a killed writer left half done (`atomic.recover`).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from . import atomic
from ..errors import UserError
from ..runlog import command_line

LOCK_NAME = ".rlaif.lock"
_held: dict[str, int] = {}  # realpath of a run directory -> how many times this process holds it
_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        return f"pid {info['pid']} ({info['command']})"
    except (ValueError, KeyError, TypeError, OSError):  # the holder is still writing its line
        return "another process"


@contextmanager
def run_lock(run_dir: str | Path):
    """Hold RUN's lock for the block (creating RUN if needed); a held lock or an unwritable RUN is a UserError."""
    path = Path(run_dir)
    key = os.path.realpath(path)
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except FileExistsError:
        raise UserError("is a file, not a run directory", str(path)) from None
    except OSError as e:
        raise UserError(f"the run directory is not writable ({e.strerror})", str(path)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(f"{path} is in use by {holder}; wait for it to finish or stop it, then run this again") from None
    try:
        try:  # an existing lock file opens in a directory that takes no new files: ask the directory itself
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as e:
            raise UserError(f"the run directory is not writable ({e.strerror})", str(path)) from None
        line = json.dumps({"pid": os.getpid(), "command": command_line(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (line + "\n").encode("utf-8"), 0)
        with _guard:
            _held[key] = 1
        atomic.recover(path)
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        os.close(fd)  # releases the flock


def owning_run(path: str | Path) -> Path | None:
    """The run directory that `path` is (or lies inside): the nearest directory up from it holding run.json."""
    p = Path(os.path.abspath(path))
    for candidate in (p, *p.parents):
        if (candidate / "run.json").is_file():
            return candidate
    return None


def lock_owner(path: str | Path):
    """The lock of the run that `path` writes into, or nothing when it lies in no run directory."""
    run = owning_run(path)
    return run_lock(run) if run is not None else nullcontext()
