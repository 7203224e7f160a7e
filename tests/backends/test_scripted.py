"""The instant scripted backend (bench/overhead.py, `backend: scripted`): deterministic, varied, enough to drive every
stage, and chosen by a pipeline's config with its settings checked like any other."""

from __future__ import annotations

import io
import json
import math

import pytest
from click.testing import CliRunner
from rich.console import Console

from rlaif.backends.base import Request, Sampling
from rlaif.backends.scripted import ScriptedGenerator
from rlaif.cli import main
from rlaif.spec.config import CritiqueConfig, JudgeConfig, RespondConfig, ScoreConfig
from rlaif.spec.constitution import load_constitution
from rlaif.spec.inputs import load_prompts
from rlaif.progress import Reporter
from rlaif.stages.common import StageContext
from rlaif.stages.critique import critique
from rlaif.stages.judge import build_comparisons, judge
from rlaif.stages.respond import respond
from rlaif.stages.score import score
from rlaif.rundir.store import Store
from rlaif.spec.templates import Templates

from tests.conftest import ROOT


def test_replies_are_deterministic_varied_and_bounded():
    gen = ScriptedGenerator(words=20)
    requests = [Request(prompt="hi", sampling=Sampling(n=3, seed=1, max_tokens=8)),
                Request(prompt="hi", sampling=Sampling(seed=2)),
                Request(messages=({"role": "user", "content": "hi"},))]
    seen = []
    out = gen.generate(requests, progress=lambda done, tokens: seen.append((done, tokens)))
    assert out == gen.generate(requests)
    texts = [o.text for c in out for o in c.outputs]
    assert len(set(texts)) == len(texts) == 5  # n outputs differ, and so do other seeds
    assert [o.tokens for o in out[0].outputs] == [8, 8, 8] and out[1].outputs[0].tokens == 20
    assert all(len(t.split(": ", 1)[1].split()) == o.tokens for c in out for t, o in zip([x.text for x in c.outputs], c.outputs))
    assert seen == [(3, 3 * 8 + 2 * 20)]
    scores = gen.logprobs(requests, ["A", "B"])
    assert all(set(s) == {"A", "B"} and all(math.isfinite(v) and v < 0 for v in s.values()) for s in scores)
    assert len({tuple(s.values()) for s in gen.logprobs([Request(prompt=f"q{i}") for i in range(20)], ["A", "B"])}) > 1


def test_drives_every_stage(tmp_path):
    prompts = load_prompts(ROOT / "data" / "prompts.jsonl", limit=6)
    for chat in (False, True):
        ctx = StageContext(Store(tmp_path / f"{chat}.sqlite"), load_constitution(ROOT / "constitutions" / "harmless.yaml"),
                           Templates(), Reporter(Console(file=io.StringIO())), seed=0, batch_size=4)
        gen = ScriptedGenerator(chat=chat)
        responses = respond(ctx, gen, prompts, RespondConfig(n=2))
        history = critique(ctx, gen, responses, CritiqueConfig(rounds=2))
        finals = {k: (rounds[-1]["key"], rounds[-1]["revision"]) for k, rounds in history.items()}
        comparisons = build_comparisons(responses, finals, JudgeConfig(), 0)
        judged = judge(ctx, gen, comparisons, JudgeConfig())
        rated = score(ctx, gen, [{k: r[k] for k in ("key", "text", "prompt_id", "messages")} for r in responses], ScoreConfig())
        assert len(responses) == 12 and sum(map(len, history.values())) == 24
        assert len(judged) == len(comparisons) == 6 + 12  # one sample pair and two revision pairs per prompt
        assert all(r["method"] == "logprobs" and 0 < r["label"] < 1 for r in judged)
        assert len(rated) == 12 and all(1 <= r["score"] <= 10 for r in rated)
        assert ctx.store.count() == 12 + 24 + 18 + 12


def _scripted_pipeline(workdir, model_line: str):
    (workdir / "p.txt").write_text("one\ntwo\nthree\n")
    (workdir / "p.yaml").write_text(
        "name: test\nconstitution: constitutions/harmless.yaml\nprompts: p.txt\n"
        f"models:\n  policy: {model_line}\nstages:\n  respond: {{n: 3, max_tokens: 12}}\n  critique: {{}}\n  judge: {{}}\n")
    return workdir / "p.yaml"


@pytest.mark.parametrize("fmt", ["completion", "chat"])
def test_chosen_by_config_no_model_loads(workdir, monkeypatch, fmt):
    """`backend: scripted` runs every stage with no weights: `model` is its model id, the settings reach it."""
    from rlaif.backends import hf, vllm

    for engine in (hf.HFGenerator, vllm.VLLMGenerator):
        monkeypatch.setattr(engine, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    pipe = _scripted_pipeline(workdir, f"{{model: fake-7b, backend: scripted, prompt_format: {fmt}, scripted_words: 5}}")
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = workdir / "outputs" / "test"
    info = json.loads((run / "run.json").read_text())
    assert info["models"]["policy"] == info["models"]["judge"] == "fake-7b" and info["config"]["models"]["policy"]["backend"] == "scripted"
    assert info["counts"]["responses"] == 9 and info["counts"]["pref_rows"] > 0
    sft = [json.loads(line) for line in (run / "sft.jsonl").read_text().splitlines()]
    assert sft and all(len(r["completion"][-1]["content"].split(": ", 1)[1].split()) == 5 for r in sft)  # scripted_words
    records = [json.loads(line) for line in (run / "prefs.jsonl").read_text().splitlines()]
    assert {r["judge_model"] for r in records} == {"fake-7b"}


def test_the_option_mass_setting_reaches_the_judge(workdir):
    """scripted_option_mass below the judge's min_option_mass: every order is a parse failure, no pair is kept."""
    pipe = _scripted_pipeline(workdir, "{backend: scripted, scripted_option_mass: 0.2}")
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stats = json.loads((workdir / "outputs" / "test" / "judge_stats.json").read_text())["overall"]
    assert stats["parse_failure_rate"] == 1.0 and stats["option_mass"]["max"] == pytest.approx(0.2)
    assert json.loads((workdir / "outputs" / "test" / "run.json").read_text())["models"]["judge"] == "scripted"


@pytest.mark.parametrize("setting, pattern", [
    ("scripted_words: 0", r"p\.yaml:5: models\.policy\.scripted_words: must be >= 1, got 0"),
    ("scripted_option_mass: 1.5", r"p\.yaml:5: models\.policy\.scripted_option_mass: must be within \[0, 1\], got 1\.5"),
    ("scripted_words: many", r"p\.yaml:5: models\.policy\.scripted_words: expected int, got str 'many'"),
])
def test_bad_scripted_settings(workdir, setting, pattern):
    from tests.fakes import assert_one_line, run_cli

    code, err = run_cli("run", _scripted_pipeline(workdir, f"{{backend: scripted, {setting}}}"))
    assert code == 2
    assert_one_line(err, pattern)
