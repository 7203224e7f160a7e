"""Generation on a local Ray cluster: same records as in-process, work on every replica, clear errors."""

from __future__ import annotations

import json
import math
import socket
import sqlite3

import pytest

from rlaif.backends.base import Request, Sampling
from rlaif.spec.config import ModelConfig, ScaleConfig
from rlaif.backends.pool import load_engine

from tests.conftest import write_pipeline

ray = pytest.importorskip("ray")

SAMPLED = ("stages:\n  respond: {n: 2, max_tokens: 12}\n  critique: {rounds: 1, max_tokens: 12}\n"
           "  judge: {}\n  score: {targets: all}\n")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module: room for 2 one-CPU replicas."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def _close(a, b) -> bool:
    """Equal, with floats within 1e-5 (batch padding moves a log-probability in its last digits)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _records(db) -> dict[str, tuple[str, dict]]:
    con = sqlite3.connect(db)
    try:
        return {k: (stage, json.loads(data)) for k, stage, data in con.execute("SELECT key, stage, data FROM records")}
    finally:
        con.close()


@pytest.mark.ray
def test_replicas_share_a_batch_and_match_the_local_engine(local_ray, tiny_chat_model):
    from rlaif.backends.ray import RayGenerator

    cfg = ModelConfig(model=str(tiny_chat_model), backend="hf", dtype="float32")
    requests = [Request(messages=({"role": "user", "content": f"How do I {w}?"},), sampling=Sampling(temperature=0, max_tokens=8))
                for w in ("cook", "swim", "sleep", "read", "write", "run", "paint")]
    remote = RayGenerator(cfg, 0, ScaleConfig(engine="ray", replicas=2), num_cpus=1, num_gpus=0)
    try:
        assert len({r["pid"] for r in remote.replicas}) == 2  # two engines in two worker processes
        seen = []
        out = remote.generate(requests, lambda n, tokens: seen.append(n))
        logprobs = remote.logprobs(requests, ["A", "B"])
        assert remote.served() == [4 + 4, 3 + 3]  # each replica got one contiguous shard of each call
        assert sorted(seen) == [3, 4]
        assert remote.generate([]) == [] and remote.logprobs([], ["A"]) == []
    finally:
        remote.close()
    local = load_engine(cfg)
    assert out == local.generate(requests)  # greedy: the same completions, in request order
    assert _close(logprobs, local.logprobs(requests, ["A", "B"]))
    assert remote.model_id == local.model_id  # so record keys, and resume, do not depend on the engine


@pytest.mark.ray
def test_pipeline_on_ray_writes_the_same_records(local_ray, workdir, tiny_base_model):
    from click.testing import CliRunner

    from rlaif.cli import main

    for name, scale in (("inproc", "{engine: inprocess}"), ("ray", "{engine: ray, replicas: 2, num_cpus_per_replica: 1}")):
        pipe = write_pipeline(workdir / f"{name}.yaml", tiny_base_model, name=name, limit=5, stages=SAMPLED, scale=scale,
                              few_shot=1, drop_degenerate="false")
        # hf seeds a whole generate call; one request per call makes each sample independent of how a batch is split
        pipe.write_text(pipe.read_text().replace("dtype: float32}", "dtype: float32, batch_size: 1}"))
        result = CliRunner().invoke(main, ["run", str(pipe)])
        assert result.exit_code == 0, result.output + str(result.exception)
    local, remote = (_records(workdir / "outputs" / n / "records.sqlite") for n in ("inproc", "ray"))
    assert {s for s, _ in local.values()} == {"respond", "critique", "judge", "score"}
    assert local.keys() == remote.keys()
    for key, (stage, data) in local.items():
        assert remote[key][0] == stage and _close(remote[key][1], data), (stage, remote[key][1], data)
    run = json.loads((workdir / "outputs" / "ray" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["scale"]["replicas"] == 2


@pytest.mark.ray
def test_replicas_that_do_not_fit_the_cluster(local_ray, workdir, tiny_chat_model, monkeypatch):
    from rlaif.backends import pool as models

    from tests.fakes import assert_one_line, run_cli

    monkeypatch.setattr(models, "load_engine", lambda *a, **k: pytest.fail("a model was loaded"))
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, scale="{engine: ray, replicas: 3, num_cpus_per_replica: 1}")
    code, err = run_cli("run", pipe)
    assert code == 2
    assert_one_line(err, r"p\.yaml:\d+: scale: 3 replicas x \(1 CPU, 0 GPU\) do not fit the cluster \(2 CPU, 0 GPU\)")
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, scale="{engine: ray, tensor_parallel: 2}")
    pipe.write_text(pipe.read_text().replace("backend: hf", "backend: vllm"))  # only vllm has tensor parallelism
    code, err = run_cli("run", pipe)
    assert code == 2
    assert_one_line(err, r"p\.yaml:\d+: scale\.tensor_parallel: the Ray cluster has no GPUs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scale, pattern", [
    ("{engine: ray, replica: 2}", r"p\.yaml:\d+: scale: unknown key 'replica' \(did you mean 'replicas'\?\)"),
    ("{engine: ray, replicas: 0}", r"p\.yaml:\d+: scale\.replicas: must be >= 1, got 0"),
    ("{engine: threads}", r"p\.yaml:\d+: scale\.engine: must be one of 'inprocess', 'ray', got 'threads'"),
    ("{replicas: 2}", r"p\.yaml:\d+: scale: replicas need engine: ray"),
    ("{engine: ray, tensor_parallel: 2}", r"p\.yaml:\d+: scale\.tensor_parallel: models\.policy uses the hf backend"),
    ("{engine: ray, num_cpus_per_replica: 0}", r"p\.yaml:\d+: scale\.num_cpus_per_replica: must be > 0"),
])
def test_bad_scale_settings(workdir, tiny_chat_model, scale, pattern):
    from tests.fakes import assert_one_line, run_cli

    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", tiny_chat_model, scale=scale))
    assert code == 2
    assert_one_line(err, pattern)


@pytest.mark.ray
def test_unreachable_address_fails_before_any_model_loads(workdir, tiny_chat_model, monkeypatch):
    from rlaif.backends import pool as models

    from tests.fakes import assert_one_line, run_cli

    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: pytest.fail("a model was loaded"))
    port = _free_port()  # nothing listens there
    pipe = write_pipeline(workdir / "p.yaml", tiny_chat_model, scale=f"{{engine: ray, address: '127.0.0.1:{port}'}}")
    code, err = run_cli("run", pipe)
    assert code == 2
    assert_one_line(err, rf"p\.yaml:\d+: scale\.address: no Ray cluster answers at '127\.0\.0\.1:{port}'")


def test_ray_not_installed(workdir, tiny_chat_model, monkeypatch):
    from tests.fakes import assert_one_line, run_cli

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` raises ImportError
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", tiny_chat_model, scale="{engine: ray}"))
    assert code == 2
    assert_one_line(err, r"p\.yaml:\d+: scale\.engine: ray is not installed \(pip install 'rlaif\[scale\]'\)")
