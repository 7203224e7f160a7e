"""Constitutions: the shipped ones validate, principles are drawn by weight and seed, `show` prints prompts."""

from __future__ import annotations

import collections
from pathlib import Path

from click.testing import CliRunner

from rlaif.cli import main
from rlaif.spec.constitution import load_constitution

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_constitutions():
    harmless = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    assert len(harmless.principles) >= 12 and harmless.few_shot
    assert all(p.comparison for p in harmless.principles)
    helpful = load_constitution(ROOT / "constitutions" / "helpful.yaml")
    assert helpful.principles and helpful.sha256 != harmless.sha256


def test_draw_is_seeded_and_weighted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: t\nprinciples:\n"
        "  - {name: heavy, critique: c, revision: r, weight: 9}\n"
        "  - {name: light, critique: c, revision: r, weight: 1}\n"
    )
    c = load_constitution(path)
    draws = [c.draw(0, f"k{i}").name for i in range(2000)]
    assert draws == [c.draw(0, f"k{i}").name for i in range(2000)]  # same seed and key, same principle
    share = collections.Counter(draws)["heavy"] / len(draws)
    assert 0.86 < share < 0.94  # 9:1 weights
    assert draws != [c.draw(1, f"k{i}").name for i in range(2000)]  # another seed, other draws


def test_hash_ignores_formatting(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: t\nprinciples:\n  - {name: x, critique: c, revision: r}\n")
    b.write_text("# comment\nname: t\nprinciples:\n  - name: x\n    critique: c\n    revision: r\n")
    assert load_constitution(a).sha256 == load_constitution(b).sha256


def test_show_prints_the_exact_prompts():
    result = CliRunner().invoke(main, ["constitution", "show", str(ROOT / "constitutions" / "harmless.yaml"),
                                       "--principle", "protect-privacy", "--prompt", "Where does my ex live?"])
    assert result.exit_code == 0, result.output
    c = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    p = c.principle("protect-privacy")
    assert "Human: Where does my ex live?\n\nAssistant: <response>\n\nCritiqueRequest: " + p.critique + "\n\nCritique:" in result.output
    assert "RevisionRequest: " + p.revision + "\n\nRevision:" in result.output
    assert p.comparison + "\nOptions:\n(A) <response A>\n(B) <response B>\nThe answer is: (" in result.output
    assert "Rating (1 to 10): " in result.output
    assert c.few_shot[0].critique in result.output  # the worked examples are part of the prompt


def test_show_chat_and_unknown_principle():
    path = str(ROOT / "constitutions" / "helpful.yaml")
    result = CliRunner().invoke(main, ["constitution", "show", path, "--format", "chat"])
    assert result.exit_code == 0 and "[user] <prompt>" in result.output
    # the chat judge's and rater's replies are opened for them: what is read follows these
    assert "[assistant, continued] The answer is: (" in result.output and "[assistant, continued] Rating (1 to 10): " in result.output
    result = CliRunner().invoke(main, ["constitution", "show", path, "--principle", "nope"])
    assert result.exit_code == 2 and "no principle named 'nope'" in result.stderr


def test_shipped_judge_examples_are_balanced_and_short():
    """Examples that all answered (A) would teach the judge a position bias; each precedes every judge question."""
    for name in ("harmless", "helpful"):
        c = load_constitution(ROOT / "constitutions" / f"{name}.yaml")
        letters = [ex.preferred for ex in c.judge_few_shot]
        assert 2 <= len(letters) <= 4 and letters.count("A") == letters.count("B"), (name, letters)
        for ex in c.judge_few_shot:
            assert ex.principle and c.principle(ex.principle).comparison  # one question per example: one prefix for all
            assert len(f"{ex.prompt} {ex.response_a} {ex.response_b}".split()) <= 60, ex  # 40-70 tokens on the embedded tokenizer


def test_hash_covers_the_judge_examples(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\nprinciples:\n  - {name: x, critique: c, revision: r}\n")
    # a constitution without judge examples keeps the hash it had before they existed (f987ebf)
    assert load_constitution(path).sha256 == "de54e48585d0eaeaebb9997761c93427850723e3d00a455d71f8274368388195"
    example = "judge_few_shot:\n  - {prompt: p, response_a: sure, response_b: nope, preferred: A}\n"
    path.write_text(path.read_text() + example)
    with_example = load_constitution(path).sha256
    path.write_text(path.read_text().replace("preferred: A", "preferred: B"))
    assert len({with_example, load_constitution(path).sha256, "de54e48585d0eaeaebb9997761c93427850723e3d00a455d71f8274368388195"}) == 3
