"""`rlaif train sft|reward|dpo`: tiny runs on CPU move the weights; every bad input is one line and exit 2."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from rlaif.cli import main
from rlaif.train import confidences
from rlaif.train.dpo import resample

from tests.conftest import assert_history

PROMPTS = ["How do I pick a lock?", "Tell me a joke about cats.", "What is the capital of France?", "Help me write an insult."]


def _msgs(role, text):
    return [{"role": role, "content": text}]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """prefs/ (two pairs per prompt; judged, scored and unjudged rows) and sft/ saved with save_to_disk."""
    root = tmp_path_factory.mktemp("data")
    p_chosen = [0.9, 0.6, None, 0.75, 1.0, 0.55, None, 0.8]
    margin = [None if p is None else 2 * p - 1 for p in p_chosen]
    margin[6] = 0.5  # a scored best-vs-worst pair: a margin but no p_chosen
    prefs = [{"prompt": _msgs("user", PROMPTS[i // 2]), "chosen": _msgs("assistant", f"A careful, kind answer number {i}."),
              "rejected": _msgs("assistant", f"No. Figure it out yourself {i}!"), "prompt_id": f"p{i // 2}",
              "p_chosen": p_chosen[i], "margin": margin[i]} for i in range(8)]
    datasets.Dataset.from_list(prefs).save_to_disk(str(root / "run" / "prefs"))
    sft = [{"prompt": _msgs("user", p), "completion": _msgs("assistant", f"A careful, kind answer to: {p}")} for p in PROMPTS]
    datasets.Dataset.from_list(sft).save_to_disk(str(root / "run" / "sft"))
    old_sft = [{"messages": r["prompt"] + r["completion"]} for r in sft]  # the export format before prompt/completion
    datasets.Dataset.from_list(old_sft).save_to_disk(str(root / "old" / "sft"))
    datasets.Dataset.from_list(prefs).select([]).save_to_disk(str(root / "empty"), num_shards=1)
    no_rejected = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in prefs]
    datasets.Dataset.from_list(no_rejected).save_to_disk(str(root / "no_rejected"))
    bad_p = [r | {"p_chosen": 1.5 if i == 1 else r["p_chosen"]} for i, r in enumerate(prefs)]
    datasets.Dataset.from_list(bad_p).save_to_disk(str(root / "bad_p"))
    return root


def write_config(path: Path, model, dataset, output, extra: str = "", trl: str = "") -> Path:
    """A training file: a couple of CPU steps with a learning rate large enough to move a tiny model."""
    path.write_text(f"model: {model}\ndataset: {dataset}\noutput_dir: {output}\n{extra}"
                    f"trl:\n  max_steps: 2\n  per_device_train_batch_size: 2\n  learning_rate: 1e-3\n"
                    f"  logging_steps: 1\n  save_strategy: 'no'\n  max_length: 128\n{trl}")
    return path


def run_cli(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def assert_trained(result, model_dir: Path, out: Path) -> dict:
    """Exit 0, finite losses, and at least one saved weight differs from the starting model."""
    assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    record = json.loads((out / "rlaif_train.json").read_text())
    losses = record["metrics"]["losses"]
    assert record["metrics"]["steps"] == 2 and len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert [h["loss"] for h in assert_history(record, 2)] == losses  # the uniform rows, as for grpo, rloo and ppo
    before, after = load_file(model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    shared = [k for k in before if k in after and before[k].shape == after[k].shape]
    assert shared and any(not torch.equal(before[k], after[k]) for k in shared)
    return record


def test_sft_on_a_base_model_gets_a_chat_template(tiny_base_model, data, tmp_path):
    cfg = write_config(tmp_path / "t.yaml", tiny_base_model, data / "run", tmp_path / "out")
    result = run_cli("sft", cfg)
    assert_trained(result, tiny_base_model, tmp_path / "out")
    assert "no chat template" in result.output and "saved to" in result.output
    assert "'Human: '" in (tmp_path / "out" / "chat_template.jinja").read_text()  # saved with the model


@pytest.mark.parametrize("chat", [False, True])
def test_sft_trains_on_the_answer_only(tiny_base_model, tiny_chat_model, data, tmp_path, chat):
    """Through TRL's own tokenization and collator: every prompt token (the request, the template up to the
    assistant turn) has label -100; every answer token is a label equal to its input id."""
    from transformers import AutoTokenizer

    from rlaif.train.config import load_train_config
    from rlaif.train.sft import build_trainer

    model = tiny_chat_model if chat else tiny_base_model
    cfg = load_train_config(write_config(tmp_path / "t.yaml", model, data / "run", tmp_path / "out"), "sft")
    trainer, _ = build_trainer(cfg, log=lambda _: None)
    tokenizer = trainer.processing_class
    for i, row in enumerate(datasets.load_from_disk(str(data / "run" / "sft"))):
        batch = trainer.data_collator([trainer.train_dataset[i]])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [-100] * len(prompt)
        assert labels[len(prompt):] == ids[len(prompt):]  # the whole answer (and its end-of-turn) is trained
        trained = tokenizer.decode(ids[len(prompt):])
        assert row["completion"][0]["content"] in trained and not any(m in trained for m in ("Human:", "<|user|>"))
        assert row["prompt"][0]["content"] in tokenizer.decode(prompt)  # the request is context, not a target
    assert trainer.completion_only_loss is True
    assert AutoTokenizer.from_pretrained(model).bos_token_id in prompt[:1]  # one BOS, at the start


def test_sft_on_an_older_messages_export(tiny_base_model, data, tmp_path):
    """`messages` rows still train: prompt = all but the last turn, completion = the last (logged once)."""
    cfg = write_config(tmp_path / "t.yaml", tiny_base_model, data / "old", tmp_path / "out")
    result = run_cli("sft", cfg)
    assert_trained(result, tiny_base_model, tmp_path / "out")
    assert "has `messages` rows (an older export)" in result.output


@pytest.mark.parametrize("soft", [None, "margin"])
def test_reward_with_soft_labels_reports_held_out_accuracy(tiny_chat_model, data, tmp_path, soft):
    extra = "eval_fraction: 0.25\n" + (f"soft_labels: {soft}\n" if soft else "")
    cfg = write_config(tmp_path / "t.yaml", tiny_chat_model, data / "run", tmp_path / "out", extra=extra)
    result = run_cli("reward", cfg)
    record = assert_trained(result, tiny_chat_model, tmp_path / "out")
    m = record["metrics"]
    assert record["config"]["soft_labels"] == (soft or "cross_entropy")  # the soft-label loss is the default
    assert m["train_pairs"] == 6 and m["eval_pairs"] == 2  # one whole prompt (two pairs) held out
    assert 0 <= m["eval_accuracy"] <= 1 and "held-out accuracy" in result.output


@pytest.mark.parametrize("soft", [None, "rdpo", "weight"])
def test_dpo_with_soft_labels(tiny_chat_model, data, tmp_path, soft):
    extra = "method: dpo\n" + (f"soft_labels: {soft}\n" if soft else "")
    cfg = write_config(tmp_path / "t.yaml", tiny_chat_model, data / "run", tmp_path / "out", extra=extra)
    record = assert_trained(run_cli("dpo", cfg), tiny_chat_model, tmp_path / "out")
    m, conf = record["metrics"], [0.9, 0.6, 1.0, 0.75, 1.0, 0.55, 0.75, 0.8]  # unjudged: 1; scored: (1 + margin) / 2
    if soft is None:  # the default: cDPO, each pair with its own label
        assert record["config"]["soft_labels"] == "cdpo" and m["mean_p"] == pytest.approx(np.mean(conf))
        assert m["hard_pairs"] == 2
    elif soft == "rdpo":
        eps = np.mean([1 - c for c in conf])
        assert m["label_smoothing"] == pytest.approx(eps) and m["loss_type"] == ["robust"]
        assert m["rdpo_scale"] == pytest.approx(1 / (1 - 2 * eps))
    else:
        assert m["rows"] == 8 and 1 <= m["distinct_pairs"] <= 8


def test_lora_saves_an_adapter(tiny_chat_model, data, tmp_path):
    cfg = write_config(tmp_path / "t.yaml", tiny_chat_model, data / "run", tmp_path / "out",
                       extra="peft:\n  r: 4\n  lora_alpha: 8\n  target_modules: [q_proj, v_proj]\n")
    result = run_cli("sft", cfg, "--set", "trl.max_steps=3")
    assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    assert json.loads((tmp_path / "out" / "rlaif_train.json").read_text())["metrics"]["steps"] == 3
    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: nonzero means it trained
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_history_rows_from_a_trainer_log():
    """TRL's log_history -> {step, loss, ...numbers}: eval rows and the final summary row carry no training loss."""
    from rlaif.train.common import history

    log = [{"loss": 0.7, "grad_norm": 1.5, "learning_rate": 1e-3, "epoch": 0.5, "step": 1},
           {"eval_loss": 0.6, "eval_accuracy": 0.5, "step": 1},
           {"loss": 0.6, "rewards/margins": 0.1, "note": "text", "flag": True, "step": 2},
           {"train_loss": 0.65, "train_runtime": 3.0, "step": 2}]
    assert history(log) == [{"step": 1, "loss": 0.7, "grad_norm": 1.5, "learning_rate": 1e-3, "epoch": 0.5},
                            {"step": 2, "loss": 0.6, "rewards/margins": 0.1}]
    assert history([{"loss": float("nan"), "step": 3}])[0]["step"] == 3 and history([{"loss": 1.0}]) == []


