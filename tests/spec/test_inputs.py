"""Prompt sets in every supported form."""

from __future__ import annotations

import json

import datasets
import pytest

from rlaif.errors import UserError
from rlaif.spec.inputs import load_prompts


def test_jsonl_prompt_and_messages(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "Hello?"}, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
            {"prompt": "Hello?"}]  # an exact duplicate is dropped
    path.write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    prompts = load_prompts(path)
    assert [p.messages for p in prompts] == [({"role": "user", "content": "Hello?"},),
                                            ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})]
    assert len({p.id for p in prompts}) == 2


def test_csv_text_and_limit(tmp_path):
    (tmp_path / "p.csv").write_text('prompt,category\n"Say ""hi"", please",x\nSecond,y\n')
    assert [p.messages[0]["content"] for p in load_prompts(tmp_path / "p.csv")] == ['Say "hi", please', "Second"]
    (tmp_path / "p.txt").write_text("one\n\ntwo\nthree\n")
    assert [p.messages[0]["content"] for p in load_prompts(tmp_path / "p.txt", limit=2)] == ["one", "two"]


def test_saved_dataset(tmp_path):
    datasets.Dataset.from_dict({"prompt": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    assert [p.messages[0]["content"] for p in load_prompts(tmp_path / "ds")] == ["a", "b"]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "c"}]]})}).save_to_disk(
        str(tmp_path / "dd"))
    assert load_prompts(tmp_path / "dd")[0].messages == ({"role": "user", "content": "c"},)


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="not a saved `datasets` dataset"):
        load_prompts(tmp_path / "d")


def test_prompt_ids_are_stable(tmp_path):
    (tmp_path / "a.txt").write_text("x\ny\n")
    (tmp_path / "b.txt").write_text("y\nx\n")
    assert {p.id for p in load_prompts(tmp_path / "a.txt")} == {p.id for p in load_prompts(tmp_path / "b.txt")}
