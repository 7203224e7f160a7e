"""Run directories are never silently overwritten, locked against a second writer, written atomically (issue 12).

Items: 1 (refusing foreign directories, run names, report --output), 2 (export targets), 6 (status: failed),
8 (damaged run files, files where directories belong, read-only runs), 10 (the lock, with real processes),
11 (kill -9 at several points of a merge and an annotation export), 12 (report figures: mathtext, failures).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from rlaif.cli import main

from tests.conftest import ROOT, write_pipeline


def cli(*args) -> tuple[int, str]:
    """Exit status and stderr; a traceback (an exception other than SystemExit) fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stderr.strip()


def one_line(err: str, pattern: str) -> None:
    assert "\n" not in err and "Traceback" not in err, err
    assert re.search(pattern, err), err


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` (hidden ones included) by relative name -> sha256."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def rlaif(*args, cwd, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif", *map(str, args)], cwd=cwd, env=env(**extra_env),
                          capture_output=True, text=True, timeout=300, check=False)


def pipeline(workdir, **extra) -> Path:
    (workdir / "p.txt").write_text("one\ntwo\nthree\n")
    stages = extra.pop("stages", "stages:\n  respond: {n: 3}\n  judge: {}\n")
    return write_pipeline(workdir / "p.yaml", "default", prompts="p.txt", stages=stages, backend="scripted", **extra)


# --- 1. a run never deletes what is already in its directory -------------------------------------------------------

def test_run_refuses_a_directory_that_is_not_its_run(workdir):
    out = workdir / "mine"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "thesis.tex").write_text("years of work")
    (out / "prefs.jsonl").write_text("my own file\n")
    before = tree(out)
    code, err = cli("run", pipeline(workdir), "--output", out)
    assert code == 2
    one_line(err, rf"^{re.escape(str(out))}: the directory is not empty and holds no run\.json.*--force")
    assert tree(out) == before
    code, err = cli("run", pipeline(workdir), "--output", out, "--force")  # asked for: it writes
    assert code == 0, err
    assert (out / "run.json").is_file() and len(datasets.load_from_disk(str(out / "prefs"))) > 0


def test_run_refuses_the_run_of_another_pipeline_and_resumes_its_own(workdir):
    assert cli("run", pipeline(workdir, name="first"))[0] == 0
    code, err = cli("run", pipeline(workdir, name="second"), "--output", workdir / "outputs" / "first")
    assert code == 2
    one_line(err, r"outputs/first: holds the run of pipeline 'first', not 'second'")
    assert cli("run", pipeline(workdir, name="first"))[0] == 0  # its own run: resumed


@pytest.mark.parametrize("name", ['""', '"  "', "a/b", "..", ".hidden", "x/../y", "a..b"])
def test_run_name_must_be_one_directory_name(workdir, name):
    code, err = cli("run", pipeline(workdir, name=name))
    assert code == 2
    one_line(err, r"p\.yaml:1: name: ")
    assert not (workdir / "outputs").exists()


def test_report_output_keeps_files_it_did_not_write(run_dir, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "fig-mine.png").write_bytes(b"my figure")
    (out / "notes.txt").write_text("notes")
    for _ in range(2):
        assert cli("report", run_dir, "--output", out)[0] == 0
    assert (out / "fig-mine.png").read_bytes() == b"my figure" and (out / "notes.txt").read_text() == "notes"
    assert len(list(out.glob("figures-*"))) == 1  # the first report's figures went, with nothing else


def test_report_refuses_a_report_html_it_did_not_write(run_dir, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "report.html").write_text("<html><title>my quarterly report</title></html>")
    code, err = cli("report", run_dir, "--output", out)
    assert code == 2
    one_line(err, r"report\.html: report output: holds a report\.html that rlaif did not write")
    assert (out / "report.html").read_text().startswith("<html><title>my quarterly")


def test_report_stage_output_is_checked_before_the_run(workdir):
    (workdir / "site").mkdir()
    (workdir / "site" / "report.html").write_text("<html><title>the team's page</title></html>")
    stages = "stages:\n  respond: {n: 3}\n  judge: {}\n  report: {output: site}\n"
    code, err = cli("run", pipeline(workdir, stages=stages))
    assert code == 2
    one_line(err, r"site/report\.html: report output: holds a report\.html that rlaif did not write")
    assert not (workdir / "outputs").exists()  # refused before anything ran


# --- 2. export never lands on the run's own files ------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--for-annotation", "{run}/prefs.jsonl"], ["--for-annotation", "{run}/sft"], ["--for-annotation", "{run}/human_rejects.csv"],
    ["--format", "jsonl", "--out", "{run}"], ["--format", "hf", "--out", "{run}/prefs"],
    ["--format", "jsonl", "--out", "{link}"], ["--for-annotation", "{link}/prefs.csv"],
    ["--format", "jsonl", "--out", "{run}/export-x/.."], ["--format", "hf", "--out", "{run}/.."],
], ids=["annotation-prefs", "annotation-sft", "annotation-rejects", "jsonl-into-run", "hf-into-prefs", "symlink-out",
        "symlink-annotation", "dotdot", "parent-of-run"])
def test_export_refuses_targets_in_the_run(run_dir, tmp_path, args):
    (tmp_path / "link").symlink_to(run_dir)
    if args[-1] == "{run}/..":  # the hf export would write OUT/prefs, OUT/sft: make OUT/... hold the run under that name
        run_dir = run_dir.rename(run_dir.parent / "prefs")
    before = tree(run_dir)
    code, err = cli("export", run_dir, *[a.format(run=run_dir, link=tmp_path / "link") for a in args])
    assert code == 2
    one_line(err, r"(--out|--for-annotation): .*(the run's own|would replace the run directory)")
    assert tree(run_dir) == before


def test_export_into_the_run_s_own_export_directory_still_works(run_dir):
    assert cli("export", run_dir, "--format", "jsonl")[0] == 0
    assert cli("export", run_dir, "--format", "jsonl")[0] == 0  # again: replaced
    assert (run_dir / "export-jsonl" / "prefs.jsonl").is_file()


# --- 6. a failed run says so --------------------------------------------------------------------------------------

@pytest.mark.parametrize("error, code, reason", [
    (RuntimeError("boom"), None, r"^RuntimeError: boom$"),
    (KeyboardInterrupt(), 130, r"^interrupted"),
    ("user-error", 2, r"^data\.txt:3: a bad value$"),
], ids=["exception", "ctrl-c", "user-error"])
def test_a_failed_run_records_status_failed(workdir, monkeypatch, error, code, reason):
    from rlaif import pipeline as pipeline_module
    from rlaif.errors import UserError

    def fail(*args, **kwargs):
        raise UserError("a bad value", "data.txt", 3) if error == "user-error" else error

    monkeypatch.setattr(pipeline_module, "judge", fail)  # after respond: run.json and the responses exist
    result = CliRunner().invoke(main, ["run", str(pipeline(workdir))])
    if code is None:
        assert isinstance(result.exception, RuntimeError)
    else:
        assert result.exit_code == code, result.output
    info = json.loads((workdir / "outputs" / "test" / "run.json").read_text())
    assert info["status"] == "failed" and re.search(reason, info["error"]), info
    assert "\n" not in info["error"] and info["seed"] == 0 and info["config"]["name"] == "test"


def test_a_failure_after_the_datasets_keeps_them_and_their_counts(workdir, monkeypatch):
    from rlaif.report import report

    monkeypatch.setattr(report, "write_report", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    stages = "stages:\n  respond: {n: 3}\n  judge: {}\n  report: {}\n"
    result = CliRunner().invoke(main, ["run", str(pipeline(workdir, stages=stages))])
    assert isinstance(result.exception, OSError)
    run = workdir / "outputs" / "test"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "No space left" in info["error"] and info["counts"]["pref_rows"] > 0
    assert len(datasets.load_from_disk(str(run / "prefs"))) == info["counts"]["pref_rows"]
    assert cli("export", run, "--format", "jsonl")[0] == 0  # its datasets are whole: they can be exported
    assert "status: failed" in (run / "export-jsonl" / "README.md").read_text()  # and the card says the run failed later


# --- 8. damaged run files, files where directories belong, read-only runs -------------------------------------------

def _annotate(run):
    code, err = cli("export", run, "--for-annotation", run.parent.parent / "ann.csv")  # the workdir
    assert code == 0, err
    rows = list(csv.DictReader((run.parent.parent / "ann.csv").open()))
    return rows


def _labels(path: Path, rows, verdict: str, annotator: str, extra=()) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["pair_id", "verdict", "annotator"])
        w.writeheader()
        w.writerows([{"pair_id": r["pair_id"], "verdict": verdict, "annotator": annotator} for r in rows] + list(extra))
    return path


@pytest.mark.parametrize("command", ["export", "annotate", "merge-human", "report", "run"])
def test_corrupt_run_json(run_dir, workdir, command):
    (run_dir / "run.json").write_text('{"name": "test",\n  "status": "complete"\n')
    args = {"export": ["export", run_dir], "annotate": ["export", run_dir, "--for-annotation", workdir / "ann.csv"],
            "merge-human": ["merge-human", run_dir, _labels(workdir / "l.csv", [], "a", "x")],
            "report": ["report", run_dir], "run": ["run", workdir / "p.yaml"]}[command]
    code, err = cli(*args)
    assert code == 2
    one_line(err, r"(^|/)outputs/test/run\.json:3: run\.json is not valid JSON")  # `rlaif run` names it as outputs/test


def test_corrupt_annotation_order(run_dir, workdir):
    rows = _annotate(run_dir)
    (run_dir / "annotation_order.json").write_text('{"abc": {"a": "chosen",')
    code, err = cli("merge-human", run_dir, _labels(workdir / "l.csv", rows, "a", "x"))
    assert code == 2
    one_line(err, r"annotation_order\.json:1: not valid JSON.*--for-annotation")
    (run_dir / "annotation_order.json").write_text('{"abc": {"a": "left"}}')
    code, err = cli("merge-human", run_dir, workdir / "l.csv")
    assert code == 2
    one_line(err, r"annotation_order\.json:1: expected \{pair_id")


def _damage_arrow(run: Path, how: str) -> None:
    arrow = next((run / "prefs").glob("*.arrow"))
    if how == "truncated":
        with open(arrow, "r+b") as f:
            f.truncate(arrow.stat().st_size // 2)
    elif how == "garbage":
        arrow.write_bytes(b"not arrow at all" * 10)
    else:
        (run / "prefs" / "state.json").write_text("{broken")


@pytest.mark.parametrize("how", ["truncated", "garbage", "state-json"])
@pytest.mark.parametrize("command", ["export", "annotate", "merge-human", "train", "eval-reward-model"])
def test_damaged_prefs_dataset(run_dir, workdir, tiny_chat_model, command, how):
    _damage_arrow(run_dir, how)
    (workdir / "t.yaml").write_text(f"model: {tiny_chat_model}\ndataset: {run_dir}\noutput_dir: {workdir / 'dpo'}\n")
    args = {"export": ["export", run_dir], "annotate": ["export", run_dir, "--for-annotation", workdir / "ann.csv"],
            "merge-human": ["merge-human", run_dir, _labels(workdir / "l.csv", [], "a", "x")],
            "train": ["train", "dpo", workdir / "t.yaml"],
            "eval-reward-model": ["eval", "reward-model", "--model", tiny_chat_model, "--pairs", run_dir, "--split", "all",
                                  "--output", workdir / "ev"]}[command]
    code, err = cli(*args)
    assert code == 2
    one_line(err, r"prefs.*the saved dataset is damaged \(")
    assert not (workdir / "ann.csv").exists() and not (workdir / "dpo").exists()


@pytest.mark.parametrize("damage", ["garbage", "half", "header"])
@pytest.mark.parametrize("command", ["run", "merge-human"])
def test_damaged_records_sqlite(run_dir, workdir, command, damage):
    db = run_dir / "records.sqlite"
    for extra in ("records.sqlite-wal", "records.sqlite-shm"):
        (run_dir / extra).unlink(missing_ok=True)
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2 if damage == "half" else 50)
    rows = _annotate(run_dir)
    labels = _labels(workdir / "l.csv", rows, "a", "x")
    args = ["run", workdir / "p.yaml"] if command == "run" else ["merge-human", run_dir, labels]
    code, err = cli(*args)
    assert code == 2
    one_line(err, r"(^|/)outputs/test/records\.sqlite: the record store cannot be used "
                  r"\((file is not a database|database disk image is malformed)\)")


@pytest.mark.parametrize("command", ["run", "export", "report", "eval"])
def test_output_names_a_file(run_dir, workdir, command):
    f = workdir / "a-file"
    f.write_text("keep me")
    args = {"run": ["run", workdir / "p.yaml", "--output", f], "export": ["export", run_dir, "--out", f],
            "report": ["report", run_dir, "--output", f],
            "eval": ["eval", "reward-model", "--model", "x", "--pairs", run_dir, "--output", f]}[command]
    code, err = cli(*args)
    assert code == 2
    one_line(err, rf"^{re.escape(str(f))}: .*is a file")
    assert f.read_text() == "keep me"


def test_run_dir_that_is_a_file(workdir):
    f = workdir / "a-file"
    f.write_text("keep me")
    for args in (["export", f], ["merge-human", f, f], ["report", f]):
        code, err = cli(*args)
        assert code == 2
        one_line(err, rf"^{re.escape(str(f))}: is a file, not a run directory")


@pytest.mark.parametrize("name", [".", "..", "{tmp}/"])
def test_for_annotation_names_a_directory(run_dir, tmp_path, name):
    code, err = cli("export", run_dir, "--for-annotation", name.format(tmp=tmp_path))
    assert code == 2
    one_line(err, r"--for-annotation: names a directory; give a file name")


@contextmanager
def read_only(path: Path):
    """`path` accepts no new files: mode 555, or for root (who ignores modes) the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
        pytest.skip("running as root where `chattr +i` is not allowed: no way to make a directory read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("command", ["run", "merge-human", "report", "annotate"])
def test_read_only_run_directory(run_dir, workdir, command):
    rows = _annotate(run_dir)
    labels = _labels(workdir / "l.csv", rows, "a", "x")
    args = {"run": ["run", workdir / "p.yaml"], "merge-human": ["merge-human", run_dir, labels],
            "report": ["report", run_dir], "annotate": ["export", run_dir, "--for-annotation", workdir / "again.csv"]}[command]
    with read_only(run_dir):
        before = tree(run_dir)
        code, err = cli(*args)
        assert tree(run_dir) == before
    assert code == 2
    one_line(err, r"(^|/)outputs/test: the run directory is not writable \(")
    assert not (workdir / "again.csv").exists()


def test_report_of_a_read_only_run_elsewhere(run_dir, tmp_path):
    with read_only(run_dir):
        code, err = cli("report", run_dir, "--output", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "report.html").is_file()


# --- 10. one writer at a time: the lock, with real processes ------------------------------------------------------

def _wait_for(predicate, proc, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what}:\n{proc.stdout.read()}{proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _staging(run: Path) -> list[Path]:
    return list(run.glob(".commit.*.tmp"))


@pytest.mark.subprocess
def test_a_second_writer_is_refused_and_a_killed_holder_blocks_nothing(run_dir, workdir):
    rows = _annotate(run_dir)
    first, second = _labels(workdir / "a.csv", rows, "a", "alice"), _labels(workdir / "b.csv", rows, "b", "bob")
    holder = subprocess.Popen([sys.executable, "-m", "rlaif", "merge-human", str(run_dir), str(first)], cwd=workdir,
                              env=env(RLAIF_FAULT="commit:staged:pause", RLAIF_FAULT_PAUSE="120"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _staging(run_dir), holder, "the first merge held the lock")
        for args in (["merge-human", run_dir, second], ["report", run_dir], ["run", workdir / "p.yaml"],
                     ["export", run_dir, "--for-annotation", workdir / "x.csv"], ["export", run_dir, "--format", "jsonl"]):
            proc = rlaif(*args, cwd=workdir)
            assert proc.returncode == 2, proc.stderr
            one_line(proc.stderr.strip(), rf"(^|/)outputs/test is in use by pid {holder.pid} \(rlaif merge-human "
                                          rf"{re.escape(str(run_dir))} .*a\.csv\); wait for it to finish or stop it")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    proc = rlaif("merge-human", run_dir, second, cwd=workdir)  # the kernel released the dead holder's lock
    assert proc.returncode == 0, proc.stderr
    assert not _staging(run_dir)  # the killed merge's staging directory was cleaned up


@pytest.mark.subprocess
def test_two_merges_at_once_lose_no_votes(run_dir, workdir):
    """Two real merge-human processes started together: each merges or is refused (then retried); no vote is lost."""
    rows = _annotate(run_dir)
    files = [_labels(workdir / f"{who}.csv", rows, verdict, who, [{"pair_id": f"bogus-{who}", "verdict": "a", "annotator": who}])
             for who, verdict in (("alice", "a"), ("bob", "a"))]  # the same side: no human ties, no pair dropped
    procs = [subprocess.Popen([sys.executable, "-m", "rlaif", "merge-human", str(run_dir), str(f)], cwd=workdir, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    for f, p in zip(files, procs):
        _out, err = p.communicate(timeout=300)
        assert p.returncode in (0, 2), err
        if p.returncode == 2:
            assert "is in use by pid" in err
            assert rlaif("merge-human", run_dir, f, cwd=workdir).returncode == 0
    merged = [json.loads(line) for line in (run_dir / "merged.jsonl").read_text().splitlines()]
    assert sum(r["human_votes"] or 0 for r in merged) == 2 * len(rows)  # both annotators' votes on every pair
    rejects = [json.loads(line) for line in (run_dir / "human_rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1  # the last merge's bad row, whole


# --- 11. atomic writes: kill -9 at several points -----------------------------------------------------------------

def _trio(run: Path) -> dict:
    """What the last merge published, with merged/ and merged.jsonl checked to be the same rows."""
    jsonl = [json.loads(line) for line in (run / "merged.jsonl").read_text().splitlines()]
    rows = datasets.load_from_disk(str(run / "merged")).to_list()
    assert rows == jsonl, "merged/ and merged.jsonl come from different merges"
    return {"rows": jsonl, "agreement": json.loads((run / "human_agreement.json").read_text()),
            "rejects": (run / "human_rejects.jsonl").read_text()}


@pytest.mark.subprocess
@pytest.mark.parametrize("point, published", [
    ("write:human_agreement.json", False),  # a staged file, before its rename
    ("commit:staged", False),  # everything staged, before the commit point
    ("commit:moved-in:human_agreement.json", True),  # the first of four entries moved in
    ("commit:moved-out:merged", True),  # the old merged/ moved aside, the new one not yet in
    ("commit:moved-in:merged.jsonl", True),  # all moved in, the pending directory not yet removed
])
def test_kill_9_during_merge_human(run_dir, workdir, point, published):
    rows = _annotate(run_dir)
    first = _labels(workdir / "a.csv", rows[: len(rows) // 2], "a", "alice")
    second = _labels(workdir / "b.csv", rows, "b", "bob", [{"pair_id": "bogus", "verdict": "a", "annotator": "bob"}])
    assert cli("merge-human", run_dir, first)[0] == 0
    previous = _trio(run_dir)
    reference = workdir / "reference"
    shutil.copytree(run_dir, reference)
    assert cli("merge-human", reference, first, second)[0] == 0
    new = _trio(reference)
    assert new != previous

    proc = rlaif("merge-human", run_dir, first, second, cwd=workdir, RLAIF_FAULT=point)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    if not published:
        assert _trio(run_dir) == previous  # untouched on disk, before any recovery
    assert cli("report", run_dir)[0] == 0  # any command that takes the run's lock first finishes an interrupted commit
    assert _trio(run_dir) == (new if published else previous)
    assert not _staging(run_dir) and not list(run_dir.glob(".*.tmp")) and not (run_dir / ".commit-pending").exists()
    assert cli("merge-human", run_dir, first, second)[0] == 0 and _trio(run_dir) == new


@pytest.mark.subprocess
def test_kill_9_between_staging_and_moving_in_is_finished_by_a_training_read(run_dir, workdir):
    """A reader of merged/ alone (train on RUN/merged) finishes the interrupted commit instead of missing the directory."""
    from rlaif.export.rows import load_saved

    rows = _annotate(run_dir)
    labels = _labels(workdir / "a.csv", rows, "a", "alice")
    assert cli("merge-human", run_dir, labels)[0] == 0
    proc = rlaif("merge-human", run_dir, labels, _labels(workdir / "b.csv", rows, "b", "bob"), cwd=workdir,
                 RLAIF_FAULT="commit:moved-out:merged")
    assert proc.returncode == -signal.SIGKILL and not (run_dir / "merged").exists()
    assert len(load_saved(run_dir / "merged")) == len(_trio(run_dir)["rows"])


@pytest.mark.subprocess
@pytest.mark.parametrize("point", ["write:annotation_order.json", "write:ann.csv", "write:ann.jsonl"])
def test_kill_9_during_export_for_annotation(run_dir, workdir, point):
    rows = _annotate(run_dir)
    before = {name: (workdir / name).read_bytes() for name in ("ann.csv", "ann.jsonl")}
    order = (run_dir / "annotation_order.json").read_bytes()
    proc = rlaif("export", run_dir, "--for-annotation", workdir / "ann.csv", cwd=workdir, RLAIF_FAULT=point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert {name: (workdir / name).read_bytes() for name in before} == before  # whole, never truncated
    assert (run_dir / "annotation_order.json").read_bytes() == order
    assert cli("merge-human", run_dir, _labels(workdir / "l.csv", rows, "a", "x"))[0] == 0


def test_a_merge_that_fails_midway_publishes_nothing(run_dir, workdir, monkeypatch):
    from rlaif.human import merge

    rows = _annotate(run_dir)
    assert cli("merge-human", run_dir, _labels(workdir / "a.csv", rows[:2], "a", "alice"))[0] == 0
    previous = _trio(run_dir)
    monkeypatch.setattr(merge, "agreement", lambda items: (_ for _ in ()).throw(MemoryError()))
    result = CliRunner().invoke(main, ["merge-human", str(run_dir), str(_labels(workdir / "b.csv", rows, "b", "bob"))])
    assert isinstance(result.exception, MemoryError)
    assert _trio(run_dir) == previous


def test_an_annotation_export_that_fails_midway_leaves_the_files_whole(run_dir, workdir, monkeypatch):
    _annotate(run_dir)
    before = (workdir / "ann.csv").read_bytes(), (workdir / "ann.jsonl").read_bytes()

    def half(self, rows):
        rows = list(rows)
        for row in rows[: len(rows) // 2]:
            self.writerow(row)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", half)
    result = CliRunner().invoke(main, ["export", str(run_dir), "--for-annotation", str(workdir / "ann.csv")])
    assert isinstance(result.exception, OSError)
    assert ((workdir / "ann.csv").read_bytes(), (workdir / "ann.jsonl").read_bytes()) == before
    assert not list(workdir.glob(".ann.*"))


@pytest.mark.subprocess
def test_recover_removes_only_dead_processes_temporary_files(tmp_path):
    from rlaif.rundir import atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".prefs.jsonl.{dead_pid}.0123abcd.tmp").write_text("half")
    (tmp_path / f".commit.{dead_pid}.0123abcd.tmp").mkdir()
    live = tmp_path / f".run.json.{os.getppid()}.0123abcd.tmp"  # a live process's (our parent's) file
    live.write_text("in progress")
    (tmp_path / ".hidden-user-file").write_text("mine")
    atomic.recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, ".hidden-user-file"])


# --- 12. the report: figures in a temporary directory, text never parsed as math ----------------------------------

def test_principle_names_with_dollars_do_not_crash_the_report(tmp_path):
    import matplotlib

    from rlaif.report.report import write_report

    from tests.fakes import synthetic_run

    run = synthetic_run(tmp_path / "run")
    stats = json.loads((run / "judge_stats.json").read_text())
    values = list(stats["per_principle"].values())
    stats["per_principle"] = {"costs $5 or $6": values[0], r"$\frac{1}{$": values[1]}  # mathtext: fine, and a parse error
    (run / "judge_stats.json").write_text(json.dumps(stats))
    parse_math = matplotlib.rcParams["text.parse_math"]
    page = write_report(run)
    assert "costs $5 or $6" in page.read_text() and "fig-judge-bias.png" in page.read_text()
    assert matplotlib.rcParams["text.parse_math"] == parse_math  # scoped to the report's figures


def test_a_failed_report_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    from rlaif.report import report

    from tests.fakes import synthetic_run

    run = synthetic_run(tmp_path / "run")
    page = report.write_report(run)
    before = tree(run / "report")

    def broken(run, out):
        raise ValueError("a section that fails")

    monkeypatch.setattr(report, "SECTIONS", [report.SECTIONS[0], broken, *report.SECTIONS[1:]])
    with pytest.raises(ValueError):
        report.write_report(run)
    assert tree(run / "report") == before
    for src in re.findall(r'<img src="([^"]+)"', page.read_text()):
        assert (page.parent / src).is_file()
