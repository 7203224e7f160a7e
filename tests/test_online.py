"""GRPO and RLOO (TRL) with a trained reward model or the AI judge as the reward, on tiny models."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from rlaif.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture
def prompts_ds(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": [{"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(4)]
    rows += rows[:2]  # repeated prompts, as in a preference dataset: trained once each
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs"))
    return tmp_path / "prefs"


@pytest.fixture
def tiny_reward_model(tiny_chat_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    return tmp_path / "rm"


def _config(tmp_path, method, model, dataset, reward_yaml):
    extra = "num_generations: 2\n  max_completion_length: 8\n  per_device_train_batch_size: 2\n  max_steps: 2\n  logging_steps: 1\n  learning_rate: 1.0e-3\n"
    if method == "grpo":
        extra += "  beta: 0.04\n"  # a KL term against the reference, as in the paper
    path = tmp_path / f"{method}.yaml"
    path.write_text(f"method: {method}\nmodel: {model}\ndataset: {dataset}\noutput_dir: {tmp_path / method}\n{reward_yaml}\ntrl:\n  {extra}")
    return path


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_rl_with_a_reward_model(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds, method):
    before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tiny_chat_model).state_dict().items()}
    cfg = _config(tmp_path, method, tiny_chat_model, prompts_ds, f"reward:\n  model: {tiny_reward_model}")
    result = CliRunner().invoke(main, ["train", method, str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / method / "rlaif_train.json").read_text())
    assert record["metrics"]["prompts"] == 4 and record["metrics"]["steps"] == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in record["metrics"]["history"])
    after = AutoModelForCausalLM.from_pretrained(tmp_path / method).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


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


PPO_RUN = "ppo:\n  batch_size: 4\n  mini_batch_size: 2\n  ppo_epochs: 1\n  max_new_tokens: 6\n  total_steps: 2\n"


def _ppo_config(tmp_path, model, dataset, reward_model, rest: str):
    """A ppo training file (lines 1-6: method, model, dataset, output_dir, reward) followed by `rest`."""
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text(f"method: ppo\nmodel: {model}\ndataset: {dataset}\noutput_dir: {tmp_path / 'ppo'}\n"
                   f"reward:\n  model: {reward_model}\n" + rest)
    return cfg


def test_ppo_from_the_command_line(tmp_path, tiny_chat_model, tiny_reward_model, prompts_ds):
    cfg = _ppo_config(tmp_path, tiny_chat_model, prompts_ds, tiny_reward_model, PPO_RUN + "  learning_rate: 1e-4\n")
    result = CliRunner().invoke(main, ["train", "ppo", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "ppo" / "rlaif_train.json").read_text())
    history = record["metrics"]["history"]
    assert len(history) == 2 and all(torch.isfinite(torch.tensor([h["kl"], h["value_loss"], h["policy_loss"]])).all() for h in history)
    assert (tmp_path / "ppo" / "ppo_history.jsonl").is_file()


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
