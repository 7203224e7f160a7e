"""Library output goes to the run's log file, rlaif's own to the terminal; -v shows both; the log is redacted."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import pytest

from rlaif import runlog
from rlaif.redact import register

NOISE = {
    "logger": "lib logger says hi",
    "warning": "old_api is deprecated",
    "print": "a library print",
    "fd": "C-level NUMA binding warning",
}


def _make_noise(extra: str = "") -> None:
    """What libraries do: a log record, a Python warning, a print, a C write to file descriptor 2."""
    logging.getLogger("transformers.modeling_utils").warning(NOISE["logger"] + extra)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(NOISE["warning"] + extra, FutureWarning, stacklevel=1)
    print(NOISE["print"] + extra)
    sys.stdout.flush()
    os.write(2, (NOISE["fd"] + extra + "\n").encode())


@pytest.fixture
def quiet():
    """Not verbose, whatever a test before set; verbose off again afterwards."""
    runlog.set_verbose(False)
    yield
    runlog.set_verbose(False)


@pytest.mark.parametrize("verbose", [False, True])
def test_library_output_goes_to_the_log_and_only_with_verbose_to_the_terminal(tmp_path, capfd, quiet, verbose):
    runlog.set_verbose(verbose)
    log = tmp_path / "run" / "run.log"
    with runlog.capture(log):
        _make_noise()
        runlog.echo("rlaif: 3 prompts done")
        print("rlaif progress line", file=runlog.TERMINAL, flush=True)
    out, err = capfd.readouterr()
    text = log.read_text()
    for line in NOISE.values():
        assert line in text
        assert (line in out + err) == verbose, line
    assert "FutureWarning" in text and "py.warnings" in text
    assert "rlaif: 3 prompts done" in out and "rlaif progress line" in err
    assert "rlaif progress line" not in text and "rlaif: 3 prompts done" not in text
    print("after the capture")
    assert "after the capture" in capfd.readouterr().out


def test_everything_written_to_the_log_is_redacted(tmp_path, capfd, quiet):
    key = "sk-test-0123456789abcdef"
    register(key)
    log = tmp_path / "run.log"
    with runlog.capture(log):
        _make_noise(f" Authorization: Bearer {key}")
        logging.getLogger("httpx").warning("POST https://user:hunter2secret@api.example/v1 401 with key %s", key)
    text = log.read_text()
    assert key not in text and "hunter2secret" not in text
    assert text.count("***") >= 5  # logger, warning, print, fd write, httpx
    capfd.readouterr()


def test_the_log_is_appended_and_captures_do_not_nest(tmp_path, capfd, quiet):
    log = tmp_path / "run.log"
    with runlog.capture(log):
        logging.getLogger("vllm").info("first run")
    with runlog.capture(log):
        with runlog.capture(tmp_path / "train.log") as inner:  # a training stage inside the run
            logging.getLogger("trl").info("second run")
    assert inner == log and not (tmp_path / "train.log").exists()
    text = log.read_text()
    assert text.index("first run") < text.index("second run")
    capfd.readouterr()


def test_rlaif_own_warnings_still_reach_the_terminal(tmp_path, capfd, quiet):
    with runlog.capture(tmp_path / "run.log"):
        logging.getLogger("rlaif").warning("endpoint http://a:1/v1 is out for 2 s")
        logging.getLogger("rlaif").info("an info line for the log only")
    err = capfd.readouterr().err
    assert "endpoint http://a:1/v1 is out for 2 s" in err and "info line" not in err
    assert "info line" in (tmp_path / "run.log").read_text()


def test_a_crash_is_logged_with_its_traceback_and_names_the_log(tmp_path, capfd, quiet):
    log = tmp_path / "run.log"
    with pytest.raises(RuntimeError) as caught, runlog.capture(log):
        raise RuntimeError("engine exploded")
    assert caught.value.log_file == log
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: engine exploded" in text
    assert "engine exploded" not in capfd.readouterr().err  # the CLI says it, once


def test_library_loggers_are_restored(tmp_path, capfd, quiet):
    lib = logging.getLogger("datasets")
    handler = logging.StreamHandler(sys.stderr)
    lib.addHandler(handler)
    lib.propagate, level = False, lib.level
    try:
        with runlog.capture(tmp_path / "run.log"):
            assert handler not in lib.handlers and lib.propagate
        assert handler in lib.handlers and not lib.propagate and lib.level == level
        assert not logging.getLogger().handlers or all(not isinstance(h, runlog._QuietHandler) for h in logging.getLogger().handlers)
    finally:
        lib.removeHandler(handler)
        lib.propagate = True
    capfd.readouterr()


# --- the CLI: `rlaif run` on a tiny model, with the noise vLLM makes at engine start injected ---------------------

def _noisy_engines(monkeypatch, fail: BaseException | None = None):
    """Every engine load makes library noise first (as vLLM's start does), then loads, or raises `fail`."""
    from rlaif.backends import pool as models

    load = models.load_engine

    def noisy(*args, **kwargs):
        _make_noise()
        if fail is not None:
            raise fail
        return load(*args, **kwargs)

    monkeypatch.setattr(models, "load_engine", noisy)


def _cli(*args):
    from click.testing import CliRunner

    from rlaif.cli import main

    return CliRunner().invoke(main, list(map(str, args)))


DPO_STAGES = ("stages:\n  respond: {n: 2, max_tokens: 8}\n  critique: {rounds: 1, max_tokens: 8}\n"
              "  dpo:\n    trl: {max_steps: 2, per_device_train_batch_size: 2, max_length: 64, logging_steps: 1}\n")
RLAIF_LINE = (  # every line `rlaif run` itself prints for this pipeline
    r"^(respond|critique round 1|revision round 1) +━+ \d+/\d+ .* tok/s \d+:\d\d:\d\d$|"  # a progress bar
    r"^dpo: training .* -> .*dpo$|^dpo: cdpo: per-pair soft labels.*|"
    r"^the tokenizer has no chat template: training with the Human:/Assistant: template .*chat_template.jinja$|"
    r"^dpo step [12]/2: loss [0-9.e+-]+(, [a-z_/]+ [0-9.e+-]+)*$|"
    r"^\d+ prompts, \d+ responses, \d+ critique rounds in [0-9.]+ s$|^run directory: .*|"
    r"^  (sft|prefs) +\d+ rows  .*|^  dpo +2 steps .*\(train loss [0-9.]+\)$"
)


def test_a_run_shows_only_rlaif_output_and_logs_the_rest(workdir, tiny_chat_model, capfd, monkeypatch, quiet):
    import re

    from tests.conftest import write_pipeline

    _noisy_engines(monkeypatch)
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, stages=DPO_STAGES, limit=4, drop_degenerate="false")
    result = _cli("run", pipe)
    assert result.exit_code == 0, result.output
    leaked = capfd.readouterr()
    shown = [line for line in result.output.splitlines() if line.strip()]
    assert [line for line in shown if not re.match(RLAIF_LINE, line)] == []
    assert any(line.startswith("dpo step 2/2: loss") for line in shown)
    for noise in (*NOISE.values(), "{'loss'", "FutureWarning"):
        assert noise not in result.output and noise not in leaked.out + leaked.err, noise
    log = (workdir / "outputs" / "test" / "run.log").read_text()
    assert all(noise in log for noise in NOISE.values())
    assert "{'loss'" in log  # TRL's own log dicts, from transformers' PrinterCallback
    exported = "".join(p.read_text() for p in (workdir / "outputs" / "test").glob("*.jsonl"))
    assert NOISE["print"] not in exported


