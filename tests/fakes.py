"""Shared fakes and helpers of the test suite (fixtures live in conftest.py): test modules import from here, never
from one another (tests/test_layout.py checks that)."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlaif.backends.base import Completion, LogprobsUnavailable, Output, Request, Sampling
from rlaif.cli import main


# --- a fake judge model (stages, export, human, evaluate, train, rundir tests) ---

class BiasedJudge:
    """Prefers the longer answer by a fixed margin, plus a bias towards whatever is shown first."""

    model_id = "biased-judge"
    has_chat_template = False

    def __init__(self, position_bias=0.0, logprobs_ok=True):
        self.position_bias, self.logprobs_ok, self.calls = position_bias, logprobs_ok, {"logprobs": 0, "generate": 0}

    def _options(self, prompt):
        a = prompt.rsplit("\n(A) ", 1)[1].split("\n(B) ")[0]  # the last options: worked examples come first
        b = prompt.rsplit("\n(B) ", 1)[1].split("\n")[0]
        return a, b

    def generate(self, requests, progress=None):
        self.calls["generate"] += 1
        out = []
        for r in requests:
            if "\n(A) " in (r.prompt or ""):
                a, b = self._options(r.prompt)
                texts = ["A" if len(a) > len(b) else "B"] * r.sampling.n
            else:  # sampled responses of different lengths
                texts = ["answer " + "x" * (3 * i + len(r.prompt) % 3) for i in range(r.sampling.n)]
            out.append(Completion(tuple(Output(t, 1) for t in texts), 3))
        return out

    def logprobs(self, requests, options):
        self.calls["logprobs"] += 1
        if not self.logprobs_ok:
            raise LogprobsUnavailable("no logprobs here")
        out = []
        for r in requests:
            a, b = self._options(r.prompt)
            pa = (0.8 if len(a) > len(b) else 0.2 if len(a) < len(b) else 0.5) + self.position_bias
            pa = min(max(pa, 0.01), 0.99)
            out.append({"A": math.log(pa), "B": math.log(1 - pa)})
        return out

    def close(self):
        pass


# --- bad input: the CLI's one-line errors ---

GOOD_PRINCIPLE = "  - name: a\n    critique: Find problems.\n    revision: Fix them.\n    comparison: Which is better?\n"

def run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr.strip()


def assert_one_line(err: str, pattern: str):
    assert "\n" not in err, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    assert re.search(pattern, err), err


def constitution(workdir, text: str):
    path = workdir / "c.yaml"
    path.write_text(text)
    return path


# --- a scripted OpenAI-compatible server on 127.0.0.1 (backends tests) ---

TIMEOUT = 0.5  # the client's per-request timeout in these tests; the "slow" fault takes longer

class Script:
    """What the fake server does: faults to play in arrival order, then well-formed replies; and what it saw."""

    def __init__(self):
        self.faults: list[str] = []
        self.delay = lambda body: 0.0  # seconds a good reply takes
        self.logprobs = True
        self.top = lambda body: {" A": -0.5, "A": -0.7, " B": -1.25, "C": -3.0}  # top logprobs for a request body
        self.continues = True  # accepts vLLM's continue_final_message
        self.requests: list[tuple[str, dict, str | None]] = []  # (path, body, Authorization header)
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/v1/models":
            return self._send(404, {"error": {"message": "not found"}})
        self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    def do_POST(self):
        script: Script = self.server.script
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with script.lock:
            script.requests.append((self.path, body, self.headers.get("Authorization")))
            fault = script.faults.pop(0) if script.faults else None
            script.in_flight += 1
            script.peak = max(script.peak, script.in_flight)
        try:
            self._reply(script, fault, body)
        except OSError:  # the client hung up (timeout fault)
            pass
        finally:
            with script.lock:
                script.in_flight -= 1

    def _reply(self, script: Script, fault: str | None, body: dict):
        if fault == "429":
            return self._send(429, {"error": {"message": "rate limited"}})
        if fault == "429-retry-after":
            return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.4"})
        if fault in ("500", "503"):
            return self._send(int(fault), {"error": {"message": "server trouble"}})
        if fault == "401":  # a server that echoes the key it got: the client must not repeat it
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._send(401, {"error": {"message": f"invalid api key {key}"}})
        if fault == "too-long":
            return self._send(400, {"error": {"message": "This model's maximum context length is 2048 tokens."}})
        if fault == "slow":
            time.sleep(3 * TIMEOUT)
        if fault == "malformed":
            return self._send_raw(200, b'{"id": "x", "choices": [{"text": ')
        if fault == "no-choices":
            return self._send(200, {"id": "x", "object": "text_completion", "model": body["model"]})
        if "continue_final_message" in body and not script.continues:  # as a strict server (OpenAI itself) answers
            return self._send(400, {"error": {"message": "Unrecognized request argument supplied: continue_final_message"}})
        time.sleep(script.delay(body))
        self._send(200, self._good(script, body))

    def _good(self, script: Script, body: dict) -> dict:
        chat = self.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        n = body.get("n", 1)
        choices = []
        for i in reversed(range(n)):  # out of order on purpose: the client sorts by index
            text = f"<{prompt}|{i}>"
            finish = "length" if body.get("max_tokens") == 3 else "stop"
            choice = {"index": i, "finish_reason": finish, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            if body.get("logprobs") and script.logprobs:
                top = script.top(body)
                if chat:
                    entries = [{"token": t, "logprob": v, "bytes": None} for t, v in top.items()]
                    choice["logprobs"] = {"content": [{"token": " A", "logprob": -0.5, "bytes": None, "top_logprobs": entries}]}
                else:
                    choice["logprobs"] = {"tokens": [" A"], "token_logprobs": [-0.5], "top_logprobs": [top], "text_offset": [0]}
            choices.append(choice)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 4 * n, "total_tokens": len(prompt.split()) + 4 * n}
        kind = "chat.completion" if chat else "text_completion"
        return {"id": "r", "object": kind, "created": 0, "model": body["model"], "choices": choices, "usage": usage}

    def _send(self, status: int, payload: dict, headers: dict | None = None):
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(text: str, **sampling) -> Request:
    return Request(prompt=text, sampling=Sampling(**sampling))


# --- kill -9 and rerun (resume tests) ---

def _records(db) -> dict[str, tuple[str, str]]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        return {k: (stage, data) for k, stage, data in con.execute("SELECT key, stage, data FROM records")}
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        con.close()


def _start(pipe, cwd):
    return subprocess.Popen([sys.executable, "-m", "rlaif", "run", str(pipe)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc, db, stage: str, at_least: int, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = _records(db)
        if sum(s == stage for s, _ in records.values()) >= at_least:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return _records(db)
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for records")


def rerun_and_check(pipe, workdir, db, before: dict, total: int, responses: int) -> dict:
    """Rerun the killed pipeline; every record exists exactly once and those committed before the kill are unchanged."""
    rerun = _start(pipe, workdir)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    after = _records(db)
    assert len(after) == total  # every record exactly once: the key is the primary key, so extra keys would show here
    assert sum(s == "respond" for s, _ in after.values()) == responses
    for key, value in before.items():  # what was committed before the kill is kept as it was
        assert after[key] == value
    return after


# --- a synthetic finished run directory (report, rundir tests) ---

PRINCIPLES = ("avoid-harm", "be-honest", "explain-dont-refuse")

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"  # data must come out escaped, never as markup

def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, list):
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        path.write_text(json.dumps(data, indent=2))


def _stats(rng) -> dict:
    hist = {f"{b / 10:.1f}-{b / 10 + 0.1:.1f}": rng.randint(0, 9) for b in range(10)}
    return {"comparisons": 10, "judgements": 10, "position_consistency": rng.random(), "first_position_win_rate": rng.random(),
            "longer_chosen_rate": rng.random(), "parse_failure_rate": 0.0, "label_histogram": hist}


def _rate(rng, key: str) -> dict:
    v = rng.uniform(0.3, 0.8)
    return {key: v, "ci95": [max(v - 0.1, 0), min(v + 0.1, 1)], "n": 40}


def synthetic_run(path: Path, full: bool = True) -> Path:
    """A run directory as the pipeline, merge-human, training and evaluation leave it; `full=False`: run.json only."""
    rng = random.Random(0)
    counts = {"revision_problems": {"echoes_request": 2}, "prompts": 4, "responses": 8, "critique_rounds": 8, "sft_rows": 4, "pref_rows": 12,
              "judge": {"comparisons": 10, "dropped": {"no_label": 1}}, "score": {"ratings": 8, "mean_score": 5.5},
              "pairs": {"rows_in": 14, "pairs": 12, "duplicates_merged": 2, "conflicts": 1, "label_source": {"judge": 8, "score": 4},
                        "dropped": {"tie": 1, "inconsistent": 0, "low_margin": 0, "truncated_chosen": 0}},
              "train": {"dpo": {"steps": 3, "train_loss": 0.69}}}
    info = {"name": "synthetic", "status": "complete", "seed": 7, "seconds": 12.5, "rlaif_version": "0.1.0",
            "constitution": {"path": "constitutions/harmless.yaml", "name": "harmless", "sha256": "ab" * 32},
            "prompts": {"path": "data/prompts.jsonl", "count": 4}, "models": {"policy": "tiny-policy", "judge": "tiny-judge"},
            "config": {"stages": {"respond": {"n": 2}}}, "counts": counts, "versions": {"python": "3.11"}}
    _write(path / "run.json", info)
    if not full:
        return path
    _write(path / "run.json", info | {"warnings": ["the judge's position consistency is 0.17 (below 0.6): its two orders agree "
                                                   "little more often than chance"]})
    _write(path / "judge_stats.json", {"overall": _stats(rng), "per_principle": {p: _stats(rng) for p in PRINCIPLES}})
    prefs = []
    for i in range(12):
        p = rng.uniform(0.5, 1.0)
        kind = ("samples", "revision", "best_vs_worst")[i % 3]
        prefs.append({"prompt": [{"role": "user", "content": HOSTILE if i == 0 else f"prompt {i}"}],
                      "chosen": [{"role": "assistant", "content": f"chosen {i}"}],
                      "rejected": [{"role": "assistant", "content": f"rejected {i}"}],
                      "pair_type": kind, "source": "ai", "principles": [PRINCIPLES[i % 3]], "pair_id": f"pair{i}",
                      "p_chosen": None if kind == "best_vs_worst" else p, "margin": 2 * p - 1,
                      "orders_agree": None if kind == "best_vs_worst" else i % 2 == 0})
    _write(path / "prefs.jsonl", prefs)
    _write(path / "sft.jsonl", [{"prompt": [{"role": "user", "content": f"sft prompt {i}"}],
                                 "completion": [{"role": "assistant", "content": f"sft answer {i}"}],
                                 "source": ("revision", "response")[i % 2], "principles": [PRINCIPLES[i % 3]]} for i in range(4)])
    _write(path / "merged.jsonl", [{"pair_id": f"pair{i}", "source": ("ai", "human", "both")[i % 3]} for i in range(5)])
    _write(path / "scores.jsonl", [{"target_key": f"t{i}", "principle": PRINCIPLES[i % 3], "score": rng.uniform(1, 10)}
                                   for i in range(8)])
    overall = {"pairs": 6, "agreement": 0.6, "cohen_kappa": 0.2, "human_ties": 1,
               "confusion": {"first": {"first": 2, "second": 1}, "second": {"second": 2, "tie": 1}}, "conflicts": ["pair0"]}
    _write(path / "human_agreement.json", {"overall": overall, "per_group": {p: overall for p in PRINCIPLES},
                                           "policy": "human-overrides", "weight": None})
    _write(path / "human_rejects.jsonl", [{"file": "labels.csv", "line": 3, "reason": "invalid verdict 'x'", "raw": "{}"}])
    for step in (2, 10):  # the newest checkpoint (10, not 2 as text order would have it) holds the full history
        history = [{"step": s, "loss": 0.7 - 0.01 * s, "rewards/margins": 0.01 * s, "rewards/chosen": 0.0}
                   for s in range(1, step + 1)]
        _write(path / "dpo" / f"checkpoint-{step}" / "trainer_state.json", {"log_history": history + [{"train_loss": 0.65}]})
    _write(path / "dpo" / "rlaif_train.json", {"method": "dpo", "model_id": "tiny-policy", "config": {"trl": {"max_steps": 10}},
                                               "metrics": {"steps": 10, "train_loss": 0.65, "losses": [0.69, 0.6]},
                                               "seconds": 3.0})
    ppo = [{"step": s, "score": 0.1 * s, "kl": 0.02 * s, "policy_loss": -0.01 * s, "value_loss": 1 / s} for s in range(1, 9)]
    _write(path / "ppo" / "ppo_history.jsonl", ppo)
    _write(path / "ppo" / "rlaif_train.json", {"method": "ppo", "metrics": {"steps": 8, "train_loss": -0.08, "history": ppo}})
    watch = [{"step": s, "reward": 0.1 * s, "judge_win_rate": 0.6 - 0.04 * s, "kl": 0.05 * s,
              "warning": "reward up, judge win rate down, KL 0.40: reward hacking?" if s == 8 else None} for s in range(2, 9, 2)]
    _write(path / "ppo" / "watch.jsonl", watch)
    grpo = [{"loss": 0.01 * s, "reward": 0.2 * s, "kl": 0.001 * s} for s in range(1, 5)]  # no step key: TRL's rows as kept
    _write(path / "grpo" / "rlaif_train.json", {"method": "grpo", "metrics": {"steps": 4, "train_loss": 0.02, "history": grpo}})
    _write(path / "eval" / "winrate.json", {"kind": "winrate", **_rate(rng, "win_rate"), "wins": 20, "losses": 12, "ties": 8,
                                            "per_principle": {p: _rate(rng, "win_rate") for p in PRINCIPLES},
                                            "warnings": ["the judge is the baseline model itself (tiny-policy): self-preference"]})
    _write(path / "eval" / "harmless.json", {"kind": "harmless", **_rate(rng, "rate")})
    _write(path / "eval" / "reward-model.json", {"kind": "reward-model", **_rate(rng, "accuracy")})
    _write(path / "eval" / "kl.json", {"kind": "kl", "kl": 0.31, "per_principle": {p: {"kl": 0.3} for p in PRINCIPLES}})
    return path


# --- human labels through the CLI (human tests) ---

def _annotate(run_dir, tmp_path):
    CliRunner().invoke(main, ["export", str(run_dir), "--for-annotation", str(tmp_path / "ann.csv")], catch_exceptions=False)
    rows = list(csv.DictReader((tmp_path / "ann.csv").open()))
    order = json.loads((run_dir / "annotation_order.json").read_text())
    return rows, order


def _merge(run_dir, *args):
    return CliRunner().invoke(main, ["merge-human", str(run_dir), *map(str, args)])


def _merged(run_dir):
    return [json.loads(x) for x in (run_dir / "merged.jsonl").read_text().splitlines()]


# --- training files (train tests) ---

def _config(tmp_path, method, model, dataset, reward_yaml):
    extra = "num_generations: 2\n  max_completion_length: 8\n  per_device_train_batch_size: 2\n  max_steps: 2\n  logging_steps: 1\n  learning_rate: 1.0e-3\n"
    if method == "grpo":
        extra += "  beta: 0.04\n"  # a KL term against the reference, as in the paper
    path = tmp_path / f"{method}.yaml"
    path.write_text(f"method: {method}\nmodel: {model}\ndataset: {dataset}\noutput_dir: {tmp_path / method}\n{reward_yaml}\ntrl:\n  {extra}")
    return path


PPO_RUN = "ppo:\n  batch_size: 4\n  mini_batch_size: 2\n  ppo_epochs: 1\n  max_new_tokens: 6\n  total_steps: 2\n"

def _ppo_config(tmp_path, model, dataset, reward_model, rest: str):
    """A ppo training file (lines 1-6: method, model, dataset, output_dir, reward) followed by `rest`."""
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text(f"method: ppo\nmodel: {model}\ndataset: {dataset}\noutput_dir: {tmp_path / 'ppo'}\n"
                   f"reward:\n  model: {reward_model}\n" + rest)
    return cfg


def first_batch(trainer) -> dict:
    """The first collated batch a TRL trainer would train on."""
    return next(iter(trainer.get_train_dataloader()))


def completion_logps(model, batch):
    """Summed log-probabilities of each sequence's completion tokens, from plain full logits; (2B,)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    tokens, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]
    return (torch.log_softmax(logits.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * mask).sum(1)
