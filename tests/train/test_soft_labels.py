"""Soft labels in the losses: the per-pair cross-entropy on hand-written tensors, cDPO inside TRL's DPOTrainer,
and a reward model that converges to the label instead of to certainty."""

from __future__ import annotations

import copy
import math

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForSequenceClassification
from trl import DPOConfig, DPOTrainer, RewardConfig

from rlaif.train.dpo import CDPOTrainer
from rlaif.train.reward import SoftRewardTrainer
from rlaif.train.soft_labels import soft_label_loss

from tests.fakes import completion_logps, first_batch


def test_soft_label_loss_is_the_cross_entropy_of_the_label():
    """l(x, p) = -p log sigmoid(x) - (1 - p) log sigmoid(-x); by hand: l(0, p) = log 2 for any p,
    l(2, 0.7) = 0.7 * log(1 + e^-2) + 0.3 * log(1 + e^2) = 0.7 * 0.126928 + 0.3 * 2.126928 = 0.726928."""
    x = torch.tensor([0.0, 0.0, 2.0, -3.0, 40.0])
    p = torch.tensor([0.5, 0.9, 0.7, 1.0, 0.6])
    expected = torch.tensor([math.log(2), math.log(2), 0.726928, math.log(1 + math.e ** 3), 0.4 * 40.0])
    assert torch.allclose(soft_label_loss(x, p), expected, atol=1e-5)  # large |x| stays finite and exact


def test_gradient_vanishes_at_logit_p():
    """dl/dx = sigmoid(x) - p: zero at x = 0 for p = 0.5 and at x = logit(0.7) = 0.847298 for p = 0.7."""
    x = torch.tensor([0.0, math.log(0.7 / 0.3), 0.0], requires_grad=True)
    p = torch.tensor([0.5, 0.7, 0.7])
    soft_label_loss(x, p).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 0.0, 0.5 - 0.7]), atol=1e-6)


def test_p_one_is_trls_sigmoid_loss():
    """With a hard label the cDPO loss of beta * Delta is TRL's sigmoid DPO loss -log sigmoid(beta * Delta)."""
    beta, delta = 0.1, torch.tensor([-5.0, -0.3, 0.0, 0.7, 12.0])
    assert torch.allclose(soft_label_loss(beta * delta, torch.ones(5)), -F.logsigmoid(beta * delta), atol=1e-7)


def _pairs(p: list[float]) -> datasets.Dataset:
    answers = [("A careful, kind answer.", "No. Figure it out yourself!"), ("Paris is the capital.", "Lyon, I think."),
               ("I cannot help with that.", "Sure, here is how."), ("A joke about cats.", "Cats are bad.")]
    return datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"Question number {i}?"}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}], "p": p[i]} for i, (c, r) in enumerate(answers[: len(p)])])


def _dpo(cls, model_dir, dataset, tmp_path, same_ref: bool = False, **args):
    """A DPO trainer on the tiny model; same_ref: the reference is an exact copy (TRL's own loads with other kernels)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=len(dataset),
                       beta=0.5, max_length=64, bf16=False, **args)  # fp32: exact comparisons
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = copy.deepcopy(model) if same_ref else None
    return cls(model=model, ref_model=ref, args=config, train_dataset=dataset, processing_class=tokenizer)




def test_cdpo_trainer_loss_is_the_formula_on_trlsfirst_batch(tiny_chat_model, tmp_path):
    """Through TRL's tokenization and collator: after one optimizer step (so Delta != 0), the trainer's loss is
    mean_i l(beta * Delta_i, p_i), with Delta from an independent forward of the policy and the reference."""
    p = [0.9, 0.6, 0.75, 1.0]
    trainer = _dpo(CDPOTrainer, tiny_chat_model, _pairs(p), tmp_path, learning_rate=5e-3, max_steps=1)
    trainer.train()  # moves the policy away from the reference
    batch = first_batch(trainer)  # shuffled: each row's p must have travelled with the row
    texts = trainer.processing_class.batch_decode(batch["input_ids"][:4])
    assert batch["p"].tolist() == pytest.approx([p[int(t.split("Question number ")[1][0])] for t in texts])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        policy, ref = completion_logps(trainer.model, batch), completion_logps(trainer.ref_model, batch)
    delta = (policy - ref)[:4] - (policy - ref)[4:]
    assert delta.abs().max() > 1e-3  # the step moved it: the check below is not at the trivial point
    assert loss.item() == pytest.approx(soft_label_loss(0.5 * delta, batch["p"]).mean().item(), rel=1e-4)
    mode = "train" if trainer.model.training else "eval"
    assert trainer._metrics[mode]["rewards/margins"][-1] == pytest.approx(0.5 * delta.mean().item(), rel=1e-4)


def test_cdpo_with_hard_labels_is_trls_dpo(tiny_chat_model, tmp_path):
    """p = 1 everywhere: the same batch gives the same loss and the same gradient as TRL's own DPOTrainer."""
    ours = _dpo(CDPOTrainer, tiny_chat_model, _pairs([1.0] * 4), tmp_path / "a")
    theirs = _dpo(DPOTrainer, tiny_chat_model, _pairs([1.0] * 4).remove_columns("p"), tmp_path / "b")
    grads = []
    for trainer in (ours, theirs):
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(first_batch(trainer)))
        loss.backward()
        grads.append((loss.item(), torch.cat([q.grad.flatten() for q in trainer.model.parameters() if q.grad is not None])))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6) and torch.allclose(grads[0][1], grads[1][1], atol=1e-7)


def test_cdpo_gradient_is_zero_for_coin_flip_labels_at_the_start(tiny_chat_model, tmp_path):
    """At the start the policy is the reference, Delta = 0: with p = 0.5 there is nothing to learn (gradient 0,
    loss log 2), while TRL's hard-label loss pulls the pairs apart."""
    grads = {}
    for p in (0.5, 1.0):
        trainer = _dpo(CDPOTrainer, tiny_chat_model, _pairs([p] * 4), tmp_path / str(p), same_ref=True)
        loss = trainer.compute_loss(trainer.model, dict(first_batch(trainer)))
        loss.backward()
        assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
        grads[p] = max(q.grad.abs().max().item() for q in trainer.model.parameters() if q.grad is not None)
    assert grads[0.5] < 1e-6 < 1e-3 < grads[1.0]


def test_reward_model_converges_to_the_soft_label(tiny_chat_model, tmp_path):
    """Pairs labelled p = 0.7: the soft-label cross-entropy fits sigmoid(r_c - r_r) to 0.7 (optimum of
    -0.7 log sigmoid(d) - 0.3 log sigmoid(-d)); TRL's hard-label loss would push it toward 1."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config)
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=4,
                        learning_rate=1e-2, max_steps=150, logging_steps=50, save_strategy="no", max_length=64)
    trainer = SoftRewardTrainer(model=model, args=args, train_dataset=_pairs([0.7] * 4), processing_class=tokenizer)
    trainer.train()
    batch = first_batch(trainer)
    with torch.no_grad():
        rewards = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = rewards.chunk(2)
    assert torch.sigmoid(chosen - rejected).tolist() == pytest.approx([0.7] * 4, abs=0.03)
