"""Generation across N engine replicas on a Ray cluster, behind the same Generator seam.

Each replica is a long-lived Ray actor that builds its engine (vllm, or hf for tiny models) once, from the same
ModelConfig as the in-process path, and keeps it for every chunk and stage of the run. A batch of requests is
split into one contiguous shard per replica (actor calls gathered with ray.wait); completions come back to the
driver in request order, and the stages commit them to the run's store exactly as in-process, so keys, resume and
provenance do not change. Not Ray Data: a Dataset execution per committed chunk would start (and load) its actors
again for every chunk. docs/scaling.md has the why and the numbers.
"""

from __future__ import annotations

import math
import os
import socket

from .base import Completion, ProgressFn, Request
from ..spec.config import ModelConfig, ScaleConfig
from ..errors import UserError


def check_scale(pipeline) -> None:
    """Fail before anything loads: ray missing, or settings the chosen backends cannot honour."""
    scale = pipeline.scale
    if scale.engine != "ray":
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("scale.engine: ray is not installed (pip install 'rlaif[scale]')",
                        *pipeline.where("scale.engine")) from None
    if scale.tensor_parallel > 1:
        for role, cfg in vars(pipeline.models).items():
            if cfg is not None and cfg.backend == "hf":
                raise UserError(f"scale.tensor_parallel: models.{role} uses the hf backend, which has no tensor parallelism "
                                "(use backend: vllm, or tensor_parallel: 1)", *pipeline.where("scale.tensor_parallel"))


def _reachable(address: str, timeout: float = 5.0) -> bool:
    """Whether HOST:PORT accepts a TCP connection (ray.init waits forever on an address where nothing listens)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class Replica:
    """One engine on a Ray worker; the driver calls it with shards of a batch."""

    def __init__(self, cfg: ModelConfig, seed: int, tensor_parallel: int):
        import ray
        import torch

        from .pool import load_engine

        resources = ray.get_runtime_context().get_assigned_resources()
        if not resources.get("GPU") and resources.get("CPU"):
            # a CPU replica computes on its share of the cores only: more threads than cores, summed over the
            # replicas of a node, make every OpenMP thread wait on the others (measured: 3x slower on 2 cores)
            torch.set_num_threads(max(1, int(resources["CPU"])))
        self.engine = load_engine(cfg, seed, tensor_parallel)
        self.requests = 0  # how many requests this replica has served, for tests and logs

    def info(self) -> dict:
        """What the driver needs to stand in for the engine, and where it runs."""
        import ray

        import torch

        return {"model_id": self.engine.model_id, "has_chat_template": self.engine.has_chat_template,
                "logit_dtype": getattr(self.engine, "logit_dtype", None),
                "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "threads": torch.get_num_threads()}

    def generate(self, requests: list[Request]) -> list[Completion]:
        """The engine's generate on one shard."""
        self.requests += len(requests)
        return self.engine.generate(requests)

    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """The engine's logprobs on one shard."""
        self.requests += len(requests)
        return self.engine.logprobs(requests, options)

    def served(self) -> int:
        """Requests served so far."""
        return self.requests

    def close(self) -> None:
        """Free the engine before the actor goes away."""
        self.engine.close()


