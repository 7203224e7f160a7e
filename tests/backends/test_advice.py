"""Settings known to be slow on this machine's engines are named once at the start of a run; nothing is changed."""

from __future__ import annotations

import json

import pytest
import torch

from rlaif import hardware
from rlaif.backends.advice import slow_settings
from rlaif.spec.config import load_pipeline

from tests.conftest import write_pipeline


@pytest.fixture
def emulated_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    import rlaif.backends.advice as advice

    monkeypatch.setattr(advice, "native_bf16", lambda: False)


def test_top_p_and_emulated_bf16_on_a_cpu_are_named(workdir, emulated_bf16):
    path = write_pipeline(workdir / "p.yaml", "default", backend="vllm",
                          stages="stages:\n  respond: {n: 2, top_p: 0.9}\n  critique: {rounds: 1}\n")
    notes = slow_settings(load_pipeline(path, ["models.policy.dtype=bfloat16"]))
    assert len(notes) == 2
    assert notes[0].startswith("models.policy.dtype bfloat16: this CPU has no native bf16")
    assert notes[1].startswith("stages.respond.top_p 0.9: on a CPU the nucleus filter sorts")
    assert all("\n" not in n for n in notes)


def test_the_defaults_need_no_note(workdir, emulated_bf16):
    path = write_pipeline(workdir / "p.yaml", "default", backend="vllm",
                          stages="stages:\n  respond: {n: 2}\n  critique: {rounds: 1}\n")
    assert slow_settings(load_pipeline(path, ["models.policy.dtype=auto"])) == []


def test_greedy_or_remote_sampling_needs_no_note(workdir, emulated_bf16):
    path = write_pipeline(workdir / "p.yaml", "default", backend="vllm",
                          stages="stages:\n  respond: {n: 1, top_p: 0.9, temperature: 0}\n")
    assert slow_settings(load_pipeline(path)) == []  # greedy: no nucleus filter runs
    path = write_pipeline(workdir / "q.yaml", "m", backend="scripted", stages="stages:\n  respond: {top_p: 0.9}\n")
    assert slow_settings(load_pipeline(path)) == []  # not an engine on this machine's processor


def test_the_note_is_said_and_kept_in_run_json(workdir, monkeypatch):
    """The run prints the note before any stage and records it in run.json; the run itself goes on unchanged."""
    from click.testing import CliRunner

    import rlaif.pipeline as pipeline_module
    from rlaif.cli import main

    monkeypatch.setattr(pipeline_module, "slow_settings", lambda p: [f"stages.respond.top_p {p.stages.respond.top_p}: slow here"])
    path = write_pipeline(workdir / "p.yaml", "m", backend="scripted", stages="stages:\n  respond: {n: 2, top_p: 0.9}\n")
    result = CliRunner().invoke(main, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "note stages.respond.top_p 0.9: slow here"
    info = json.loads((workdir / "outputs" / "test" / "run.json").read_text())
    assert info["status"] == "complete" and info["notes"] == ["stages.respond.top_p 0.9: slow here"]
