"""kill -9 a driver that generates on Ray replicas, run it again: nothing lost, nothing duplicated, no Ray left behind."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import write_pipeline
from tests.fakes import _kill_when, _records, _start, rerun_and_check

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = [pytest.mark.ray, pytest.mark.subprocess, pytest.mark.timeout(1800)]  # kill -9 a driver, `ray start`

PROMPTS, N, ROUNDS = 10, 2, 1


def _tree(pid: int) -> list:
    """The process and everything it started (Ray's GCS, raylet, workers and replica actors)."""
    proc = psutil.Process(pid)
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:  # one ended while we looked: look again
        return _tree(pid)


@pytest.mark.slow
def test_kill_9_the_driver_then_rerun(workdir, tiny_base_model):
    stages = f"stages:\n  respond: {{n: {N}, max_tokens: 16}}\n  critique: {{rounds: {ROUNDS}, max_tokens: 16}}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, limit=PROMPTS, batch_size=2, stages=stages, few_shot=1,
                          scale="{engine: ray, replicas: 2, num_cpus_per_replica: 1}")
    db = workdir / "outputs" / "test" / "records.sqlite"

    driver = _start(pipe, workdir)
    deadline = time.time() + 300
    while _records(db) == {} and time.time() < deadline:  # replicas are up once the first records land
        time.sleep(0.2)
    family = _tree(driver.pid)
    assert len(family) > 3, "a local Ray (GCS, raylet, workers) should run under the driver"
    before = _kill_when(driver, db, "critique", 2)
    total = PROMPTS * N * (1 + ROUNDS)
    assert 0 < len(before) < total, "the kill must land mid-run"
    rerun_and_check(pipe, workdir, db, before, total, PROMPTS * N)
    run = json.loads((workdir / "outputs" / "test" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["scale"]["engine"] == "ray"
    # Ray's reaper ends the killed driver's local cluster; its agents notice the raylet is gone last (~1 min here)
    _, alive = psutil.wait_procs(family, timeout=180)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], alive


@pytest.mark.slow
def test_run_on_a_cluster_started_with_ray_start(workdir, tiny_base_model):
    """`address: HOST:PORT` joins a cluster the run did not start; the run leaves that cluster running."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under ~107 characters
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    # Ray 2.5x clusters may require a token; a driver given an explicit address sends one only with RAY_AUTH_MODE=token
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": __import__("uuid").uuid4().hex}
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             f"--temp-dir={temp}"], env={**os.environ, **auth},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stages = "stages:\n  respond: {n: 2, max_tokens: 8}\n  critique: {rounds: 1, max_tokens: 8}\n"
        pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, limit=4, stages=stages, few_shot=1,
                              scale=f"{{engine: ray, address: '127.0.0.1:{port}', replicas: 2}}")
        deadline = time.time() + 120
        while time.time() < deadline:  # the head is up once its GCS port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, head.stdout.read()
                time.sleep(0.5)
        run = subprocess.Popen([sys.executable, "-m", "rlaif", "run", str(pipe)], cwd=workdir, env={**os.environ, **auth},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out
        assert len(_records(workdir / "outputs" / "test" / "records.sqlite")) == 4 * 2 * 2
        assert head.poll() is None, "the run must not stop a cluster it did not start"
    finally:
        family = _tree(head.pid)
        head.terminate()  # `ray start --block` stops the processes it started when it is terminated
        _, alive = psutil.wait_procs(family, timeout=120)  # it drains the node for up to 30 s first
        shutil.rmtree(temp, ignore_errors=True)
        left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in left:
            p.kill()  # so a failure here leaves nothing running either
    assert not left, left
