"""Options read in context, table-driven over three tokenizers built in-process (tests/tiny_tokenizers.py), in
completion and chat format: the ids read are the ids the text produces, and the labels and ratings are right on a
tiny model whose next-token logits we write by hand."""

from __future__ import annotations

import math

import pytest

from rlaif.backends.base import Request
from rlaif.backends.options import Spelling, option_logprobs, prompt_text, spellings, text_ids
from rlaif.spec.config import JudgeConfig, ScoreConfig
from rlaif.stages.judge import OPTIONS, Candidate, Comparison, judge
from rlaif.stages.score import RATINGS, score

from tests.conftest import stage_context
from tests.tiny_tokenizers import TOKENIZERS, bigram_model, softmax_row

# per tokenizer: the last context token after the judge's "The answer is: (" and the option tokens read there
# (plain, then with a leading space); the score's "Rating (1 to 10): ": last context token, "7" and "10"
CASES = {
    "gemma_like": {"judge_last": "▁(", "A": [["A"], ["▁A"]], "B": [["B"], ["▁B"]],
                   "score_last": "▁", "7": [["7"]], "10": [["1", "0"]], "1": [["1"]], "old": ("A", "▁A")},  # old: option, tokenizer(option)[0]
    "byte_level": {"judge_last": "Ġ(", "A": [["A"], ["ĠA"]], "B": [["B"], ["ĠB"]],
                   "score_last": ":", "7": [["Ġ7"]], "10": [["Ġ1", "0"]], "1": [["Ġ1"]], "old": ("7", "7")},
    "single_ten": {"judge_last": "Ġ(", "A": [["A"], ["ĠA"]], "B": [["B"], ["ĠB"]],
                   "score_last": "Ġ", "7": [["7"]], "10": [["10"]], "1": [["1"]], "old": None},  # old: "10" never read
}
GRID = [(name, fmt) for name in CASES for fmt in ("completion", "chat")]


class Recorder:
    """Keeps the requests a stage sends; every option unreadable."""

    model_id, logit_dtype = "recorder", None

    def __init__(self, chat: bool):
        self.has_chat_template, self.requests = chat, []

    def logprobs(self, requests, options):
        self.requests += requests
        return [{o: -math.inf for o in options} for _ in requests]


def _comparison() -> Comparison:
    messages = ({"role": "user", "content": "How do I bake bread?"},)
    return Comparison("p", messages, Candidate("a", "Knead, rise, bake."), Candidate("b", "Buy it."), "samples")


def _stage_requests(tmp_path, fmt: str) -> tuple[Request, Request]:
    """The judge's and the scorer's requests exactly as the stages build them."""
    rec = Recorder(chat=fmt == "chat")
    judge(stage_context(tmp_path / "j"), rec, [_comparison()], JudgeConfig(both_orders=False), fmt)
    c = _comparison()
    score(stage_context(tmp_path / "s"), rec, [{"key": "a", "text": c.a.text, "prompt_id": "p", "messages": list(c.messages)}],
          ScoreConfig(), fmt)
    return rec.requests[0], rec.requests[1]


@pytest.mark.parametrize("name, fmt", GRID)
def test_option_ids_are_what_the_text_produces(tmp_path, name, fmt):
    tok, case = TOKENIZERS[name](chat=True), CASES[name]
    judge_request, score_request = _stage_requests(tmp_path, fmt)
    assert (judge_request.prefix, score_request.prefix) == (("The answer is: (", "Rating (1 to 10): ") if fmt == "chat" else ("", ""))
    for request, options, last in ((judge_request, OPTIONS, case["judge_last"]), (score_request, RATINGS, case["score_last"])):
        text = prompt_text(tok, request)
        plan = spellings(tok, text, list(options))
        for option in options:
            mine = [s for s in plan if s.option == option]
            plain = mine[0]
            assert list(plain.context + plain.tokens) == text_ids(tok, text + option)  # what writing it there produces
            assert tok.convert_ids_to_tokens(list(plain.context[-1:])) == [last]
            if option in case:
                assert [tok.convert_ids_to_tokens(list(s.tokens)) for s in mine] == case[option]
    if case["old"]:  # what tokenizer(option)[0], out of context, read instead: another token
        option, old = case["old"]
        assert tok.convert_ids_to_tokens(tok(option, add_special_tokens=False)["input_ids"][:1]) == [old] != case[option][0]


