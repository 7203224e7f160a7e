"""Degenerate-revision detection, table-driven on real failure modes of small base models."""

import pytest

from rlaif.quality import repetitive, revision_problem

REQUEST = "Rewrite the response so it contains only accurate information."
EXAMPLE = "I can't help with getting onto someone's network without their permission; that is illegal in most countries."


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
    ],
)
def test_revision_problem(revision, initial, expected):
    assert revision_problem(revision, initial, [REQUEST], [EXAMPLE]) == expected


def test_repetitive_needs_enough_words():
    assert not repetitive("a b c a b c")
    assert repetitive("the door and the door and the door and the door and the door and the door")