def test_verbose_shows_the_library_output(workdir, tiny_chat_model, capfd, monkeypatch, quiet):
    from tests.conftest import write_pipeline

    _noisy_engines(monkeypatch)
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, stages="stages:\n  respond: {n: 1, max_tokens: 4}\n", limit=2)
    result = _cli("run", pipe, "-v")
    assert result.exit_code == 0, result.output
    assert all(noise in result.output for noise in NOISE.values())
    capfd.readouterr()


def test_a_library_crash_is_logged_and_carries_the_log(workdir, tiny_chat_model, capfd, monkeypatch, quiet):
    """The exception still propagates (callers see it); its traceback is in run.log, and it names that log."""
    from tests.conftest import write_pipeline

    _noisy_engines(monkeypatch, RuntimeError("CPU Generator does not use offset"))
    result = _cli("run", write_pipeline(workdir / "p.yaml", tiny_chat_model))
    log = workdir / "outputs" / "test" / "run.log"
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert result.exception.log_file == log.relative_to(workdir)
    assert "Traceback" in log.read_text() and "RuntimeError: CPU Generator does not use offset" in log.read_text()
    assert result.output == ""
    capfd.readouterr()


@pytest.mark.subprocess
def test_the_command_prints_a_logged_crash_in_two_lines(workdir, tiny_chat_model, tmp_path):
    """A real library crash (transformers reading a damaged weights file) in a real `rlaif run` process."""
    import shutil
    import subprocess

    from tests.conftest import ROOT, write_pipeline

    broken = shutil.copytree(tiny_chat_model, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    pipe = write_pipeline(workdir / "p.yaml", broken, stages="stages:\n  respond: {n: 1, max_tokens: 4}\n", limit=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "rlaif", "run", str(pipe)], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert lines[1] == "the traceback and the libraries' output are in outputs/test/run.log"
    assert "Traceback" in (workdir / "outputs" / "test" / "run.log").read_text()


def test_a_user_error_during_the_run_stays_one_line_exit_2(workdir, tiny_chat_model, capfd, monkeypatch, quiet):
    from rlaif.errors import UserError

    from tests.conftest import write_pipeline

    _noisy_engines(monkeypatch, UserError("models.policy: the server refused the key", "p.yaml", 7))
    result = _cli("run", write_pipeline(workdir / "p.yaml", tiny_chat_model))
    assert result.exit_code == 2
    assert result.stderr == "p.yaml:7: models.policy: the server refused the key\n"
    assert "the server refused the key" in (workdir / "outputs" / "test" / "run.log").read_text()
    capfd.readouterr()
