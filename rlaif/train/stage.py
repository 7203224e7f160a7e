"""A pipeline's training stages: what each one starts from, in which order they run, and when one is skipped.

Stages chain as in the CAI paper: a training stage may start from an earlier stage's output (`model: sft`, or the
path `<run>/sft`), and the RL-phase pairs may be sampled from a trained stage's model (`pairs_from: sft`), so the
run order is: the SL phase's data, the stages `pairs_from` needs, the RL-phase pairs, then every other stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from ..rundir import atomic
from ..errors import UserError, UserErrors
from ..spec.loader import YamlMap
from ..rundir.versions import weights_fingerprint
from ..spec.methods import METHODS, POLICIES



def stage_output(pipeline, run_dir: Path, method: str) -> Path:
    """Where a training stage writes its model: its `output_dir`, else <run>/<method> (<run>/sft-model for sft)."""
    block = getattr(pipeline.stages, method) or {}
    return Path(block["output_dir"]) if block.get("output_dir") else run_dir / METHODS[method].output_dir


def trained_model(pipeline, run_dir: Path, method: str):
    """The model config of a training stage's output: the policy's engine settings, a local backend."""
    start = pipeline.models.policy
    local = start if start.backend != "openai" else replace(start, backend="vllm", model="default", base_url=None)
    return replace(local, model=str(stage_output(pipeline, run_dir, method)))


def training_stages(pipeline) -> list[str]:
    """The training stages the pipeline asks for, in the order they run."""
    return [m for m in pipeline.stages.TRAINING if getattr(pipeline.stages, m) is not None]


def stage_named(pipeline, run_dir: Path, value) -> str | None:
    """The training stage of this pipeline a model setting names (`sft`, its output path, or <run>/sft), or None."""
    if not isinstance(value, str):
        return None
    path = Path(value).expanduser().resolve()
    for name in training_stages(pipeline):
        if value == name or path in (stage_output(pipeline, run_dir, name).resolve(), (run_dir / name).resolve()):
            return name
    return None


def _reference(pipeline, run_dir: Path, method: str, value, key: str, allowed: tuple[str, ...]) -> str | None:
    """The earlier stage a setting refers to, checked: it exists, it is earlier, it makes the right kind of model."""
    file, line = pipeline.where(f"stages.{method}")
    order = pipeline.stages.TRAINING
    name = stage_named(pipeline, run_dir, value)
    if name is None:
        if value in order:
            raise UserError(f"stages.{method}.{key}: {value!r} names a training stage this pipeline does not have", file, line)
        return None
    if name not in allowed:
        raise UserError(f"stages.{method}.{key}: stage {name!r} does not make that kind of model "
                        f"({key} takes {' or '.join(allowed)})", file, line)
    if order.index(name) >= order.index(method):
        raise UserError(f"stages.{method}.{key}: {name!r} trains after {method} (stages train in the order "
                        f"{', '.join(order)}); a stage can start only from an earlier one", file, line)
    return name


def upstream(pipeline, run_dir: Path, method: str) -> list[str]:
    """The earlier stages whose output `method` starts from, nearest first (the chain `model: sft` builds)."""
    block = getattr(pipeline.stages, method) or {}
    name = _reference(pipeline, run_dir, method, block.get("model"), "model", POLICIES)
    return [name, *upstream(pipeline, run_dir, name)] if name else []


def training_config(pipeline, run_dir: Path, method: str, check_dataset: bool = True):
    """A training stage's block as a TrainConfig: this run's datasets, <run>/<method>, the policy's model by default.

    `model: sft` (or `reward: {model: reward}`) names an earlier stage's output (stage_output); before that stage
    has trained, the checks run on the model it starts from instead.
    """
    from .config import train_config_from_data

    block = getattr(pipeline.stages, method)
    data = YamlMap(block)
    data.line, data.key_lines = pipeline.where(f"stages.{method}")[1], dict(getattr(block, "key_lines", {}))
    data.setdefault("dataset", str(run_dir))
    data.setdefault("output_dir", str(stage_output(pipeline, run_dir, method)))
    data.setdefault("model", pipeline.models.policy.model if pipeline.models.policy.backend != "openai" else "default")
    chain = upstream(pipeline, run_dir, method)
    start = stage_output(pipeline, run_dir, chain[0]) if chain else None
    if chain:  # the earliest real model stands in for checks while the stage output does not exist yet
        data["model"] = str(start) if start.is_dir() else training_config(pipeline, run_dir, chain[-1], check_dataset=False).model
    reward = data.get("reward")
    reward_stage = _reference(pipeline, run_dir, method, reward.get("model"), "reward.model", ("reward",)) \
        if isinstance(reward, dict) else None
    if reward_stage and not stage_output(pipeline, run_dir, reward_stage).is_dir():
        data["reward"] = YamlMap(reward, model="default")
        data["reward"].line, data["reward"].key_lines = getattr(reward, "line", None), dict(getattr(reward, "key_lines", {}))
    try:
        cfg = train_config_from_data(data, pipeline.file, method, check_dataset)
    except UserErrors as e:  # say which stage each problem is in
        raise UserErrors([UserError(f"stages.{method}: {x.message}", x.file, x.line) for x in e.errors]) from None
    except UserError as e:
        raise UserError(f"stages.{method}: {e.message}", e.file, e.line) from None
    if chain:
        cfg = replace(cfg, model=str(start))
    if reward_stage:
        cfg = replace(cfg, reward=replace(cfg.reward, model=str(stage_output(pipeline, run_dir, reward_stage))))
    return cfg


def check_pairs_from(pipeline, run_dir: Path) -> list[str]:
    """Plan-time checks of `pairs_from`; the stages that must train before the RL-phase pairs are sampled."""
    name = pipeline.pairs_from
    if name is None:
        return []
    file, line = pipeline.where("pairs_from")
    if name not in POLICIES or getattr(pipeline.stages, name) is None:
        have = [m for m in training_stages(pipeline) if m in POLICIES]
        raise UserError(f"pairs_from: {name!r} is not a policy-training stage of this pipeline (it has: "
                        f"{', '.join(have) or 'none'})", file, line)
    if not (pipeline.stages.judge or pipeline.stages.score):
        raise UserError("pairs_from: the RL-phase pairs need a judge or score stage to label them", file, line)
    before = [name, *upstream(pipeline, run_dir, name)]
    for stage in before:
        if stage != "sft" and "dataset" not in (getattr(pipeline.stages, stage) or {}):
            raise UserError(f"pairs_from: {name!r} needs stage {stage!r} trained first, but {stage} trains on this run's "
                            "preference pairs, which are sampled from that model: a cycle", file, line)
    return [m for m in training_stages(pipeline) if m in before]


def run_training(p, reporter, methods: list[str]) -> dict:
    """Train `methods` in order; a stage whose config, data and starting weights did not change is skipped."""
    from . import train

    results = {}
    for method in methods:
        cfg = training_config(p.pipeline, p.run_dir, method)
        done = Path(cfg.output_dir) / "rlaif_train.json"
        settings = {k: v for k, v in asdict(cfg).items() if k not in ("lines", "file")}
        stamp = {"config": json.loads(json.dumps(settings, default=str)), "data": _fingerprint(cfg.dataset)}
        if fingerprint := weights_fingerprint(cfg.model):  # an earlier stage retrained: this one starts elsewhere
            stamp["model"] = fingerprint
        last = _read_record(done)
        if last is not None and last.get("stamp") == stamp:
            reporter.print(f"{method}: unchanged since the last run, skipped ({cfg.output_dir})")
            results[method] = last["metrics"] | {"skipped": True}
            continue
        reporter.print(f"{method}: training {cfg.model} on {cfg.dataset} -> {cfg.output_dir}")
        results[method] = train(cfg, log=reporter.print)
        record = json.loads(done.read_text())
        atomic.write_json(done, record | {"stamp": stamp})
    return results


def _read_record(path: Path) -> dict | None:
    """The last training's rlaif_train.json; absent or unreadable (an older rlaif wrote it in place) means train again."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "metrics" in record else None


def _fingerprint(dataset_dir: str) -> str:
    """The saved dataset's own fingerprint (datasets writes it in state.json)."""
    state = Path(dataset_dir) / "state.json"
    return json.loads(state.read_text()).get("_fingerprint", "") if state.is_file() else ""

