"""`rlaif export`: formats, the dataset card, and its bad inputs."""

from __future__ import annotations

import json

import datasets
import pytest
from click.testing import CliRunner

from rlaif.cli import main


@pytest.mark.parametrize("fmt, files", [("hf", ["prefs/dataset_info.json", "sft/state.json"]),
                                        ("jsonl", ["prefs.jsonl", "sft.jsonl"]), ("parquet", ["prefs.parquet", "sft.parquet"])])
def test_export_formats_and_card(run_dir, tmp_path, fmt, files):
    out = tmp_path / f"out-{fmt}"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", fmt, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for f in files:
        assert (out / f).is_file(), f
    n = len(datasets.load_from_disk(str(run_dir / "prefs")))
    if fmt == "jsonl":
        assert len((out / "prefs.jsonl").read_text().splitlines()) == n
    if fmt == "parquet":
        assert len(datasets.load_dataset("parquet", data_files=str(out / "prefs.parquet"), split="train")) == n
    card = (out / "README.md").read_text()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["constitution"]["sha256"] in card and f"| `prefs` | {n} |" in card
    assert "DPOTrainer" in card and "load_dataset" in card and "scripted-judge" in card and "both_orders=True" in card
    assert f"| samples | {n} |" in card
    judged = info["counts"]["judge"]["overall"]  # how the labels were read, and how many orders had too little mass
    assert f"of {judged['orders_scored']} scored orders,\n0 had P(A) + P(B) below `min_option_mass`" in card


def test_card_shows_the_pair_counts(run_dir, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["export", str(run_dir), "--format", "jsonl", "--out", str(out)]).exit_code == 0
    card = (out / "README.md").read_text()
    pairs = json.loads((run_dir / "run.json").read_text())["counts"]["pairs"]
    assert f"**{pairs['duplicates_merged']} duplicates merged**" in card and f"**{pairs['conflicts']} conflicts**" in card
    assert f"tie {pairs['dropped']['tie']}," in card and "label_source" in card  # the dropped ties, counted


def test_export_merges_the_duplicate_pairs_of_an_older_run(run_dir, tmp_path):
    """F7: a prefs/ made before pairs were merged lists a pair twice, the second time swapped (a score pair);
    `rlaif export` writes one row per pair_id, the judge's label kept and the disagreement marked."""
    from rlaif.export.rows import PREF_FEATURES, write_dataset

    prefs = list(datasets.load_from_disk(str(run_dir / "prefs")))
    old = [{k: v for k, v in r.items() if k not in ("label_source", "signals", "conflict")} | dict.fromkeys(
        ("label_source", "signals", "conflict")) for r in prefs]
    twin = old[0] | {"pair_type": "best_vs_worst", "chosen": old[0]["rejected"], "rejected": old[0]["chosen"],
                     "p_chosen": None, "margin": 0.3, "score_chosen": 7.0, "score_rejected": 4.3}
    write_dataset(old + [twin], PREF_FEATURES, run_dir, "prefs")
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["export", str(run_dir), "--format", "jsonl", "--out", str(out)]).exit_code == 0
    rows = [json.loads(x) for x in (out / "prefs.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["pair_id"] for r in rows}) == len(prefs)
    merged = next(r for r in rows if r["pair_id"] == prefs[0]["pair_id"])
    assert merged["chosen"] == prefs[0]["chosen"] and merged["p_chosen"] == pytest.approx(prefs[0]["p_chosen"])
    assert merged["signals"] == ["judge", "score"] and merged["conflict"] is True and merged["label_source"] == "judge"
    assert (merged["score_chosen"], merged["score_rejected"]) == (4.3, 7.0)  # the scores follow their answers


@pytest.mark.parametrize("setup, pattern", [
    ("missing", r"not a run directory \(no run\.json\)"),
    ("running", r"run\.json: the run has not finished"),
])
def test_export_bad_run_dir(tmp_path, setup, pattern):
    import re

    d = tmp_path / "run"
    d.mkdir()
    if setup == "running":
        (d / "run.json").write_text(json.dumps({"status": "running"}))
    result = CliRunner().invoke(main, ["export", str(d)])
    assert result.exit_code == 2 and re.search(pattern, result.stderr) and "\n" not in result.stderr.strip()


def test_push_without_token(run_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login either
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(tmp_path / "o"), "--push-to-hub", "me/data"])
    assert result.exit_code == 2 and "needs a Hugging Face token" in result.stderr
