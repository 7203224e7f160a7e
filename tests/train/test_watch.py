"""Reward-hacking watch: the warning rule on hand-made histories, the check loop with a scripted judge, real PPO/GRPO runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.spec.constitution import load_constitution
from rlaif.train.watch import Watch, hacking_warning
from rlaif.spec.inputs import load_prompts
from rlaif.train.config import WatchConfig

from tests.fakes import BiasedJudge, _config, _ppo_config

ROOT = Path(__file__).resolve().parents[2]


def _rows(*triples):
    return [{"reward": r, "judge_win_rate": w, "kl": k} for r, w, k in triples]


@pytest.mark.parametrize("history,expected", [
    (_rows((1, 0.6, 0), (2, 0.5, 0), (3, 0.4, 0)), "reward rose 1.000 -> 3.000 while the judge win rate fell 0.600 -> 0.400"),
    (_rows((1, 0.6, 0), (2, 0.7, 0), (3, 0.7, 0)), None),  # both improve: healthy
    (_rows((3, 0.6, 0), (2, 0.5, 0), (1, 0.4, 0)), None),  # reward falls too: not hacking, just bad
    (_rows((1, 0.6, 0), (3, 0.58, 0)), None),  # a drop smaller than min_drop (window 2 would need 0.05)
    (_rows((1, 0.6, 0), (3, 0.4, 0)), None),  # fewer checks than the window
    (_rows((1, 0.5, 12.0)), "KL 12.000 is past the bound 10.0"),
    (_rows((1, None, 0), (2, 0.5, 0), (3, 0.4, 0)), None),  # a check without a win rate cannot show a trend
])
def test_hacking_warning(history, expected):
    got = hacking_warning(history, window=3, min_drop=0.05, kl_bound=10.0)
    assert got == expected if expected is None else expected in got


def test_watch_warns_when_reward_rises_and_the_judge_disagrees(tmp_path, workdir):
    (workdir / "held.txt").write_text("a\nb\nc\nd\n")
    cfg = WatchConfig(prompts="held.txt", every=2, window=3)
    constitution = load_constitution("constitutions/harmless.yaml")
    logs = []
    watch = Watch(cfg, load_prompts("held.txt"), BiasedJudge(), constitution, tokenizer=None, output_dir=str(tmp_path),
                  log=logs.append)
    lengths = iter([40, 60, 50, 30])  # the start, then answers that grow and then shrink: the length-loving judge follows

    def fake_answers(model, name):
        n = next(lengths)
        return [{"key": f"{name}-{p.id}", "text": "x" * n, "prompt_id": p.id} for p in watch.prompts]

    watch._answers = fake_answers
    watch.begin(model=None)
    for step in range(1, 7):
        watch.observe(reward=float(step), kl=0.1)  # the training reward only rises
        if watch.due(step):
            watch.check(step, model=None)
    rows = [json.loads(x) for x in (tmp_path / "watch.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert [r["judge_win_rate"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["reward"] for r in rows] == [1.5, 3.5, 5.5] and rows[0]["kl"] == pytest.approx(0.1)
    assert rows[0]["warning"] is None and rows[1]["warning"] is None
    assert "reward rose 1.500 -> 5.500 while the judge win rate fell 1.000 -> 0.000" in rows[2]["warning"]
    assert any(line.startswith("WARNING reward hacking?") for line in logs)
    assert watch.summary() == {"checks": 3, "warnings": [{"step": 6, "warning": rows[2]["warning"]}], "last_win_rate": 0.0}


def _held(tmp_path):
    path = tmp_path / "held.txt"
    path.write_text("how do I bake bread\nwhat is rain\n")
    return path


def test_ppo_with_the_watch(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds):
    judge = f"{{constitution: {ROOT / 'constitutions' / 'harmless.yaml'}, model: {tiny_chat_model}, backend: hf}}"
    rest = ("ppo:\n  total_steps: 2\n  batch_size: 2\n  mini_batch_size: 2\n  max_new_tokens: 6\n"
            f"watch:\n  prompts: {_held(tmp_path)}\n  every: 1\n  max_new_tokens: 6\n  judge: {judge}\n")
    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model, rest)
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "ppo" / "watch.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["judge_win_rate"] <= 1 for r in rows)
    assert all(r["reward"] is not None and r["kl"] is not None for r in rows)
    assert all(r["format"] == "chat" and r["stop"] == [] for r in rows)  # the start and every check answer alike
    record = json.loads((tmp_path / "ppo" / "rlaif_train.json").read_text())
    assert record["metrics"]["watch"]["checks"] == 2
    assert [h["judge_win_rate"] for h in record["metrics"]["history"]] == [r["judge_win_rate"] for r in rows]


def test_grpo_with_the_watch_reuses_the_reward_judge(tmp_path, tiny_chat_model, prompts_ds):
    reward = (f"reward:\n  judge:\n    constitution: {ROOT / 'constitutions' / 'harmless.yaml'}\n    model: {tiny_chat_model}\n"
              f"    backend: hf\nwatch:\n  prompts: {_held(tmp_path)}\n  every: 1\n  max_new_tokens: 6\n  kl_bound: 0.0")
    cfg = _config(tmp_path, "grpo", tiny_chat_model, prompts_ds, reward)
    result = CliRunner().invoke(main, ["train", "grpo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "watch.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(-1 <= r["reward"] <= 1 for r in rows)  # the judge reward's scale
    # The random tiny judge rates no answer (reward -1 for all), so GRPO's advantages are 0 and the policy does not
    # move: the watch must measure a KL of exactly 0, which is not past the bound 0.0. (Old test: `... for r in rows
    # if r["kl"] > 0` and `... or all(r["kl"] == 0 for r in rows)`, which in this very run checked nothing.)
    assert all(r["reward"] == -1.0 and r["kl"] == 0.0 and r["warning"] is None for r in rows)
    assert "WARNING reward hacking?" not in result.output


@pytest.mark.parametrize("watch_yaml, pattern", [
    ("watch:\n  prompts: nope.txt\n", "ppo.yaml:8: watch.prompts: 'nope.txt' not found"),
    ("watch:\n  prompts: {held}\n  window: 1\n", "watch.window: must be >= 2"),
    ("watch:\n  prompts: {held}\n  evry: 3\n", "ppo.yaml:9: watch: unknown key 'evry' (did you mean 'every'?)"),
    ("watch:\n  prompts: {bad}\n", "bad.jsonl:2:"),
    ("watch:\n  prompts: {held}\n  judge: {{constitution: none.yaml}}\n", "none.yaml"),
])
def test_bad_watch_settings(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds, watch_yaml, pattern):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"oops": 1}\n')
    judge = f"  judge: {{constitution: {ROOT / 'constitutions' / 'harmless.yaml'}, model: {tiny_chat_model}, backend: hf}}\n"
    text = watch_yaml.format(held=_held(tmp_path), bad=tmp_path / "bad.jsonl")
    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model, text if "judge" in text else text + judge)
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)])
    assert result.exit_code == 2 and pattern in result.output and "Traceback" not in result.output, result.output


def test_watch_needs_a_judge_with_a_reward_model(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds):
    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model, f"watch:\n  prompts: {_held(tmp_path)}\n")
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)])
    assert result.exit_code == 2 and "ppo.yaml:7: watch.judge: the reward is a reward model" in result.output, result.output
