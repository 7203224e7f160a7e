"""Every kind of bad input: one line naming the file (and line), exit status 2, no model loaded."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from rlaif.cli import main

from tests.conftest import write_pipeline
from tests.fakes import GOOD_PRINCIPLE, assert_one_line, constitution, run_cli


pytestmark = pytest.mark.usefixtures("no_model_loads")  # tests/conftest.py


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("name: x\nprinciples:\n  - name: a\n    critique: [unclosed\n", r"c\.yaml:4: invalid YAML"),
        ("name: x\nprinciples:\n" + GOOD_PRINCIPLE + "    critque: typo\n", r"c\.yaml:7: principles\[0\]: unknown key 'critque' \(did you mean 'critique'\?\)"),
        ("name: x\nprinciples:\n  - name: a\n    critique: Find problems.\n", r"c\.yaml:3: principles\[0\]: missing required field 'revision'"),
        ("name: x\nprinciples:\n" + GOOD_PRINCIPLE + "    weight: heavy\n", r"c\.yaml:7: principles\[0\]\.weight: expected float, got str"),
        ("name: x\nprinciples: []\n", r"c\.yaml:2: principles: the list is empty"),
        ("name: x\nprinciples:\n" + GOOD_PRINCIPLE + GOOD_PRINCIPLE, r"c\.yaml:7: principles\[1\]\.name: duplicate principle name 'a' \(first defined on line 3\)"),
        ("name: x\nprinciples:\n" + GOOD_PRINCIPLE + "    weight: 0\n", r"c\.yaml:7: principles\[0\]\.weight: must be > 0"),
        ("", r"c\.yaml:1: constitution is empty"),
        ("- just\n- a list\n", r"c\.yaml:1: the top level of a constitution must be a mapping"),
        ("name: x\nprinciples:\n" + GOOD_PRINCIPLE + "few_shot:\n  - prompt: p\n    response: r\n    critique: c\n",
         r"c\.yaml:8: few_shot\[0\]: missing required field 'revision'"),
    ],
    ids=["malformed-yaml", "unknown-key", "missing-field", "wrong-type", "empty-principles", "duplicate-names",
         "zero-weight", "empty-file", "not-a-mapping", "few-shot-missing-field"],
)
def test_bad_constitution(workdir, text, pattern):
    path = constitution(workdir, text)
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    assert_one_line(err, pattern)
    # the same file through `rlaif run` fails the same way, before any model loads
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", constitution=path))
    assert code == 2
    assert_one_line(err, pattern)


def test_several_constitution_errors_reported_together(workdir):
    path = constitution(workdir, "name: x\nprinciples:\n  - name: a\n    critque: typo\n    weight: -1\n")
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    lines = err.splitlines()
    assert any(":4: " in line and "unknown key 'critque'" in line for line in lines)
    assert any(":3: " in line and "missing required field 'critique'" in line for line in lines)
    assert any(":5: " in line and "must be > 0" in line for line in lines)


def test_missing_constitution_file(workdir):
    code, err = run_cli("constitution", "validate", workdir / "nope.yaml")
    assert code == 2
    assert_one_line(err, r"nope\.yaml: constitution not found")


@pytest.mark.parametrize(
    "extra, pattern",
    [
        ({"stages": "stages:\n  respond: {n: two}\n"}, r"p\.yaml:9: stages\.respond\.n: expected int, got str 'two'"),
        ({"stages": "stages:\n  respond: {n: 2, temprature: 0.5}\n"}, r"p\.yaml:9: stages\.respond: unknown key 'temprature' \(did you mean 'temperature'\?\)"),
        ({"stages": "stages:\n  respond: {n: 0}\n"}, r"p\.yaml:9: stages\.respond\.n: must be >= 1, got 0"),
        ({"seeed": 1}, r"p\.yaml:11: unknown key 'seeed' \(did you mean 'seed'\?\)"),
        ({"stages": "stages:\n  critique: {rounds: 1}\n"}, r"p\.yaml:8: stages: `respond` is required"),
        ({"stages": "stages:\n  respond: {}\n  critique: {principles: [no-such]}\n"}, r"p\.yaml:10: stages\.critique\.principles: no principle named 'no-such'"),
    ],
    ids=["wrong-type", "unknown-key", "bad-value", "unknown-top-key", "missing-respond", "unknown-principle"],
)
def test_bad_pipeline(workdir, extra, pattern):
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", **extra))
    assert code == 2
    assert_one_line(err, pattern)


def test_missing_pipeline_field(workdir):
    (workdir / "p.yaml").write_text("name: x\nconstitution: constitutions/harmless.yaml\nstages: {respond: {}}\n")
    code, err = run_cli("run", workdir / "p.yaml")
    assert code == 2
    assert_one_line(err, r"p\.yaml:1: missing required field 'prompts'")


def test_malformed_pipeline_yaml(workdir):
    (workdir / "p.yaml").write_text("name: x\nstages:\n  respond: {n: 2\n")
    code, err = run_cli("run", workdir / "p.yaml")
    assert code == 2
    assert_one_line(err, r"p\.yaml:3: invalid YAML: while parsing a flow mapping")


def test_bad_set_override(workdir):
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default"), "--set", "stages.respond.nn=3")
    assert code == 2
    assert_one_line(err, r"p\.yaml:9: stages\.respond: unknown key 'nn'")


def test_model_path_does_not_exist(workdir):
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "/no/such/model"))
    assert code == 2
    assert_one_line(err, r"p\.yaml:7: model path '/no/such/model' does not exist")


def test_model_directory_without_config(workdir):
    (workdir / "empty-model").mkdir()
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "./empty-model"))
    assert code == 2
    assert_one_line(err, r"p\.yaml:7: model directory .* has no config\.json")


def test_missing_prompts_file(workdir):
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default"), "--prompts", "missing.jsonl")
    assert code == 2
    assert_one_line(err, r"missing\.jsonl: prompts file not found")


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.txt", "\n\n  \n"), ("header-only.csv", "prompt\n")])
def test_empty_prompts_file(workdir, name, content):
    (workdir / name).write_text(content)
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default"), "--prompts", name)
    assert code == 2
    assert_one_line(err, re.escape(name) + r"(:1)?: no prompts in the file")


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "broken\n', r"bad\.jsonl:2: invalid JSON"),
        ("bad.jsonl", '{"prompt": "ok"}\n{"text": "no prompt"}\n', r"bad\.jsonl:2: no `prompt` or `messages` field"),
        ("bad.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n',
         r"bad\.jsonl:1: the last message of a prompt must be from the user"),
        ("bad.csv", "text\nhello\n", r"bad\.csv:1: the CSV header has no `prompt` column"),
        ("bad.txt", b"caf\xe9\n", r"bad\.txt:1: not UTF-8 text"),
    ],
    ids=["invalid-json", "missing-field", "ends-with-assistant", "csv-no-column", "not-utf8"],
)
def test_bad_prompt_rows(workdir, name, content, pattern):
    path = workdir / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default"), "--prompts", name)
    assert code == 2
    assert_one_line(err, pattern)


def test_template_syntax_error(workdir):
    (workdir / "tpl" / "completion").mkdir(parents=True)
    (workdir / "tpl" / "completion" / "critique.j2").write_text("Human: {{ messages }}\n\n{% if response %}\nno endif\n")
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates="tpl"))
    assert code == 2
    assert_one_line(err, r"tpl/completion/critique\.j2:\d+: template syntax error: Unexpected end of template")


def test_template_undefined_variable(workdir):
    (workdir / "tpl" / "completion").mkdir(parents=True)
    (workdir / "tpl" / "completion" / "revise.j2").write_text("{{ response }}\n\nCritique: {{ critque }}\n")
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates="tpl"))
    assert code == 2
    assert_one_line(err, r"tpl/completion/revise\.j2:3: template error: 'critque' is undefined")


def test_template_cannot_escape_sandbox(workdir):
    (workdir / "tpl" / "chat").mkdir(parents=True)
    (workdir / "tpl" / "chat" / "critique_request.j2").write_text("{{ principle.__class__.__mro__ }}\n")
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates="tpl"))
    assert code == 2
    assert_one_line(err, r"critique_request\.j2:1: template")


def test_templates_directory_missing(workdir):
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates="no-such-dir"))
    assert code == 2
    assert_one_line(err, r"no-such-dir: templates directory not found")


def test_judge_with_one_sample(workdir):
    stages = "stages:\n  respond: {n: 1}\n  judge: {}\n"
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", stages=stages))
    assert code == 2
    assert_one_line(err, r"p\.yaml:9: stages\.judge compares sampled responses, so stages\.respond\.n must be >= 2 \(it is 1\)")


def test_judge_without_anything_to_compare(workdir):
    stages = "stages:\n  respond: {n: 1}\n  judge: {pairs: none}\n"
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", stages=stages))
    assert code == 2
    assert_one_line(err, r"p\.yaml:10: stages\.judge has nothing to compare")


def test_judge_principle_without_comparison(workdir):
    path = constitution(workdir, "name: x\nprinciples:\n" + GOOD_PRINCIPLE + "  - name: b\n    critique: c\n    revision: r\n")
    stages = "stages:\n  respond: {n: 2}\n  judge: {}\n"
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", constitution=path, stages=stages))
    assert code == 2
    assert_one_line(err, r"c\.yaml:7: principle 'b' has no `comparison` question, which stage judge needs")
    # restricted to principles that have one, the same constitution is fine up to the model load
    stages = "stages:\n  respond: {n: 2}\n  judge: {principles: [a]}\n"
    with pytest.raises(AssertionError, match="a model was loaded"):
        CliRunner().invoke(main, ["run", str(write_pipeline(workdir / "p.yaml", "default", constitution=path, stages=stages))],
                           catch_exceptions=False)


@pytest.mark.parametrize("bad, pattern", [("{cot_clamp: [0.7, 0.2]}", r"cot_clamp must be"),
                                          ("{min_margin: 2}", r"must be within \[0, 1\], got 2"),
                                          ("{pairs: some}", r"must be one of 'all', 'one', 'none', got 'some'")])
def test_bad_judge_settings(workdir, bad, pattern):
    stages = f"stages:\n  respond: {{n: 2}}\n  judge: {bad}\n"
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", stages=stages))
    assert code == 2
    assert_one_line(err, r"p\.yaml:10: stages\.judge(\.pairs|\.min_margin)?: " + pattern)


def test_openai_api_key_variable_missing(workdir, monkeypatch):
    monkeypatch.delenv("RLAIF_TEST_NO_SUCH_KEY", raising=False)
    (workdir / "p.yaml").write_text(
        "name: t\nconstitution: constitutions/harmless.yaml\nprompts: data/prompts.jsonl\n"
        "models:\n  policy:\n    backend: openai\n    model: m\n    base_url: http://127.0.0.1:9/v1\n"
        "    api_key_env: RLAIF_TEST_NO_SUCH_KEY\nstages:\n  respond: {}\n")
    code, err = run_cli("run", workdir / "p.yaml")
    assert code == 2
    assert_one_line(err, r"p\.yaml:9: models\.policy\.api_key_env: the environment variable RLAIF_TEST_NO_SUCH_KEY is not set")


def test_openai_without_base_url(workdir):
    (workdir / "p.yaml").write_text(
        "name: t\nconstitution: constitutions/harmless.yaml\nprompts: data/prompts.jsonl\n"
        "models:\n  policy: {backend: openai, model: m}\nstages:\n  respond: {}\n")
    code, err = run_cli("run", workdir / "p.yaml")
    assert code == 2
    assert_one_line(err, r"p\.yaml:5: models\.policy: the openai backend needs base_url")


def test_openai_server_unreachable(workdir):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (workdir / "p.yaml").write_text(
        "name: t\nconstitution: constitutions/harmless.yaml\nprompts: data/prompts.jsonl\n"
        f"models:\n  policy:\n    backend: openai\n    model: m\n    base_url: http://127.0.0.1:{port}/v1\nstages:\n  respond: {{}}\n")
    code, err = run_cli("run", workdir / "p.yaml")
    assert code == 2
    assert_one_line(err, rf"p\.yaml:8: models\.policy\.base_url: cannot reach http://127\.0\.0\.1:{port}/v1")
