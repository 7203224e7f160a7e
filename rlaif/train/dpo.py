"""DPO on preference pairs (a run's prefs/) with TRL's DPOTrainer; soft labels as the per-pair cDPO loss by default."""

from __future__ import annotations

import time

import numpy as np
import torch
from trl import DPOTrainer

from ..errors import UserError
from .common import confidences, history, load_tokenizer, lora_config, progress_callback, trl_args
from .speed import labelled_tokens_only
from .soft_labels import COLUMN, carry_p, soft_label_loss, with_confidence


class CDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is conservative DPO per pair (Mitchell 2023), p from the dataset's `p` column.

    l_i = -p_i log sigmoid(beta Delta_i) - (1 - p_i) log sigmoid(-beta Delta_i), Delta_i = (log pi - log pi_ref)(chosen)
    - (log pi - log pi_ref)(rejected); its optimum is beta Delta_i = logit(p_i). TRL computes its sigmoid loss
    -log sigmoid(beta Delta_i) = l_i at p_i = 1 (and every metric); this adds l_i(p_i) - l_i(1) = (1 - p_i) beta Delta_i,
    with Delta_i read from the log-probabilities of the same forward passes (no extra compute). The config check
    (train/config.py) allows only what makes TRL's loss that sigmoid: loss_type sigmoid, reverse KL, no ld_alpha,
    no use_weighting.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        carry_p(self)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss on the batch plus the mean cDPO correction; `p` (B,) is taken out of the batch first."""
        p = inputs.pop(COLUMN)
        outputs: list = []  # every forward of the policy (and of a separate reference), in call order
        hooks = [m.register_forward_hook(lambda _m, _args, out: outputs.append(out))
                 for m in (self.model, self.ref_model) if m is not None]
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            for h in hooks:
                h.remove()
        x = self.beta * self._delta(inputs, outputs)  # (B,)
        extra = (soft_label_loss(x, p.to(x.device)) - soft_label_loss(x, torch.ones_like(x))).mean()
        return (result[0] + extra, result[1]) if return_outputs else result + extra

    def _delta(self, inputs, outputs: list) -> torch.Tensor:
        """Delta per pair from the captured forwards, summed over the sequence as TRL does; (B,)."""
        n_ref = 0 if self.precompute_ref_logps else 1
        if len(outputs) < 1 + n_ref or getattr(outputs[0], "log_probs", None) is None:
            raise RuntimeError(f"cdpo: DPOTrainer made {len(outputs)} fused forward passes, expected {1 + n_ref} "
                               "(a TRL version this override does not know?)")
        seq_len = inputs["completion_mask"].size(1) - 1
        chosen, rejected = outputs[0].log_probs[:, -seq_len:].sum(1).chunk(2)  # policy; the batch is [chosen, rejected]
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = outputs[1].log_probs[:, -seq_len:].sum(1).chunk(2)
        return (chosen - ref_chosen) - (rejected - ref_rejected)


def run(cfg, log) -> dict:
    """Train, save the model (or LoRA adapter) and tokenizer to output_dir, and return the metrics."""
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from ..backends.pool import resolve_model

    dataset = datasets.load_from_disk(cfg.dataset)
    conf = confidences(dataset)
    extra, info = {}, {"rows": len(dataset), "soft_labels": cfg.soft_labels}
    if cfg.soft_labels == "rdpo":
        extra = smoothing(conf, cfg)
        info.update(extra, rdpo_scale=1 / (1 - 2 * extra["label_smoothing"]))
        log(f"dpo: rdpo: label_smoothing {extra['label_smoothing']:.4f} = mean(1 - p_chosen) over {len(conf)} pairs, "
            f"loss robust, scaled by 1 / (1 - 2 eps) = {info['rdpo_scale']:.1f}")
    # TRL's precompute_ref_log_probs is left to the user (off): the same numbers, but it runs the reference over every
    # row and hashes the weights first, so a run shorter than an epoch (the demo's 2 steps) measured slower end to end
    # (docs/method.md §12, bench/results/train.md); `trl: {precompute_ref_log_probs: true}` for multi-epoch runs
    args = trl_args(DPOConfig, cfg, {}, **extra)
    columns = ["prompt", "chosen", "rejected"]
    if cfg.soft_labels == "weight":
        index = resample(2 * conf - 1, args.seed)
        info.update(distinct_pairs=len(set(index.tolist())), zero_weight=int((conf <= 0.5).sum()))
        log(f"dpo: weight: {len(index)} pairs drawn with probability proportional to 2 * p_chosen - 1 "
            f"({info['distinct_pairs']} distinct, {info['zero_weight']} of weight 0)")
        dataset = dataset.select(index)
    elif cfg.soft_labels == "cdpo":
        dataset, columns = with_confidence(dataset, conf, cfg.where("soft_labels")), [*columns, COLUMN]
        info.update(mean_p=float(conf.mean()), hard_pairs=int((conf == 1).sum()))
        log(f"dpo: cdpo: per-pair soft labels, mean p {info['mean_p']:.3f} ({info['hard_pairs']} of {len(conf)} hard)")
    dataset = dataset.select_columns(columns)
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    # with LoRA, DPOTrainer's reference model is this model with the adapters switched off
    peft_config = lora_config(cfg, path, AutoModelForCausalLM, "CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # fp32 master weights; bf16 autocasts
    trainer_cls = CDPOTrainer if cfg.soft_labels == "cdpo" else DPOTrainer
    with labelled_tokens_only():  # the precompute runs inside __init__, so both are inside
        start = time.perf_counter()
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=[progress_callback("dpo", log)])
        init_seconds = time.perf_counter() - start  # tokenizing, the reference model or its precomputed log-probs
        result = trainer.train()
    trainer.save_model(cfg.output_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {**info, "steps": result.global_step, "train_loss": result.training_loss, "losses": losses,
            "history": history(trainer.state.log_history), "train_runtime": result.metrics.get("train_runtime"),
            "init_seconds": round(init_seconds, 2), "tokens_seen": trainer.state.num_input_tokens_seen}


def smoothing(conf: np.ndarray, cfg) -> dict:
    """rdpo: TRL's robust loss with one global flip rate eps = mean(1 - p_chosen) (Chowdhury et al. 2024).

    Per pair ((1 - eps) l(Delta) - eps l(-Delta)) / (1 - 2 eps), l = -log sigmoid(beta .): unbiased under label
    flips at rate eps, but scaled by 1 / (1 - 2 eps) (x20 at eps = 0.475), unbounded below, and blind to which pair
    is the uncertain one. An option for label noise, not the soft-label default (that is cdpo).
    """
    eps = float(np.mean(1 - conf))
    if eps >= 0.5:
        raise UserError(f"soft_labels: the mean p_chosen is {1 - eps:.3f}: the labels carry no preference to learn",
                        *cfg.where("soft_labels"))
    return {"label_smoothing": eps, "loss_type": ["robust"]}


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
