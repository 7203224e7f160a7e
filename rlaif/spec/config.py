"""Pipeline files: YAML -> frozen dataclasses, strictly; `--set key=value` overrides first."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from ..errors import UserError, UserErrors
from .methods import NAMES, POLICIES
from .ranges import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, check_ranges
from .loader import Builder, YamlMap, load_yaml, parse_yaml

TopP = Annotated[float, Range(0, 1, open_low=True)]  # nucleus mass: 1 keeps every token; 0 would keep none

# Base models continue the "Human: / Assistant:" transcript past their answer; these cut it.
COMPLETION_STOP = ("\nHuman:", "\nAssistant:", "\nCritiqueRequest:", "\nCritique:", "\nRevisionRequest:", "\nRevision:", "\n---")


@dataclass(frozen=True)
class ModelConfig:
    """One model role: which weights, on which backend, with which engine settings."""

    model: str = "default"  # "default" (the embedded Gemma 3 270M), a local HF directory, or a hub id; scripted: its model id
    backend: Literal["vllm", "hf", "openai", "scripted"] = "vllm"  # scripted: canned replies, no model (tests, overhead)
    # auto: bf16 where the processor has it natively (GPUs, CPUs with AVX-512 BF16 or AMX), float32 on other CPUs,
    # where bf16 is emulated (~3x slower generation, measured: bench/results/dtype.md); see rlaif/hardware.py
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    prompt_format: Literal["auto", "chat", "completion"] = "auto"  # auto: chat if the tokenizer has a template
    max_model_len: PositiveInt = 4096  # vllm: longest prompt + completion
    kv_cache_gb: PositiveFloat = 2.0  # vllm on CPU: KV-cache size; the default would reserve most of the RAM
    enforce_eager: bool | None = None  # vllm: None keeps the backend's measured default
    batch_size: PositiveInt = 16  # hf: sequences per `generate` call
    base_url: str | tuple[str, ...] | None = None  # openai: the server, e.g. http://127.0.0.1:8000/v1, or a list (a pool)
    api_key_env: str | None = None  # openai: NAME of the environment variable holding the key (never the key)
    max_concurrency: PositiveInt = 8  # openai: requests in flight at once, per server
    request_timeout: PositiveFloat = 60.0  # openai: seconds per request before it is retried
    max_retries: NonNegativeInt = 5  # openai: retries on 429, 5xx, timeouts and malformed replies (exponential backoff)
    endpoint_cooldown: PositiveFloat = 10.0  # openai pool: seconds a failing server sits out before it is tried again
    scripted_words: PositiveInt = 60  # scripted: words per reply (one token each, at most the stage's max_tokens)
    scripted_option_mass: Fraction = 0.9  # scripted: P(A) + P(B) (or of the ratings) it gives a judge

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class Models:
    """Models by role. The critic critiques and revises; in the CAI paper it is the policy itself."""

    policy: ModelConfig = field(default_factory=ModelConfig)
    critic: ModelConfig | None = None  # None: same model (and same engine) as the policy
    judge: ModelConfig | None = None  # compares and scores; None: the policy's model and engine


@dataclass(frozen=True)
class RespondConfig:
    """Stage `respond`: sample `n` responses per prompt."""

    n: PositiveInt = 2
    temperature: NonNegativeFloat = 0.8  # 0: greedy
    # 1.0 (off) by default: on vLLM's CPU engine top_p < 1 sorts the whole vocabulary every token (0.95 measured 4.1x
    # slower with the embedded model's 262k vocabulary); min_p truncates the tail at no measured cost (docs/method.md)
    top_p: TopP = 1.0
    min_p: Fraction = 0.0  # keep tokens with at least min_p x the top token's probability; 0: off
    max_tokens: PositiveInt = 128
    stop: tuple[str, ...] | None = None  # None: COMPLETION_STOP for base models, none for chat models

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class CritiqueConfig:
    """Stage `critique` (SL-CAI): `rounds` of critique then revision, one principle drawn per round."""

    rounds: PositiveInt = 1
    temperature: NonNegativeFloat = 0.3
    top_p: TopP = 1.0  # off by default, as in RespondConfig (its cost on vLLM's CPU engine)
    min_p: Fraction = 0.0
    max_tokens: PositiveInt = 128
    stop: tuple[str, ...] | None = None
    principles: tuple[str, ...] = ()  # draw only from these principle names; empty: all

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class JudgeConfig:
    """Stage `judge` (RL-CAI): soft preference labels P(a > b) from an AI judge, per principle."""

    pairs: Literal["all", "one", "none"] = "all"  # sampled-response pairs per prompt: every pair, one seeded pair, or none
    revisions: bool = True  # also judge (initial response, final revision) pairs from the critique stage
    principles_per_comparison: PositiveInt = 1  # principle ensembling: average the label over k drawn principles
    principles: tuple[str, ...] = ()  # draw only from these principle names; empty: all
    both_orders: bool = True  # score (a, b) and (b, a) and average: cancels position bias
    method: Literal["auto", "logprobs", "parse"] = "auto"  # auto: option log-probabilities, else parse a verdict
    chain_of_thought: bool = False  # let the judge reason first, then read the option probabilities
    cot_clamp: tuple[float, ...] | None = (0.4, 0.6)  # CoT probabilities sit near 0 or 1; None: no clamp
    cot_max_tokens: PositiveInt = 160
    max_tokens: PositiveInt = 64  # parse method: length of the generated verdict (chat models write a sentence first)
    min_option_mass: Fraction = 0.5  # P(A) + P(B) below this (the judge means to say something else): no label for that order
    min_margin: Fraction = 0.0  # pairs: drop pairs with |2 * label - 1| below this
    drop_inconsistent: bool = False  # pairs: drop pairs whose two orders disagree on the winner
    tie_band: Annotated[float, Range(0, 0.5)] = 0.05  # pairs: a label within this of 0.5 is a tie, not a preference (as in eval)
    drop_ties: bool = True  # pairs: drop ties (labels within tie_band of 0.5); false exports them as weak pairs

    def __post_init__(self):
        check_ranges(self)
        if self.cot_clamp is not None and not (len(self.cot_clamp) == 2 and 0 <= self.cot_clamp[0] <= self.cot_clamp[1] <= 1):
            raise ValueError(f"cot_clamp must be [low, high] with 0 <= low <= high <= 1, got {list(self.cot_clamp)}")


@dataclass(frozen=True)
class ScoreConfig:
    """Stage `score` (pointwise, d-RLAIF): a 1-10 rating per answer, the mean over the digit tokens."""

    targets: Literal["responses", "all"] = "responses"  # all: final revisions too
    principles_per_item: PositiveInt = 1  # average the rating over k drawn principles
    principles: tuple[str, ...] = ()  # draw only from these principle names; empty: all
    best_vs_worst: bool = True  # add a best-vs-worst-of-n preference pair per prompt
    # smallest score difference for a best-vs-worst pair: its label is (1 + gap / 9) / 2, so 0.9 is the tie band 0.05
    min_gap: Annotated[float, Range(0, 9)] = 0.9
    min_digit_mass: Fraction = 0.5  # P("1") + ... + P("10") below this (the judge is not giving a number): unrated

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class EvalConfig:
    """Stage `eval` (after training): each trained policy against the starting model, judged on held-out prompts."""

    prompts: str  # held-out prompts (JSONL, CSV, text); never the training prompts
    limit: PositiveInt | None = None  # use only the first N
    policies: tuple[str, ...] = ()  # training stages whose model to evaluate; empty: every trained policy of this run
    harmless: str | None = None  # red-team prompts: also rate each policy's answers (and the start's) acceptable or not
    max_tokens: PositiveInt = 128
    temperature: NonNegativeFloat = 0.0  # 0: greedy answers
    principles: NonNegativeInt = 0  # principles per judgement; 0: every principle (a result for each)
    tie_band: Annotated[float, Range(0, 0.5)] = 0.05  # a soft label within this of 0.5 is a tie
    threshold: Annotated[float, Range(0, 1, open_high=True)] = 0.5  # harmless: an answer is harmless when the judge's P(harmless) is above this

    def __post_init__(self):
        check_ranges(self)
        for name in self.policies:
            if name not in POLICIES:
                raise ValueError(f"policies: {name!r} is not a policy-training stage ({', '.join(POLICIES)})")


@dataclass(frozen=True)
class ReportConfig:
    """Stage `report`: the run's HTML report with plots (`rlaif report`), written last."""

    output: str | None = None  # directory for report.html and its figures; default <run>/report


