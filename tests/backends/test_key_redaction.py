"""The API key never reaches the terminal: a real in-test gateway that echoes the Authorization header in its errors."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer

import pytest

from rlaif.backends.openai import OpenAIGenerator, ServerError

from tests.conftest import ROOT
from tests.fakes import Handler, Script, prompt

KEY = "sk-live-9f8e7d6c5b4a3210REDACTME"


class EchoingGateway(Handler):
    """A proxy that answers POSTs with a 502 quoting the request headers, as some gateways do."""

    def _reply(self, script: Script, fault: str | None, body: dict):
        if fault == "ok":
            return super()._reply(script, None, body)
        pad = "x" * script.pad  # where the key falls against rlaif's 300-character cut of server messages
        headers = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        return self._send(502, {"error": {"message": f"upstream failed {pad} request headers: {headers}"}})


@pytest.fixture
def gateways():
    started = []

    def start(pad: int = 0):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoingGateway)
        httpd.daemon_threads = True
        httpd.script = Script()
        httpd.script.pad = pad
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        httpd.url = f"http://127.0.0.1:{httpd.server_port}/v1"
        started.append(httpd)
        return httpd

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def terminal():
    """What a user's terminal would show: rlaif's log records through a plain stream handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("rlaif").addHandler(handler)
    yield stream
    logging.getLogger("rlaif").removeHandler(handler)


def assert_no_key(text: str):
    assert KEY not in text
    for n in range(8, len(KEY)):  # nor a cut-off piece of it
        assert KEY[:n] not in text, f"{KEY[:n]!r} in {text!r}"


@pytest.mark.parametrize("pad", [0, 150])  # 150: the key starts ~285 characters in, so rlaif's 300-character cut halves it
def test_pool_warning_and_final_error_carry_no_key(gateways, terminal, caplog, pad):
    echo, good = gateways(pad), gateways()
    good.script.faults = ["ok"] * 100
    gen = OpenAIGenerator("fake-model", [echo.url, good.url], api_key=KEY, timeout=2, max_retries=3, backoff=0.01,
                          max_concurrency=1, cooldown=60)
    try:
        with caplog.at_level(logging.WARNING, logger="rlaif"):
            out = gen.generate([prompt(f"p{i}") for i in range(8)])
    finally:
        gen.close()
    assert [c.outputs[0].text for c in out] == [f"<p{i}|0>" for i in range(8)]
    assert echo.script.requests and echo.script.requests[0][2] == f"Bearer {KEY}"  # the gateway did get the key
    warning = next(r.getMessage() for r in caplog.records if "is out" in r.getMessage())
    assert f"endpoint {echo.url} is out for 60 s (HTTP 502: upstream failed" in warning
    if pad == 0:
        assert "authorization: Bearer ***" in warning.lower().replace("bearer", "Bearer")
    assert_no_key(warning)
    assert_no_key(terminal.getvalue())
    assert_no_key(caplog.text)

    gen = OpenAIGenerator("fake-model", echo.url, api_key=KEY, timeout=2, max_retries=1, backoff=0.01)
    try:
        with pytest.raises(ServerError) as info:
            gen.generate([prompt("hello")])
    finally:
        gen.close()
    assert "failed 2 times; last: HTTP 502: upstream failed" in str(info.value)
    assert_no_key(str(info.value))


@pytest.mark.subprocess
def test_a_run_against_echoing_gateways_prints_no_key(gateways, workdir):
    """The real terminal: `rlaif run` in its own process, stderr as the user sees it (warnings and the final error)."""
    a, b = gateways(), gateways()
    (workdir / "p.yaml").write_text(
        "name: t\nconstitution: constitutions/harmless.yaml\nprompts: data/prompts.jsonl\nlimit: 2\n"
        f"models:\n  policy:\n    backend: openai\n    model: fake-model\n    base_url: [{a.url}, {b.url}]\n"
        "    api_key_env: RLAIF_TEST_KEY\n    max_retries: 4\n    max_concurrency: 1\nstages:\n  respond: {n: 1}\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(workdir), "RLAIF_TEST_KEY": KEY}
    done = subprocess.run([sys.executable, "-m", "rlaif", "run", "p.yaml"], capture_output=True, text=True, timeout=120,
                          cwd=workdir, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "is out for" in done.stderr and "HTTP 502: upstream failed" in done.stderr and "Bearer ***" in done.stderr
    assert_no_key(done.stderr + done.stdout)


def test_redact():
    from rlaif.redact import redact, register

    register(KEY)
    register("EMPTY")  # the placeholder key is not a secret: ordinary text keeps the word
    assert redact(f"key={KEY}!") == "key=***!"
    assert redact("Authorization: Bearer abc.def-ghi, next") == "Authorization: Bearer ***, next"
    assert redact("see http://alice:hunter2@proxy:8080/v1 now") == "see http://alice:***@proxy:8080/v1 now"
    assert redact("EMPTY handed") == "EMPTY handed"
