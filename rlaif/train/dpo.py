"""DPO on preference pairs (a run's prefs/) with TRL's DPOTrainer; soft labels as label smoothing or pair weights."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from . import confidences, load_tokenizer, lora_config, trl_args


def run(cfg, log) -> dict:
    """Train, save the model (or LoRA adapter) and tokenizer to output_dir, and return the metrics."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from ..models import resolve_model

    dataset = datasets.load_from_disk(cfg.dataset)
    conf = confidences(dataset)
    extra, info = {}, {"rows": len(dataset)}
    if cfg.soft_labels == "label_smoothing":
        extra = smoothing(conf, cfg)
        info.update(extra)
        log(f"dpo: label_smoothing {extra['label_smoothing']:.4f} = mean(1 - p_chosen) over {len(conf)} pairs, "
            f"loss {extra['loss_type']}")
    args = trl_args(DPOConfig, cfg, **extra)
    if cfg.soft_labels == "weight":
        index = resample(2 * conf - 1, args.seed)
        info.update(distinct_pairs=len(set(index.tolist())), zero_weight=int((conf <= 0.5).sum()))
        log(f"dpo: weight: {len(index)} pairs drawn with probability proportional to 2 * p_chosen - 1 "
            f"({info['distinct_pairs']} distinct, {info['zero_weight']} of weight 0)")
        dataset = dataset.select(index)
    dataset = dataset.select_columns(["prompt", "chosen", "rejected"])
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    # with LoRA, DPOTrainer's reference model is this model with the adapters switched off
    peft_config = lora_config(cfg, path, AutoModelForCausalLM, "CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # fp32 master weights; bf16 autocasts
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(cfg.output_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {**info, "steps": result.global_step, "train_loss": result.training_loss, "losses": losses,
            "train_runtime": result.metrics.get("train_runtime"), "tokens_seen": trainer.state.num_input_tokens_seen}


def smoothing(conf: np.ndarray, cfg) -> dict:
    """TRL's label_smoothing is one number: the mean chance that a label is flipped, mean(1 - p_chosen).

    TRL 1.16 reads it only in the robust, exo_pair and aot losses (the default sigmoid loss ignores it);
    robust DPO (the default here) treats it as the flip rate and rescales the loss by 1 / (1 - 2 * eps).
    """
    eps = float(np.mean(1 - conf))
    if eps >= 0.5:
        raise UserError(f"soft_labels: the mean p_chosen is {1 - eps:.3f}: the labels carry no preference to learn",
                        *cfg.where("soft_labels"))
    loss = cfg.trl.get("loss_type", ["robust"])
    return {"label_smoothing": eps, "loss_type": [loss] if isinstance(loss, str) else list(loss)}


def resample(weights: np.ndarray, seed: int) -> np.ndarray:
    """Row indices, as many as rows, drawn with probability weight / sum (systematic resampling).

    DPOTrainer has no per-pair weights, so a pair of weight w appears about n * w / sum(w) times: the
    expected loss is the weighted mean, and a pair of weight 0 (p_chosen 0.5) is never drawn.
    """
    weights = np.clip(weights, 0, None)
    if weights.sum() <= 0:
        raise UserError("soft_labels: weight: every pair has p_chosen 0.5, so every weight is 0")
    n = len(weights)
    points = (np.random.default_rng(seed).random() + np.arange(n)) / n  # one random offset, n evenly spaced points
    index = np.searchsorted(np.cumsum(weights / weights.sum()), points, side="right")  # never a weight-0 row...
    return np.minimum(index, np.flatnonzero(weights)[-1])  # ...even when rounding leaves the last sum just under 1
