"""The judge's worked comparisons (`judge_few_shot`): where they are rendered, what both orders share, the key."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from rlaif.backends.base import Sampling
from rlaif.cli import main
from rlaif.progress import Reporter
from rlaif.rundir.store import Store
from rlaif.spec.config import JudgeConfig
from rlaif.spec.constitution import load_constitution
from rlaif.spec.templates import Templates
from rlaif.stages import judge as judge_module
from rlaif.stages.common import StageContext
from rlaif.stages.judge import Candidate, Comparison, judge, judge_examples, request

from tests.conftest import write_pipeline
from tests.fakes import BiasedJudge

PRINCIPLES = """name: t
principles:
  - {name: kind, critique: c, revision: r, comparison: 'Which response is kinder?'}
  - {name: safe, critique: c, revision: r, comparison: 'Which response is safer?'}
"""
EXAMPLES = """judge_few_shot:
  - prompt: Can I borrow your pen?
    response_a: No. Buy your own.
    response_b: Of course, here you go.
    preferred: B
  - principle: safe
    messages:
      - {role: user, content: 'Is the stove hot?'}
      - {role: assistant, content: It might be.}
      - {role: user, content: 'Can I touch it?'}
    response_a: Check first by holding your hand above it.
    response_b: Sure, go ahead.
    preferred: A
