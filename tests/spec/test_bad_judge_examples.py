"""Bad `judge_few_shot` examples in a constitution: one `FILE:LINE: message` each, exit status 2, no model loaded."""

from __future__ import annotations

import pytest


from tests.conftest import write_pipeline
from tests.fakes import GOOD_PRINCIPLE, assert_one_line, constitution, run_cli

# lines 1-7: name, principles (a, with a comparison; b, without), then the examples from line 8 on
HEAD = "name: x\nprinciples:\n" + GOOD_PRINCIPLE + "  - {name: b, critique: c, revision: r}\njudge_few_shot:\n"
GOOD = "  - prompt: Hi\n    response_a: Hello!\n    response_b: Go away.\n    preferred: A\n"  # lines 9-12


pytestmark = pytest.mark.usefixtures("no_model_loads")  # tests/conftest.py


@pytest.mark.parametrize(
    "examples, pattern",
    [
        (GOOD.replace("preferred: A", "preferred: a"), r"c\.yaml:12: judge_few_shot\[0\]\.preferred: must be one of 'A', 'B', got 'a'"),
        (GOOD.replace("preferred: A", "preferred: C"), r"c\.yaml:12: judge_few_shot\[0\]\.preferred: must be one of 'A', 'B', got 'C'"),
        (GOOD.replace("    preferred: A\n", ""), r"c\.yaml:9: judge_few_shot\[0\]: missing required field 'preferred'"),
        (GOOD.replace("    response_b: Go away.\n", ""), r"c\.yaml:9: judge_few_shot\[0\]: missing required field 'response_b'"),
        (GOOD + "    principle: nope\n", r"c\.yaml:13: judge_few_shot\[0\]\.principle: no principle named 'nope'"),
        (GOOD + "    principle: b\n", r"c\.yaml:13: judge_few_shot\[0\]\.principle: principle 'b' has no `comparison` question"),
        (GOOD + "    principle: ' '\n", r"c\.yaml:13: judge_few_shot\[0\]\.principle: must not be empty"),
        (GOOD.replace("prompt: Hi", "prompt: ' '"), r"c\.yaml:9: judge_few_shot\[0\]\.prompt: must not be empty"),
        (GOOD.replace("response_a: Hello!", "response_a: ''"), r"c\.yaml:10: judge_few_shot\[0\]\.response_a: must not be empty"),
        (GOOD.replace("response_b: Go away.", "response_b: Hello!"),
         r"c\.yaml:11: judge_few_shot\[0\]\.response_b: is the same text as response_a: the example shows no preference"),
        (GOOD + "    messages: [{role: user, content: Hi}]\n", r"c\.yaml:13: judge_few_shot\[0\]: give `prompt` or `messages`, not both"),
        (GOOD.replace("  - prompt: Hi\n    ", "  - "), r"c\.yaml:9: judge_few_shot\[0\]: needs a `prompt` \(the human turn\) or `messages`"),
        (GOOD.replace("prompt: Hi", "messages: []"), r"c\.yaml:9: judge_few_shot\[0\]\.messages: the list is empty"),
        (GOOD.replace("prompt: Hi", "messages: [{role: user, content: Hi}, {role: assistant, content: Hello}]"),
         r"c\.yaml:9: judge_few_shot\[0\]\.messages\[1\]: the last turn must be the user's \(the responses answer it\), got 'assistant'"),
        (GOOD.replace("prompt: Hi", "messages: [{role: human, content: Hi}]"),
         r"c\.yaml:9: judge_few_shot\[0\]\.messages\[0\]\.role: must be one of 'user', 'assistant', 'system', got 'human'"),
        (GOOD.replace("prompt: Hi", "messages: [{role: user, content: ' '}]"),
         r"c\.yaml:9: judge_few_shot\[0\]\.messages\[0\]\.content: must not be empty"),
        (GOOD + "    explanation: A is polite.\n", r"c\.yaml:13: judge_few_shot\[0\]: unknown key 'explanation'"),
        ("  prompt: Hi\n", r"c\.yaml:8: judge_few_shot: expected a list"),
    ],
    ids=["lowercase-letter", "no-such-letter", "no-preferred", "no-response-b", "unknown-principle", "principle-without-comparison",
         "empty-principle", "empty-prompt", "empty-response", "identical-responses", "prompt-and-messages", "no-conversation",
         "empty-messages", "ends-with-assistant", "bad-role", "empty-turn", "unknown-key", "not-a-list"],
)
def test_bad_judge_example(workdir, examples, pattern):
    path = constitution(workdir, HEAD + examples)
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    assert_one_line(err, pattern)
    # the same file through `rlaif run` fails the same way, before any model loads
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", constitution=path))
    assert code == 2
    assert_one_line(err, pattern)


def test_a_good_example_validates(workdir):
    path = constitution(workdir, HEAD + GOOD + "    principle: a\n" + GOOD.replace("prompt: Hi", "messages: [{role: user, content: Hi}]"))
    code, err = run_cli("constitution", "validate", path)
    assert code == 0, err


def test_several_example_errors_reported_together(workdir):
    path = constitution(workdir, HEAD + GOOD.replace("preferred: A", "preferred: a") + GOOD + "    principle: nope\n")
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    lines = err.splitlines()
    assert any(":12: " in line and "judge_few_shot[0].preferred" in line for line in lines)
    assert any(":17: " in line and "judge_few_shot[1].principle: no principle named 'nope'" in line for line in lines)
