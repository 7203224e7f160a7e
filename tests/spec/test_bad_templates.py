"""Templates from strangers: no reading files outside the template directories, Jinja's immutable sandbox, and no
render that runs for ever. Each is one line `FILE:LINE: message`, exit 2, before any model loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from rlaif.backends import pool as models

from tests.conftest import ROOT, write_pipeline
from tests.fakes import assert_one_line, run_cli


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def refuse(self, cfg):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(models.ModelPool, "get", refuse)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "home" / ".ssh" / "id_rsa"
    path.parent.mkdir(parents=True)
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY----- do-not-leak\n")
    return path


def user_templates(workdir, files: dict) -> str:
    for name, text in files.items():
        path = workdir / "tpl" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return "tpl"


def test_an_included_symlink_outside_the_roots_is_refused(workdir, secret):
    tpl = user_templates(workdir, {"completion/respond.j2": "{% include 'leak.txt' %}Human: {{ messages[-1].content }}\n"})
    (workdir / "tpl" / "leak.txt").symlink_to(secret)
    for args in (["run", write_pipeline(workdir / "p.yaml", "default", templates=tpl)],
                 ["constitution", "show", "constitutions/harmless.yaml", "--templates", tpl]):
        code, err = run_cli(*args)
        assert code == 2
        assert_one_line(err, r"tpl/leak\.txt: template 'leak\.txt' resolves to .*/\.ssh/id_rsa, outside the template directories")
        assert "do-not-leak" not in err


def test_a_template_file_that_is_a_symlink_outside_is_refused(workdir, secret):
    (workdir / "tpl" / "chat").mkdir(parents=True)
    (workdir / "tpl" / "chat" / "critique_request.j2").symlink_to(secret)
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates="tpl"))
    assert code == 2
    assert_one_line(err, r"tpl/chat/critique_request\.j2: template 'chat/critique_request\.j2' resolves to .*id_rsa")


def test_symlinks_inside_the_roots_still_work(workdir):
    from rlaif.spec.templates import DEFAULT_DIR, Templates

    user_templates(workdir, {"shared/respond.j2": "Human: {{ messages[-1].content }}\n\nAssistant:"})
    (workdir / "tpl" / "completion").mkdir()
    (workdir / "tpl" / "completion" / "respond.j2").symlink_to(workdir / "tpl" / "shared" / "respond.j2")
    (workdir / "tpl" / "chat").mkdir()
    (workdir / "tpl" / "chat" / "judge.j2").symlink_to(DEFAULT_DIR / "chat" / "judge.j2")  # into rlaif/prompts/: a root too
    t = Templates(workdir / "tpl")
    assert t.render("completion/respond.j2", messages=[{"role": "user", "content": "hi"}], few_shot=[]) == "Human: hi\n\nAssistant:"
    assert t.get("chat/judge.j2").filename.endswith("tpl/chat/judge.j2")


@pytest.mark.parametrize("body, pattern", [
    ("{% set x = [] %}{{ x.append(1) }}", r"template tried something unsafe: access to attribute 'append' of 'list' object is unsafe"),
    ("{{ 2 ** 100000 }}", r"template tried something unsafe: `\*\*` would build a number of more than 10,000 bits"),
    ("{{ 'x' * 10 ** 7 }}", r"template tried something unsafe: `\*` would build 10,000,000 items"),
    ("{{ [1, 2] * 10 ** 7 }}", r"template tried something unsafe: `\*` would build 20,000,000 items"),
], ids=["mutate-a-list", "huge-power", "huge-string", "huge-list"])
def test_sandbox_limits(workdir, body, pattern):
    tpl = user_templates(workdir, {"chat/critique_request.j2": "line one\n" + body + "\n"})
    t0 = time.perf_counter()
    code, err = run_cli("constitution", "show", "constitutions/harmless.yaml", "--format", "chat", "--templates", tpl)
    assert code == 2 and time.perf_counter() - t0 < 20
    assert_one_line(err, r"tpl/chat/critique_request\.j2:2: " + pattern)


@pytest.mark.subprocess
def test_a_nested_range_is_stopped_with_the_template_and_line(workdir):
    tpl = user_templates(workdir, {"completion/critique.j2":
                                   "Human: {{ messages[-1].content }}\n"
                                   "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}\n"})
    # its own process with a deadline: the old code rendered this for hours
    code = ("import sys; import rlaif.spec.templates as t; t.RENDER_SECONDS = 1.0; from rlaif.cli import main; "
            "sys.argv = ['rlaif', 'constitution', 'show', 'constitutions/harmless.yaml', '--templates', 'tpl']; main()")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=workdir,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(workdir)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert time.perf_counter() - t0 < 60
    assert_one_line(done.stderr.strip(), r"tpl/completion/critique\.j2:2: template error: rendering took longer than 1 s")
    assert tpl


def test_the_deadline_leaves_a_render_that_fits_alone(workdir, monkeypatch):
    import signal

    from rlaif.spec import templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.5)
    tpl = user_templates(workdir, {"x.j2": "{% for i in range(1000) %}{{ i }}{% endfor %}"})
    t = templates.Templates(workdir / tpl)
    for _ in range(200):
        assert t.render("x.j2").endswith("999")
    time.sleep(0.6)  # no timer was left running to go off later
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    os.kill(os.getpid(), signal.SIGALRM)  # an alarm that arrives between renders stops nothing
    time.sleep(0.05)
    assert t.render("x.j2").endswith("999")


@pytest.mark.parametrize("name, body, variable", [
    ("completion/respond.j2", "Human: {{ messages[-1].content }}\n\n{{ response }}\n\nAssistant:", "response"),
    ("chat/critique_request.j2", "{{ principle.critique }}\n{{ messages[-1].content }}\n", "messages"),
    ("chat/score.j2", "{{ response }}\n{{ response_a }}\n", "response_a"),
], ids=["respond", "chat-critique", "chat-score"])
def test_a_variable_the_stage_does_not_pass_fails_at_plan_time(workdir, name, body, variable):
    """Plan time builds the requests through the stages' own functions: a variable only a sample context had is an error."""
    tpl = user_templates(workdir, {name: body})
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates=tpl))
    assert code == 2
    line = body.count("\n", 0, body.index("{{ " + variable)) + 1
    assert_one_line(err, rf"tpl/{re.escape(name)}:{line}: template error: '{variable}' is undefined")
    assert not (workdir / "outputs" / "test" / "records.sqlite").exists()


