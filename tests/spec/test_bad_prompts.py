"""Prompts files from strangers: size limits, devices and pipes, encodings, line numbers, JSON the parser chokes on.
Each is one line `FILE:LINE: message`, exit 2, before any model loads; good files with these features load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlaif.spec import inputs
from rlaif.backends import pool as models
from rlaif.spec.inputs import load_prompts

from tests.conftest import ROOT, write_pipeline
from tests.fakes import assert_one_line, run_cli


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def refuse(self, cfg):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(models.ModelPool, "get", refuse)


def run_with(workdir, prompts) -> tuple[int, str]:
    return run_cli("run", write_pipeline(workdir / "p.yaml", "default"), "--prompts", prompts)


def run_capped(workdir, prompts: str) -> subprocess.CompletedProcess:
    """`rlaif run` in a process with 2 GB of address space and a minute: the old reader ran /dev/zero out of memory
    (and a FIFO blocked forever), which must not take the test machine with it."""
    pipe = write_pipeline(workdir / "p.yaml", "default")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31)); "
            "from rlaif.cli import main; sys.argv = ['rlaif', 'run', sys.argv[1], '--prompts', sys.argv[2]]; main()")
    return subprocess.run([sys.executable, "-c", code, str(pipe), prompts], capture_output=True, text=True, timeout=60,
                          cwd=workdir, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(workdir)})


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_devices_and_pipes_are_refused_not_read(workdir, kind):
    if kind == "device":
        target = "/dev/zero"
    else:
        target = str(workdir / "fifo.txt")
        os.mkfifo(target)
    done = run_capped(workdir, target)
    assert done.returncode == 2, done.stderr[-2000:]
    assert_one_line(done.stderr.strip(), r"(zero|fifo\.txt): prompts file is not a regular file")


def test_file_size_limit(workdir):
    with open(workdir / "big.txt", "wb") as f:
        f.truncate(inputs.MAX_INPUT_BYTES + 1)  # sparse: no disk used
    code, err = run_with(workdir, "big.txt")
    assert code == 2
    assert_one_line(err, r"big\.txt: prompts file is 1,073,741,825 bytes; the limit is 1,073,741,824")


def test_a_50_mb_prompt_is_refused(workdir):
    (workdir / "huge.txt").write_text("ok\n" + "x" * 50_000_000 + "\n")
    code, err = run_with(workdir, "huge.txt")
    assert code == 2
    assert_one_line(err, r"huge\.txt:2: the prompt is 50,000,000 characters; the limit is 100,000")


def test_prompt_length_counts_every_message(tmp_path):
    half = "y" * (inputs.MAX_PROMPT_CHARS // 2 + 1)
    (tmp_path / "m.jsonl").write_text(json.dumps({"messages": [{"role": "system", "content": half},
                                                               {"role": "user", "content": half}]}) + "\n")
    with pytest.raises(inputs.UserError, match=r"m\.jsonl:1: the prompt is 100,002 characters"):
        load_prompts(tmp_path / "m.jsonl")
    (tmp_path / "ok.txt").write_text("z" * inputs.MAX_PROMPT_CHARS + "\n")
    assert len(load_prompts(tmp_path / "ok.txt")[0].messages[0]["content"]) == inputs.MAX_PROMPT_CHARS


@pytest.mark.parametrize("name, content, pattern", [
    ("deep.jsonl", '{"prompt": "ok"}\n{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", r"deep\.jsonl:2: invalid JSON: nested too deeply"),
    ("int.jsonl", '{"prompt": "ok"}\n{"prompt": "x", "n": 1' + "0" * 5000 + "}\n",
     r"int\.jsonl:2: invalid JSON: Exceeds the limit \(4300 digits\) for integer string conversion"),
    ("bad.txt", b"one\ntwo\ncaf\xe9\n", r"bad\.txt:3: not UTF-8 text"),
    ("bad.csv", b'prompt\n"multi\nline"\nfine\ncaf\xe9\n', r"bad\.csv:5: not UTF-8 text"),
    ("blank.csv", 'prompt\n\n\nfirst\n\n"\n\n"\n', r"blank\.csv:6: empty prompt"),
    ("multi.csv", 'prompt\n"a\nb"\n"  \n\n  "\nok\n', r"multi\.csv:4: empty prompt"),
    ("quote.csv", 'prompt\nok\n"never closed\nmore\n', r"quote\.csv:3: malformed CSV: unexpected end of data"),
    ("content.jsonl", '{"messages": [{"role": "user", "content": 5}]}\n', r"content\.jsonl:1: each message needs a role"),
    ("role.jsonl", '{"messages": [{"role": "bot", "content": "hi"}]}\n', r"role\.jsonl:1: each message needs a role"),
], ids=["deeply-nested-json", "int-over-4300-digits", "non-utf8-line", "non-utf8-after-multiline-field", "csv-blank-lines",
        "csv-multiline-fields", "csv-unclosed-quote", "non-string-content", "unknown-role"])
def test_bad_prompt_files(workdir, name, content, pattern):
    (workdir / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run_with(workdir, name)
    assert code == 2
    assert_one_line(err, pattern)
    assert len(err) < 600


def test_a_csv_field_over_128_kib_in_another_column(tmp_path):
    (tmp_path / "p.csv").write_text('prompt,notes\nfirst,"' + "n" * 200_000 + '"\nsecond,short\n')
    assert [p.messages[0]["content"] for p in load_prompts(tmp_path / "p.csv")] == ["first", "second"]


@pytest.mark.parametrize("name, body", [("p.csv", "prompt,x\nhello,1\n"), ("p.jsonl", '{"prompt": "hello"}\n'), ("p.txt", "hello\n")])
def test_a_byte_order_mark_is_not_content(tmp_path, name, body):
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())  # Excel's "CSV UTF-8", Notepad's UTF-8
    assert load_prompts(tmp_path / name)[0].messages == ({"role": "user", "content": "hello"},)


@pytest.mark.parametrize("backend, extra, pattern", [
    ("vllm", ", max_model_len: 256", r"with stages\.respond\.max_tokens \(12\) it does not fit models\.policy\.max_model_len \(256\)"),
    ("hf", "", r"with stages\.respond\.max_tokens \(12\) it does not fit the model's max_position_embeddings \(4,096\)"),
])
def test_a_prompt_longer_than_the_context_fails_at_plan_time(workdir, tiny_chat_model, backend, extra, pattern):
    words = 300 if backend == "vllm" else 5000
    (workdir / "long.txt").write_text("short one\n" + " ".join(["harmful request"] * words) + "\n")
    path = write_pipeline(workdir / "p.yaml", tiny_chat_model, prompts="long.txt",
                          stages="stages:\n  respond: {n: 2, max_tokens: 12}\n")
    path.write_text(path.read_text().replace("backend: hf, dtype: float32", f"backend: {backend}{extra}"))
    code, err = run_cli("run", path)
    assert code == 2
    assert_one_line(err, r"long\.txt:2: the prompt is at least [\d,]+ tokens: " + pattern)
