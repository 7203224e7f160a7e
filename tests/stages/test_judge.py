"""The judge: the method's arithmetic on hand-made numbers, verdict parsing, and the stage end to end."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rlaif.backends import pool as models
from rlaif.backends.base import Completion, Output
from rlaif.cli import main
from rlaif.spec.constitution import load_constitution
from rlaif.stages.judge import clamp, combine, draw_principles, normalise, parse_verdict, read_options

from tests.conftest import write_pipeline
from tests.fakes import BiasedJudge


@pytest.mark.parametrize(
    "logprobs, expected",
    [
        ({"A": math.log(0.6), "B": math.log(0.2)}, 0.75),  # normalised over the options only
        ({"A": -1.0, "B": -1.0}, 0.5),
        ({"A": -float("inf"), "B": -3.0}, 0.0),
        ({"A": -1000.0, "B": -1001.0}, 1 / (1 + math.exp(-1))),  # no underflow
        ({"A": -float("inf"), "B": -float("inf")}, None),
        ({}, None),
    ],
)
def test_normalise(logprobs, expected):
    assert normalise(logprobs) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", 1.0), (" (B)", 0.0), ("B) because it is kinder", 0.0), ("The answer is: (A)", 1.0),
        ("Option A is rude, so the answer is (B).", 0.0), ("Answer: B", 0.0), ("Option B", 0.0), ("I pick (B)", 0.0),
        ("The answer is: (A)\n\nExplanation: ...", 1.0), ("**B**", 0.0), ("**Answer: A**", 1.0), ("A.", 1.0),
        ("B is better.", 0.0), ("Response B is better.\nA:", 0.0),  # "A:" opens a turn, it is no verdict
        ("A response like B is better", 0.0),  # the article "A" is no verdict
        ("A response that refuses is safer.", None), ("Answer: A. On reflection, the answer is (B).", 0.0),  # the last one
        ("the answer is b", None), ("option a", None),  # letters are case-sensitive
        ("", None), ("I cannot decide.", None), ("Both are fine", None), ("Neither A nor B", None), (None, None),
        ("<think>\nLet me compare", None), ("Answer:", None), ("(C)", None), ("AB", None), ("Bob is better", None),
        ("A's answer is longer", None), ("\x00\ufffd((((", None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_combine_both_orders():
    # order 1: P(a) = 0.8; order 2 (b shown first): P(b) = 0.4, so P(a) = 0.6; label = 0.7, both say a
    assert combine(0.8, 0.4) == (pytest.approx(0.7), True, 2)
    # a judge that always prefers the first option: 0.9 and 0.9 -> the orders disagree and the label is 0.5
    assert combine(0.9, 0.9) == (pytest.approx(0.5), False, 2)
    # one order missing: that order's label, agreement unknown, and the count says only one order was scored
    assert combine(0.8, None) == (0.8, None, 1) and combine(None, 0.3) == (pytest.approx(0.7), None, 1)
    assert combine(None, None) == (None, None, 0)


@pytest.mark.parametrize("p_first, p_swapped", [(0.5, 0.5), (0.5, 0.2), (0.7, 0.5), (0.5, 0.9)])
def test_an_exact_half_is_a_tie_never_agreement(p_first, p_swapped):
    """Old code: 0.5 counted as "b wins", so (0.5, 0.5) and (0.5, 0.9) were "agreement"."""
    assert combine(p_first, p_swapped)[1] is None


@pytest.mark.parametrize(
    "logprobs, min_mass, expected",
    [
        ({"A": math.log(0.6), "B": math.log(0.3)}, 0.5, (pytest.approx(2 / 3), pytest.approx(0.9))),
        ({"A": math.log(0.03), "B": math.log(0.01)}, 0.5, (None, pytest.approx(0.04))),  # the judge says something else
        ({"A": math.log(0.03), "B": math.log(0.01)}, 0.0, (pytest.approx(0.75), pytest.approx(0.04))),
        ({"A": -math.inf, "B": -math.inf}, 0.0, (None, 0.0)),  # nothing readable (a prompt too long)
    ],
)
def test_read_options_checks_the_mass(logprobs, min_mass, expected):
    assert read_options(logprobs, min_mass) == expected


def test_clamp():
    assert clamp(0.99, (0.4, 0.6)) == 0.6 and clamp(0.01, (0.4, 0.6)) == 0.4 and clamp(0.5, (0.4, 0.6)) == 0.5
    assert clamp(None, (0.4, 0.6)) is None and clamp(0.99, None) == 0.99


def test_draw_principles_distinct_and_seeded(workdir):
    c = load_constitution(workdir / "constitutions" / "harmless.yaml")
    drawn = draw_principles(c, 0, "cmp1", 3)
    assert len({p.name for p in drawn}) == 3 and drawn == draw_principles(c, 0, "cmp1", 3)
    assert len(draw_principles(c, 0, "x", 100)) == len(c.principles)


@pytest.fixture
def fake_judge(monkeypatch):
    holder = {"judge": BiasedJudge()}
    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: holder["judge"])
    return holder


def _run(workdir, judge_yaml="{}", extra=()):
    (workdir / "p.txt").write_text("one\ntwo\nthree\n")
    stages = f"stages:\n  respond: {{n: 3}}\n  judge: {judge_yaml}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages)
    return CliRunner().invoke(main, ["run", str(pipe), *extra], catch_exceptions=False)


def test_judge_stage_labels_pairs_and_stats(workdir, fake_judge):
    fake_judge["judge"] = BiasedJudge(position_bias=0.1)
    result = _run(workdir)
    assert result.exit_code == 0, result.output
    run_dir = workdir / "outputs" / "test"
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    assert prefs, "some pairs survive the filters"
    for row in prefs:
        assert len(row["chosen"][0]["content"]) > len(row["rejected"][0]["content"])  # the judge prefers longer answers
        assert row["p_chosen"] == pytest.approx(0.8) and row["margin"] == pytest.approx(0.6)  # bias cancels out
        assert row["orders_agree"] is True and row["pair_type"] == "samples" and row["judge_model"] == "biased-judge"
    stats = json.loads((run_dir / "judge_stats.json").read_text())
    overall = stats["overall"]
    assert overall["position_consistency"] == 1.0 and overall["longer_chosen_rate"] == 1.0
    assert overall["mean_p_first_position"] > 0.5  # the bias is visible before debiasing
    assert set(stats["per_principle"]) <= {p.name for p in load_constitution(workdir / "constitutions" / "harmless.yaml").principles}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["counts"]["records"]["judge"] == overall["judgements"] and info["models"]["judge"] == "biased-judge"


class PartlyBiased(BiasedJudge):
    """Position bias 0.45 on the prompt "three" (strong enough to flip the weaker side in one order: its orders
    disagree), 0.1 on the others (their orders agree): the filter drops some pairs and keeps others."""

    def logprobs(self, requests, options):
        out = []
        for r in requests:
            self.position_bias = 0.45 if "three" in r.prompt else 0.1
            out += super().logprobs([r], options)
        return out


def test_ensembling_single_order_and_filters(workdir, fake_judge):
    """Old test: a bias of 0.45 on every prompt made every pair inconsistent, so prefs.jsonl was empty and the loop
    over its rows checked nothing."""
    fake_judge["judge"] = PartlyBiased()
    result = _run(workdir, "{principles_per_comparison: 3, drop_inconsistent: true}")
    assert result.exit_code == 0, result.output
    run_dir = workdir / "outputs" / "test"
    records = json.loads((run_dir / "judge_stats.json").read_text())["overall"]
    assert records["judgements"] == 3 * records["comparisons"]
    assert records["position_consistency"] < 1.0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["counts"]["pairs"]["dropped"]["inconsistent"] > 0  # filters apply when the pairs are merged
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 6 and info["counts"]["pairs"]["dropped"]["inconsistent"] == 3  # prompts one, two kept; three dropped
    for row in prefs:
        assert len(row["principles"]) == 3 and row["orders_agree"] is True


def test_parse_fallback_without_logprobs(workdir, fake_judge):
    fake_judge["judge"] = BiasedJudge(logprobs_ok=False)
    result = _run(workdir, "{method: auto}")
    assert result.exit_code == 0, result.output
    stats = json.loads((workdir / "outputs" / "test" / "judge_stats.json").read_text())["overall"]
    assert stats["orders_scored"] == 2 * stats["judgements"]
    assert fake_judge["judge"].calls["generate"] >= 2


def test_chain_of_thought_is_clamped(workdir, fake_judge):
    result = _run(workdir, "{chain_of_thought: true, both_orders: false}")
    assert result.exit_code == 0, result.output
    prefs = [json.loads(x) for x in (workdir / "outputs" / "test" / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 9  # every pair (3 prompts x 3 pairs) is kept: the loop below has rows to check
    for row in prefs:
        assert row["p_chosen"] == pytest.approx(0.6)


def test_garbage_judge_gives_none_labels_not_a_crash(workdir, monkeypatch):
    class Garbage(BiasedJudge):
        def generate(self, requests, progress=None):
            return [Completion((Output("lorem ipsum", 2),) * r.sampling.n, 3) if "(A)" in (r.prompt or "") else
                    Completion(tuple(Output(f"resp {i} {len(r.prompt)}", 2) for i in range(r.sampling.n)), 3) for r in requests]

    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: Garbage(logprobs_ok=False))
    result = _run(workdir, "{method: parse}")
    assert result.exit_code == 0, result.output
    stats = json.loads((workdir / "outputs" / "test" / "judge_stats.json").read_text())["overall"]
    assert stats["parse_failure_rate"] == 1.0 and stats["label_mean"] is None
    info = json.loads((workdir / "outputs" / "test" / "run.json").read_text())
    assert info["counts"]["pref_rows"] == 0 and info["counts"]["judge"]["dropped"]["no_label"] == info["counts"]["judge"]["comparisons"]


class Rambler(BiasedJudge):
    """A chat-style judge that starts its reply with "**" or "<think>": little of its next token is A or B, except
    when (A) is the longer answer (so one order of each comparison reads, the other does not)."""

    def logprobs(self, requests, options):
        out = []
        for r in requests:
            a, b = self._options(r.prompt)
            mass = 0.9 if len(a) > len(b) else 0.05
            out.append({"A": math.log(mass * 0.7), "B": math.log(mass * 0.3)})
        return out


def test_low_option_mass_is_a_parse_failure_not_a_label(tmp_path):
    from rlaif.spec.config import JudgeConfig
    from rlaif.stages.judge_stats import judge_stats
    from rlaif.stages.judge import Candidate, Comparison, judge

    from tests.conftest import stage_context

    comparisons = [Comparison(f"p{i}", ({"role": "user", "content": "q"},), Candidate(f"a{i}", "long answer" + "!" * i),
                              Candidate(f"b{i}", "short"), "samples") for i in range(3)]
    records = judge(stage_context(tmp_path), Rambler(), comparisons, JudgeConfig())
    for r in records:  # (a, b): a is longer, mass 0.9, read; (b, a): mass 0.05, no label for that order
        assert r["p_first"] == pytest.approx(0.7) and r["option_mass_first"] == pytest.approx(0.9)
        assert r["p_swapped"] is None and r["option_mass_swapped"] == pytest.approx(0.05)
        assert r["label"] == pytest.approx(0.7) and r["orders_scored"] == 1 and r["agree"] is None
    stats = judge_stats(records, {})["overall"]
    assert stats["parse_failures"] == 3 and stats["parse_failure_reasons"] == {"low_option_mass": 3, "no_verdict": 0}
    assert stats["single_order"] == 3 and stats["option_mass"]["min"] == pytest.approx(0.05)
    assert stats["position_consistency"] is None  # nothing to agree on
    strict = judge(stage_context(tmp_path / "x"), Rambler(), comparisons, JudgeConfig(min_option_mass=0.95))
    assert all(r["label"] is None and r["orders_scored"] == 0 for r in strict)


def test_the_key_names_the_method_actually_used(tmp_path):
    """`auto` on a backend without log-probabilities is `parse`: the records `method: parse` made are the same
    records (old code keyed them `auto`, so they were judged again), and each record says which method it used."""
    from rlaif.spec.config import JudgeConfig
    from rlaif.stages.judge import Candidate, Comparison, judge

    from tests.conftest import stage_context

    ctx = stage_context(tmp_path)
    comparisons = [Comparison("p", ({"role": "user", "content": "q"},), Candidate("a", "a longer one"), Candidate("b", "b"), "samples")]
    first = judge(ctx, BiasedJudge(logprobs_ok=False), comparisons, JudgeConfig(method="parse"))
    again = BiasedJudge(logprobs_ok=False)
    second = judge(ctx, again, comparisons, JudgeConfig(method="auto"))
    assert again.calls["generate"] == 0 and [r["key"] for r in second] == [r["key"] for r in first]
    assert second[0]["method"] == "parse" and second[0]["label"] == 1.0
    with_logprobs = judge(ctx, BiasedJudge(), comparisons, JudgeConfig(method="logprobs"))
    assert with_logprobs[0]["key"] != first[0]["key"] and with_logprobs[0]["method"] == "logprobs"


def test_the_diagnostics_table_names_its_rows_at_80_columns():
    """The principle column was squeezed to zero width at 80 columns (a log, CI, `make demo` piped): rows had no names."""
    import io

    from rich.console import Console

    from rlaif.stages.judge_stats import print_judge_stats

    s = {"judgements": 8, "position_consistency": 0.25, "first_position_win_rate": 1.0, "longer_chosen_rate": 0.5,
         "label_mean": 0.483, "parse_failure_rate": 0.0, "option_mass": {"median": 0.792}}
    console = Console(width=80, record=True, file=io.StringIO())
    print_judge_stats(console, {"overall": s, "per_principle": {"not-evasive": s, "harmless-and-ethical": s}})
    text = console.export_text()
    assert "overall" in text and "not-evasive" in text and "harmless-and" in text, text
    assert max(len(line) for line in text.splitlines()) <= 80
