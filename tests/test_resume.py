"""kill -9 a real `rlaif run` mid-run, run the same command again: nothing lost, nothing duplicated."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_pipeline
from tests.fakes import _kill_when, _start, rerun_and_check

pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(1200)]  # `rlaif run` in a child process, killed with kill -9, rerun

PROMPTS, N, ROUNDS = 10, 2, 1


@pytest.mark.parametrize("stage, at_least", [("respond", 2), ("critique", 2)])
def test_kill_9_then_rerun(workdir, tiny_base_model, stage, at_least):
    stages = f"stages:\n  respond: {{n: {N}, max_tokens: 16}}\n  critique: {{rounds: {ROUNDS}, max_tokens: 16}}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, limit=PROMPTS, batch_size=2, stages=stages, few_shot=1)
    db = workdir / "outputs" / "test" / "records.sqlite"

    before = _kill_when(_start(pipe, workdir), db, stage, at_least)
    total = PROMPTS * N * (1 + ROUNDS)
    assert 0 < len(before) < total, "the kill must land mid-run"

    rerun_and_check(pipe, workdir, db, before, total, PROMPTS * N)

    sft = [json.loads(line) for line in (workdir / "outputs" / "test" / "sft.jsonl").read_text().splitlines()]
    ids = [(r["prompt_id"], r["sample"]) for r in sft]
    assert len(ids) == len(set(ids)) and len(ids) <= PROMPTS * N
    assert json.loads((workdir / "outputs" / "test" / "run.json").read_text())["status"] == "complete"
