"""Human labels: each import format, each merge policy, agreement statistics by hand, each kind of bad row."""

from __future__ import annotations

import csv
import json

import datasets
import pytest

from rlaif.human.merge import agreement, cohen_kappa, majority

from tests.fakes import _annotate, _merge, _merged


def test_cohen_kappa_by_hand():
    # p_o = 3/4; AI says a,a,b,b; human a,b,b,b -> p_e = (2*1 + 2*3) / 16 = 0.5 -> kappa = 0.5
    assert cohen_kappa([("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]) == pytest.approx(0.5)
    assert cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None  # p_e = 1: undefined
    assert cohen_kappa([]) is None


def test_majority_and_agreement_report():
    assert majority(["first", "first", "second"]) == ("first", pytest.approx(2 / 3))
    assert majority(["first", "second"]) == ("tie", 0.5)
    report = agreement([("p1", "first", "first", ["x"]), ("p2", "first", "second", ["x"]), ("p3", "second", "tie", ["y"])])
    assert report["overall"]["agreement"] == 0.5 and report["overall"]["human_ties"] == 1
    assert report["overall"]["conflicts"] == ["p2"]
    assert report["overall"]["confusion"] == {"first": {"first": 1, "second": 1}, "second": {"tie": 1}}
    assert report["per_group"]["x"]["pairs"] == 2 and report["per_group"]["y"]["agreement"] is None


def _write_csv(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["pair_id", "verdict", "annotator", "comment"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_verdicts_majority_conflicts_and_idempotence(run_dir, tmp_path):
    rows, order = _annotate(run_dir, tmp_path)
    assert len(rows) >= 2
    first, second = rows[0]["pair_id"], rows[1]["pair_id"]
    agree_letter = {pid: "a" if order[pid]["a"] == "chosen" else "b" for pid in order}  # the letter showing the AI's choice
    other = {"a": "b", "b": "a"}
    votes = [  # pair 1: two of three annotators agree with the AI; pair 2: two of two disagree
        {"pair_id": first, "verdict": agree_letter[first], "annotator": "ann1"},
        {"pair_id": first, "verdict": agree_letter[first].upper(), "annotator": "ann2"},
        {"pair_id": first, "verdict": other[agree_letter[first]], "annotator": "ann3", "comment": "close call"},
        {"pair_id": second, "verdict": other[agree_letter[second]], "annotator": "ann1"},
        {"pair_id": second, "verdict": other[agree_letter[second]], "annotator": "ann2"},
    ]
    labels = _write_csv(tmp_path / "votes.csv", votes)
    result = _merge(run_dir, labels)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "human_agreement.json").read_text())["overall"]
    assert report["pairs"] == 2 and report["agreement"] == 0.5 and report["conflicts"] == [second]
    merged = {r["pair_id"]: r for r in _merged(run_dir)}
    prefs = {r["pair_id"]: r for r in datasets.load_from_disk(str(run_dir / "prefs"))}
    assert set(merged) == set(prefs)  # human-overrides keeps every pair
    assert merged[first]["source"] == "both" and merged[first]["chosen"] == prefs[first]["chosen"]
    assert merged[first]["annotator_agreement"] == pytest.approx(2 / 3) and merged[first]["human_votes"] == 3
    assert merged[second]["chosen"] == prefs[second]["rejected"] and merged[second]["ai_human_conflict"] is True
    assert all(r["source"] == "ai" for pid, r in merged.items() if pid not in (first, second))
    before = (run_dir / "merged.jsonl").read_text()
    assert _merge(run_dir, labels).exit_code == 0  # the same file again: nothing changes
    assert (run_dir / "merged.jsonl").read_text() == before


def test_policies(run_dir, tmp_path):
    rows, order = _annotate(run_dir, tmp_path)
    pid = rows[0]["pair_id"]
    disagree = "b" if order[pid]["a"] == "chosen" else "a"
    labels = _write_csv(tmp_path / "v.csv", [{"pair_id": pid, "verdict": disagree, "annotator": "x"}])
    prefs = {r["pair_id"]: r for r in datasets.load_from_disk(str(run_dir / "prefs"))}

    assert _merge(run_dir, labels, "--policy", "ai-where-missing").exit_code == 0
    merged = _merged(run_dir)
    same_prompt = [p for p, r in prefs.items() if r["prompt"] == prefs[pid]["prompt"] and p != pid]
    assert {r["pair_id"] for r in merged} == set(prefs) - set(same_prompt)  # no AI pairs on a prompt humans labelled

    # weighted: one human against the AI's side (p_ai); the AI side gets w * 0 + (1 - w) * p_ai
    p_ai = prefs[pid]["p_chosen"]
    assert _merge(run_dir, labels, "--policy", "weighted", "--weight", "0.2").exit_code == 0
    row = {r["pair_id"]: r for r in _merged(run_dir)}[pid]
    assert row["chosen"] == prefs[pid]["chosen"] and row["p_chosen"] == pytest.approx(0.8 * p_ai)  # the AI side still wins
    # w = 0.9: the human wins
    assert _merge(run_dir, labels, "--policy", "weighted", "--weight", "0.9").exit_code == 0
    row = {r["pair_id"]: r for r in _merged(run_dir)}[pid]
    assert row["chosen"] == prefs[pid]["rejected"] and row["p_chosen"] == pytest.approx(0.9 + 0.1 * (1 - prefs[pid]["p_chosen"]))


def test_trl_style_and_argilla_imports(run_dir, tmp_path):
    prefs = list(datasets.load_from_disk(str(run_dir / "prefs")))
    known = prefs[0]
    trl = tmp_path / "trl.jsonl"
    trl.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": known["prompt"], "chosen": known["rejected"], "rejected": known["chosen"]},  # a human flips a known pair
        {"prompt": "Is water wet?", "chosen": "It depends on the definition.", "rejected": "no"},  # a pair new to the run
    ]) + "\n")
    trl_csv = tmp_path / "trl.csv"
    with trl_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        w.writeheader()
        w.writerow({"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."})
    rows, order = _annotate(run_dir, tmp_path)
    pid = rows[1]["pair_id"]
    argilla = tmp_path / "argilla.json"
    argilla.write_text(json.dumps([
        {"id": "r1", "fields": {"prompt": "..."}, "metadata": {"pair_id": pid},
         "responses": {"preference": [{"user_id": "u1", "value": "response_a"}, {"user_id": "u2", "value": "a"}]}},
        {"id": "r2", "metadata": {"pair_id": rows[2]["pair_id"] if len(rows) > 2 else pid}, "preference.responses": ["tie"],
         "preference.responses.users": ["u3"]},
    ]))
    result = _merge(run_dir, trl, trl_csv, argilla)
    assert result.exit_code == 0, result.output
    merged = _merged(run_dir)
    human_only = [r for r in merged if r["source"] == "human"]
    assert sorted(r["chosen"][0]["content"] for r in human_only) == ["Blue.", "It depends on the definition."]
    flipped = next(r for r in merged if r["pair_id"] == known["pair_id"])
    assert flipped["chosen"] == known["rejected"] and flipped["source"] == "both"
    arg = next(r for r in merged if r["pair_id"] == pid)
    assert arg["human_votes"] == 2 and arg["chosen"][0]["content"] == rows[1]["response_a"]


