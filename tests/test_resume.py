"""kill -9 a real `rlaif run` mid-run, run the same command again: nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import write_pipeline

PROMPTS, N, ROUNDS = 10, 2, 1


def _records(db) -> dict[str, tuple[str, str]]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        return {k: (stage, data) for k, stage, data in con.execute("SELECT key, stage, data FROM records")}
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        con.close()


def _start(pipe, cwd):
    return subprocess.Popen([sys.executable, "-m", "rlaif", "run", str(pipe)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc, db, stage: str, at_least: int, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = _records(db)
        if sum(s == stage for s, _ in records.values()) >= at_least:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return _records(db)
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for records")


def rerun_and_check(pipe, workdir, db, before: dict, total: int, responses: int = PROMPTS * N) -> dict:
    """Rerun the killed pipeline; every record exists exactly once and those committed before the kill are unchanged."""
    rerun = _start(pipe, workdir)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    after = _records(db)
    assert len(after) == total  # every record exactly once: the key is the primary key, so extra keys would show here
    assert sum(s == "respond" for s, _ in after.values()) == responses
    for key, value in before.items():  # what was committed before the kill is kept as it was
        assert after[key] == value
    return after


@pytest.mark.parametrize("stage, at_least", [("respond", 2), ("critique", 2)])
def test_kill_9_then_rerun(workdir, tiny_base_model, stage, at_least):
    stages = f"stages:\n  respond: {{n: {N}, max_tokens: 16}}\n  critique: {{rounds: {ROUNDS}, max_tokens: 16}}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, limit=PROMPTS, batch_size=2, stages=stages, few_shot=1)
    db = workdir / "outputs" / "test" / "records.sqlite"

    before = _kill_when(_start(pipe, workdir), db, stage, at_least)
    total = PROMPTS * N * (1 + ROUNDS)
    assert 0 < len(before) < total, "the kill must land mid-run"

    rerun_and_check(pipe, workdir, db, before, total)

    sft = [json.loads(line) for line in (workdir / "outputs" / "test" / "sft.jsonl").read_text().splitlines()]
    ids = [(r["prompt_id"], r["sample"]) for r in sft]
    assert len(ids) == len(set(ids)) and len(ids) <= PROMPTS * N
    assert json.loads((workdir / "outputs" / "test" / "run.json").read_text())["status"] == "complete"
