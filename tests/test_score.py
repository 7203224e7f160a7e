"""Pointwise scores: the rating arithmetic, the stage, best-vs-worst pairs, and the reward function."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rlaif import models
from rlaif.backends.base import Completion, Output
from rlaif.cli import main
from rlaif.constitution import load_constitution
from rlaif.rewards import JudgeScoreReward
from rlaif.stages.score import DIGITS, expected_rating

from .conftest import write_pipeline

LOG = math.log


def test_expected_rating_by_hand():
    first = {d: -math.inf for d in DIGITS} | {"7": LOG(0.6), "9": LOG(0.2)}
    score, probs = expected_rating(first, None)
    assert score == pytest.approx((7 * 0.6 + 9 * 0.2) / 0.8) and probs == pytest.approx({7: 0.75, 9: 0.25})
    # "1" then "0" is a 10: P("1") = 0.5 splits into P(10) = 0.5 * 0.8 and P(1) = 0.5 * 0.2
    first = {d: -math.inf for d in DIGITS} | {"1": LOG(0.5), "5": LOG(0.5)}
    score, probs = expected_rating(first, LOG(0.8))
    assert probs == pytest.approx({1: 0.1, 5: 0.5, 10: 0.4}) and score == pytest.approx(0.1 + 2.5 + 4.0)
    assert expected_rating({d: -math.inf for d in DIGITS}, None) == (None, {})


class Rater:
    """Rates an answer by its length: longer answers get higher digits."""

    model_id, has_chat_template = "rater", False

    def generate(self, requests, progress=None):
        return [Completion(tuple(Output("x" * (2 + 3 * i + len(r.prompt) % 2), 1) for i in range(r.sampling.n)), 3) for r in requests]

    def logprobs(self, requests, options):
        out = []
        for r in requests:
            if options == ["0"]:
                out.append({"0": LOG(0.5)})
                continue
            answer = r.prompt.rsplit("Assistant: ", 1)[1].split("\n\nJudge")[0]
            best = str(min(9, 1 + len(answer) // 3))
            out.append({d: (LOG(0.9) if d == best else LOG(0.1 / 8)) for d in options})
        return out

    def close(self):
        pass


def test_score_stage_and_best_vs_worst(workdir, monkeypatch):
    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: Rater())
    (workdir / "p.txt").write_text("one\ntwo\n")
    stages = "stages:\n  respond: {n: 3}\n  score: {principles_per_item: 2}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages)
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = workdir / "outputs" / "test"
    scores = [json.loads(x) for x in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 2 * 3 * 2 and all(1 <= s["score"] <= 10 for s in scores)
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 2 and all(r["pair_type"] == "best_vs_worst" for r in prefs)
    for r in prefs:
        assert r["score_chosen"] > r["score_rejected"] and len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"])
        assert r["margin"] == pytest.approx((r["score_chosen"] - r["score_rejected"]) / 9)


def test_reward_function_batches_and_formats(workdir):
    c = load_constitution(workdir / "constitutions" / "harmless.yaml")
    reward = JudgeScoreReward(Rater(), c, principles_per_item=2)
    prompts = ["Hi", [{"role": "user", "content": "Hello"}]]
    completions = ["short", [{"role": "assistant", "content": "a much, much longer answer here"}]]
    scores = reward(prompts, completions)
    assert len(scores) == 2 and scores[1] > scores[0] and reward.__name__ == "judge_score_harmless"