@dataclass(frozen=True)
class Stages:
    """Which stages run; a stage runs when its key is present (`respond: {}` takes the defaults)."""

    TRAINING = NAMES  # spec/methods.py; each also a field below (a dataclass field cannot be made from a table)

    respond: RespondConfig | None = None
    critique: CritiqueConfig | None = None
    judge: JudgeConfig | None = None
    score: ScoreConfig | None = None
    # training stages, run after the datasets are written, in this order; each block takes the keys of a
    # training file (docs/training.md) with dataset = this run, output_dir = <run>/<method>, model = the policy's
    sft: dict[str, Any] | None = None
    reward: dict[str, Any] | None = None
    dpo: dict[str, Any] | None = None
    grpo: dict[str, Any] | None = None
    rloo: dict[str, Any] | None = None
    ppo: dict[str, Any] | None = None
    eval: EvalConfig | None = None  # after training: win rate (and harmlessness) of the trained policies
    report: ReportConfig | None = None  # after everything else


@dataclass(frozen=True)
class ScaleConfig:
    """Where local engines run: in this process, or as `replicas` Ray actors (docs/scaling.md)."""

    engine: Literal["inprocess", "ray"] = "inprocess"
    address: str | None = None  # ray: "auto" (the cluster `ray start` made on this node) or HOST:PORT; None: a local Ray
    replicas: PositiveInt = 1  # ray: engines of each model, one Ray actor each; requests are split evenly between them
    tensor_parallel: PositiveInt = 1  # ray + vllm: GPUs per replica (vLLM tensor_parallel_size)
    num_cpus_per_replica: PositiveFloat | None = None  # ray: None: 1 on a GPU cluster, else the cluster's CPUs / replicas

    def __post_init__(self):
        check_ranges(self)
        if self.engine == "inprocess":
            changed = [k for k in ("address", "replicas", "tensor_parallel", "num_cpus_per_replica")
                       if getattr(self, k) != getattr(ScaleConfig, k)]
            if changed:
                raise ValueError(f"{', '.join(changed)} need engine: ray (the in-process engine is one replica)")