def test_bad_rows_are_rejected_with_lines_and_the_rest_merged(run_dir, tmp_path):
    rows, _ = _annotate(run_dir, tmp_path)
    pid = rows[0]["pair_id"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([
        json.dumps({"pair_id": pid, "verdict": "a", "annotator": "ok"}).encode(),       # 1 good
        json.dumps({"pair_id": pid, "annotator": "nov"}).encode(),                     # 2 missing verdict
        json.dumps({"pair_id": "nope", "verdict": "a"}).encode(),                      # 3 unknown pair id
        json.dumps({"pair_id": pid, "verdict": "maybe", "annotator": "q"}).encode(),   # 4 invalid verdict
        b'{"pair_id": "caf\xe9", "verdict": "a"}',                                     # 5 not UTF-8
        json.dumps({"pair_id": pid, "verdict": "b", "annotator": "ok"}).encode(),       # 6 duplicate annotator
        b"{broken",                                                                    # 7 invalid JSON
        json.dumps({"prompt": "x", "chosen": "", "rejected": "y"}).encode(),           # 8 empty chosen
    ]) + b"\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = _merge(run_dir, bad, empty)
    assert result.exit_code == 0, result.output
    rejects = [json.loads(x) for x in (run_dir / "human_rejects.jsonl").read_text().splitlines()]
    got = {(r["file"].rsplit("/", 1)[-1], r["line"]): r["reason"] for r in rejects}
    assert "missing verdict" in got["bad.jsonl", 2] and "unknown pair id" in got["bad.jsonl", 3]
    assert "invalid verdict 'maybe'" in got["bad.jsonl", 4] and "not UTF-8" in got["bad.jsonl", 5]
    assert "duplicate" in got["bad.jsonl", 6] and "invalid JSON" in got["bad.jsonl", 7]
    assert "missing or empty" in got["bad.jsonl", 8] and "empty file" in got["empty.csv", 1]
    assert len(rejects) == 8 and "8 bad rows" in result.output
    merged = {r["pair_id"]: r for r in _merged(run_dir)}
    assert merged[pid]["human_votes"] == 1  # the good row was merged


def test_strict_makes_a_bad_row_fatal_and_writes_nothing(run_dir, tmp_path):
    rows, _ = _annotate(run_dir, tmp_path)
    f = tmp_path / "v.jsonl"
    f.write_text(json.dumps({"pair_id": rows[0]["pair_id"], "verdict": "a"}) + "\n" + json.dumps({"pair_id": "zzz", "verdict": "a"}) + "\n")
    result = _merge(run_dir, f, "--strict")
    assert result.exit_code == 2 and "v.jsonl:2: unknown pair id 'zzz'" in result.stderr and "\n" not in result.stderr.strip()
    assert not (run_dir / "merged").exists() and not (run_dir / "merged.jsonl").exists()


def test_a_pair_carried_by_two_pair_types_is_annotated_and_counted_once(run_dir, tmp_path):
    from rlaif.export.rows import PREF_FEATURES, write_dataset

    prefs = list(datasets.load_from_disk(str(run_dir / "prefs")))
    twin = prefs[0] | {"pair_type": "best_vs_worst"}  # the same two answers, also paired by scores
    write_dataset(prefs + [twin], PREF_FEATURES, run_dir, "prefs")
    rows, order = _annotate(run_dir, tmp_path)
    assert len(rows) == len(prefs)
    pid = prefs[0]["pair_id"]
    labels = _write_csv(tmp_path / "v.csv", [{"pair_id": pid, "verdict": "a", "annotator": "x"}])
    assert _merge(run_dir, labels).exit_code == 0
    assert [r["human_votes"] for r in _merged(run_dir) if r["pair_id"] == pid] == [1]  # merged/ has one row per pair too
    assert len({r["pair_id"] for r in _merged(run_dir)}) == len(_merged(run_dir))
    assert json.loads((run_dir / "human_agreement.json").read_text())["overall"]["pairs"] == 1


def test_weighted_uses_the_rows_confidence_when_p_chosen_is_missing(run_dir, tmp_path):
    """F14: a pair with only a margin (a score pair of an older run) has confidence (1 + margin) / 2, not 1.

    One human vote against the AI side, weight w = 0.2: P(AI side) = 0.8 * (1 + 0.4) / 2 = 0.56 (was 0.8 * 1).
    """
    from rlaif.export.rows import PREF_FEATURES, write_dataset

    prefs = list(datasets.load_from_disk(str(run_dir / "prefs")))
    prefs[0] = prefs[0] | {"p_chosen": None, "margin": 0.4}
    write_dataset(prefs, PREF_FEATURES, run_dir, "prefs")
    rows, order = _annotate(run_dir, tmp_path)
    pid = prefs[0]["pair_id"]
    disagree = "b" if order[pid]["a"] == "chosen" else "a"
    labels = _write_csv(tmp_path / "v.csv", [{"pair_id": pid, "verdict": disagree, "annotator": "x"}])
    assert _merge(run_dir, labels, "--policy", "weighted", "--weight", "0.2").exit_code == 0
    row = {r["pair_id"]: r for r in _merged(run_dir)}[pid]
    assert row["chosen"] == prefs[0]["chosen"] and row["p_chosen"] == pytest.approx(0.56)
    assert row["label_source"] == "weighted" and row["signals"][-1] == "human" and row["conflict"] is True
