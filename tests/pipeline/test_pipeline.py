"""End to end on tiny models with the hf backend: run, resume, export, train one DPO step."""

from __future__ import annotations

import json

import datasets
import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.rundir.store import Store

from tests.conftest import write_pipeline


def _run(*args):
    result = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    return result


def test_run_writes_run_directory(workdir, tiny_base_model):
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model)
    result = _run("run", pipe)
    assert result.exit_code == 0, result.output
    run_dir = workdir / "outputs" / "test"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["seed"] == 0 and info["rlaif_version"]
    assert len(info["constitution"]["sha256"]) == 64 and info["templates"]["completion/critique.j2"]
    assert info["models"]["policy"] == str(tiny_base_model)
    assert info["counts"]["responses"] == 12 and info["counts"]["critique_rounds"] == 24
    store = Store(run_dir / "records.sqlite")
    assert store.count("respond") == 12 and store.count("critique") == 24
    store.close()


def test_sft_and_prefs_rows(workdir, tiny_chat_model):
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, drop_degenerate="false")  # random weights: every revision is cut off
    assert _run("run", pipe).exit_code == 0
    run_dir = workdir / "outputs" / "test"
    sft = datasets.load_from_disk(str(run_dir / "sft"))
    lines = (run_dir / "sft.jsonl").read_text().splitlines()
    assert len(sft) == len(lines) > 0
    row = sft[0]
    assert row["prompt"][-1]["role"] == "user" and [m["role"] for m in row["completion"]] == ["assistant"]
    prefs = datasets.load_from_disk(str(run_dir / "prefs"))
    assert len(prefs) == len((run_dir / "prefs.jsonl").read_text().splitlines())
    for row in prefs:
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"] != row["rejected"] and 1 <= row["rounds"] == len(row["principles"]) <= 2
        assert row["source"] == "ai" and row["pair_type"] == "revision" and row["response_key"]


