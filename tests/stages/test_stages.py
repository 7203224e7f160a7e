"""The SL-CAI data flow, checked exactly with a scripted generator (no model)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from rlaif.backends import pool as models
from rlaif.backends.base import Completion, Output
from rlaif.cli import main

from tests.conftest import write_pipeline


class Scripted:
    """Answers by rule, and records every request it sees."""

    model_id = "scripted"

    def __init__(self, chat: bool):
        self.has_chat_template = chat
        self.requests = []

    def generate(self, requests, progress=None):
        out = []
        for r in requests:
            self.requests.append(r)
            text = r.prompt if r.prompt is not None else json.dumps(r.messages)
            tail = text[-400:]
            numbered = False
            if r.prompt is not None and text.endswith("Critique:") or r.messages and len(r.messages) == 3:
                answer = "the answer [%s] has a problem" % _last_answer(r)
            elif r.prompt is not None and text.endswith("Revision:") or r.messages and len(r.messages) == 5:
                answer = "better(%s)" % _last_answer(r)
            else:
                answer, numbered = "initial answer to " + re.sub(r"\W+", " ", tail)[-20:].strip(), True
            outs = tuple(Output(f"{answer} #{i}" if numbered else answer, tokens=5) for i in range(r.sampling.n))
            out.append(Completion(outputs=outs, prompt_tokens=10))
        if progress:
            progress(len(requests), 5 * len(requests))
        return out

    def logprobs(self, requests, options):
        raise NotImplementedError

    def close(self):
        pass


def _last_answer(r) -> str:
    if r.messages is not None:
        return [m for m in r.messages if m["role"] == "assistant"][0]["content"]
    return r.prompt.rsplit("Assistant: ", 1)[1].split("\n\nCritiqueRequest:")[0]


@pytest.fixture
def scripted(monkeypatch):
    holder = {}

    def get(self, cfg):
        holder.setdefault("gen", Scripted(chat=cfg.prompt_format == "chat"))
        return holder["gen"]

    monkeypatch.setattr(models.ModelPool, "get", get)
    return holder


@pytest.mark.parametrize("fmt", ["completion", "chat"])
def test_rounds_chain_and_pairs(workdir, scripted, fmt):
    (workdir / "p.txt").write_text("How do I bake bread?\nHow do I pick a lock?\n")
    stages = "stages:\n  respond: {n: 2}\n  critique: {rounds: 2}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages)
    result = CliRunner().invoke(main, ["run", str(pipe), "--set", f"models.policy.prompt_format={fmt}",
                                       "--set", "drop_degenerate=false"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    gen = scripted["gen"]
    assert len(gen.requests) == 2 + 4 * 2 * 2  # 2 respond requests (n=2 each), then 4 answers x 2 rounds x (critique, revision)
    prefs = [json.loads(x) for x in (workdir / "outputs" / "test" / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 4
    for row in prefs:
        initial = row["rejected"][0]["content"]
        assert initial.startswith("initial answer")
        assert row["chosen"][0]["content"] == f"better(better({initial}))"  # round 2 revised round 1's revision
        assert row["critique"] == f"the answer [better({initial})] has a problem"
        assert row["rounds"] == 2 and len(row["principles"]) == 2
    sft = [json.loads(x) for x in (workdir / "outputs" / "test" / "sft.jsonl").read_text().splitlines()]
    assert sorted(r["completion"][-1]["content"] for r in sft) == sorted(r["chosen"][0]["content"] for r in prefs)

    # a rerun of the same command generates nothing new
    before = len(gen.requests)
    assert CliRunner().invoke(main, ["run", str(pipe), "--set", f"models.policy.prompt_format={fmt}",
                                     "--set", "drop_degenerate=false"]).exit_code == 0
    assert len(gen.requests) == before

    # one more round: only the third round is generated
    assert CliRunner().invoke(main, ["run", str(pipe), "--set", f"models.policy.prompt_format={fmt}", "--set",
                                     "drop_degenerate=false", "--set", "stages.critique.rounds=3"]).exit_code == 0
    assert len(gen.requests) == before + 4 * 2


def test_degenerate_revisions_are_dropped_and_counted(workdir, scripted, monkeypatch):
    (workdir / "p.txt").write_text("Hi\n")
    stages = "stages:\n  respond: {n: 2}\n  critique: {rounds: 1, principles: [protect-privacy]}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages)
    from rlaif.spec.constitution import load_constitution

    request = load_constitution(workdir / "constitutions" / "harmless.yaml").principle("protect-privacy").revision
    monkeypatch.setattr(Scripted, "generate", lambda self, reqs, progress=None: [
        Completion((Output(request if r.prompt.endswith("Revision:") else "text", 3),) * r.sampling.n, 5) for r in reqs])
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((workdir / "outputs" / "test" / "run.json").read_text())
    assert info["counts"]["pref_rows"] == 0 and info["counts"]["no_usable_revision"] == 2
    assert info["counts"]["revision_problems"] == {"echoes_request": 2}


def test_a_later_round_is_never_built_on_a_degenerate_revision(workdir, scripted, monkeypatch):
    """F10: round 1 echoes a revision request; round 2 must revise the initial answer, not the echo.

    Round 2 also answers with a chat critic's preamble, which is stripped from the SFT target.
    """
    from rlaif.spec.constitution import load_constitution
    from rlaif.rundir.store import Store

    (workdir / "p.txt").write_text("Hi\n")
    stages = "stages:\n  respond: {n: 2}\n  critique: {rounds: 2}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages)
    echo = load_constitution(workdir / "constitutions" / "harmless.yaml").principle("protect-privacy").revision
    batches = []

    def generate(self, requests, progress=None):
        out = []
        revising = requests[0].prompt.endswith("Revision:")
        if revising:
            batches.append(1)
        for i, r in enumerate(requests):
            answer = r.prompt.rsplit("Assistant: ", 1)[1].split("\n\nCritiqueRequest:")[0]
            if not revising:
                text = "a critique" if r.prompt.endswith("Critique:") else f"initial answer {i}"
            else:
                text = echo if len(batches) == 1 else f"Here is a revised response: better({answer})"
            out.append(Completion(tuple(Output(text if revising or r.prompt.endswith("Critique:") else f"{text}-{k}", 3)
                                        for k in range(r.sampling.n)), 5))
        return out

    monkeypatch.setattr(Scripted, "generate", generate)
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    run_dir = workdir / "outputs" / "test"
    prefs = [json.loads(x) for x in (run_dir / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 2
    for row in prefs:
        initial = row["rejected"][0]["content"]
        assert row["chosen"][0]["content"] == f"better({initial})"  # built on the initial answer, preamble stripped
        assert row["rounds"] == 1 and len(row["principles"]) == 1
    store = Store(run_dir / "records.sqlite")
    rounds = [json.loads(d) for (d,) in store.db.execute("SELECT data FROM records WHERE stage = 'critique'")]
    store.close()
    assert sorted(r["round"] for r in rounds) == [1, 1, 2, 2]
    assert all(r["input"].startswith("initial answer") for r in rounds)  # round 2's input is the last usable answer
    info = json.loads((run_dir / "run.json").read_text())
    assert info["counts"]["revision_problems"] == {"echoes_request": 2}


def test_min_p_reaches_every_sampled_request_and_its_key(workdir, scripted):
    """`min_p` is sent with each respond and critique request; setting it makes new records, leaving it off keeps the
    records that were sampled without it (it is in the key only when set)."""
    (workdir / "p.txt").write_text("How do I bake bread?\n")
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages="stages:\n  respond: {n: 2}\n  critique: {rounds: 1}\n")
    invoke = lambda *sets: CliRunner().invoke(main, ["run", str(pipe), *[a for s in sets for a in ("--set", s)]],
                                              catch_exceptions=False)
    assert invoke().exit_code == 0
    gen = scripted["gen"]
    assert {r.sampling.min_p for r in gen.requests} == {0.0} and {r.sampling.top_p for r in gen.requests} == {1.0}
    before = len(gen.requests)
    assert invoke("stages.respond.min_p=0.0").exit_code == 0
    assert len(gen.requests) == before  # an explicit 0 is the default: nothing resampled
    assert invoke("stages.respond.min_p=0.05", "stages.critique.min_p=0.1").exit_code == 0
    new = gen.requests[before:]
    assert len(new) == 1 + 2 * 2  # respond again (one request, n=2), then critique and revision of both answers
    assert new[0].sampling.min_p == 0.05 and {r.sampling.min_p for r in new[1:]} == {0.1}
