"""Stages chain as in the CAI paper (F11): `model: sft` in a later stage, pairs sampled from the SFT model, resume."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.spec.config import load_pipeline
from rlaif.pipeline import plan, training_config
from rlaif.rundir.store import Store

from tests.conftest import write_pipeline

TRL = "{trl: {max_steps: 1, per_device_train_batch_size: 2, max_length: 64, logging_steps: 1}}"


def _stages(dpo: str = f"{{model: sft, trl: {TRL[6:-1]}}}", judge: str = "{revisions: false, drop_ties: false, min_option_mass: 0}") -> str:
    return (f"stages:\n  respond: {{n: 2, max_tokens: 8}}\n  critique: {{rounds: 1, max_tokens: 8}}\n  sft: {TRL}\n"
            f"  judge: {judge}\n  dpo: {dpo}\n")


@pytest.mark.parametrize("dpo", ["{model: sft}", "{model: outputs/test/sft-model}", "{model: outputs/test/sft}"])
def test_a_stage_may_start_from_an_earlier_stage_on_a_fresh_run(workdir, dpo):
    """The issue: `dpo: {model: <run>/sft}` was rejected at plan time because the directory does not exist yet."""
    pipe = write_pipeline(workdir / "p.yaml", "default", stages=_stages(dpo=dpo))
    p = plan(load_pipeline(pipe))
    run_dir = workdir / "outputs" / "test"
    assert not run_dir.exists()
    assert training_config(p.pipeline, p.run_dir, "dpo", check_dataset=False).model == str(p.run_dir / "sft-model")
    # the SFT model does not go to <run>/sft, the SFT dataset, which every run's export replaces
    assert training_config(p.pipeline, p.run_dir, "sft", check_dataset=False).output_dir == str(p.run_dir / "sft-model")
    assert training_config(p.pipeline, p.run_dir, "sft", check_dataset=False).model == "default"


@pytest.mark.parametrize("stages, extra, pattern", [
    (_stages(dpo="{model: ppo}") + "  ppo: {reward: {model: reward}}\n  reward: {}\n", {},
     r"stages.dpo.model: 'ppo' trains after dpo"),
    ("stages:\n  respond: {n: 2}\n  judge: {}\n  dpo: {model: sft}\n", {}, "stages.dpo.model: 'sft' names a training stage this pipeline does not have"),
    (_stages(dpo="{model: reward}") + "  reward: {}\n", {}, "stages.dpo.model: stage 'reward' does not make that kind of model"),
    (_stages(), {"pairs_from": "dpo"}, "pairs_from: 'dpo' needs stage 'dpo' trained first, but dpo trains on this run's preference pairs"),
    (_stages(), {"pairs_from": "reward"}, "pairs_from: 'reward' is not a policy-training stage of this pipeline (it has: sft, dpo)"),
    ("stages:\n  respond: {n: 2}\n  critique: {}\n  sft: {}\n", {"pairs_from": "sft"}, "pairs_from: the RL-phase pairs need a judge or score stage"),
])
def test_bad_chains_fail_before_anything_runs(workdir, stages, extra, pattern):
    pipe = write_pipeline(workdir / "p.yaml", "default", stages=stages, **extra)
    result = CliRunner().invoke(main, ["run", str(pipe)])
    assert result.exit_code == 2 and pattern in result.stderr and "Traceback" not in result.output, result.output
    assert result.stderr.startswith(f"{pipe}:") and len(result.stderr.strip().splitlines()) == 1
    assert not (workdir / "outputs" / "test" / "records.sqlite").exists()


def test_cai_order_sft_then_pairs_from_the_sft_model_then_dpo_from_sft(workdir, tiny_base_model):
    """SL-CAI -> SFT -> respond with the SFT model -> judge -> DPO from the SFT model -> eval; a rerun reuses it all."""
    (workdir / "held.txt").write_text("how do I bake bread\nwhat is rain\n")
    stages = _stages() + "  eval: {prompts: held.txt, limit: 2, max_tokens: 4, principles: 1}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, stages=stages, limit=3, pairs_from="sft",
                          drop_degenerate="false")  # random weights: every answer runs to max_tokens
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = workdir / "outputs" / "test"
    info = json.loads((run_dir / "run.json").read_text())
    sampler = info["models"]["pairs_from"]
    assert sampler.startswith("outputs/test/sft-model@") and info["counts"]["rl_responses"] == 6
    assert list(info["counts"]["train"]) == ["sft", "dpo"] and info["status"] == "complete"
    store = Store(run_dir / "records.sqlite")
    responses = [json.loads(d) for (d,) in store.db.execute("SELECT data FROM records WHERE stage = 'respond'")]
    store.close()
    rl = [r for r in responses if r["model"] == sampler]
    assert len(rl) == 6 and len(responses) == 12
    assert {r["format"] for r in responses} == {"completion"}  # the SFT model (chat template saved) answers like the start
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    texts = {r["text"] for r in rl}
    assert prefs and all(r["pair_type"] == "samples" and r["policy_model"] == sampler for r in prefs)
    assert all(r["chosen"][0]["content"] in texts and r["rejected"][0]["content"] in texts for r in prefs)
    dpo = json.loads((run_dir / "dpo" / "rlaif_train.json").read_text())
    assert dpo["config"]["model"] == "outputs/test/sft-model"
    assert set(info["counts"]["eval"]) == {"winrate-sft", "winrate-dpo"}

    again = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "sft: unchanged since the last run, skipped" in again.output
    assert "dpo: unchanged since the last run, skipped" in again.output
    store = Store(run_dir / "records.sqlite")
    assert store.count("respond") == 12  # the SFT model's samples were reused: its weights did not change
    store.close()
    assert json.loads((run_dir / "run.json").read_text())["models"]["pairs_from"] == sampler


def test_dpo_with_every_pair_a_tie_says_why_and_keeps_the_datasets(workdir, tiny_base_model):
    """A random tiny judge's labels all sit within tie_band of 0.5: DPO has nothing to train on. The run stops with
    one line that names the ties and how to keep them (it said only "dataset ... has no rows"), the datasets written."""
    stages = ("stages:\n  respond: {n: 2, max_tokens: 4}\n"
              "  judge: {revisions: false, min_option_mass: 0, tie_band: 0.5}\n  dpo: " + TRL + "\n")
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, stages=stages, limit=2, drop_degenerate="false")
    result = CliRunner().invoke(main, ["run", str(pipe)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]  # after the judge's diagnostics table and its warning
    assert line.startswith(f"{pipe}:") and "Traceback" not in result.output, result.output
    assert "stages.dpo: no preference pairs to train on: 2 tie" in line and "drop_ties: false" in line, line
    run_dir = workdir / "outputs" / "test"
    assert (run_dir / "sft.jsonl").read_text() and (run_dir / "prefs.jsonl").read_text() == ""
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