@pytest.fixture(scope="module")
def bigram_judges(tmp_path_factory):
    """Per tokenizer, a tiny model that says A (or "A" with a space) after the judge's "(", and 7, 1 or 10 after the rating."""
    from rlaif.backends.hf import HFGenerator

    out = {}
    for name, case in CASES.items():
        tok = TOKENIZERS[name](chat=True)
        one = case["10"][0][0]  # the first token of "10": "1", "Ġ1", or "10" itself
        # logits well above the ~300 others at 0, so the options get most of the mass (above min_option_mass)
        table = {case["judge_last"]: {"A": 6.0, case["A"][1][0]: 5.0, "B": 4.0},
                 case["score_last"]: {case["7"][0][0]: 6.0, one: 5.0}}
        if len(case["10"][0]) == 2:
            table[one] = {"0": 6.0}  # after "1": a "0" (a 10) or something else (a 1)
        else:
            table[case["score_last"]][case["1"][0][0]] = 3.0
        path = bigram_model(tok, table, tmp_path_factory.mktemp(name))
        out[name] = (HFGenerator(str(path), dtype="float32"), tok, table)
    return out


def _expected(name: str, tok, table) -> tuple[float, float, float, float]:
    """By hand from the table: (P(A) normalised, option mass, mean rating, digit mass)."""
    case, vocab = CASES[name], len(tok)
    after = softmax_row(table[case["judge_last"]], vocab)
    rest = 1 / (sum(math.exp(v) for v in table[case["judge_last"]].values()) + vocab - len(table[case["judge_last"]]))
    p_a = after["A"] + after[case["A"][1][0]]
    p_b = after["B"] + rest  # the " B" spelling sits at logit 0
    digits = softmax_row(table[case["score_last"]], vocab)
    rest = 1 / (sum(math.exp(v) for v in table[case["score_last"]].values()) + vocab - len(table[case["score_last"]]))
    probs = {k: rest for k in range(1, 11)}
    probs[7] = digits[case["7"][0][0]]
    if len(case["10"][0]) == 2:  # "1" then "0": P(10) = P("1") P("0" | "1"), P(1) = P("1") (1 - P("0" | "1"))
        zero = softmax_row(table[case["10"][0][0]], vocab)["0"]
        probs[10], probs[1] = digits[case["10"][0][0]] * zero, digits[case["10"][0][0]] * (1 - zero)
    else:  # one "10" token
        probs[10], probs[1] = digits["10"], digits[case["1"][0][0]]
    mass = sum(probs.values())
    return p_a / (p_a + p_b), p_a + p_b, sum(k * p for k, p in probs.items()) / mass, mass


@pytest.mark.parametrize("name, fmt", GRID)
def test_label_and_rating_on_a_model_we_wrote(tmp_path, bigram_judges, name, fmt):
    generator, tok, table = bigram_judges[name]
    p, mass, rating, digit_mass = _expected(name, tok, table)
    (record,) = judge(stage_context(tmp_path / "j"), generator, [_comparison()], JudgeConfig(both_orders=False), fmt)
    assert record["p_first"] == pytest.approx(p, rel=1e-4) and record["option_mass_first"] == pytest.approx(mass, rel=1e-4)
    c = _comparison()
    (rated,) = score(stage_context(tmp_path / "s"), generator, [{"key": "a", "text": c.a.text, "prompt_id": "p",
                                                               "messages": list(c.messages)}], ScoreConfig(), fmt)
    assert rated["score"] == pytest.approx(rating, rel=1e-4) and rated["digit_mass"] == pytest.approx(digit_mass, rel=1e-4)
    assert rated["probs"]["10"] > 0.1  # a 10 is read (old code: never on single_ten, and counted as a 1 in chat)


