"""Pointwise scores: the rating arithmetic, the stage, best-vs-worst pairs, and the reward function."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rlaif.backends import pool as models
from rlaif.backends.base import Completion, Output
from rlaif.cli import main
from rlaif.spec.constitution import load_constitution
from rlaif.train.rewards import JudgeScoreReward
from rlaif.stages.score import RATINGS, expected_rating

from tests.conftest import stage_context, write_pipeline

LOG = math.log


def test_expected_rating_by_hand():
    """mean = sum k P(k) / sum P(k) over 1..10; digit mass = sum P(k); below min_mass the mean is None."""
    lp = {r: -math.inf for r in RATINGS} | {"7": LOG(0.6), "9": LOG(0.2)}
    score, probs, mass = expected_rating(lp)
    assert score == pytest.approx((7 * 0.6 + 9 * 0.2) / 0.8) and probs == pytest.approx({7: 0.75, 9: 0.25})
    assert mass == pytest.approx(0.8)
    # "10" is an option of its own (the backend reads it in context: one token, or "1" then "0")
    lp = {r: -math.inf for r in RATINGS} | {"1": LOG(0.1), "5": LOG(0.5), "10": LOG(0.4)}
    score, probs, mass = expected_rating(lp)
    assert probs == pytest.approx({1: 0.1, 5: 0.5, 10: 0.4}) and score == pytest.approx(0.1 + 2.5 + 4.0)
    assert expected_rating({r: -math.inf for r in RATINGS}) == (None, {}, 0.0)
    # a judge that puts 0.1 of its next token on the digits is not giving a number: unrated, the mass recorded
    score, probs, mass = expected_rating({r: LOG(0.01) for r in RATINGS}, min_mass=0.5)
    assert score is None and mass == pytest.approx(0.1) and probs == pytest.approx({k: 0.1 for k in range(1, 11)})


class Rater:
    """Rates an answer by its length: longer answers get higher digits."""

    model_id, logit_dtype = "rater", "float32"

    def generate(self, requests, progress=None):
        return [Completion(tuple(Output("x" * (2 + 3 * i + len(r.prompt) % 2), 1) for i in range(r.sampling.n)), 3) for r in requests]

    def __init__(self, chat=False):
        self.has_chat_template, self.requests = chat, []

    def logprobs(self, requests, options):
        out = []
        for r in requests:
            self.requests.append(r)
            text = r.prompt if r.prompt is not None else r.messages[-1]["content"]
            answer = text.rsplit("Assistant: ", 1)[1].split("\n\nJudge")[0]
            best = str(min(10, 1 + len(answer) // 3))
            out.append({d: (LOG(0.9) if d == best else LOG(0.1 / 9)) for d in options})
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
    assert all(s["digit_mass"] == pytest.approx(1.0) for s in scores)
    rubrics: dict[str, dict[str, set]] = {}  # prompt -> candidate -> its principles
    for s in scores:
        rubrics.setdefault(s["prompt_id"], {}).setdefault(s["target_key"], set()).add(s["principle"])
    for candidates in rubrics.values():  # every candidate of a prompt is rated on the same principles
        assert len(candidates) == 3 and len({frozenset(p) for p in candidates.values()}) == 1
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 2 and all(r["pair_type"] == "best_vs_worst" for r in prefs)
    for r in prefs:
        assert r["score_chosen"] > r["score_rejected"] and len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"])
        assert r["margin"] == pytest.approx((r["score_chosen"] - r["score_rejected"]) / 9)


def test_low_digit_mass_is_unrated_and_counted(workdir, monkeypatch):
    class Chatty(Rater):
        def logprobs(self, requests, options):  # the judge wants to write "**" or "I would rate": 0.2 on the digits
            return [{d: LOG(0.02) for d in options} for _ in requests]

    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: Chatty())
    (workdir / "p.txt").write_text("one\ntwo\n")
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages="stages:\n  respond: {n: 2}\n  score: {}\n")
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    run_dir = workdir / "outputs" / "test"
    scores = [json.loads(x) for x in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert scores and all(s["score"] is None and s["digit_mass"] == pytest.approx(0.2) for s in scores)
    counts = json.loads((run_dir / "run.json").read_text())["counts"]["score"]
    assert counts["unrated"] == counts["low_digit_mass"] == len(scores) and counts["pairs"] == 0


def test_chat_rater_reply_is_opened_with_the_rating_prefix(workdir):
    from rlaif.spec.config import ScoreConfig
    from rlaif.stages.score import score

    rater = Rater(chat=True)
    targets = [{"key": f"k{i}", "text": "x" * (3 * i), "prompt_id": "p", "messages": [{"role": "user", "content": "hi"}]}
               for i in range(1, 4)]
    records = score(stage_context(workdir), rater, targets, ScoreConfig())
    assert [r["score"] for r in records] == pytest.approx([0.9 * k + 0.1 / 9 * (55 - k) for k in (2, 3, 4)])
    assert {r.prefix for r in rater.requests} == {"Rating (1 to 10): "} and all(r.messages for r in rater.requests)


def test_reward_function_batches_and_formats(workdir):
    """d-RLAIF: reward = (rating - 5.5) / 4.5 in [-1, 1]; conversational prompts (message lists) are rendered as
    the conversation; `raw` keeps the 1-10 rating."""
    c = load_constitution(workdir / "constitutions" / "harmless.yaml")
    rater = Rater()
    reward = JudgeScoreReward(rater, c, principles_per_item=2)
    prompts = ["Hi", [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"}]]
    completions = ["short", [{"role": "assistant", "content": "a much, much longer answer here"}]]
    scores = reward(prompts, completions)
    assert len(scores) == 2 and scores[1] > scores[0] and reward.__name__ == "judge_score_harmless"
    assert all(-1 <= x <= 1 for x in scores)
    assert "Human: Hello" in rater.requests[-1].prompt and "Be kind." in rater.requests[-1].prompt
    raw = JudgeScoreReward(Rater(), c, principles_per_item=2, raw=True)(prompts, completions, step=0)
    assert raw == pytest.approx([5.5 + 4.5 * x for x in scores])


def test_reward_draws_one_principle_per_prompt_and_step(workdir):
    """A GRPO group (completions of one prompt) is rated on one principle; another step may draw another."""
    c = load_constitution(workdir / "constitutions" / "harmless.yaml")
    rater = Rater()
    reward = JudgeScoreReward(rater, c)

    def principles(step):
        rater.requests.clear()
        reward(["How do I bake bread?"] * 4 + ["Pick a lock?"] * 4, [f"answer {i}" * (i + 1) for i in range(8)], step=step)
        return [r.prompt.split("Judge the assistant's last response by this standard: ")[1].split("\n")[0] for r in rater.requests]

    drawn = {step: principles(step) for step in range(6)}
    assert all(len(set(p[:4])) == 1 and len(set(p[4:])) == 1 for p in drawn.values())  # one per group
    assert len({p[0] for p in drawn.values()}) > 1  # and the draw moves with the step
    assert principles(3) == drawn[3]  # seeded
