"""GRPO and RLOO (TRL) with a trained reward model or the AI judge as the reward, on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlaif.cli import main

from tests.conftest import assert_history
from tests.fakes import PPO_RUN, _config, _ppo_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_rl_with_a_reward_model(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds, method, monkeypatch):
    """TRL gets conversational prompts (not strings rendered by rlaif), so it applies the chat template once: one BOS."""
    from trl import GRPOTrainer, RLOOTrainer

    trainer_cls, seen = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[method], []
    tokenize = trainer_cls._tokenize_prompts
    monkeypatch.setattr(trainer_cls, "_tokenize_prompts", lambda self, prompts: seen.append(prompts) or tokenize(self, prompts))
    before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tiny_chat_model).state_dict().items()}
    cfg = _config(tmp_path, method, tiny_chat_model, prompts_ds, f"reward:\n  model: {tiny_reward_model}")
    result = CliRunner().invoke(main, ["train", method, str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / method / "rlaif_train.json").read_text())
    assert record["metrics"]["prompts"] == 4 and record["metrics"]["steps"] == 2
    assert_history(record, 2)  # the same {step, loss, ...} rows as sft, reward, dpo and ppo
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in record["metrics"]["history"])
    after = AutoModelForCausalLM.from_pretrained(tmp_path / method).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    assert seen and all(p and isinstance(p, list) and p[-1]["role"] == "user" for p in seen[0])
    ids = tok.apply_chat_template(seen[0], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert all(x.count(tok.bos_token_id) == 1 and x[0] == tok.bos_token_id for x in ids)


def test_grpo_with_the_ai_judge_as_reward(tmp_path, tiny_chat_model, prompts_ds):
    reward = f"reward:\n  judge:\n    constitution: {ROOT / 'constitutions' / 'harmless.yaml'}\n    model: {tiny_chat_model}\n    backend: hf"
    cfg = _config(tmp_path, "grpo", tiny_chat_model, prompts_ds, reward)
    result = CliRunner().invoke(main, ["train", "grpo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "grpo" / "rlaif_train.json").read_text())["metrics"]["history"]
    # d-RLAIF: the 1-10 rating mapped to [-1, 1]; a random tiny judge gives no number (digit mass ~0.03): unrated, -1
    assert history and all(-1.0 <= h["reward"] <= 1.0 for h in history)


@pytest.mark.parametrize("reward_yaml, pattern", [
    ("", r"grpo\.yaml:1: reward: grpo needs exactly one of reward\.model"),
    ("reward:\n  model: /no/such/rm", r"grpo\.yaml:6: model path '/no/such/rm' does not exist"),
    ("reward:\n  judge: {constitution: no-such.yaml}", r"no-such\.yaml: constitution not found"),
])
def test_bad_reward_source(tmp_path, tiny_chat_model, prompts_ds, reward_yaml, pattern):
    import re

    cfg = _config(tmp_path, "grpo", tiny_chat_model, prompts_ds, reward_yaml)
    result = CliRunner().invoke(main, ["train", "grpo", str(cfg)])
    assert result.exit_code == 2 and re.search(pattern, result.stderr), result.stderr


def test_ppo_from_the_command_line(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds):
    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model, PPO_RUN + "  learning_rate: 1e-4\n")
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "ppo" / "rlaif_train.json").read_text())
    history = record["metrics"]["history"]
    assert len(history) == 2 and all(torch.isfinite(torch.tensor([h["kl"], h["value_loss"], h["policy_loss"]])).all() for h in history)
    assert (tmp_path / "ppo" / "ppo_history.jsonl").is_file()
    # the same {step, loss, ...} rows as every trainer; PPO's loss is what it minimised: policy + vf_coef * value loss
    assert_history(record, 2)
    vf_coef = record["config"]["ppo"].get("vf_coef", 0.1)  # PPOConfig's default
    assert all(h["loss"] == pytest.approx(h["policy_loss"] + vf_coef * h["value_loss"]) for h in history)


@pytest.mark.parametrize("block, pattern", [
    ("ppo:\n  batch_size: 4\n  mini_batch_size: 3\n", r"ppo\.yaml:7: ppo: PPOConfig: .*mini_batch_size"),
    ("ppo:\n  cliprang: 0.2\n", r"ppo\.yaml:8: ppo\.cliprang: PPOConfig has no field 'cliprang' \(did you mean 'cliprange'\?\)"),
    ("trl:\n  max_steps: 2\n", r"ppo\.yaml:7: trl: ppo is rlaif's own trainer"),
])
def test_bad_ppo_settings(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds, block, pattern):
    import re

    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model, block)
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)])
    assert result.exit_code == 2 and re.search(pattern, result.stderr), result.stderr


def test_ppo_with_lora(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds):
    """LoRA: only the adapters and the value head train; the reference is the model with adapters off."""
    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model,
                      "peft:\n  r: 4\n  lora_alpha: 8\n  target_modules: [q_proj, v_proj]\n" + PPO_RUN + "  learning_rate: 1e-3\n")
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ppo" / "adapter_config.json").is_file() and (tmp_path / "ppo" / "adapter_model.safetensors").is_file()
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "ppo")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: it moved
    history = json.loads((tmp_path / "ppo" / "rlaif_train.json").read_text())["metrics"]["history"]
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["kl"])) for h in history)


@pytest.mark.parametrize("chat", [True, False])
def test_ppo_sees_what_it_was_trained_on(tmp_path, tiny_chat_model, tiny_base_model, prompts_ds, make_reward_model, monkeypatch, chat):
    """`rlaif train ppo`, production path: each prompt's ids are the chat template's, once (one BOS); the reward model
    gets the prompt as messages and the completion as text, and renders them once, as in its training; on the first
    minibatch of the first epoch the policy is the rollout policy (ratio 1, clipfrac 0)."""
    from rlaif.train.rewards import RewardModelReward
    from rlaif.train import ppo

    model = tiny_chat_model if chat else tiny_base_model
    rollouts, rewards, losses = [], [], []

    def spy(target, name, record):
        original = getattr(target, name)

        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            record.append((args, out))
            return out
        monkeypatch.setattr(target, name, wrapper)

    spy(ppo.PPOTrainer, "rollout", rollouts)
    spy(RewardModelReward, "__call__", rewards)
    spy(ppo, "policy_loss", losses)
    cfg = _ppo_config(tmp_path, model, prompts_ds, make_reward_model(model), PPO_RUN)
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    user, generation, end = ("<|user|>", "", "<|end|>") if chat else ("Human: ", "\n\n", "<eos>")
    assistant = "<|assistant|>" if chat else "Assistant:"
    (_, prompts), (seq, attention, P, _, texts) = rollouts[0]
    assert prompts == [[{"role": "user", "content": f"Question {i}?"}] for i in range(4)]  # messages, not strings
    for i, row in enumerate(seq[:, :P]):
        want = tok(f"<bos>{user}Question {i}?{end if chat else generation}{assistant}", add_special_tokens=False)["input_ids"]
        assert row[attention[i, :P].bool()].tolist() == want and want.count(tok.bos_token_id) == 1
    (rm, reward_prompts, completions), _ = rewards[0]
    assert reward_prompts == prompts and completions == texts and all(isinstance(c, str) for c in completions)
    for i, text in enumerate(completions):
        reply = f"{assistant}{text}{end}" if chat else f"{assistant} {text}{end}"
        want = tok(f"<bos>{user}Question {i}?{end if chat else generation}{reply}", add_special_tokens=False)["input_ids"]
        assert rm.ids(reward_prompts[i], text) == want
    (logprobs, old_logprobs, _, mask, _), (_, clipfrac, approx_kl) = losses[0]
    ratio = torch.exp(logprobs - old_logprobs)[mask.bool()]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5) and clipfrac.item() == 0 and approx_kl.item() < 1e-8


def test_prompt_ids_one_bos_and_truncation_keeps_it(tiny_chat_model, tiny_base_model):
    """Messages: the template's ids, once; text already starting with the BOS text gets no second one; a prompt over
    max_prompt_length keeps BOS and its last tokens."""
    from rlaif.train import load_tokenizer
    from rlaif.train.ppo import prompt_ids

    for model in (tiny_chat_model, tiny_base_model):
        tok = load_tokenizer(str(model), log=lambda _: None)
        messages = [{"role": "user", "content": "What is the capital of France? Tell me in one word."}]
        ids = prompt_ids(tok, messages, 512)
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert ids == tok(rendered, add_special_tokens=False)["input_ids"] and ids.count(tok.bos_token_id) == 1
        assert prompt_ids(tok, rendered, 512) == ids  # a pre-rendered string is not given a second BOS
        assert prompt_ids(tok, "plain text", 512)[0] == tok.bos_token_id  # raw text gets the tokenizer's own BOS
        short = prompt_ids(tok, messages, 6)
        assert len(short) == 6 and short[0] == tok.bos_token_id and short[1:] == ids[-5:]
