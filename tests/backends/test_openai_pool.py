"""A pool of OpenAI-compatible endpoints: two or three in-test servers, one killed mid-run and restarted."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from rlaif.backends.endpoints import Cancelled, Endpoint, EndpointPool, Lease
from rlaif.backends.openai import OpenAIGenerator, ServerError
from rlaif.errors import UserError

from tests.fakes import Handler, Script, free_port, prompt


class TrackedHandler(Handler):
    def setup(self):
        super().setup()
        self.server.connections.add(self.connection)


class Server(ThreadingHTTPServer):
    """The fake server of test_openai.py that can be killed: no new connections, open ones cut."""

    daemon_threads = True

    def __init__(self, port: int = 0, script: Script | None = None):
        super().__init__(("127.0.0.1", port), TrackedHandler)
        self.script, self.connections = script or Script(), set()
        self.url = f"http://127.0.0.1:{self.server_port}/v1"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def handle_error(self, request, client_address):
        pass  # a connection cut by kill()

    def kill(self):
        self.shutdown()
        self.server_close()
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(timeout=5)


@pytest.fixture
def servers():
    started = []

    def start(port: int = 0) -> Server:
        started.append(Server(port))
        return started[-1]

    yield start
    for s in started:
        if s.thread.is_alive():
            s.kill()


@pytest.fixture
def make():
    made = []

    def make(urls, **kwargs):
        made.append(OpenAIGenerator("fake-model", urls, **(dict(timeout=2, max_retries=3, backoff=0.01) | kwargs)))
        return made[-1]

    yield make
    for gen in made:
        gen.close()


def kill_after(server: Server, requests: int) -> threading.Thread:
    """Kill `server` from another thread once it has received `requests` requests."""

    def watch():
        while len(server.script.requests) < requests:
            time.sleep(0.002)
        server.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def texts(completions) -> list[str]:
    return [c.outputs[0].text for c in completions]


def test_one_server_killed_mid_run_nothing_lost_then_back_after_cooldown(servers, make, caplog):
    a, b = servers(), servers()
    for s in (a, b):
        s.script.delay = lambda body: 0.01
    gen = make([a.url, b.url], max_concurrency=2, cooldown=30)
    watcher = kill_after(b, 10)
    with caplog.at_level(logging.WARNING, logger="rlaif"):
        out = gen.generate([prompt(f"p{i}") for i in range(120)])
    watcher.join(timeout=5)
    assert texts(out) == [f"<p{i}|0>" for i in range(120)]  # every request answered, in order
    assert len(b.script.requests) >= 10 and len(a.script.requests) >= 120 - len(b.script.requests)
    outs = [r.message for r in caplog.records if "is out" in r.message]
    assert len(outs) == 1 and outs[0].startswith(f"endpoint {b.url} is out for 30 s (connection failed")

    # restarted on the same port: it sits out the rest of its cool-down, then gets traffic again
    b2 = servers(b.server_port)
    gen.generate([prompt(f"q{i}") for i in range(10)])
    assert b2.script.requests == []
    gen.pool.endpoints[1].out_until = time.monotonic()  # fast-forward to the end of the cool-down (real time: test_pool_states)
    with caplog.at_level(logging.WARNING, logger="rlaif"):
        gen.generate([prompt(f"r{i}") for i in range(40)])
    assert len(b2.script.requests) >= 10
    assert any(r.message == f"endpoint {b.url} is back" for r in caplog.records)


def test_a_dead_server_is_probed_again_after_each_cooldown(servers, make, caplog):
    a, dead = servers(), f"http://127.0.0.1:{free_port()}/v1"
    a.script.delay = lambda body: 0.01
    gen = make([a.url, dead], max_concurrency=1, cooldown=0.05)
    with caplog.at_level(logging.WARNING, logger="rlaif"):
        out = gen.generate([prompt(f"p{i}") for i in range(30)])
    assert texts(out) == [f"<p{i}|0>" for i in range(30)]
    outs = [r.message.split(" is out for ")[1].split(" s ")[0] for r in caplog.records if "is out" in r.message]
    assert len(outs) >= 2 and outs == [f"{0.05 * 2**i:g}" for i in range(len(outs))]  # each failed probe: twice as long


def test_least_loaded_routing_sends_less_to_a_slow_server(servers, make):
    slow, fast = servers(), servers()
    slow.script.delay = lambda body: 0.25
    fast.script.delay = lambda body: 0.0
    out = make([slow.url, fast.url], max_concurrency=2).generate([prompt(f"p{i}") for i in range(60)])
    assert texts(out) == [f"<p{i}|0>" for i in range(60)]
    # round-robin would split 30/30; least-loaded lets the fast one take what the slow one cannot
    assert len(fast.script.requests) > 2 * len(slow.script.requests) > 0
    assert max(slow.script.peak, fast.script.peak) <= 2  # max_concurrency is per endpoint


def test_failing_server_is_taken_out_and_requests_retried_elsewhere(servers, make, caplog):
    bad, good = servers(), servers()
    bad.script.faults = ["503"] * 100
    with caplog.at_level(logging.WARNING, logger="rlaif"):
        out = make([bad.url, good.url], max_concurrency=1, cooldown=60).generate([prompt(f"p{i}") for i in range(20)])
    assert texts(out) == [f"<p{i}|0>" for i in range(20)]
    assert len(bad.script.requests) == 3  # three 5xx in a row, then out
    assert any(f"endpoint {bad.url} is out for 60 s (HTTP 503" in r.message for r in caplog.records)


def test_every_server_down_fails_with_a_clear_message(make):
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    with pytest.raises(ServerError) as info:
        make(dead, max_retries=2, cooldown=0.05).generate([prompt("hello")])
    message = str(info.value)
    assert message.startswith("a request failed 3 times on a pool of 2 endpoints; last: http://127.0.0.1:")
    assert "connection failed (connection refused)" in message


def test_record_keys_name_the_first_server_only(servers, make):
    a, b = servers(), servers()
    assert make([a.url, b.url]).model_id == make(a.url).model_id == f"fake-model @ {a.url}"


def pool_of(n: int, cooldown: float = 0.05, max_concurrency: int = 2) -> EndpointPool:
    class Client:
        def close(self):
            pass

    return EndpointPool([Endpoint(f"http://e{i}", Client()) for i in range(n)], max_concurrency, cooldown)


def test_pool_states():
    pool, stop = pool_of(2), threading.Event()
    e0, e1 = pool.endpoints
    leases = [pool.acquire(stop) for _ in range(4)]
    assert [x.endpoint for x in leases] == [e0, e1, e0, e1]  # least loaded, ties to the least recently picked
    stop.set()
    with pytest.raises(Cancelled):  # all slots taken: a stopped batch does not wait for one
        pool.acquire(stop)
    stop.clear()
    assert not pool.release(leases[0], "error") and not pool.release(leases[2], "busy")  # one error, one 429: still in
    assert pool.release(pool.acquire(stop), "down", "refused")  # a refused connection: out at once
    assert not pool.release(leases[1], "down") and e1.out_until is None  # the last one in stays in
    assert not pool.release(leases[3], None)
    assert pool.reroute(e0) and not pool.reroute(e1)
    held = pool.acquire(stop)
    assert held.endpoint is e1  # e0 sits out its cool-down
    pool.release(held, None)
    time.sleep(0.06)
    probe = pool.acquire(stop)
    assert probe.endpoint is e0 and probe.probe  # cool-down over: one request probes it
    assert pool.acquire(stop).endpoint is e1  # ... and only one
    assert pool.release(probe, "error") and 0.09 < e0.out_until - time.monotonic() <= 0.1  # probe failed: out twice as long
    time.sleep(0.11)
    probe = pool.acquire(stop)
    assert not pool.release(probe, None) and e0.out_until is None and e0.outages == 0  # probe succeeded: back


def test_requests_sent_before_an_endpoint_went_out_do_not_change_it():
    pool, stop = pool_of(2, max_concurrency=3), threading.Event()
    e0 = pool.endpoints[0]
    early, late = pool.acquire(stop), pool.acquire(stop)
    assert early.endpoint is e0 and late.endpoint is not e0
    other = pool.acquire(stop)
    assert other.endpoint is e0
    assert pool.release(other, "down")
    assert not pool.release(early, None) and e0.out_until is not None  # an old success does not bring it back
    time.sleep(0.06)
    probe = pool.acquire(stop)
    stale = Lease(e0, probe.outages_total - 1, False)
    e0.in_flight += 1
    assert not pool.release(stale, "down") and e0.probing  # an old failure neither ends the probe nor counts


def test_three_errors_in_a_row_take_it_out_a_success_resets():
    pool = pool_of(2)
    e0 = pool.endpoints[0]
    for fault in ("error", "error", None, "error", "error", "error"):
        e0.in_flight += 1  # as acquire would
        assert pool.release(Lease(e0, e0.outages_total, False), fault) == (fault is not None and e0.failures == 3)
    assert e0.out_until is not None


@pytest.mark.parametrize("value, shown", [("[]", "[]"), ("''", "''"),
                                          ("[http://a/v1, 'http://a/v1/']", "['http://a/v1', 'http://a/v1/']"),
                                          ("3", None), ("[1, http://a/v1]", None)])
def test_bad_base_url(tmp_path, value, shown):
    from click.testing import CliRunner

    from rlaif.cli import main

    path = _pipeline(tmp_path, ["X"])
    (tmp_path / "p.yaml").write_text((tmp_path / "p.yaml").read_text().replace("[X]", value))
    result = CliRunner().invoke(main, ["run", path])
    assert result.exit_code == 2 and "\n" not in result.stderr.strip()
    expected = f"expected a URL or a list of distinct URLs, got {shown}" if shown else "expected str or list, got "
    assert result.stderr.startswith(f"{path}:9: models.policy.base_url: {expected}"), result.stderr


def test_bad_cooldown(tmp_path):
    from click.testing import CliRunner

    from rlaif.cli import main

    path = _pipeline(tmp_path, ["http://127.0.0.1:9/v1"])
    text = (tmp_path / "p.yaml").read_text()
    (tmp_path / "p.yaml").write_text(text.replace("    max_concurrency: 1\n", "    endpoint_cooldown: 0\n"))
    result = CliRunner().invoke(main, ["run", path])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{path}:10: models.policy.endpoint_cooldown: must be > 0, got 0"


def _pipeline(tmp_path, urls) -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    (tmp_path / "p.txt").write_text("How do I boil an egg?\nHow do I pick a lock?\nHow do I tie a tie?\n")
    (tmp_path / "p.yaml").write_text(
        f"name: pool\nconstitution: {root}/constitutions/harmless.yaml\nprompts: {tmp_path}/p.txt\noutput: {tmp_path}/run\n"
        "models:\n  policy:\n    backend: openai\n    model: fake-model\n"
        f"    base_url: [{', '.join(urls)}]\n    max_concurrency: 1\n"
        "stages:\n  respond: {n: 2}\n  critique: {rounds: 1}\n  judge: {}\n")
    return str(tmp_path / "p.yaml")


def test_pipeline_through_a_pool(servers, tmp_path):
    from click.testing import CliRunner

    from rlaif.cli import main

    a, b = servers(), servers()
    for s in (a, b):
        s.script.delay = lambda body: 0.01
    result = CliRunner().invoke(main, ["run", _pipeline(tmp_path, [a.url, b.url])], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert a.script.requests and b.script.requests
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["models"]["policy"] == f"fake-model @ {a.url}"
    assert run["config"]["models"]["policy"]["base_url"] == [a.url, b.url]


def test_plan_warns_for_an_unreachable_server_and_fails_when_none_answers(servers, tmp_path, caplog):
    from rlaif.spec.config import load_pipeline
    from rlaif.pipeline import plan

    live, dead = servers(), f"http://127.0.0.1:{free_port()}/v1"
    with caplog.at_level(logging.WARNING, logger="rlaif"):
        plan(load_pipeline(_pipeline(tmp_path, [live.url, dead])))
    assert [r.message for r in caplog.records] == [
        f"warning: models.policy.base_url: cannot reach {dead}: connection refused; going on with the other 1"]
    other = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UserError) as info:
        plan(load_pipeline(_pipeline(tmp_path, [dead, other])))
    assert str(info.value) == (f"{tmp_path}/p.yaml:9: models.policy.base_url: cannot reach {dead}: connection refused; "
                               f"cannot reach {other}: connection refused")
    with pytest.raises(UserError, match=r"p\.yaml:9: models\.policy\.base_url: .*HTTP 404"):  # answers wrongly: not an outage
        plan(load_pipeline(_pipeline(tmp_path, [live.url, live.url + "/nope"])))
