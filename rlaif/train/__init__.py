"""`rlaif train sft|reward|dpo|grpo|rloo|ppo`: TRL's stable trainers (and rlaif's PPO) on the datasets a run exports."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..rundir import atomic
from ..rundir.lock import lock_owner
from ..backends.pool import DEFAULT_MODEL_ID
from ..rundir.versions import versions
from .common import confidences, load_tokenizer  # noqa: F401  (public as rlaif.train.confidences, rlaif.train.load_tokenizer)
from ..runlog import capture

LOG_NAME = "train.log"


def train(cfg, log=print) -> dict:
    """Run the trainer that `cfg.method` names; its metrics also go to OUTPUT_DIR/rlaif_train.json.

    An output_dir inside a run directory (outputs/quickstart/dpo) holds that run's lock meanwhile (rlaif.rundir.lock). What the
    libraries print goes to OUTPUT_DIR/train.log (inside `rlaif run`: to the run's run.log; rlaif.runlog).
    """
    from . import dpo, online, reward, sft

    start = time.time()
    runners = {"sft": sft.run, "reward": reward.run, "dpo": dpo.run, "grpo": online.run, "rloo": online.run, "ppo": online.run_ppo}
    with lock_owner(cfg.output_dir), capture(Path(cfg.output_dir) / LOG_NAME):
        metrics = runners[cfg.method](cfg, log)
    model_id = DEFAULT_MODEL_ID if cfg.model == "default" else cfg.model  # "default" alone would not say which weights
    record = {"method": cfg.method, "model_id": model_id, "config": {k: v for k, v in asdict(cfg).items() if k != "lines"},
              "metrics": metrics, "seconds": round(time.time() - start, 1), "versions": versions()}
    atomic.write_json(Path(cfg.output_dir, "rlaif_train.json"), record)
    return metrics
