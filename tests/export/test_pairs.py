"""One preference row per pair: the merge rule on hand-made rows, and the judge + score pipeline end to end (F7, F8)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rlaif.backends import pool as models
from rlaif.backends.base import Completion, Output
from rlaif.cli import main
from rlaif.export.rows import pair_id
from rlaif.export.pairs import merge_pairs

from tests.conftest import write_pipeline


def row(chosen: str, rejected: str, source: str, p: float | None = None, agree: bool | None = None, prompt: str = "q",
        scores: tuple | None = None) -> dict:
    """A preference row as the stages make it (only the columns the merge reads)."""
    return {"prompt": [{"role": "user", "content": prompt}], "prompt_id": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "label_source": source, "p_chosen": p,
            "margin": None if p is None else 2 * p - 1, "orders_agree": agree, "pair_type": source,
            "score_chosen": scores[0] if scores else None, "score_rejected": scores[1] if scores else None, "judge_model": None}


def merge(rows, **kw):
    return merge_pairs(rows, pair_id, **kw)


@pytest.mark.parametrize("rows, expected", [
    # (rows, (chosen, p_chosen, label_source, signals, conflict)) of the one row out
    ([row("x", "y", "judge", 0.8), row("x", "y", "score", 0.6, scores=(7, 5.2))], ("x", 0.8, "judge", ["judge", "score"], False)),
    # the scorer picked the other answer: the judge's label is kept, the pair is marked
    ([row("x", "y", "judge", 0.7), row("y", "x", "score", 0.9, scores=(9, 1.8))], ("x", 0.7, "judge", ["judge", "score"], True)),
    # no judge: the score gap decides over the SL-CAI assumption that the revision is better
    ([row("rev", "init", "revision"), row("init", "rev", "score", 0.75)], ("init", 0.75, "score", ["score", "revision"], True)),
    ([row("rev", "init", "revision")], ("rev", None, "revision", ["revision"], False)),
    # two judge rows of the same pair (e.g. judged as samples and as a revision pair) are averaged: (0.9 + 0.7) / 2
    ([row("x", "y", "judge", 0.9), row("x", "y", "judge", 0.7)], ("x", 0.8, "judge", ["judge"], False)),
])
def test_merge_rule(rows, expected):
    out, stats = merge(rows)
    assert len(out) == 1 and stats["duplicates_merged"] == len(rows) - 1 and stats["conflicts"] == int(expected[4])
    r = out[0]
    assert (r["chosen"][0]["content"], r["label_source"], r["signals"], r["conflict"]) == (expected[0], *expected[2:])
    assert r["p_chosen"] == (pytest.approx(expected[1]) if expected[1] is not None else None)
    assert r["p_chosen"] is None or 0.5 <= r["p_chosen"] <= 1 and r["margin"] == pytest.approx(2 * r["p_chosen"] - 1)


def test_scores_follow_their_answers():
    out, _ = merge([row("x", "y", "judge", 0.7), row("y", "x", "score", 0.9, scores=(9.0, 1.8))])
    assert (out[0]["score_chosen"], out[0]["score_rejected"]) == (1.8, 9.0)  # x (chosen by the judge) was rated 1.8


@pytest.mark.parametrize("p, kw, dropped", [
    (0.55, {}, "tie"), (0.45, {}, "tie"), (0.5, {}, "tie"), (0.5000000072, {}, "tie"),  # F8: a band, not an exact 0.5
    (0.56, {}, None), (0.55, {"drop_ties": False}, None), (0.52, {"tie_band": 0.0}, None),
    (0.7, {"min_margin": 0.5}, "low_margin"), (0.8, {"min_margin": 0.5}, None),
])
def test_tie_band_and_margin(p, kw, dropped):
    out, stats = merge([row("x", "y", "judge", p)], **kw)
    assert (len(out) == 0) == (dropped is not None)
    if dropped:
        assert stats["dropped"][dropped] == 1


def test_inconsistent_and_truncated_chosen_are_dropped():
    out, stats = merge([row("x", "y", "judge", 0.8, agree=False)], drop_inconsistent=True)
    assert out == [] and stats["dropped"]["inconsistent"] == 1
    rows = [row("long cut off", "short", "judge", 0.8), row("short", "long cut off", "judge", 0.9, prompt="q2")]
    out, stats = merge(rows, truncated=frozenset({("q", "long cut off"), ("q2", "long cut off")}))
    assert stats["dropped"]["truncated_chosen"] == 1  # a truncated answer may be rejected, never chosen
    assert [r["chosen"][0]["content"] for r in out] == ["short"]


def test_different_prompts_are_different_pairs():
    out, stats = merge([row("x", "y", "judge", 0.8), row("x", "y", "judge", 0.8, prompt="other")])
    assert len(out) == 2 and stats["duplicates_merged"] == 0


class JudgeAndRater:
    """Answers of different lengths; the pairwise judge prefers the longer one, the 1-10 rater the shorter one."""

    model_id, has_chat_template = "judge-and-rater", False

    def generate(self, requests, progress=None):
        return [Completion(tuple(Output("answer " + "x" * (4 * i + 1), 3) for i in range(r.sampling.n)), 5) for r in requests]

    def logprobs(self, requests, options):
        out = []
        for r in requests:
            if options == ["A", "B"]:
                a, b = r.prompt.rsplit("\n(A) ", 1)[1].split("\n(B) ")  # the last options: worked examples come first
                pa = 0.8 if len(a) > len(b.split("\n")[0]) else 0.2
                out.append({"A": math.log(pa), "B": math.log(1 - pa)})
            elif options == ["0"]:
                out.append({"0": math.log(0.01)})
            else:
                answer = r.prompt.rsplit("Assistant: ", 1)[1].split("\n\nJudge")[0]
                best = "9" if len(answer) < 10 else "2"
                out.append({d: 0.0 if d == best else -30.0 for d in options})
        return out

    def close(self):
        pass


def test_judge_and_score_give_one_row_per_pair(workdir, monkeypatch):
    """F7: with n=2 the best-vs-worst pair is the judged pair; the demo exported both, often swapped."""
    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: JudgeAndRater())
    (workdir / "p.txt").write_text("one\ntwo\nthree\n")
    stages = "stages:\n  respond: {n: 2}\n  judge: {}\n  score: {}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages)
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    run_dir = workdir / "outputs" / "test"
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == len({r["pair_id"] for r in prefs}) == 3
    for r in prefs:  # the judge decided (longer answer), the scorer disagreed, both kept in columns
        assert r["label_source"] == "judge" and r["signals"] == ["judge", "score"] and r["conflict"] is True
        assert len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) and r["p_chosen"] == pytest.approx(0.8)
        assert r["score_chosen"] == pytest.approx(2.0, abs=0.01) and r["score_rejected"] == pytest.approx(9.0, abs=0.01)
    pairs = json.loads((run_dir / "run.json").read_text())["counts"]["pairs"]
    assert (pairs["rows_in"], pairs["pairs"], pairs["duplicates_merged"], pairs["conflicts"]) == (6, 3, 3, 3)
    assert pairs["label_source"] == {"judge": 3}
