"""Training files: YAML -> a frozen TrainConfig, every error found before any weights load."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from ..spec.config import _apply_set, resolve_path
from ..errors import UserError, UserErrors
from ..backends.pool import check_model_path
from ..spec.ranges import Fraction, NonNegativeFloat, PositiveInt, Range, check_ranges
from ..spec.loader import Builder, YamlList, YamlMap, load_yaml, short
from ..spec.methods import METHODS, NAMES, ONLINE, listing
from .common import find_dataset

RENAMED = {"label_smoothing": "rdpo"}  # older names, for the error message


@dataclass(frozen=True)
class JudgeReward:
    """The AI judge's pointwise 1-10 rating as the reward (rlaif.train.rewards.JudgeScoreReward)."""

    constitution: str
    model: str = "default"
    backend: Literal["hf", "vllm"] = "hf"
    principles_per_item: PositiveInt = 1

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class RewardSource:
    """Where online RL gets its reward: a trained reward model directory, or the AI judge."""

    model: str | None = None  # a directory written by `rlaif train reward`
    judge: JudgeReward | None = None
@dataclass(frozen=True)
class WatchConfig:
    """Reward-hacking watch (grpo, rloo, ppo): every `every` steps, the judge's win rate of the policy over its start."""

    prompts: str  # fixed held-out prompts (JSONL, CSV, text), answered greedily at every check
    every: PositiveInt = 10  # training steps between checks (TRL: checked at the first log at or after each multiple)
    limit: PositiveInt = 16  # use the first N prompts
    max_new_tokens: PositiveInt = 64
    principles_per_comparison: PositiveInt = 1
    judge: JudgeReward | None = None  # default: reward.judge (required when the reward is a reward model)
    window: Annotated[int, Range(2)] = 3  # checks over which "reward rising while win rate falls" is judged (a trend needs two)
    min_winrate_drop: Fraction = 0.05  # how far the win rate must fall across the window to warn
    kl_bound: NonNegativeFloat | None = None  # warn when the training KL passes this (nats); 0: whenever it is above 0

    def __post_init__(self):
        check_ranges(self)


