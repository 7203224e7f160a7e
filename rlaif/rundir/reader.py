"""A run directory read for the report: run.json is required, every other file is optional."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..spec.config import Stages
from ..errors import UserError
from ..spec.inputs import jsonl_lines
from ..spec.methods import METHODS, NAMES
from .guard import read_run_json

MAX_PROBLEMS_PER_FILE = 5  # a broken JSONL file is reported by its first few bad lines, not all of them


class RunDir:
    """Reads the files a run (and later training and evaluation) left; a missing file is None, a broken one a problem."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.problems: list[str] = []  # "FILE:LINE: message" for optional files that could not be read
        if self.path.exists() and not self.path.is_dir():
            raise UserError("is a file, not a run directory", str(path))
        if not self.path.is_dir():
            raise UserError("run directory not found", str(path))
        self.info = read_run_json(self.path)  # one reader of run.json: its problems are one-line errors

    def _problem(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        self.problems.append(f"{where}: {message}")

    def json(self, rel: str | Path) -> dict | None:
        """A JSON object file, or None when it is absent or unreadable (then a problem is noted)."""
        path = self.path / rel
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            self._problem(path, e.lineno, f"not valid JSON: {e.msg}")
            return None
        except (UnicodeDecodeError, OSError) as e:
            self._problem(path, None, f"unreadable: {e}")
            return None
        if not isinstance(data, dict):
            self._problem(path, 1, "expected a JSON object")
            return None
        return data

    def jsonl(self, rel: str | Path) -> list[dict] | None:
        """The objects of a JSONL file (bad lines skipped and noted), or None when it is absent."""
        path = self.path / rel
        if not path.is_file():
            return None
        rows, bad = [], 0
        try:
            with path.open("rb") as f:
                lines = list(jsonl_lines(f))
        except OSError as e:
            self._problem(path, None, f"unreadable: {e}")
            return None
        for number, _, row, problem in lines:
            if isinstance(row, dict):
                rows.append(row)
                continue
            # the report's words for the run's files, as json() says them
            message = problem.replace("invalid JSON", "not valid JSON", 1) if problem else "expected a JSON object"
            bad += 1
            if bad <= MAX_PROBLEMS_PER_FILE:
                self._problem(path, number, f"{message}; line skipped")
        if bad > MAX_PROBLEMS_PER_FILE:
            self._problem(path, None, f"{bad - MAX_PROBLEMS_PER_FILE} more bad lines skipped")
        return rows

    def method_dir(self, method: str) -> str:
        """A training method's output directory in the run (sft: sft-model; sft/ of an older run if it holds the model)."""

        name = METHODS[method].output_dir if method in METHODS else method
        if not (self.path / name).is_dir() and (self.path / method / "rlaif_train.json").is_file():
            return method
        return name

    def training_methods(self) -> list[str]:
        """Training methods with an output directory in the run, in pipeline order."""
        return [m for m in NAMES if (self.path / self.method_dir(m)).is_dir()]

    def log_history(self, method: str) -> list[dict] | None:
        """TRL's log_history from the newest checkpoint's trainer_state.json (or the one saved beside the model)."""
        base = self.path / self.method_dir(method)
        checkpoints = sorted((int(m.group(1)), d) for d in base.glob("checkpoint-*")
                             if (m := re.fullmatch(r"checkpoint-(\d+)", d.name)) and (d / "trainer_state.json").is_file())
        candidates = [d / "trainer_state.json" for _, d in reversed(checkpoints)] + [base / "trainer_state.json"]
        for path in candidates:
            if path.is_file():
                state = self.json(path.relative_to(self.path))
                history = state.get("log_history") if state else None
                return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else None
        return None

    def older_history(self, method: str, metrics: dict) -> list[dict]:
        """Per-step rows of an older run (before metrics.history had {step, loss} rows for every trainer)."""
        # what those versions left: PPO's history file, else TRL's log_history, else rlaif_train.json's rows or losses
        if method == "ppo" and (rows := self.jsonl(f"{self.method_dir(method)}/ppo_history.jsonl")):
            return rows
        if rows := self.log_history(method):
            return rows
        if isinstance(metrics.get("history"), list):
            return [h for h in metrics["history"] if isinstance(h, dict)]
        return [{"step": i + 1, "loss": v} for i, v in enumerate(metrics.get("losses") or [])]

    def evals(self) -> list[tuple[str, dict]]:
        """(name, result) for each eval/*.json, by file name."""
        return [(p.stem, data) for p in sorted((self.path / "eval").glob("*.json"))
                if (data := self.json(p.relative_to(self.path))) is not None]

    def files(self) -> list[tuple[str, int]]:
        """Top-level entries of the run directory with their sizes in bytes (directories: the sum of their files)."""
        out = []
        for p in sorted(p for p in self.path.iterdir() if not p.name.startswith(".")):  # not the lock or temporary files
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            out.append((p.name + ("/" if p.is_dir() else ""), size))
        return out
