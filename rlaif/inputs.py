"""Prompt sets: JSONL, CSV, plain text, or a `datasets` dataset saved on disk."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """A conversation to answer (ending with a user turn), and a stable id from its content."""

    id: str
    messages: tuple[dict, ...]


def _prompt(value, file: str, line: int | None) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise UserError("empty prompt", file, line)
        messages = ({"role": "user", "content": value},)
    elif isinstance(value, list) and value:
        for m in value:
            if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
                raise UserError(f"each message needs a role ({'/'.join(ROLES)}) and a string content, got {m!r}", file, line)
        if value[-1]["role"] != "user":
            raise UserError("the last message of a prompt must be from the user", file, line)
        messages = tuple({"role": m["role"], "content": m["content"]} for m in value)
    else:
        raise UserError("expected a non-empty `prompt` string or `messages` list", file, line)
    digest = hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:16]
    return Prompt(id=digest, messages=messages)


def _from_row(row: dict, file: str, line: int | None) -> Prompt:
    if "messages" in row and row["messages"] is not None:
        return _prompt(row["messages"], file, line)
    if "prompt" in row:
        return _prompt(row["prompt"], file, line)
    raise UserError(f"no `prompt` or `messages` field (fields: {', '.join(map(str, row)) or 'none'})", file, line)


def jsonl_objects(path: Path):
    """(line number, object) for each non-blank line of a JSONL file; bad JSON or a non-object names its line."""
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"invalid JSON: {e.msg} (column {e.colno})", str(path), n) from None
            if not isinstance(row, dict):
                raise UserError(f"expected a JSON object, got {type(row).__name__}", str(path), n)
            yield n, row


def _read_jsonl(path: Path):
    for n, row in jsonl_objects(path):
        yield _from_row(row, str(path), n)


def _read_csv(path: Path):
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        if "prompt" not in reader.fieldnames:
            raise UserError(f"the CSV header has no `prompt` column (columns: {', '.join(reader.fieldnames)})", str(path), 1)
        for row in reader:
            yield _from_row({"prompt": row["prompt"]}, str(path), reader.line_num)


def _read_text(path: Path):
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield _from_row({"prompt": line.strip()}, str(path), n)


def _read_dataset(path: Path):
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # not a saved dataset: say so plainly
        raise UserError(f"not a saved `datasets` dataset ({type(e).__name__}: {e})", str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds), None)
        if split is None:
            return
        ds = ds[split]
    for i, row in enumerate(ds):
        yield _from_row(row, f"{path} (row {i})", None)


def load_prompts(path: str | Path, limit: int | None = None) -> list[Prompt]:
    """Read prompts, drop exact duplicates (same id), keep the first `limit`."""
    path = Path(path)
    if not path.exists():
        raise UserError("prompts file not found", str(path))
    if path.is_dir():
        reader = _read_dataset(path)
    else:
        reader = {".jsonl": _read_jsonl, ".csv": _read_csv}.get(path.suffix.lower(), _read_text)(path)
    prompts: dict[str, Prompt] = {}
    try:
        for p in reader:
            prompts.setdefault(p.id, p)
            if limit and len(prompts) >= limit:
                break
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text ({e.reason} at byte {e.start})", str(path)) from None
    if not prompts:
        raise UserError("no prompts in the file (it is empty)", str(path), 1 if path.is_file() else None)
    return list(prompts.values())