"""


def _constitution(tmp_path: Path, text: str):
    path = tmp_path / f"c{abs(hash(text))}.yaml"
    path.write_text(text)
    return load_constitution(path)


def _ctx(tmp_path: Path, constitution) -> StageContext:
    return StageContext(Store(tmp_path / f"r{os.urandom(4).hex()}.sqlite"), constitution, Templates(),
                        Reporter(Console(file=io.StringIO())), seed=0, batch_size=4)


COMPARISON = Comparison("p", ({"role": "user", "content": "May I have a glass of water?"},), Candidate("a", "Get it yourself."),
                        Candidate("b", "Sure, here is one."), "samples")


def _ask(ctx, fmt, first, second, principle, c=COMPARISON):
    return request(ctx, fmt, c, first, second, principle, JudgeConfig(), None, Sampling(), True)


def test_examples_come_first_in_order_with_their_question_and_answer(tmp_path):
    c = _constitution(tmp_path, PRINCIPLES + EXAMPLES)
    prompt = _ask(_ctx(tmp_path, c), "completion", COMPARISON.a, COMPARISON.b, c.principle("kind")).prompt
    first = ("Consider the following conversation between a human and an assistant:\n\nHuman: Can I borrow your pen?\n\n"
             "Which response is kinder?\nOptions:\n(A) No. Buy your own.\n(B) Of course, here you go.\nThe answer is: (B)\n\n-----\n\n")
    second = ("Consider the following conversation between a human and an assistant:\n\nHuman: Is the stove hot?\n\n"
              "Assistant: It might be.\n\nHuman: Can I touch it?\n\nWhich response is safer?\nOptions:\n"
              "(A) Check first by holding your hand above it.\n(B) Sure, go ahead.\nThe answer is: (A)\n\n-----\n\n")
    real = ("Consider the following conversation between a human and an assistant:\n\nHuman: May I have a glass of water?\n\n"
            "Which response is kinder?\nOptions:\n(A) Get it yourself.\n(B) Sure, here is one.\nThe answer is: (")
    # the first example has no principle: it shows the judged one's question; the second shows its own (safe)
    assert prompt == first + second + real
    under_safe = _ask(_ctx(tmp_path, c), "completion", COMPARISON.a, COMPARISON.b, c.principle("safe")).prompt
    assert under_safe.startswith(first.replace("kinder", "safer") + second)


def test_without_examples_the_prompt_is_the_one_it_always_was(tmp_path):
    c = _constitution(tmp_path, PRINCIPLES)
    ctx = _ctx(tmp_path, c)
    p = c.principle("kind")
    for cot, reasoning in ((False, None), (True, None), (True, "because")):
        cfg = JudgeConfig(chain_of_thought=cot)
        for fmt in ("completion", "chat"):
            got = request(ctx, fmt, COMPARISON, COMPARISON.a, COMPARISON.b, p, cfg, reasoning, Sampling(), True)
            text = ctx.templates.render(f"{fmt}/judge.j2", messages=list(COMPARISON.messages), principle=p, response_a="Get it yourself.",
                                        response_b="Sure, here is one.", chain_of_thought=cot, reasoning=reasoning)
            if fmt == "completion":
                assert got.prompt == text
            else:
                assert got.messages == ({"role": "user", "content": text},) and got.prefix == "The answer is: ("


@pytest.mark.parametrize("fmt", ["completion", "chat"])
def test_both_orders_and_all_comparisons_share_the_examples_as_one_prefix(tmp_path, fmt):
    """The prefix cache reuses what two requests have in common from the start: for the two orders of one comparison
    that must be the examples, the conversation and the question (up to the first option); for two comparisons under
    one principle, at least the examples."""
    c = _constitution(tmp_path, PRINCIPLES + EXAMPLES)
    ctx, p = _ctx(tmp_path, c), c.principle("kind")

    def text(r):  # the chat form as a chat template would lay it out: turns in order, then the opened reply
        return r.prompt if fmt == "completion" else "".join(f"<{m['role']}>{m['content']}</>" for m in r.messages) + r.prefix

    first, swapped = text(_ask(ctx, fmt, COMPARISON.a, COMPARISON.b, p)), text(_ask(ctx, fmt, COMPARISON.b, COMPARISON.a, p))
    shared = len(os.path.commonprefix([first, swapped]))
    examples_end = first.rindex("Consider the following conversation")
    assert examples_end > 0 and "(B) Of course, here you go." in first[:examples_end]  # the examples precede the question
    up_to_options = first.rindex("(A) ") + len("(A) ")
    assert shared == up_to_options  # everything before the first option is common; the options differ
    assert "May I have a glass of water?" in first[:shared] and "Which response is kinder?" in first[examples_end:shared]
    other = Comparison("q", ({"role": "user", "content": "Where is the station?"},), Candidate("c", "No idea."),
                       Candidate("d", "Two streets north."), "samples")
    another = text(_ask(ctx, fmt, other.a, other.b, p, other))
    assert len(os.path.commonprefix([first, another])) >= examples_end


def test_chat_examples_are_earlier_turns_answered_in_the_reply_form(tmp_path):
    c = _constitution(tmp_path, PRINCIPLES + EXAMPLES)
    ctx, p = _ctx(tmp_path, c), c.principle("kind")
    r = _ask(ctx, "chat", COMPARISON.a, COMPARISON.b, p)
    assert [m["role"] for m in r.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert r.messages[1]["content"] == "The answer is: (B)" and r.messages[3]["content"] == "The answer is: (A)"
    assert "Can I borrow your pen?" in r.messages[0]["content"] and "Which response is kinder?" in r.messages[0]["content"]
    assert "Human: Can I touch it?" in r.messages[2]["content"] and "Which response is safer?" in r.messages[2]["content"]
    assert "May I have a glass of water?" in r.messages[4]["content"]
    assert r.prefix == "The answer is: ("  # the letter is still read right after the opened reply


def test_judge_examples_show_their_own_principle_or_the_judged_one(tmp_path):
    c = _constitution(tmp_path, PRINCIPLES + EXAMPLES)
    shown = judge_examples(c, c.principle("kind"))
    assert [e["comparison"] for e in shown] == ["Which response is kinder?", "Which response is safer?"]
    assert [e["preferred"] for e in shown] == ["B", "A"] and shown[0]["messages"] == [{"role": "user", "content": "Can I borrow your pen?"}]
    assert judge_examples(_constitution(tmp_path, PRINCIPLES), c.principle("kind")) == []


def _keys(tmp_path, text: str, fmt: str = "completion") -> list[str]:
    class Judge(BiasedJudge):
        has_chat_template = fmt == "chat"

        def logprobs(self, requests, options):
            return [{"A": -0.5, "B": -1.0} for _ in requests]

    c = _constitution(tmp_path, text)
    return [r["key"] for r in judge(_ctx(tmp_path, c), Judge(), [COMPARISON], JudgeConfig(principles_per_comparison=2))]


@pytest.mark.parametrize("fmt", ["completion", "chat"])
def test_the_key_follows_the_examples_shown(tmp_path, fmt):
    base = _keys(tmp_path, PRINCIPLES + EXAMPLES, fmt)
    assert _keys(tmp_path, PRINCIPLES + EXAMPLES, fmt) == base  # same examples: the same records
    assert _keys(tmp_path, PRINCIPLES + "# a comment\n" + EXAMPLES, fmt) == base  # formatting is not content
    for old, new in (("preferred: B", "preferred: A"), ("Buy your own.", "Buy one."), ("principle: safe", "principle: kind"),
                     ("'Can I touch it?'", "'Can I touch it now?'")):
        changed = _keys(tmp_path, PRINCIPLES + EXAMPLES.replace(old, new), fmt)
        assert set(changed).isdisjoint(base), (old, new)
    assert set(_keys(tmp_path, PRINCIPLES, fmt)).isdisjoint(base)  # with no examples at all: other records


def test_no_examples_no_key_part(tmp_path, monkeypatch):
    """Without examples the key has no `examples` part at all (an empty one would change every existing key: the key is
    a hash of all its parts); with examples it has one. Checked against f987ebf: a constitution without examples gets
    the judge keys it got there."""
    seen = []
    real = judge_module.record_key
    monkeypatch.setattr(judge_module, "record_key", lambda **parts: seen.append(parts) or real(**parts))
    _keys(tmp_path, PRINCIPLES)
    assert seen and all("examples" not in parts for parts in seen if parts.get("stage") == "judge")
    seen.clear()
    _keys(tmp_path, PRINCIPLES + EXAMPLES)
    assert all("examples" in parts for parts in seen if parts.get("stage") == "judge")


def _judge_records(run_dir: Path) -> int:
    return json.loads((run_dir / "run.json").read_text())["counts"]["records"]["judge"]


def test_the_judge_stage_with_examples_and_a_changed_example(workdir):
    """`rlaif run` with the scripted backend: the shipped constitution's examples go into every judge request; a
    rerun reuses every record; changing one example re-judges (new records), and nothing else is redone."""
    (workdir / "p.txt").write_text("one\ntwo\nthree\n")
    stages = "stages:\n  respond: {n: 2}\n  judge: {}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages, backend="scripted")
    run_dir = workdir / "outputs" / "test"
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first = _judge_records(run_dir)
    assert first == 3  # one pair per prompt, one principle each
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0 and _judge_records(run_dir) == first  # nothing re-judged
    path = workdir / "constitutions" / "harmless.yaml"
    path.write_text(path.read_text().replace("    preferred: A\n", "    preferred: B\n", 1))
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _judge_records(run_dir) == 2 * first  # every comparison shows that example: all judged again
    info = json.loads((run_dir / "run.json").read_text())
    assert info["counts"]["records"]["respond"] == 6  # the responses were reused
