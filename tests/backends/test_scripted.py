"""The instant scripted backend of bench/overhead.py: deterministic, varied, and enough to drive every stage."""

from __future__ import annotations

import io
import math

from rich.console import Console

from rlaif.backends.base import Request, Sampling
from rlaif.backends.scripted import ScriptedGenerator
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