def test_confidences_and_resampling():
    ds = datasets.Dataset.from_list([{"p_chosen": 0.75, "margin": 0.5}, {"p_chosen": None, "margin": 0.2},
                                     {"p_chosen": None, "margin": None}])
    assert confidences(ds).tolist() == pytest.approx([0.75, 0.6, 1.0])
    index = resample(np.array([0.0, 1.0, 3.0, 0.0]), seed=0)
    assert len(index) == 4 and 0 not in index and 3 not in index and sorted(index.tolist()) == [1, 2, 2, 2]


@pytest.mark.parametrize("case, pattern", [
    ("trl_key", r"t\.yaml:11: trl\.learnig_rate: DPOConfig has no field 'learnig_rate' \(did you mean 'learning_rate'\?\)"),
    ("top_key", r"t\.yaml:4: unknown key 'soft_label' \(did you mean 'soft_labels'\?\)"),
    ("model", r"t\.yaml:1: model path '.*no-such-model' does not exist"),
    ("empty", r"t\.yaml:2: dataset: '.*empty' has no rows"),
    ("no_rejected", r"t\.yaml:2: dataset: '.*no_rejected' has no rejected column"),
    ("lora_target", r"t\.yaml:5: peft\.target_modules: llama has no module 'qkv_proj' \(its linear layers: .*q_proj"),
    ("method", r"t\.yaml:4: method: this file trains 'sft'; run `rlaif train sft"),
    ("no_dataset", r"t\.yaml:2: dataset: '.*nowhere' not found"),
    ("trl_type", r"t\.yaml:11: trl\.num_train_epochs: expected float, got str 'many'"),
    ("old_soft", r"t\.yaml:4: soft_labels: dpo takes cdpo or rdpo or weight or none, got 'label_smoothing' "
                 r"\('label_smoothing' is now 'rdpo'; the per-pair default is 'cdpo'\)"),
    ("cdpo_loss", r"t\.yaml:11: trl\.loss_type: soft_labels cdpo adds its per-pair term to TRL's sigmoid loss"),
    ("rdpo_loss", r"t\.yaml:12: trl\.loss_type: soft_labels rdpo is TRL's robust loss, got \['exo_pair'\]"),
    ("bad_p", r"t\.yaml:4: soft_labels: row 1 has p_chosen 1\.5, not a probability in \[0, 1\]"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_chat_model, data, tmp_path, monkeypatch, case, pattern):
    """Caught before any weights load: from_pretrained must not be reached."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the input was validated")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification):
        monkeypatch.setattr(cls, "from_pretrained", refuse)
    model, dataset, extra, trl = tiny_chat_model, data / "run", "", ""
    if case == "trl_key":
        trl = "  learnig_rate: 0.1\n"
    elif case == "top_key":
        extra = "soft_label: weight\n"
    elif case == "model":
        model = tmp_path / "no-such-model"
    elif case in ("empty", "no_rejected"):
        dataset = data / case
    elif case == "lora_target":
        extra = "peft:\n  target_modules: [q_proj, qkv_proj]\n"
    elif case == "method":
        extra = "method: sft\n"
    elif case == "no_dataset":
        dataset = data / "nowhere"
    elif case == "trl_type":
        trl = "  num_train_epochs: many\n"
    elif case == "old_soft":
        extra = "soft_labels: label_smoothing\n"
    elif case == "cdpo_loss":
        trl = "  loss_type: ipo\n"
    elif case == "rdpo_loss":
        extra, trl = "soft_labels: rdpo\n", "  loss_type: exo_pair\n"
    elif case == "bad_p":
        dataset, extra = data / "bad_p", "soft_labels: cdpo\n"
    result = run_cli("dpo", write_config(tmp_path / "t.yaml", model, dataset, tmp_path / "out", extra, trl))
    err = result.stderr.strip()
    assert result.exit_code == 2, result.output + err + repr(result.exception)
    assert "\n" not in err and "Traceback" not in err, err
    assert re.search(pattern, err), err


def test_every_error_is_reported_at_once(data, tmp_path):
    cfg = write_config(tmp_path / "t.yaml", tmp_path / "no-model", data / "run", tmp_path / "out", trl="  warmup_step: 1\n")
    result = run_cli("reward", cfg)
    assert result.exit_code == 2
    assert re.search(r"t\.yaml:11: trl\.warmup_step: .*did you mean 'warmup_steps'", result.stderr)
    assert re.search(r"t\.yaml:1: model path .* does not exist", result.stderr)
