"""Soft preference labels in the losses: each pair's p = P(chosen > rejected) reaches the loss as a `p` column.

The reward model (RLAIF, Lee et al. 2023 §2.2) and DPO (cDPO, Mitchell 2023) both fit a Bradley-Terry model to
the soft label with the cross-entropy

    l(x, p) = -p * log sigmoid(x) - (1 - p) * log sigmoid(-x),   x = r_chosen - r_rejected (reward) or beta * Delta (DPO),

whose gradient dl/dx = sigmoid(x) - p vanishes at x = logit(p): a pair labelled 0.7 is fitted to 0.7, not pushed
to certainty. With p = 1 it is TRL's hard-label loss -log sigmoid(x). Since log sigmoid(-x) = log sigmoid(x) - x,
l(x, p) = -log sigmoid(x) + (1 - p) * x: the trainers keep TRL's own loss (and its metrics) and add the
difference l(x, p) - l(x, 1) per pair.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

COLUMN = "p"  # the per-row label the trainers read; rlaif.train.confidences fills it


def soft_label_loss(x, p):
    """Per-pair cross-entropy -p log sigmoid(x) - (1 - p) log sigmoid(-x) (x, p: tensors of one shape)."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(x, p.to(x.dtype), reduction="none")  # stable for any |x|


def with_confidence(dataset, conf: np.ndarray, where: tuple):
    """The dataset with its `p` column set to `conf`, each value checked to be a probability."""
    bad = np.flatnonzero(~((conf >= 0) & (conf <= 1)))  # NaN fails both comparisons
    if len(bad):
        raise UserError(f"soft_labels: row {bad[0]} has p_chosen {float(conf[bad[0]])!r}, not a probability in [0, 1]", *where)
    if COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(COLUMN)
    return dataset.add_column(COLUMN, conf.astype(float).tolist())


class _CollateWithP:
    """A TRL collator that also returns the rows' labels as a (B,) float tensor under `p`."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        import torch

        batch = self.collator(examples)
        batch[COLUMN] = torch.tensor([e[COLUMN] for e in examples], dtype=torch.float32)
        return batch


def carry_p(trainer) -> None:
    """Keep the `p` column through the Trainer's column pruning and collate it (call after TRL's __init__).

    After, not before: DPO's precompute_ref_log_probs runs inside __init__ and feeds whole batches to the model.
    """
    trainer._set_signature_columns_if_needed()
    if COLUMN not in trainer._signature_columns:
        trainer._signature_columns = [*trainer._signature_columns, COLUMN]
    trainer.data_collator = _CollateWithP(trainer.data_collator)
