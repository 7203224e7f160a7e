"""A reward model on preference pairs (a run's prefs/) with TRL's RewardTrainer; soft labels as cross-entropy targets."""

from __future__ import annotations

import time

import numpy as np
import torch
from trl import RewardTrainer

from ..errors import UserError
from .common import confidences, history, load_tokenizer, lora_config, progress_callback, trl_args
from .soft_labels import COLUMN, carry_p, soft_label_loss, with_confidence


class SoftRewardTrainer(RewardTrainer):
    """RewardTrainer fitting the soft label: -[p log sigmoid(dr) + (1 - p) log sigmoid(-dr)], dr = r_chosen - r_rejected.

    The RLAIF paper's reward-model loss (Lee et al. 2023, section 2.2): sigmoid(dr) converges to p, where TRL's
    -log sigmoid(dr) pushes every pair to dr -> infinity. TRL's loss (and its metrics, and any
    center_rewards_coefficient term) is kept and l(dr, p) - l(dr, 1) is added per pair, from the same forward pass.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        carry_p(self)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss plus the mean soft-label correction; `p` (B,) is taken out of the batch first."""
        p = inputs.pop(COLUMN)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        chosen, rejected = outputs.logits.squeeze(-1).chunk(2)  # the collator puts every chosen answer first
        x = chosen - rejected  # (B,)
        loss = loss + (soft_label_loss(x, p.to(x.device)) - soft_label_loss(x, torch.ones_like(x))).mean()
        return (loss, outputs) if return_outputs else loss


def run(cfg, log) -> dict:
    """Train on all but a held-out share of the pairs, report held-out pairwise accuracy, save to output_dir."""
    import datasets
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig

    from ..backends.pool import resolve_model

    args = trl_args(RewardConfig, cfg)
    dataset = datasets.load_from_disk(cfg.dataset)
    columns = ["prompt", "chosen", "rejected"]  # a dataset's own margin column is not read unless asked for
    if cfg.soft_labels == "cross_entropy":
        dataset, columns = with_confidence(dataset, confidences(dataset), cfg.where("soft_labels")), [*columns, COLUMN]
    elif cfg.soft_labels == "margin":
        # RewardTrainer's loss is -log sigmoid(r_chosen - r_rejected - margin): a sure pair must win by more
        margin = (2 * confidences(dataset) - 1).tolist()
        dataset = dataset.remove_columns([c for c in ("margin",) if c in dataset.column_names]).add_column("margin", margin)
        columns.append("margin")
    train_rows, eval_rows = split(dataset, cfg.eval_fraction, args.seed, cfg.where("eval_fraction"))
    train_ds, eval_ds = (dataset.select(rows).select_columns(columns) for rows in (train_rows, eval_rows))
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    peft_config = lora_config(cfg, path, AutoModelForSequenceClassification, "SEQ_CLS")  # SEQ_CLS: the new head trains too
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)  # new 1-output head
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    log(f"reward: {len(train_ds)} pairs to train, {len(eval_ds)} held out (whole prompts), soft labels {cfg.soft_labels}")
    trainer_cls = SoftRewardTrainer if cfg.soft_labels == "cross_entropy" else RewardTrainer
    start = time.perf_counter()
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if len(eval_ds) else None,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[progress_callback("reward", log)])
    init_seconds = time.perf_counter() - start  # tokenizing; with LoRA, wrapping the model
    result = trainer.train()
    metrics = {"rows": len(dataset), "train_pairs": len(train_ds), "steps": result.global_step,
               "train_loss": result.training_loss, "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
               "history": history(trainer.state.log_history), "train_runtime": result.metrics.get("train_runtime"),
               "init_seconds": round(init_seconds, 2), "tokens_seen": trainer.state.num_input_tokens_seen}
    if len(eval_ds):
        metrics["eval_pairs"], metrics["eval_accuracy"] = len(trainer.eval_dataset), pairwise_accuracy(trainer)
    trainer.save_model(cfg.output_dir)
    return metrics


def split(dataset, fraction: float, seed: int, where: tuple) -> tuple[list[int], list[int]]:
    """Train and held-out row indices; whole prompts are held out, so no answer to a held-out prompt is trained on."""
    n_eval = 0 if fraction == 0 else max(1, round(len(dataset) * fraction))
    keys = dataset["prompt_id"] if "prompt_id" in dataset.column_names else [str(p) for p in dataset["prompt"]]
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    held: list[int] = []
    for rows in (list(groups.values())[g] for g in np.random.default_rng(seed).permutation(len(groups))):
        if len(held) >= n_eval:
            break
        held += rows
    if len(held) == len(dataset):
        raise UserError(f"eval_fraction: {len(dataset)} pairs over {len(groups)} prompts leave nothing to train on; "
                        "lower it, or set it to 0", *where)
    return sorted(set(range(len(dataset))) - set(held)), sorted(held)


def pairwise_accuracy(trainer, batch_size: int = 8) -> float | None:
    """Share of held-out pairs whose chosen answer gets the higher reward (a tie counts as wrong, as in TRL)."""
    model, rows, wins = trainer.model.eval(), trainer.eval_dataset, 0  # rows: tokenized (and max_length-filtered)
    if len(rows) == 0:
        return None
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = trainer.data_collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            rewards = model(input_ids=batch["input_ids"].to(model.device),
                            attention_mask=batch["attention_mask"].to(model.device)).logits.squeeze(-1)  # (2B,)
            chosen, rejected = rewards.chunk(2)  # the collator puts every chosen answer first
            wins += (chosen > rejected).sum().item()
    return wins / len(rows)