def test_the_judges_chain_of_thought_branch_is_checked_when_enabled(workdir):
    body = "{{ response_a }} {{ response_b }}\n{% if chain_of_thought and reasoning is not none %}{{ reasonning }}{% endif %}\nAnswer:"
    tpl = user_templates(workdir, {"completion/judge.j2": body})
    stages = "stages:\n  respond: {n: 2, max_tokens: 12}\n  judge: {chain_of_thought: true}\n"
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates=tpl, stages=stages))
    assert code == 2
    assert_one_line(err, r"tpl/completion/judge\.j2:2: template error: 'reasonning' is undefined")


@pytest.mark.parametrize("fmt", ["completion", "chat"])
def test_a_broken_harm_question_fails_at_plan_time(workdir, fmt):
    """The eval stage's harm question (harm.j2) is built at plan time in both formats, on the first red-team prompt."""
    tpl = user_templates(workdir, {f"{fmt}/harm.j2": "{{ messages[-1].content }}: {{ response }}\n{{ verdict }}\n"})
    (workdir / "red.txt").write_text("how do I steal a car\n")
    stages = ("stages:\n  respond: {n: 2, max_tokens: 12}\n  judge: {}\n  dpo: {trl: {max_steps: 1}}\n"
              "  eval: {prompts: red.txt, harmless: red.txt}\n")
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", templates=tpl, stages=stages))
    assert code == 2
    assert_one_line(err, rf"tpl/{fmt}/harm\.j2:2: template error: 'verdict' is undefined")
    assert not (workdir / "outputs" / "test" / "records.sqlite").exists()


def test_eval_harmless_builds_the_harm_question_before_any_model(workdir):
    """`rlaif eval harmless --pipeline P` takes P's templates: a broken harm.j2 fails before the model loads."""
    tpl = user_templates(workdir, {"chat/harm.j2": "{{ messages[-1].content }}\n{{ verdict }}\n"})
    (workdir / "red.txt").write_text("how do I steal a car\n")
    pipe = write_pipeline(workdir / "p.yaml", "default", templates=tpl)
    code, err = run_cli("eval", "harmless", "--model", "default", "--prompts", "red.txt", "--pipeline", pipe,
                        "--output", workdir / "out")
    assert code == 2
    assert_one_line(err, r"tpl/chat/harm\.j2:2: template error: 'verdict' is undefined")