class RayGenerator:
    """A Generator whose batches are split across `replicas` Replica actors; results in request order."""

    def __init__(self, cfg: ModelConfig, seed: int, scale: ScaleConfig, num_cpus: float, num_gpus: float):
        import ray

        actor = ray.remote(Replica).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self.actors = [actor.remote(cfg, seed, scale.tensor_parallel) for _ in range(scale.replicas)]
        try:
            self.replicas = ray.get([a.info.remote() for a in self.actors])  # waits until every engine is loaded
        except ray.exceptions.RayActorError as e:
            self.close()
            raise RuntimeError(f"a replica of {cfg.model} failed to start: {e}") from None
        self.model_id = self.replicas[0]["model_id"]
        self.has_chat_template = self.replicas[0]["has_chat_template"]
        self.logit_dtype = self.replicas[0]["logit_dtype"]

    def _map(self, submit, requests: list, progress=None) -> list:
        """One contiguous shard per replica; results land in request order, progress as each shard returns."""
        import ray

        size = math.ceil(len(requests) / len(self.actors))
        refs = {submit(actor, requests[start : start + size]): start
                for actor, start in zip(self.actors, range(0, len(requests), size))}
        results: list = [None] * len(requests)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done = ray.get(ready[0])
            results[refs[ready[0]] : refs[ready[0]] + len(done)] = done
            if progress:
                progress(len(done), sum(o.tokens for c in done for o in c.outputs))
        return results

    def generate(self, requests: list[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """Complete every request, one shard per replica; `progress` hears about each shard as it returns."""
        return self._map(lambda actor, shard: actor.generate.remote(shard), requests, progress) if requests else []

    def logprobs(self, requests: list[Request], options: list[str]) -> list[dict[str, float]]:
        """Option log-probabilities (the replicas' engines read them in context), one shard per replica."""
        return self._map(lambda actor, shard: actor.logprobs.remote(shard, options), requests) if requests else []

    def served(self) -> list[int]:
        """Requests each replica has served so far."""
        import ray

        return ray.get([a.served.remote() for a in self.actors])

    def close(self) -> None:
        """Free every replica's engine and end its actor (the resources go back to the cluster)."""
        import ray

        try:
            ray.get([a.close.remote() for a in self.actors], timeout=120)
        except Exception:  # noqa: BLE001 - a replica that already died has nothing to free
            pass
        for a in self.actors:
            ray.kill(a)
        self.actors = []


class Cluster:
    """The run's connection to Ray: made before any model loads, closed with the model pool."""

    def __init__(self, pipeline):
        import ray

        self.scale, self.where = pipeline.scale, pipeline.where
        address = self.scale.address
        if address not in (None, "auto") and not _reachable(address):
            raise UserError(f"scale.address: no Ray cluster answers at {address!r} (start one with `ray start --head`, "
                            "or leave address out for a local Ray)", *self.where("scale.address"))
        self.owned = not ray.is_initialized()  # a caller that connected already keeps its connection
        if self.owned:
            if address is None:  # Ray nices its workers to 15; here they do the run's work, as the in-process engine would
                os.environ.setdefault("RAY_worker_niceness", "0")
            try:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            except ConnectionError as e:
                raise UserError(f"scale.address: {str(e).splitlines()[0]}", *self.where("scale.address")) from None
        total = ray.cluster_resources()
        self.gpus = total.get("GPU", 0)
        self.cpus = total.get("CPU", 0)

    def resources(self, cfg: ModelConfig) -> tuple[float, float]:
        """CPUs and GPUs per replica of `cfg`; fails now if the cluster cannot hold every replica."""
        s = self.scale
        if s.tensor_parallel > 1 and not self.gpus:
            raise UserError("scale.tensor_parallel: the Ray cluster has no GPUs (tensor parallelism splits a model over GPUs)",
                            *self.where("scale.tensor_parallel"))
        num_gpus = s.tensor_parallel if self.gpus and cfg.backend == "vllm" else 0
        num_cpus = s.num_cpus_per_replica or (1 if num_gpus else max(1, math.floor(self.cpus / s.replicas)))
        if s.replicas * num_gpus > self.gpus or s.replicas * num_cpus > self.cpus:
            raise UserError(f"scale: {s.replicas} replicas x ({num_cpus:g} CPU, {num_gpus:g} GPU) do not fit the cluster "
                            f"({self.cpus:g} CPU, {self.gpus:g} GPU)", *self.where("scale.replicas"))
        return num_cpus, num_gpus

    def generator(self, cfg: ModelConfig, seed: int) -> RayGenerator:
        """Start the replicas of one model and return them as one Generator."""
        return RayGenerator(cfg, seed, self.scale, *self.resources(cfg))

    def close(self) -> None:
        """Disconnect (and stop the local Ray this run started); a cluster started with `ray start` keeps running."""
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()
