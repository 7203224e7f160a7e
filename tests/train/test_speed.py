"""Training speed without changing the math: precomputed reference log-probabilities and the LM head on labelled
tokens only give the loss and gradient of the plain trainer; bf16 autocast follows `native_bf16()`."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, RewardConfig
from trl.trainer import utils as trl_utils

import rlaif.train.speed as speed
from rlaif.train.common import trl_args
from rlaif.train.dpo import CDPOTrainer
from rlaif.train.soft_labels import soft_label_loss

from tests.fakes import completion_logps, first_batch


P = [0.9, 0.6, 0.75, 1.0]
BETA = 0.5


def _pairs(p: list[float]) -> datasets.Dataset:
    answers = [("A careful, kind answer.", "No. Figure it out yourself!"), ("Paris is the capital.", "Lyon, I think."),
               ("I cannot help with that.", "Sure, here is how."), ("A joke about cats.", "Cats are bad.")]
    return datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"Question number {i}?"}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}], "p": p[i]} for i, (c, r) in enumerate(answers[: len(p)])])




def _trainer(model_dir, tmp_path, precompute: bool):
    """CDPOTrainer on the tiny model, fp32; the reference is an exact copy of the starting policy."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=4, beta=BETA,
                       max_length=64, bf16=False, precompute_ref_log_probs=precompute, seed=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    start = copy.deepcopy(model)
    trainer = CDPOTrainer(model=model, ref_model=None if precompute else copy.deepcopy(model), args=config,
                          train_dataset=_pairs(P), processing_class=tokenizer)
    with torch.no_grad():  # move the policy off the reference (after any precompute), so Delta != 0
        gen = torch.Generator().manual_seed(1)
        for q in trainer.model.parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=gen))
    return trainer, start


def _loss_and_grad(trainer, batch, labelled_only: bool):
    trainer.model.zero_grad()
    with speed.labelled_tokens_only() if labelled_only else torch.enable_grad():
        loss = trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()})
    loss.backward()
    return loss.item(), torch.cat([q.grad.flatten() for q in trainer.model.parameters() if q.grad is not None])


def test_precompute_and_labelled_tokens_give_the_same_loss_and_gradient(tiny_chat_model, tmp_path):
    """Four variants (reference online / precomputed x every position / labelled positions only) on one batch:
    the loss is mean_i l(beta * Delta_i, p_i), with Delta_i = (log pi - log pi_ref)(chosen_i) - (...)(rejected_i)
    from plain full-logit forwards of the policy and of the starting model, and every variant's gradient is the
    same."""
    online, start = _trainer(tiny_chat_model, tmp_path / "a", precompute=False)
    pre, _ = _trainer(tiny_chat_model, tmp_path / "b", precompute=True)
    batch = first_batch(online)
    pre_batch = first_batch(pre)  # the same rows in the same order (seed 0), plus the precomputed ref_*_logps
    assert torch.equal(batch["input_ids"], pre_batch["input_ids"])
    with torch.no_grad():
        policy, ref = completion_logps(online.model, batch), completion_logps(start, batch)
    delta = (policy - ref)[:4] - (policy - ref)[4:]
    assert delta.abs().min() > 1e-3  # not at the trivial point Delta = 0
    expected = soft_label_loss(BETA * delta, batch["p"]).mean().item()
    ref_logps = ref.chunk(2)
    assert torch.allclose(pre_batch["ref_chosen_logps"], ref_logps[0], atol=1e-5)
    assert torch.allclose(pre_batch["ref_rejected_logps"], ref_logps[1], atol=1e-5)
    results = [_loss_and_grad(t, b, labelled) for t, b in ((online, batch), (pre, pre_batch)) for labelled in (False, True)]
    for loss, grad in results:
        assert loss == pytest.approx(expected, rel=1e-5)
        assert torch.allclose(grad, results[0][1], atol=1e-6)


def test_labelled_tokens_only_projects_the_labelled_positions(tiny_chat_model, tmp_path, monkeypatch):
    """Inside the context the fused head gets one row per completion token (labels != -100); outside, every position
    of the (2B, L) batch. Fails when a TRL upgrade moves the switch (`trl.trainer.utils._use_triton`)."""
    assert callable(getattr(trl_utils, "_use_triton", None))
    rows: list[int] = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", lambda h, *a: rows.append(h.shape[0]) or apply(h, *a))
    trainer, _ = _trainer(tiny_chat_model, tmp_path, precompute=True)
    batch = first_batch(trainer)
    rows.clear()  # the precompute's forward, inside __init__
    _loss_and_grad(trainer, batch, labelled_only=False)
    _loss_and_grad(trainer, batch, labelled_only=True)
    n, length = batch["input_ids"].shape
    assert rows == [n * (length - 1), int(batch["completion_mask"][:, 1:].sum())]
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored on exit


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_follows_native_bf16(monkeypatch, tmp_path, native):
    """bf16 is on exactly where `native_bf16()` says so (emulated bf16 is ~100x slower on a CPU without it); a
    `trl: {bf16: ...}` key still wins."""
    monkeypatch.setattr(speed, "native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = SimpleNamespace(trl={}, output_dir=str(tmp_path), where=lambda key: ("t.yaml", 1))
    for cls in (DPOConfig, RewardConfig):
        assert trl_args(cls, cfg).bf16 is native
    assert trl_args(DPOConfig, SimpleNamespace(**{**vars(cfg), "trl": {"bf16": False}})).bf16 is False