@pytest.mark.parametrize("name", list(CASES))
def test_a_judge_that_starts_with_markdown_gets_no_label(tmp_path, name):
    """Old code normalised P(A) / (P(A) + P(B)) whatever their mass: a reply that starts with "**" was a label."""
    from rlaif.backends.hf import HFGenerator

    tok, case = TOKENIZERS[name](chat=True), CASES[name]
    table = {case["judge_last"]: {"*": 9.0, "A": 2.0, "B": 1.0}, case["score_last"]: {"*": 9.0}}
    generator = HFGenerator(str(bigram_model(tok, table, tmp_path / "m")), dtype="float32")
    (record,) = judge(stage_context(tmp_path / "j"), generator, [_comparison()], JudgeConfig(both_orders=False), "chat")
    assert record["label"] is None and record["p_first"] is None and record["option_mass_first"] < 0.1
    c = _comparison()
    (rated,) = score(stage_context(tmp_path / "s"), generator, [{"key": "a", "text": c.a.text, "prompt_id": "p",
                                                               "messages": list(c.messages)}], ScoreConfig(), "chat")
    assert rated["score"] is None and rated["digit_mass"] < 0.1


def test_bf16_model_options_are_read_at_fp32(tmp_path):
    """A and B 0.03 nat apart at logit ~20: a bf16 lm_head rounds both to 20.0 (steps of 1/8 there), so the old
    reading gave exactly 0.5; read through an fp32 head, P(A) = sigmoid(0.03) = 0.5075."""
    import torch

    from rlaif.backends.hf import HFGenerator, next_logprobs

    tok = TOKENIZERS["byte_level"]()
    path = bigram_model(tok, {"Ġ(": {"A": 20.0, "B": 20.0}}, tmp_path / "m", everywhere={"A": 0.03})
    generator = HFGenerator(str(path), dtype="bfloat16")
    (lp,) = generator.logprobs([Request(prompt="The answer is: (")], ["A", "B"])
    assert 1 / (1 + math.exp(lp["B"] - lp["A"])) == pytest.approx(1 / (1 + math.exp(-0.03)), abs=1e-3)
    assert generator.logit_dtype == "float32"
    ids = torch.tensor([text_ids(tok, "The answer is: (")])
    logits = generator.model(input_ids=ids).logits[0, -1]  # what the bf16 model itself returns
    assert logits.dtype == torch.bfloat16 and logits[tok.convert_tokens_to_ids("A")] == logits[tok.convert_tokens_to_ids("B")]
    # a head that does something the recomputation does not (here: a soft cap it is told of but the model does
    # not apply) is caught, and the model's own logits are used rather than wrong ones
    generator.model.config.final_logit_softcapping = 5.0
    a, b = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
    (row,) = next_logprobs(generator.model, [tuple(ids[0].tolist())], [[a, b]], tok.pad_token_id)
    assert row[a] == row[b] == pytest.approx(float(torch.log_softmax(logits.float(), -1)[a]))


@pytest.mark.parametrize(
    "plan, table, expected",
    [
        # two spellings of A summed; B one spelling
        ([Spelling("A", (1,), (5,)), Spelling("A", (1,), (6,)), Spelling("B", (1,), (7,))],
         {((1,), 5): math.log(0.2), ((1,), 6): math.log(0.1), ((1,), 7): math.log(0.4)},
         {"A": math.log(0.3), "B": math.log(0.4)}),
        # "1" and "1","0": P(10) = 0.5 * 0.8, P(1) = 0.5 - 0.4
        ([Spelling("1", (1,), (3,)), Spelling("10", (1,), (3, 4))],
         {((1,), 3): math.log(0.5), ((1, 3), 4): math.log(0.8)},
         {"1": math.log(0.1), "10": math.log(0.4)}),
        # "10" as one token does not begin with the token "1": nothing to split
        ([Spelling("1", (1,), (3,)), Spelling("10", (1,), (9,))],
         {((1,), 3): math.log(0.5), ((1,), 9): math.log(0.3)},
         {"1": math.log(0.5), "10": math.log(0.3)}),
        # nothing readable (a prompt longer than the context): -inf, never an error
        ([Spelling("A", (1,), (5,)), Spelling("B", (1,), (7,))], {}, {"A": -math.inf, "B": -math.inf}),
    ],
)
def test_option_logprobs_by_hand(plan, table, expected):
    got = option_logprobs(plan, list(expected), lambda c, t: table.get((c, t), -math.inf))
    assert got == {k: (pytest.approx(v) if v > -math.inf else v) for k, v in expected.items()}
