"""Shared fixtures: tiny random-weight models with an in-process tokenizer (no downloads), a finished run directory,
training data; the fakes they use live in tests/fakes.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tiny_model(directory: Path, chat: bool) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [json.loads(line)["prompt"] for line in (ROOT / "data" / "prompts.jsonl").read_text().splitlines()]
    corpus += (ROOT / "constitutions" / "harmless.yaml").read_text().splitlines()
    specials = ["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A tiny Llama with a chat template (chat prompt format)."""
    return _tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """A tiny Llama without a chat template (few-shot completion format, like the default model)."""
    return _tiny_model(tmp_path_factory.mktemp("tiny-base"), chat=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A scratch directory with the shipped constitutions, data and pipelines, as cwd."""
    for name in ("constitutions", "data", "pipelines"):
        shutil.copytree(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_pipeline(path: Path, model: Path | str, **extra) -> Path:
    """A small pipeline file for tests: the hf backend, or `backend=...` (e.g. "scripted": no model at all)."""
    backend = extra.pop("backend", "hf")
    stages = extra.pop("stages", "stages:\n  respond: {n: 2, max_tokens: 12}\n  critique: {rounds: 2, max_tokens: 12}\n")
    text = (
        f"name: {extra.pop('name', 'test')}\n"
        f"constitution: {extra.pop('constitution', 'constitutions/harmless.yaml')}\n"
        f"prompts: {extra.pop('prompts', 'data/prompts.jsonl')}\n"
        f"limit: {extra.pop('limit', 6)}\n"
        f"batch_size: {extra.pop('batch_size', 4)}\n"
        f"models:\n  policy: {{model: {model}, backend: {backend}, dtype: float32}}\n" + stages
    )
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    path.write_text(text)
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, never failed, where there is no CUDA device (as in CI)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


def stage_context(directory: Path, batch_size: int = 4, seed: int = 0):
    """A StageContext over a fresh store in `directory`, the harmless constitution and the shipped templates."""
    import io

    from rich.console import Console

    from rlaif.spec.constitution import load_constitution
    from rlaif.progress import Reporter
    from rlaif.stages.common import StageContext
    from rlaif.rundir.store import Store
    from rlaif.spec.templates import Templates

    directory.mkdir(parents=True, exist_ok=True)
    return StageContext(Store(directory / "records.sqlite"), load_constitution(ROOT / "constitutions" / "harmless.yaml"),
                        Templates(), Reporter(Console(file=io.StringIO())), seed=seed, batch_size=batch_size)


def assert_history(record: dict, steps: int) -> list[dict]:
    """rlaif_train.json's metrics.history in the one shape every trainer writes: a row per logged step 1..steps, each
    {step: int, loss: finite float, ...other numbers}."""
    import math

    history = record["metrics"]["history"]
    assert [h["step"] for h in history] == list(range(1, steps + 1)), history
    for h in history:
        assert isinstance(h["step"], int) and isinstance(h["loss"], float) and math.isfinite(h["loss"]), h
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in h.values()), h
    return history
@pytest.fixture
def run_dir(workdir):
    """A finished run with judged pairs on the scripted backend (no model): four prompts, three responses each; the
    scripted judge's labels leave 6 of the 12 sample pairs (the others are ties)."""
    from click.testing import CliRunner

    from rlaif.cli import main

    (workdir / "p.txt").write_text("one\ntwo\nthree\nfour\n")
    stages = "stages:\n  respond: {n: 3}\n  judge: {}\n"
    pipe = write_pipeline(workdir / "p.yaml", "scripted-judge", prompts="p.txt", stages=stages, backend="scripted")
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    return workdir / "outputs" / "test"


@pytest.fixture
def prompts_ds(tmp_path):
    """A preference dataset of four prompts, two of them repeated (online training reads each prompt once)."""
    import datasets

    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": [{"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(4)]
    rows += rows[:2]  # repeated prompts, as in a preference dataset: trained once each
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs"))
    return tmp_path / "prefs"


@pytest.fixture
def make_reward_model(tmp_path):
    """Builds a tiny random reward model on a policy's tokenizer as `rlaif train reward` saves it (a base model gets
    rlaif's Human:/Assistant: training template), in tmp_path/rm."""

    def make(policy_dir: Path) -> Path:
        import torch
        from transformers import LlamaConfig, LlamaForSequenceClassification

        from rlaif.train import load_tokenizer

        tok = load_tokenizer(str(policy_dir), log=lambda _: None)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
        tok.save_pretrained(tmp_path / "rm")
        return tmp_path / "rm"

    return make


@pytest.fixture
def tiny_reward_model(make_reward_model, tiny_chat_model) -> Path:
    """The tiny reward model on the tiny chat model's tokenizer."""
    return make_reward_model(tiny_chat_model)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Bad input must be caught before any model is loaded (the bad-input suites use it on every test)."""
    from rlaif.backends import pool

    def refuse(self, cfg):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(pool.ModelPool, "get", refuse)