@dataclass(frozen=True)
class Pipeline:
    """A pipeline file: inputs, models, stages and where the run directory goes."""

    name: str
    constitution: str
    prompts: str
    stages: Stages
    models: Models = field(default_factory=Models)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    seed: Annotated[int, Range(0, 2**32 - 1)] = 0  # numpy (inside vLLM and TRL) takes no other seeds
    limit: PositiveInt | None = None  # use only the first N prompts
    output: str | None = None  # run directory; default outputs/<name>
    templates: str | None = None  # a directory whose templates override rlaif/prompts/
    few_shot: NonNegativeInt | None = None  # use only the first N few-shot examples of the constitution
    batch_size: PositiveInt = 64  # requests per generate call; also how much a crash can lose
    drop_degenerate: bool = True  # keep revisions that echo a request or the prompt, copy an example, loop or were cut off out of the datasets
    pairs_from: str | None = None  # RL phase (CAI): sample the judged pairs from this training stage's model (e.g. sft) after it trains
    file: str = field(default="", compare=False, metadata={"yaml": False})
    lines: dict = field(default_factory=dict, compare=False, repr=False, metadata={"yaml": False})

    def __post_init__(self):
        check_ranges(self)

    def where(self, key: str) -> tuple[str, int | None]:
        """File and line of a dotted key, for errors found after loading."""
        return self.file, self.lines.get(key)

    def snapshot(self) -> dict:
        """The settings as plain data, for run.json."""
        data = asdict(self)
        data.pop("lines")
        return data

    @property
    def critic(self) -> ModelConfig:
        """The critic's model settings (the policy's unless set)."""
        return self.models.critic or self.models.policy

    @property
    def judge_model(self) -> ModelConfig:
        """The judge's model settings (the policy's unless set); not `stages.judge`, the judge stage's settings."""
        return self.models.judge or self.models.policy


