"""Degenerate-revision detection, table-driven on real failure modes of small base models."""

import pytest

from rlaif.stages.quality import clean_revision, repetitive, revision_problem

REQUEST = "Rewrite the response so it contains only accurate information."
EXAMPLE = "I can't help with getting onto someone's network without their permission; that is illegal in most countries."
EXAMPLE_PROMPT = "I've had chest pain and a numb left arm since this morning. Which painkiller should I take?"
USER = "What is the capital of Portugal, and is Lisbon worth a visit?"


@pytest.mark.parametrize(
    "revision, initial, expected",
    [
        ("", "x", "empty"),
        ("   ", "x", "empty"),
        ("Same answer.", "same   answer.", "unchanged"),
        ("Rewrite the response so it contains only accurate information.", "x", "echoes_request"),
        ("Rewrite the response so it contains only accurate info", "x", "echoes_request"),
        ("Rewrite the response to be clear about the assistant's limits.", "x", "echoes_request"),
        (EXAMPLE, "x", "copies_example"),
        ("I'm not sure what to do with my eggs. " * 6, "x", "repetitive"),
        ("Use mashed banana or applesauce: about a quarter cup replaces one egg.", "Eggs.", None),
        ("No.", "Yes.", None),
        # F10: a copy of a few-shot *prompt* (seen in the demo's SFT data), and an echo of the user's own question
        ("I've been having chest pain and a numb left arm since this morning. Which painkiller should I take?", "x",
         "copies_example"),
        ("What is the capital of Portugal and is Lisbon worth visiting?", "x", "echoes_prompt"),
        ("Lisbon is the capital of Portugal, and yes: the old town and the river are worth a visit.", "x", None),
    ],
)
def test_revision_problem(revision, initial, expected):
    assert revision_problem(revision, initial, [REQUEST], [EXAMPLE, EXAMPLE_PROMPT], [USER]) == expected


@pytest.mark.parametrize("finish, expected", [("length", "truncated"), ("stop", None), (None, None)])
def test_a_revision_cut_at_max_tokens_is_not_a_target(finish, expected):
    assert revision_problem("Call your local emergency number now, and do not", "x", [], [], [], finish) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Here is a revised response: Call 112 now.", "Call 112 now."),
        ("Sure! Here's a rewritten version of the response that removes the harm:\n\nCall 112.", "Call 112."),
        ("Sure, here is the revised response:\nHi there.", "Hi there."),
        ("Okay, here's my revision: fine", "fine"),
        ("Revised answer: Lisbon.", "Lisbon."),
        ("Revision: ok", "ok"),
        ("**Revised response:** Call 112.", "Call 112."),
        ('"Here is the answer:" Lisbon', "Lisbon"),
        # answers that merely start like a preamble are left alone
        ("Here's how to bake bread: mix flour, water and yeast.", "Here's how to bake bread: mix flour, water and yeast."),
        ("The response is wrong: it should say Lisbon.", "The response is wrong: it should say Lisbon."),
        ("Version: 3.2 is the latest.", "Version: 3.2 is the latest."),
        ("Sure! I can help with that.", "Sure! I can help with that."),
        ("Here is a revised response:", ""),  # nothing after the preamble: an empty revision
        ("", ""), ("   ", ""), (None, ""),
    ],
)
def test_clean_revision_strips_chat_preambles(text, expected):
    assert clean_revision(text) == expected


def test_repetitive_needs_enough_words():
    assert not repetitive("a b c a b c")
    assert repetitive("the door and the door and the door and the door and the door and the door")
