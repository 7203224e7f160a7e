"""`rlaif report`: sections from synthetic run directories (with and without optional files), bad input, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlaif.cli import main
from rlaif.report.report import write_report
from rlaif.rundir.reader import RunDir

from tests.fakes import HOSTILE, PRINCIPLES, _write, synthetic_run


def _sections(html: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, re.S))


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _figures(out: Path) -> dict[str, Path]:
    """The report's figures by file name (they live in OUT/figures-<id>/)."""
    return {p.name: p for p in out.glob("figures-*/*.png")}


def test_full_report(tmp_path):
    run = synthetic_run(tmp_path / "run")
    page = write_report(run)
    assert page == run / "report" / "report.html"
    html = page.read_text()
    sections = _sections(html)
    assert set(sections) == {"sft", "labels", "judge", "scores", "human", "training", "watch", "eval", "details"}
    assert "not present" not in html
    images = _images(html)
    expected = {"fig-labels.png", "fig-judge-bias.png", "fig-scores.png", "fig-human.png", "fig-train-dpo.png",
                "fig-train-grpo.png", "fig-train-ppo.png", "fig-watch-ppo.png", "fig-eval.png", "fig-eval-3-winrate.png"}
    assert {Path(i).name for i in images} == expected and len({Path(i).parent for i in images}) == 1
    for name in images:  # every figure is a real PNG in the page's figures directory
        assert (page.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(_figures(page.parent)) == sorted(expected)
    # the summary header: name, models, constitution, seed, counts
    head = html.split("<section", 1)[0]
    for text in ("synthetic", "tiny-policy", "tiny-judge", "harmless (constitutions/harmless.yaml, sha256 abababababab)",
                 "<dd>7</dd>",
                 '<div class="n">12</div><div class="k">preference rows</div>', "dpo steps"):
        assert text in head, text
    # reward-hacking warnings: in the banner at the top and in their section
    assert "reward-hacking watch: ppo, step 8: reward up, judge win rate down" in head
    assert "ppo, step 8: reward up" in sections["watch"]
    # the run's own warnings (a judge near chance) and an evaluation's (self-preference) are at the top too
    assert "the judge&#39;s position consistency is 0.17 (below 0.6)" in head
    assert "evaluation: winrate: the judge is the baseline model itself" in head
    for text in ('<div class="n">2</div><div class="k">duplicate pairs merged</div>', "pair conflicts", "ties dropped"):
        assert text in head, text
    # data is escaped, never markup
    assert HOSTILE not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_tables_hold_the_numbers(tmp_path):
    html = write_report(synthetic_run(tmp_path / "run")).read_text()
    s = _sections(html)
    assert "<td class=\"s\">best_vs_worst</td>" in s["labels"] and "Comparisons without a label" in s["labels"]
    assert "Pairs merged into one row each (run.json counts.pairs)" in s["labels"] and "duplicates_merged" in s["labels"]
    assert all(p in s["judge"] for p in PRINCIPLES) and "position_consistency" in s["judge"]
    assert "Confusion, overall" in s["human"] and "invalid verdict" in s["human"] and "pair0" in s["human"]
    assert "human-overrides" in s["human"] and "merged.jsonl" in s["human"]
    assert "sft answer 0" in s["sft"] and "sft prompt 0" in s["sft"] and "echoes_request" in s["sft"]
    assert "dpo: metrics" in s["training"] and "max_steps" in s["training"]
    assert "winrate: per principle" in s["eval"] and "kl (eval/kl.json)" in s["eval"] and "0.31" in s["eval"]
    assert "wins" in s["eval"] and "ci95" in s["eval"]
    assert "Files in the run directory" in s["details"] and "judge_stats.json" in s["details"]


def test_sft_rows_of_older_runs_still_show(tmp_path):
    """Runs exported before prompt/completion SFT rows have `messages`: the last turn is the answer."""
    run = synthetic_run(tmp_path / "run")
    _write(run / "sft.jsonl", [{"messages": [{"role": "user", "content": "old prompt 0"},
                                             {"role": "assistant", "content": "old answer 0"}], "source": "revision"}])
    s = _sections(write_report(run).read_text())
    assert "old prompt 0" in s["sft"] and "old answer 0" in s["sft"]


def test_newest_checkpoint_gives_the_curve(tmp_path):
    run = RunDir(synthetic_run(tmp_path / "run"))
    history = run.log_history("dpo")
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 11))
    assert run.training_methods() == ["dpo", "grpo", "ppo"]