# DPOConfig values under which TRL's loss is the plain sigmoid loss that cdpo adds its per-pair term to
CDPO_DEFAULTS = {"loss_type": ["sigmoid"], "loss_weights": None, "f_divergence_type": "reverse_kl", "ld_alpha": None,
                 "use_weighting": False, "label_smoothing": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    """A training file: which trainer, on which model and dataset, with TRL's own settings passed through."""

    dataset: str  # a run directory (its prefs/ or sft/) or a datasets.save_to_disk directory
    output_dir: str
    method: Literal[NAMES] | None = None  # may be left to the command line
    model: str = "default"  # "default" (the embedded model), a local HF directory, or a hub id
    soft_labels: str | None = None  # one of METHODS[method].soft_labels (checked per method); None: the method's default
    eval_fraction: Annotated[float, Range(0, 1, open_high=True)] | None = None  # reward: share of pairs held out for pairwise accuracy (default 0.2)
    peft: dict[str, Any] | None = None  # peft.LoraConfig fields; absent: full fine-tuning
    reward: RewardSource | None = None  # grpo, rloo, ppo: the reward model or the AI judge
    ppo: dict[str, Any] = field(default_factory=dict)  # ppo: fields of rlaif.train.ppo.PPOConfig, one-to-one
    watch: WatchConfig | None = None  # grpo, rloo, ppo: reward-hacking watch (rlaif.train.watch)
    trl: dict[str, Any] = field(default_factory=dict)  # fields of SFTConfig / RewardConfig / DPOConfig, one-to-one
    file: str = field(default="", compare=False, metadata={"yaml": False})
    lines: dict = field(default_factory=dict, compare=False, repr=False, metadata={"yaml": False})

    def where(self, key: str) -> tuple[str, int | None]:
        """File and line of a dotted key (`trl.max_steps`, `peft.target_modules[0]`), for errors."""
        for k in (key, key.split("[")[0], key.split(".")[0]):  # an override has no line: fall back to its block
            if self.lines.get(k):
                return self.file, self.lines[k]
        return self.file, None


def load_train_config(path: str | Path, method: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Load a training file, apply `--set` overrides, and validate everything at once (weights are not loaded)."""
    data = load_yaml(path, "training file")
    for assignment in overrides:
        _apply_set(data, assignment)
    return train_config_from_data(data, str(path), method)


def train_config_from_data(data: YamlMap, path: str, method: str | None, check_dataset: bool = True) -> TrainConfig:
    """Validate a training block (a training file, or a training stage of a pipeline file: lines are the file's)."""
    builder = Builder(str(path))
    cfg = builder.build(TrainConfig, data, line=1)
    lines = {**builder.lines, **_key_lines(data.get("trl"), "trl"), **_key_lines(data.get("peft"), "peft"),
             **_key_lines(data.get("ppo"), "ppo")}
    cfg = replace(cfg, file=str(path), lines=lines)
    if method and cfg.method and method != cfg.method:
        raise UserError(f"method: this file trains {cfg.method!r}; run `rlaif train {cfg.method} {path}`", *cfg.where("method"))
    method = method or cfg.method
    if method is None:
        raise UserError("missing `method` (sft, reward or dpo)", str(path), 1)
    errors: list[UserError] = []
    soft = cfg.soft_labels or METHODS[method].soft_labels[0]
    if soft not in METHODS[method].soft_labels:
        allowed = " or ".join(METHODS[method].soft_labels)
        hint = f" ({soft!r} is now {RENAMED[soft]!r}; the per-pair default is {METHODS[method].soft_labels[0]!r})" if soft in RENAMED else ""
        errors.append(UserError(f"soft_labels: {method} takes {allowed}, got {soft!r}{hint}", *cfg.where("soft_labels")))
    fraction = cfg.eval_fraction
    if method == "reward" and not 0 <= (fraction := 0.2 if fraction is None else fraction) < 1:
        errors.append(UserError(f"eval_fraction: must be within [0, 1), got {fraction}", *cfg.where("eval_fraction")))
    elif method != "reward" and fraction is not None:
        errors.append(UserError(f"eval_fraction: only reward holds out pairs, not {method}", *cfg.where("eval_fraction")))
    trl, ppo = (_check_trl(cfg, method, soft, errors), cfg.ppo) if method != "ppo" else ({}, _check_ppo(cfg, errors))
    if method != "ppo" and cfg.ppo:
        errors.append(UserError(f"ppo: only method ppo reads the ppo block, not {method}", *cfg.where("ppo")))
    if cfg.peft is not None:
        try:
            from peft import LoraConfig
        except ImportError:
            errors.append(UserError("peft: LoRA needs the peft package (pip install peft)", *cfg.where("peft")))
        else:
            _unknown_keys(cfg, "peft", LoraConfig, errors)
    _collect(errors, check_model_path, cfg.model, *cfg.where("model"))
    _collect(errors, _check_reward, cfg, method)
    _collect(errors, _check_watch, cfg, method)
    dataset = _collect(errors, find_dataset, cfg, method) if check_dataset else cfg.dataset
    if errors:
        raise UserErrors(errors) if len(errors) > 1 else errors[0]
    return replace(cfg, method=method, soft_labels=soft, eval_fraction=fraction, trl=trl, ppo=ppo, dataset=dataset)


def _key_lines(node, prefix: str) -> dict:
    """Dotted key -> line for every key and list item under `node` (the trl and peft blocks)."""
    is_list = isinstance(node, YamlList)
    pairs = node.key_lines.items() if isinstance(node, YamlMap) else enumerate(node.item_lines) if is_list else ()
    out = {}
    for k, line in pairs:
        sub = f"{prefix}[{k}]" if is_list else f"{prefix}.{k}"
        out.update({sub: line, **_key_lines(node[k], sub)})
    return out


def _unknown_keys(cfg: TrainConfig, block: str, cls, errors: list) -> dict:
    """Report keys of a block that are not fields of `cls`, with the closest field; return the fields."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in getattr(cfg, block) or {}:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(UserError(f"{block}.{key}: {cls.__name__} has no field {key!r}{hint}", *cfg.where(f"{block}.{key}")))
    return fields


def _check_trl(cfg: TrainConfig, method: str, soft: str, errors: list) -> dict:
    """The `trl` block with scalar values checked; the soft-label settings it must not contradict."""
    import trl as trl_lib

    cls = {"sft": trl_lib.SFTConfig, "reward": trl_lib.RewardConfig, "dpo": trl_lib.DPOConfig,
           "grpo": trl_lib.GRPOConfig, "rloo": trl_lib.RLOOConfig}[method]
    fields, out = _unknown_keys(cfg, "trl", cls, errors), {}
    for key, value in cfg.trl.items():
        if key == "output_dir":
            errors.append(UserError("trl.output_dir: set output_dir at the top level of the file", *cfg.where("trl.output_dir")))
        elif key in fields:
            try:
                out[key] = _scalar(fields[key].type, value)
            except ValueError as e:
                errors.append(UserError(f"trl.{key}: {e}", *cfg.where(f"trl.{key}")))
    if soft == "cdpo":
        for key, default in CDPO_DEFAULTS.items():
            value = [out[key]] if key == "loss_type" and isinstance(out.get(key), str) else out.get(key, default)
            if value != default and not (key == "loss_weights" and value == [1.0]):
                errors.append(UserError(f"trl.{key}: soft_labels cdpo adds its per-pair term to TRL's sigmoid loss, so "
                                        f"{key} must stay {default!r}; use soft_labels rdpo (robust), weight or none "
                                        "for other DPO losses", *cfg.where(f"trl.{key}")))
    if soft == "rdpo":
        if "label_smoothing" in out:
            errors.append(UserError("trl.label_smoothing: soft_labels rdpo sets it to mean(1 - p_chosen); remove one",
                                    *cfg.where("trl.label_smoothing")))
        losses = [out["loss_type"]] if isinstance(out.get("loss_type"), str) else out.get("loss_type", ["robust"])
        if list(losses) != ["robust"]:
            errors.append(UserError(f"trl.loss_type: soft_labels rdpo is TRL's robust loss, got {losses}; for "
                                    "exo_pair or aot set trl.label_smoothing yourself with soft_labels none",
                                    *cfg.where("trl.loss_type")))
    return out


def _scalar(tp, value):
    """Check float, int and bool fields (maybe None); other types are left to TRL's own checks."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    kinds = [a for a in args if a is not type(None)]
    if value is None or len(kinds) != 1 or kinds[0] not in (float, int, bool):
        return value
    kind = kinds[0]
    if kind is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 5e-6 (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, bool) == (kind is bool) and isinstance(value, (float, int) if kind is float else kind):
        try:
            finite = kind is not float or math.isfinite(value)  # no TRL or PPO setting means anything at inf or nan
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise ValueError(f"must be a finite number, got {short(value)}")
        return value
    raise ValueError(f"expected {kind.__name__}, got {type(value).__name__} {short(value)}")


def _collect(errors: list, check, *args):
    """Run one check; a UserError joins the list instead of stopping the others."""
    try:
        return check(*args)
    except UserError as e:
        errors.append(e)


def _check_reward(cfg: TrainConfig, method: str) -> None:
    """The online methods need exactly one reward source, and it must exist; other methods take none."""
    r = cfg.reward
    if method not in ONLINE:
        if r is not None:
            raise UserError(f"reward: only {listing(ONLINE, 'and')} take a reward source, not {method}", *cfg.where("reward"))
        return
    if r is None or (r.model is None) == (r.judge is None):
        raise UserError(f"reward: {method} needs exactly one of reward.model (a reward model directory) or reward.judge",
                        *cfg.where("reward") if r is not None else (cfg.file, 1))
    if r.model is not None:
        check_model_path(r.model, *cfg.where("reward.model"))
        return
    from ..spec.constitution import load_constitution

    check_model_path(r.judge.model, *cfg.where("reward.judge.model"))
    constitution = load_constitution(resolve_path(r.judge.constitution, Path(cfg.file).resolve().parent))
    for p in constitution.principles:
        if not p.comparison:
            raise UserError(f"principle {p.name!r} has no `comparison` question, which the judge reward needs", constitution.path, p.line)


def _check_watch(cfg: TrainConfig, method: str) -> None:
    """The watch needs an online method, a judge (its own or the reward's) and prompts that load."""
    w = cfg.watch
    if w is None:
        return
    if method not in ONLINE:
        raise UserError(f"watch: only {listing(ONLINE, 'and')} are watched for reward hacking, not {method}", *cfg.where("watch"))
    if w.judge is None and (cfg.reward is None or cfg.reward.judge is None):
        raise UserError("watch.judge: the reward is a reward model, so the watch needs its own judge "
                        "(constitution, model, backend)", *cfg.where("watch"))
    if w.judge is not None:
        from ..spec.constitution import load_constitution

        check_model_path(w.judge.model, *cfg.where("watch.judge.model"))
        load_constitution(resolve_path(w.judge.constitution, Path(cfg.file).resolve().parent))
    from ..spec.inputs import load_prompts

    path = resolve_path(w.prompts, Path(cfg.file).resolve().parent)
    if not Path(path).exists():
        raise UserError(f"watch.prompts: {w.prompts!r} not found", *cfg.where("watch.prompts"))
    load_prompts(path, w.limit)  # a bad row fails now, naming its own file and line


def _check_ppo(cfg: TrainConfig, errors: list) -> dict:
    """PPO has its own config (rlaif.train.ppo.PPOConfig), given in the `ppo` block; `trl` must stay empty."""
    from .ppo import PPOConfig

    if cfg.trl:
        errors.append(UserError("trl: ppo is rlaif's own trainer; put its settings in the `ppo` block", *cfg.where("trl")))
    fields = _unknown_keys(cfg, "ppo", PPOConfig, errors)
    hints = typing.get_type_hints(PPOConfig)  # its annotations are strings (postponed evaluation)
    values = {k: _collect(errors, _scalar_or_error, cfg, k, hints[k], v) for k, v in cfg.ppo.items() if k in fields}
    if "output_dir" in values:
        errors.append(UserError("ppo.output_dir: set output_dir at the top level of the file", *cfg.where("ppo.output_dir")))
    else:
        try:
            PPOConfig(**values, output_dir=cfg.output_dir)
        except (TypeError, ValueError) as e:
            errors.append(UserError(f"ppo: {e}", *cfg.where("ppo")))
    return values


def _scalar_or_error(cfg: TrainConfig, key: str, tp, value):
    try:
        return _scalar(tp, value)
    except ValueError as e:
        raise UserError(f"ppo.{key}: {e}", *cfg.where(f"ppo.{key}")) from None
