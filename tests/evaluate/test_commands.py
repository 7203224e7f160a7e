"""The eval commands on real (tiny, random) models: KL, reward-model accuracy, and a win rate through transformers."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from rlaif.cli import main


def _perturbed(src, dst, scale=0.5):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight.add_(scale * torch.randn_like(model.lm_head.weight))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_kl_is_zero_for_the_same_model_and_positive_for_another(workdir, tiny_chat_model):
    (workdir / "held.txt").write_text("how do I bake bread\nwhat is rain\nwrite a poem\n")
    base = ["eval", "kl", "--reference", str(tiny_chat_model), "--prompts", "held.txt", "--samples", "3", "--max-tokens", "8"]
    result = CliRunner().invoke(main, [*base, "--policy", str(tiny_chat_model), "--output", "same"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    same = json.loads((workdir / "same" / "kl.json").read_text())
    assert same["kl"] == pytest.approx(0.0, abs=1e-4) and same["tokens"] > 0
    other = _perturbed(tiny_chat_model, workdir / "other")
    result = CliRunner().invoke(main, [*base, "--policy", str(other), "--output", "diff"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    diff = json.loads((workdir / "diff" / "kl.json").read_text())
    assert diff["kl"] > 0.05 and diff["ci95"][0] > 0  # a sample estimate of a KL that is clearly not zero
    assert diff["headline"] == {"name": "kl", "value": diff["kl"], "ci95": diff["ci95"], "unit": "nats"}
    rows = [json.loads(x) for x in (workdir / "diff" / "kl.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["samples"]) == 3 for r in rows)


def _reward_model(path, tokenizer_src):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tokenizer_src, num_labels=1)
    model.config.pad_token_id = 0
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(path)
    return path


def test_reward_model_accuracy_matches_the_model_scores(workdir, tiny_chat_model):
    from rlaif.train.rewards import RewardModelReward

    rm = _reward_model(workdir / "rm", tiny_chat_model)
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "chosen": [{"role": "assistant", "content": "a helpful answer " * (i % 3 + 1)}],
             "rejected": [{"role": "assistant", "content": f"no {i}"}], "principles": ["p1" if i % 2 else "p2"]}
            for i in range(8)]
    (workdir / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["eval", "reward-model", "--model", str(rm), "--pairs", "pairs.jsonl", "--split", "all", "--output", "out"]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    s = json.loads((workdir / "out" / "reward_model.json").read_text())
    reward = RewardModelReward(str(rm))
    chosen = reward([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = reward([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    expected = sum(c > r for c, r in zip(chosen, rejected))
    assert s["n"] == 8 and s["correct"] == expected and s["accuracy"] == pytest.approx(expected / 8)
    assert set(s["per_principle"]) == {"p1", "p2"} and sum(v["n"] for v in s["per_principle"].values()) == 8
    assert s["headline"] == {"name": "accuracy", "value": s["accuracy"], "ci95": s["ci95"], "unit": "rate"}
    result = CliRunner().invoke(main, argv[:-4] + ["--split", "heldout"])  # no rlaif_train.json: the split is unknown
    assert result.exit_code == 2 and "held-out split is unknown" in result.output
    (workdir / "empty.jsonl").write_text("")
    result = CliRunner().invoke(main, ["eval", "reward-model", "--model", str(rm), "--pairs", "empty.jsonl", "--split", "all"])
    assert result.exit_code == 2 and "empty.jsonl: no pairs" in result.output and "Traceback" not in result.output
    (workdir / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n" + '{"prompt": "x", "chosen": "y"}\n')
    result = CliRunner().invoke(main, ["eval", "reward-model", "--model", str(rm), "--pairs", "bad.jsonl", "--split", "all"])
    assert result.exit_code == 2 and "bad.jsonl:2: pair has no rejected" in result.output


def test_winrate_on_tiny_models_through_transformers(workdir, tiny_chat_model):
    other = _perturbed(tiny_chat_model, workdir / "other", scale=0.2)
    (workdir / "held.txt").write_text("how do I bake bread\nwhat is rain\n")
    argv = ["eval", "winrate", "--policy", str(other), "--baseline", str(tiny_chat_model), "--backend", "hf",
            "--prompts", "held.txt", "--constitution", "constitutions/harmless.yaml", "--max-tokens", "6",
            "--principles", "2", "--output", "out"]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    s = json.loads((workdir / "out" / "winrate.json").read_text())
    assert s["prompts"] == 2 and s["judge"].startswith(f"{tiny_chat_model}@") and s["principles_per_comparison"] == 2
    assert s["wins"] + s["losses"] + s["ties"] == s["judged"] == 2  # a random judge still labels every pair
    rows = [json.loads(x) for x in (workdir / "out" / "winrate.jsonl").read_text().splitlines()]
    assert all(0 <= r["label"] <= 1 and len(r["principles"]) == 2 for r in rows if not r["identical"])