def test_uniform_history_and_headline_are_what_the_report_reads(tmp_path, monkeypatch):
    """A run of this version: metrics.history ({step, loss, ...}, every trainer) and each result's `headline` block.
    The older files still lying there (a checkpoint's log_history, legacy rate keys) are not read; KL (nats) is not
    drawn on the rate figures."""
    from rlaif.report import plots, sections

    run = synthetic_run(tmp_path / "run")
    rows = [{"step": s, "loss": 1.0 / s, "rewards/margins": 0.1 * s} for s in (1, 2, 3)]
    reader = RunDir(run)
    assert sections._history(reader, "dpo", {"history": rows, "losses": [1.0, 0.5, 0.33]}) == rows  # not checkpoint-10's
    assert len(sections._history(reader, "dpo", {"losses": [0.69, 0.6]})) == 11  # older record: the checkpoint's rows
    for name in ("winrate", "harmless", "reward-model"):
        (run / "eval" / f"{name}.json").unlink()
    ci = [0.3, 0.5]
    _write(run / "eval" / "new.json", {"kind": "winrate", "headline": {"name": "score", "value": 0.4, "ci95": ci, "unit": "rate"},
                                       "win_rate": 0.9, "per_principle": {p: {"score": 0.4, "ci95": ci, "win_rate": 0.9}
                                                                          for p in PRINCIPLES}})
    _write(run / "eval" / "kl.json", {"kind": "kl", "headline": {"name": "kl", "value": 0.31, "ci95": ci, "unit": "nats"},
                                      "kl": 0.31, "per_principle": {p: {"kl": 0.3, "ci95": ci} for p in PRINCIPLES}})
    _write(run / "eval" / "old.json", {"kind": "harmless", "rate": 0.8, "ci95": ci})  # before `headline`: the fallback
    drawn = []
    monkeypatch.setattr(plots, "intervals", lambda file, title, names, values, cis: drawn.append((title, names, values)) or file)
    section = sections.evaluation(reader, tmp_path / "out")
    overall = [d for d in drawn if d[0] == "evaluation results"]
    assert overall == [("evaluation results", ["new (winrate): score", "old (harmless): rate"], [0.4, 0.8])]
    assert [(t, v) for t, _, v in drawn if t != "evaluation results"] == [("new (winrate) per principle", [0.4] * 3)]
    assert not any("headline" in row[0] for t in section["tables"] for row in t["rows"])  # it repeats the summary's keys


def test_run_json_only(tmp_path):
    """Every optional file missing: each section says so; nothing fails, no figures."""
    run = synthetic_run(tmp_path / "run", full=False)
    html = write_report(run).read_text()
    sections = _sections(html)
    for key in ("sft", "labels", "judge", "scores", "human", "training", "watch", "eval"):
        assert '<p class="missing">not present' in sections[key], key
    assert _images(html) == [] and not list((run / "report").rglob("*.png"))
    assert 'class="warnings"' not in html  # a complete run with nothing wrong has no banner


def test_partial_run_and_stale_figures(tmp_path):
    """Remove optional files one by one: their sections go, the rest stay; old figures are not left behind."""
    run = synthetic_run(tmp_path / "run")
    write_report(run)
    for path in (run / "human_agreement.json", run / "ppo" / "watch.jsonl"):
        path.unlink()
    for path in (run / "eval").iterdir():
        path.unlink()
    html = write_report(run).read_text()
    s = _sections(html)
    assert "not present" in s["human"] and "not present" in s["watch"] and "not present" in s["eval"]
    assert "not present" not in s["labels"] + s["training"]
    assert not {"fig-human.png", "fig-watch-ppo.png", "fig-eval.png"} & {p.name for p in (run / "report").rglob("*")}
    assert len(list((run / "report").glob("figures-*"))) == 1  # the first report's figures are gone


def test_unfinished_run_and_broken_files_are_reported_not_fatal(tmp_path):
    run = synthetic_run(tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(info | {"status": "running"}))
    (run / "judge_stats.json").write_text('{"overall": {\n  "comparisons": 3,\n}')
    with open(run / "prefs.jsonl", "a") as f:
        f.write("{not json\n[1, 2]\n")
    (run / "eval" / "bad.json").write_text("[1, 2]")
    html = write_report(run).read_text()
    head = html.split("<section", 1)[0]
    assert "the run is not complete (status: running)" in head
    assert f"could not read {run / 'judge_stats.json'}:3: not valid JSON" in head
    assert f"{run / 'prefs.jsonl'}:13: not valid JSON" in head and f"{run / 'prefs.jsonl'}:14: expected a JSON object" in head
    assert f"{run / 'eval' / 'bad.json'}:1: expected a JSON object" in head
    s = _sections(html)
    assert "not present" in s["judge"] and "fig-labels.png" in s["labels"]  # prefs.jsonl's good rows still count


def test_a_jsonl_line_too_deep_or_not_utf8_is_skipped_not_fatal(tmp_path):
    """RunDir.jsonl reads the run's files with the one JSONL reader: a line nested too deeply (json's RecursionError)
    or with a byte that is not UTF-8 is one noted, skipped line; the lines around it are still read."""
    run = synthetic_run(tmp_path / "run")
    (run / "scores.jsonl").write_bytes(b'{"a": 1}\n' + b"[" * 100_000 + b"]" * 100_000 + b'\n{"caf\xe9": 2}\n{"b": 3}\n')
    reader = RunDir(run)
    assert reader.jsonl("scores.jsonl") == [{"a": 1}, {"b": 3}]
    assert reader.problems == [f"{run / 'scores.jsonl'}:2: not valid JSON: nested too deeply; line skipped",
                               f"{run / 'scores.jsonl'}:3: not UTF-8 text (invalid continuation byte at byte 5 of the line); "
                               "line skipped"]


