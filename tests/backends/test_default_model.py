"""The embedded default model: converted once into the cache, BOS fixed, and it completes sensibly."""

from __future__ import annotations

import json

import pytest

from rlaif.backends.base import Request, Sampling
from rlaif.backends.default_model import MARKER, default_model_dir, prepare
from rlaif.backends.pool import resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir():
    return prepare(log=lambda line: None)  # converts once (~1 min), then reuses the cache


def test_cache_location_follows_rlaif_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    assert default_model_dir() == tmp_path / "models" / "gemma3-270m"
    monkeypatch.delenv("RLAIF_CACHE")
    assert default_model_dir().parts[-4:] == (".cache", "rlaif", "models", "gemma3-270m")


def test_resolve_model(model_dir):
    assert resolve_model("default") == str(model_dir)
    assert resolve_model("some/other-model") == "some/other-model"


def test_prepared_directory_is_complete_and_plain(model_dir):
    assert (model_dir / MARKER).exists()
    assert (model_dir / "model.safetensors").stat().st_size > 400e6  # bf16 weights, not 4-bit blocks
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "gemma3_text"
    assert not list(model_dir.parent.glob(f".{model_dir.name}.tmp-*"))  # no half-written leftovers


def test_tokenizer_adds_bos(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("hello").input_ids
    assert ids[0] == tok.bos_token_id == 2
    assert ids.count(tok.bos_token_id) == 1
    assert tok("hello", add_special_tokens=False).input_ids[0] != tok.bos_token_id


def test_greedy_completions_are_sensible(model_dir):
    # Without BOS this model answers "France of France of ...", "\nA\nA\nA" and "Paris" for Germany.
    from rlaif.backends.hf import HFGenerator

    gen = HFGenerator(str(model_dir))
    greedy = Sampling(temperature=0, max_tokens=16)
    prompts = [
        "Q: What is the capital of France?\nA:",
        "The capital of France is Paris. The capital of Germany is",
        "The capital of France is",
    ]
    facts, berlin, free = (c.outputs[0] for c in gen.generate([Request(prompt=p, sampling=greedy) for p in prompts]))
    assert "Paris" in facts.text
    assert berlin.text.startswith(" Berlin")
    # the bare prompt does not name Paris (a 270M base model), but it must not loop on two words
    words = free.text.split()
    assert free.tokens == 16 and len(set(words)) >= len(words) / 2, free.text
    gen.close()