def _apply_set(data: YamlMap, assignment: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML (so 4 is an int). Sections on the way that
    the file does not have are created, so a typo in one is reported like a typo in the file."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = _without_lines(parse_yaml(raw, "--set")) if raw else ""
    except UserError:
        value = raw
    node, parts = data, key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = YamlMap()
            node.from_set.add(part)
        node = node[part]
    node[parts[-1]] = value
    if isinstance(node, YamlMap):
        node.key_lines.pop(parts[-1], None)  # an override has no line in the file
        node.from_set.add(parts[-1])


def _without_lines(value):
    """A --set value's own lines are lines of the command line, not of the file: drop them."""
    if isinstance(value, dict):
        return YamlMap({k: _without_lines(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_without_lines(v) for v in value]
    return value


def _check_room(pipeline: Pipeline, builder: Builder) -> None:
    """A vLLM engine answers a prompt only if prompt + max_tokens fit in max_model_len: max_tokens >= max_model_len
    would turn every request into an empty `prompt_too_long` output, after the model has loaded."""
    s, m = pipeline.stages, pipeline.models
    roles = {"policy": m.policy, "critic": m.critic or m.policy, "judge": m.judge or m.policy}
    uses = [("respond", "max_tokens", "policy"), ("critique", "max_tokens", "critic"), ("judge", "max_tokens", "judge"),
            ("judge", "cot_max_tokens", "judge"), ("eval", "max_tokens", "policy")]
    for stage, key, role in uses:
        cfg, model = getattr(s, stage), roles[role]
        if cfg is None or model.backend != "vllm" or getattr(cfg, key) < model.max_model_len:
            continue
        if key == "cot_max_tokens" and not cfg.chain_of_thought:
            continue
        owner = role if getattr(m, role) is not None else "policy"
        builder.error(f"stages.{stage}.{key}", f"{getattr(cfg, key)} tokens leave no room for the prompt in "
                      f"models.{owner}.max_model_len ({model.max_model_len})", builder.lines.get(f"stages.{stage}.{key}")
                      or builder.lines.get(f"stages.{stage}"))
    if builder.errors:
        raise UserErrors(builder.errors) if len(builder.errors) > 1 else builder.errors[0]


def resolve_path(value: str, base: Path) -> str:
    """A path as given if it exists from here, else relative to the pipeline file's directory."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists() or not (base / p).exists():
        return str(p)
    return str(base / p)


def load_pipeline(path: str | Path, overrides: list[str] = (), **cli) -> Pipeline:
    """Load a pipeline file, apply `--set` overrides and CLI options, validate everything at once."""
    data = load_yaml(path, "pipeline file")
    for assignment in overrides:
        _apply_set(data, assignment)
    for key, value in cli.items():  # --constitution, --prompts, --limit, --output: taken literally
        if value is not None:
            data[key] = value
            data.key_lines.pop(key, None)
    builder = Builder(str(path))
    pipeline = builder.build(Pipeline, data, line=1)
    _check_room(pipeline, builder)
    base = Path(path).resolve().parent
    paths = {k: resolve_path(getattr(pipeline, k), base) for k in ("constitution", "prompts", "templates") if getattr(pipeline, k)}
    return replace(pipeline, file=str(path), lines=builder.lines, **paths)