def test_cli_report(tmp_path):
    run = synthetic_run(tmp_path / "run")
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(main, ["report", str(run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "report.html") and "fig-labels.png" in _figures(out)


@pytest.mark.parametrize("setup,pattern", [
    (lambda d: d / "nope", r"^{d}/nope: run directory not found$"),
    (lambda d: d, r"^{d}: not a run directory \(no run\.json\)$"),
    (lambda d: (d / "run.json").write_text('{"name": "x",\n  oops}') and d,
     r"^{d}/run\.json:2: run\.json is not valid JSON: .+$"),
    (lambda d: (d / "run.json").write_text("[]") and d, r"^{d}/run\.json:1: run\.json must hold a JSON object$"),
], ids=["missing", "no-run-json", "bad-json", "not-an-object"])
def test_bad_run_dir(tmp_path, setup, pattern):
    run_dir = setup(tmp_path)
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert re.match(pattern.format(d=re.escape(str(tmp_path))), result.output.strip()), result.output


ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "outputs" / "test-artifacts" / "report.png"  # git-ignored; for a person to look at
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
# Appended to a copy of the page: after load, write each image's natural width and the page height into the DOM.
IMAGE_CHECK = """<script>window.addEventListener("load", () => {
  const pre = document.createElement("pre"); pre.id = "image-check";
  pre.textContent = JSON.stringify({images: [...document.images].map(i => [i.getAttribute("src"), i.naturalWidth]),
                                    height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
});</script>"""


def _chromium(tmp_path: Path, *args: str) -> str:
    import shutil
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:  # `make test` installs it, so its absence is a failure, not a skip
        pytest.fail("chromium not found: install Debian's chromium package (`make test` does)")
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _image_check(tmp_path: Path, page: Path) -> dict:
    """Load a copy of the page (beside it, so the figures resolve) and read back what the browser loaded."""
    probe = page.with_name("_image_check.html")
    probe.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    probe.unlink()
    found = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.chromium
def test_report_renders_in_chromium(tmp_path):
    page = write_report(synthetic_run(tmp_path / "run"))
    check = _image_check(tmp_path, page)
    widths = dict(check["images"])
    assert set(widths) == set(_images(page.read_text())) and len(widths) == 10
    assert all(w > 0 for w in widths.values()), widths
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    _chromium(tmp_path, f"--screenshot={SCREENSHOT}", f"--window-size=1280,{min(check['height'], 16000)}", page.as_uri())
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot of the report: {SCREENSHOT}")
    # the check can fail: a figure that is not there does not load
    scores = next(i for i in widths if i.endswith("/fig-scores.png"))
    (page.parent / scores).unlink()
    assert dict(_image_check(tmp_path, page)["images"])[scores] == 0


def test_pipeline_ends_with_the_report(workdir, tiny_base_model):
    from tests.conftest import write_pipeline

    stages = "stages:\n  respond: {n: 2, max_tokens: 8}\n  critique: {rounds: 1, max_tokens: 8}\n  report: {}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, stages=stages, limit=2,
                          drop_degenerate="false")  # random weights: every revision runs to max_tokens
    result = CliRunner().invoke(main, ["run", str(pipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page = Path("outputs/test/report/report.html")
    assert f"report: {page}" in result.output.splitlines()
    assert json.loads(Path("outputs/test/run.json").read_text())["report"] == str(page)
    sections = _sections(page.read_text())
    assert "not present" not in sections["labels"] and "not present" in sections["judge"]


def test_report_stage_settings_are_strict(workdir, tiny_base_model):
    from tests.conftest import write_pipeline

    stages = "stages:\n  respond: {}\n  report: {outptu: x}\n"
    pipe = write_pipeline(workdir / "p.yaml", tiny_base_model, stages=stages)
    result = CliRunner().invoke(main, ["run", str(pipe)])
    assert result.exit_code == 2, result.output
    assert result.output == f"{pipe}:10: stages.report: unknown key 'outptu' (did you mean 'output'?)\n"


def test_quickstart_ends_with_the_report(workdir):
    from rlaif.spec.config import load_pipeline

    assert load_pipeline("pipelines/quickstart.yaml").stages.report is not None


@pytest.mark.parametrize("value,text", [
    (None, "—"), (True, "yes"), (False, "no"), (3, "3"), (0.123456, "0.1235"), (1e-9, "1e-09"), (float("nan"), "nan"),
    ("a <b>", "a <b>"), ([1, 2.5, None], "1, 2.5, —"), ({"a": [1]}, '{"a": [1]}'), ([{"a": 1}], '[{"a": 1}]'),
    ("x" * 300, "x" * 239 + "…"),
])
def test_cell(value, text):
    from rlaif.report.tables import cell

    assert cell(value) == text


@pytest.mark.parametrize("value,expected", [(1, 1.0), (0.5, 0.5), (True, None), ("0.5", None), (float("inf"), None), (None, None)])
def test_number(value, expected):
    from rlaif.report.tables import number

    assert number(value) == expected
