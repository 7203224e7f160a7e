"""The quickstart pipeline for real: embedded model, vLLM backend, a couple of prompts (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.timeout(1800)]  # ~9 minutes on a slow 2-core host


def test_quickstart_on_vllm(workdir):
    out = workdir / "outputs" / "qs"
    cmd = [sys.executable, "-m", "rlaif", "run", "pipelines/quickstart.yaml", "--limit", "3", "--output", str(out),
           "--set", "stages.respond.max_tokens=32", "--set", "stages.critique.max_tokens=32", "--set", "drop_degenerate=false",
           "--set", "stages.eval.limit=2", "--set", "stages.eval.max_tokens=16"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run directory:" in proc.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["counts"]["responses"] == 6 and info["counts"]["critique_rounds"] == 6
    assert info["models"]["policy"].startswith("gemma-3-270m")
    sft = datasets.load_from_disk(str(out / "sft"))
    assert len(sft) > 0 and all(row["completion"][-1]["content"] for row in sft)
    assert "tok/s" in proc.stderr  # the progress bars report throughput
    assert f"report: {out / 'report' / 'report.html'}" in proc.stdout.splitlines()  # `make demo` shows where the report is
    assert list((out / "report").glob("figures-*/fig-labels.png"))
    win = json.loads((out / "eval" / "winrate-dpo.json").read_text())  # the DPO policy judged against the start
    assert win["prompts"] == 2 and win["judged"] + (win["n"] - win["judged"]) == 2 and "eval  winrate-dpo" in proc.stdout
    # like with like: the DPO model (chat template saved by training) answers in the start's completion format
    assert win["sides"]["policy"]["formats_used"] == win["sides"]["baseline"]["formats_used"] == ["completion"]
    assert win["sides"]["policy"]["stop"] == win["sides"]["baseline"]["stop"] and win["self_judged"] == ["baseline"]
    prefs = [json.loads(x) for x in (out / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == len({r["pair_id"] for r in prefs}) and "pairs" in info["counts"]
    assert list((out / "report").glob("figures-*/fig-eval.png"))
