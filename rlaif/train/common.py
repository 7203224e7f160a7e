"""What the trainers share: the dataset a config names, per-pair confidences, TRL and LoRA configs, the tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..spec.config import resolve_path
from ..errors import UserError
from ..spec.methods import METHODS
from ..spec.templates import DEFAULT_DIR

CHAT_TEMPLATE = DEFAULT_DIR / "training" / "chat_template.jinja"


def find_dataset(cfg, method: str) -> str:
    """The dataset directory to train on: a run directory's prefs/ or sft/, or a saved dataset; checked non-empty."""
    import datasets

    from ..export.rows import load_saved

    file, line = cfg.where("dataset")
    path = Path(resolve_path(cfg.dataset, Path(cfg.file).resolve().parent))
    sub = path / ("sft" if method == "sft" else "prefs")
    path = sub if sub.is_dir() else path
    if not path.exists():
        raise UserError(f"dataset: {cfg.dataset!r} not found", file, line)
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        why = "is neither a run directory nor a saved dataset (save_to_disk)"
        raise UserError(f"dataset: {str(path)!r} {why}", file, line)
    try:
        ds = load_saved(path, str(path))
    except UserError as e:  # a damaged arrow file or state.json: the config's line, then which directory and why
        raise UserError(f"dataset: {e.message}", file, line) from None
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"dataset: {str(path)!r} holds splits {list(ds)}; point at one split's directory", file, line)
    missing = [c for c in METHODS[method].columns if c not in ds.column_names]
    if method == "sft" and "messages" in ds.column_names:
        missing = []  # an older sft/ export: rlaif.train.sft splits off the last assistant turn
    if missing:
        raise UserError(f"dataset: {str(path)!r} has no {', '.join(missing)} column (a {method} dataset needs "
                        f"{', '.join(METHODS[method].columns)})", file, line)
    if len(ds) == 0:
        raise UserError(f"dataset: {str(path)!r} has no rows", file, line)
    return str(path)


def confidences(dataset) -> np.ndarray:
    """How sure the labels are that `chosen` wins, per row: p_chosen, else (1 + margin) / 2, else 1 (unjudged)."""
    p, margin = ([None] * len(dataset) if c not in dataset.column_names else dataset[c] for c in ("p_chosen", "margin"))
    # scored best-vs-worst pairs carry only a margin (the score gap / 9); revision pairs carry neither
    return np.array([a if a is not None else (1 + b) / 2 if b is not None else 1.0 for a, b in zip(p, margin)], dtype=float)


def trl_args(cls, cfg, method_defaults: dict | None = None, **extra):
    """The TRL config: rlaif's defaults (then the method's), then the file's `trl` block, then what rlaif derives."""
    import torch

    from . import speed

    # no wandb/tensorboard surprises; no tqdm bar: `progress_callback` prints one line per logging step instead
    defaults = {"report_to": [], "disable_tqdm": True, **speed.precision_defaults(), **(method_defaults or {})}
    if not torch.cuda.is_available():
        defaults["use_cpu"] = True
    try:
        return cls(**{**defaults, **cfg.trl, **extra, "output_dir": cfg.output_dir})
    except (TypeError, ValueError) as e:  # TRL's own __post_init__ checks on values
        raise UserError(f"trl: {e}", *cfg.where("trl")) from None


def history(rows: list[dict]) -> list[dict]:
    """metrics.history, one shape for every trainer: {step, loss, ...the row's other numbers} per TRL log or PPO row."""
    def numeric(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    # TRL's eval rows and its final summary row have no training `loss`: they are not steps of the curve
    rows = [h for h in rows if numeric(h.get("loss")) and numeric(h.get("step"))]
    return [{"step": int(h["step"]), "loss": float(h["loss"]),
             **{k: v for k, v in h.items() if numeric(v) and k not in ("step", "loss")}} for h in rows]


SHOWN_METRICS = ("loss", "grad_norm", "reward", "rewards/accuracies", "kl", "eval_loss", "eval_accuracy")


def progress_callback(method: str, log):
    """A TRL callback that turns each of the trainer's log dicts into one short line through `log` (the dict itself
    is printed by transformers' PrinterCallback into the log file)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = [f"{k} {v:.4g}" for k, v in (logs or {}).items() if k in SHOWN_METRICS and isinstance(v, (int, float))]
            if shown:
                log(f"{method} step {state.global_step}/{state.max_steps}: {', '.join(shown)}")

    return Progress()


def load_tokenizer(path: str, log):
    """The model's tokenizer; a model without a chat template gets rlaif's Human:/Assistant: one for training."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")
        log(f"the tokenizer has no chat template: training with the Human:/Assistant: template {CHAT_TEMPLATE}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def lora_config(cfg, path: str, auto_class, task_type: str):
    """The `peft` block as a LoraConfig, its target_modules checked on the model's skeleton (None: no LoRA)."""
    if cfg.peft is None:
        return None
    import torch
    from peft import LoraConfig
    from transformers import AutoConfig

    with torch.device("meta"):  # the module tree without the weights: a bad target fails before they load
        model = auto_class.from_config(AutoConfig.from_pretrained(path))
    names = [name for name, _ in model.named_modules()]
    targets = cfg.peft.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear" and not any(re.fullmatch(targets, n) for n in names):
        raise UserError(f"peft.target_modules: the pattern {targets!r} matches no module ({_linear_names(model)})",
                        *cfg.where("peft.target_modules"))
    for i, target in enumerate(targets if isinstance(targets, list) else []):
        if not any(n == target or n.endswith(f".{target}") for n in names):  # how peft matches a name
            raise UserError(f"peft.target_modules: {model.config.model_type} has no module {target!r} "
                            f"({_linear_names(model)})", *cfg.where(f"peft.target_modules[{i}]"))
    try:
        return LoraConfig(**{"task_type": task_type, **cfg.peft})
    except (TypeError, ValueError) as e:
        raise UserError(f"peft: {e}", *cfg.where("peft")) from None


def _linear_names(model) -> str:
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    return f"its linear layers: {', '.join(linear[:8])}" + (", ..." if len(linear) > 8 else "")