def test_dpo_trains_on_exported_prefs(workdir, tiny_chat_model, tmp_path):
    """The exported prefs/ is TRL-native: one DPOTrainer step runs on it and moves the weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    assert _run("run", write_pipeline(workdir / "p.yaml", tiny_chat_model, drop_degenerate="false")).exit_code == 0
    prefs = datasets.load_from_disk(str(workdir / "outputs" / "test" / "prefs"))
    assert len(prefs) > 0
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-2,
                     report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, max_length=256)
    trainer = DPOTrainer(model=model, args=args, train_dataset=prefs, processing_class=tokenizer)
    trainer.train()
    loss = trainer.state.log_history[0]["loss"]
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("model", ["tiny_base_model", "tiny_chat_model"])
def test_judge_with_real_logprobs(workdir, model, request):
    """A real (tiny) model through the hf backend: labels are probabilities read from its option tokens. A random
    model spreads its next token over the whole vocabulary, so the option-mass check is off here."""
    stages = ("stages:\n  respond: {n: 2, max_tokens: 8}\n  critique: {rounds: 1, max_tokens: 8}\n"
              "  judge: {principles_per_comparison: 2, min_option_mass: 0, drop_ties: false}\n")
    pipe = write_pipeline(workdir / "p.yaml", request.getfixturevalue(model), stages=stages, limit=3, few_shot=1, drop_degenerate="false")
    assert _run("run", pipe).exit_code == 0
    run_dir = workdir / "outputs" / "test"
    stats = json.loads((run_dir / "judge_stats.json").read_text())["overall"]
    assert stats["parse_failure_rate"] == 0.0 and stats["judgements"] == 2 * stats["comparisons"] > 0
    assert 0 < stats["option_mass"]["max"] < 0.1 and stats["logit_dtype"] == ["float32"]  # ~2 of ~400 tokens
    prefs = datasets.load_from_disk(str(run_dir / "prefs"))
    kinds = set(prefs["pair_type"])
    assert kinds <= {"samples", "revision"} and len(prefs) > 0
    assert all(0.5 <= p <= 1 for p in prefs["p_chosen"]) and all(m == pytest.approx(2 * p - 1) for p, m in zip(prefs["p_chosen"], prefs["margin"]))


def test_pipeline_ends_with_a_dpo_stage(workdir, tiny_chat_model):
    """One pipeline file from constitution to trained model; a rerun with nothing changed skips the training."""
    stages = ("stages:\n  respond: {n: 2, max_tokens: 8}\n  critique: {rounds: 1, max_tokens: 8}\n"
              "  dpo:\n    trl: {max_steps: 2, per_device_train_batch_size: 2, max_length: 64, logging_steps: 1}\n")
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, stages=stages, limit=4, drop_degenerate="false")
    result = _run("run", pipe)
    assert result.exit_code == 0, result.output
    run_dir = workdir / "outputs" / "test"
    record = json.loads((run_dir / "dpo" / "rlaif_train.json").read_text())
    assert record["metrics"]["steps"] == 2 and record["stamp"]["data"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["counts"]["train"]["dpo"]["steps"] == 2
    result = _run("run", pipe)
    assert "dpo: unchanged since the last run, skipped" in result.output


def test_bad_training_stage_is_caught_before_generation(workdir, tiny_chat_model):
    stages = "stages:\n  respond: {n: 2}\n  dpo:\n    trl: {max_stepz: 2}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, stages=stages)
    result = CliRunner().invoke(main, ["run", str(pipe)])
    assert result.exit_code == 2
    assert "p.yaml:11: stages.dpo: trl.max_stepz: DPOConfig has no field 'max_stepz' (did you mean 'max_steps'?)" in result.stderr
    assert not (workdir / "outputs" / "test" / "records.sqlite").exists()


def test_run_json_counts_the_engines_it_started(workdir):
    """counts.engine_starts: roles on one model share one engine; a judge on another model is a second start."""
    import json

    from click.testing import CliRunner

    from rlaif.cli import main

    (workdir / "p.txt").write_text("one\ntwo\n")
    stages = "stages:\n  respond: {n: 2, max_tokens: 12}\n  critique: {}\n  judge: {}\n"
    same = workdir / "same.yaml"
    same.write_text("name: same\nconstitution: constitutions/harmless.yaml\nprompts: p.txt\n"
                    "models:\n  policy: {model: fake, backend: scripted}\n" + stages)
    other = workdir / "other.yaml"
    other.write_text("name: other\nconstitution: constitutions/harmless.yaml\nprompts: p.txt\n"
                     "models:\n  policy: {model: fake, backend: scripted}\n  judge: {model: fake-judge, backend: scripted}\n" + stages)
    for pipe in (same, other):
        result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    count = lambda name: json.loads((workdir / "outputs" / name / "run.json").read_text())["counts"]["engine_starts"]
    assert count("same") == {"total": 1, "by_model": {"scripted:fake": 1}}
    assert count("other") == {"total": 2, "by_model": {"scripted:fake": 1, "scripted:fake-judge": 1}}


def test_run_json_times_each_generation_phase(workdir):
    """run.json `phases`: one entry per progress bar with its requests, tokens and seconds (bench/peer.py reads them),
    so a user can see where a run's time went; a rerun that generates nothing records no new work."""
    import json

    from click.testing import CliRunner

    from rlaif.cli import main

    (workdir / "p.txt").write_text("one\ntwo\nthree\n")
    pipe = workdir / "p.yaml"
    pipe.write_text("name: t\nconstitution: constitutions/harmless.yaml\nprompts: p.txt\n"
                    "models:\n  policy: {model: fake, backend: scripted, scripted_words: 5}\n"
                    "stages:\n  respond: {n: 2, max_tokens: 12}\n  critique: {}\n  judge: {}\n")
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    phases = json.loads((workdir / "outputs" / "t" / "run.json").read_text())["phases"]
    by_name = {p["name"]: p for p in phases}
    assert by_name["respond"]["requests"] == 3 and by_name["respond"]["tokens"] == 3 * 2 * 5  # 3 prompts x n=2 x 5 words
    assert all(p["seconds"] >= 0 and set(p) == {"name", "requests", "tokens", "seconds"} for p in phases)
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    again = json.loads((workdir / "outputs" / "t" / "run.json").read_text())["phases"]
    assert sum(p["requests"] for p in again) == 0


def test_a_rerun_with_every_record_stored_starts_no_engine(workdir, tiny_base_model):
    """Local engines start on first use (backends/pool.LazyEngine): the first run starts the policy's engine once for
    respond and critique; a rerun whose records are all stored starts none (before: one start per run, to compute
    keys that need only the model id)."""
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model)
    starts = lambda: json.loads((workdir / "outputs" / "test" / "run.json").read_text())["counts"]["engine_starts"]["total"]
    assert _run("run", pipe).exit_code == 0
    assert starts() == 1
    result = _run("run", pipe)
    assert result.exit_code == 0, result.output
    assert starts() == 0
    result = _run("run", pipe, "--set", "stages.critique.rounds=3")  # new work: the engine starts again, once
    assert result.exit_code == 0 and starts() == 1


def test_bars_that_take_turns_are_timed_apart(monkeypatch):
    """Critique and revision bars are made together and advanced in turns: each phase gets the time since the
    previous advance, so the revision phase does not also count the critique's time (it did, timed from its start)."""
    from rlaif import progress

    clock = iter([0.0, 0.0, 0.0, 2.0, 5.0, 6.0, 9.0])  # Reporter(), bar 1, bar 2, then four advances
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    r = progress.Reporter()
    critique, revision = r.task("critique round 1", 2), r.task("revision round 1", 2)
    critique(1, 10)  # t=2
    revision(1, 10)  # t=5
    critique(1, 10)  # t=6
    revision(1, 10)  # t=9
    assert [(p["name"], p["seconds"], p["requests"], p["tokens"]) for p in r.phases] == [
        ("critique round 1", 2.0 + 1.0, 2, 20), ("revision round 1", 3.0 + 3.0, 2, 20)]
