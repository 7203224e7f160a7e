"""Prompt sets: JSONL, CSV, plain text, or a `datasets` dataset saved on disk."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from ..errors import UserError
from .loader import short

ROLES = ("system", "user", "assistant")
MAX_INPUT_BYTES = 2**30  # a prompts or labels file (1 GiB); the public red-team sets are tens of MB
MAX_PROMPT_CHARS = 100_000  # one prompt, all its messages (~25k tokens): far past the contexts rlaif runs at
# csv's own limit (128 KiB per field) would refuse a long answer in an annotation file; a field is bounded by the file
csv.field_size_limit(max(csv.field_size_limit(), MAX_INPUT_BYTES))


@dataclass(frozen=True)
class Prompt:
    """A conversation to answer (ending with a user turn), and a stable id from its content."""

    id: str
    messages: tuple[dict, ...]
    source: tuple = field(default=(None, None), compare=False, repr=False)  # (file, line) it was read from, for errors


def _prompt(value, file: str, line: int | None) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise UserError("empty prompt", file, line)
        messages = ({"role": "user", "content": value},)
    elif isinstance(value, list) and value:
        for m in value:
            if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
                raise UserError(f"each message needs a role ({'/'.join(ROLES)}) and a string content, got {short(m)}", file, line)
        if value[-1]["role"] != "user":
            raise UserError("the last message of a prompt must be from the user", file, line)
        messages = tuple({"role": m["role"], "content": m["content"]} for m in value)
    else:
        raise UserError("expected a non-empty `prompt` string or `messages` list", file, line)
    chars = sum(len(m["content"]) for m in messages)
    if chars > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt is {chars:,} characters; the limit is {MAX_PROMPT_CHARS:,}", file, line)
    digest = hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:16]
    return Prompt(id=digest, messages=messages, source=(file, line))


def _from_row(row: dict, file: str, line: int | None) -> Prompt:
    if "messages" in row and row["messages"] is not None:
        return _prompt(row["messages"], file, line)
    if "prompt" in row:
        return _prompt(row["prompt"], file, line)
    raise UserError(f"no `prompt` or `messages` field (fields: {', '.join(map(str, row)) or 'none'})"[:300], file, line)


def check_file(path: Path, what: str) -> None:
    """A regular file of at most MAX_INPUT_BYTES, else a UserError: /dev/zero or a pipe would be read until memory
    runs out (or block forever), so they are refused before they are opened."""
    limit = MAX_INPUT_BYTES
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found", str(path)) from None
    except OSError as e:
        raise UserError(f"cannot read the {what}: {e.strerror}", str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} is not a regular file (a device, pipe or socket); save it to a file first", str(path))
    if st.st_size > limit:
        raise UserError(f"{what} is {st.st_size:,} bytes; the limit is {limit:,} (split it, or save it with "
                        "`datasets` save_to_disk and give the directory)", str(path))


def decoded_lines(f):
    """(line number, text, problem) for each line of a binary file, decoded as UTF-8 line by line."""
    # line by line, so a bad byte names its line (the text has U+FFFD in its place); Excel's "CSV UTF-8" starts with
    # a byte-order mark
    for n, raw in enumerate(f, 1):
        try:
            line, problem = raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            line, problem = raw.decode("utf-8", "replace"), f"not UTF-8 text ({e.reason} at byte {e.start} of the line)"
        yield n, line.removeprefix("\ufeff") if n == 1 else line, problem


def _opened(path: Path, what: str):
    try:
        return path.open("rb")
    except OSError as e:
        raise UserError(f"cannot read the {what}: {e.strerror}", str(path)) from None


def text_lines(path: Path, what: str = "file"):
    """(line number, text) for each line of a checked file; a line that is not UTF-8 is a UserError naming it."""
    path = Path(path)
    check_file(path, what)
    with _opened(path, what) as f:
        for n, line, problem in decoded_lines(f):
            if problem:
                raise UserError(problem, str(path), n)
            yield n, line


def parse_json_line(text: str):
    """json.loads with every failure a ValueError whose message is one plain phrase."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as e:  # Python refuses int() of more than 4,300 digits
        raise ValueError(f"invalid JSON: {str(e).split(';')[0]}") from None


class JsonLine(NamedTuple):
    """One non-blank line of a JSONL file: its number, its text, the parsed value, or why it has none."""

    line: int
    text: str
    value: object  # None when `problem` is set
    problem: str | None  # "not UTF-8 text (...)" or "invalid JSON: ..."


def jsonl_lines(f) -> Iterator[JsonLine]:
    """Every non-blank line of the binary file `f`, parsed, a bad line with its problem: the one JSONL reader."""
    # each caller decides what a problem means: a user's prompts or pairs, an error; labels, a reject; the run's own
    # files (the report), a line skipped and noted
    for n, text, problem in decoded_lines(f):
        if problem:
            yield JsonLine(n, text, None, problem)
        elif text.strip():
            try:
                yield JsonLine(n, text, parse_json_line(text), None)
            except ValueError as e:
                yield JsonLine(n, text, None, str(e))


def jsonl_objects(path: Path, what: str = "JSONL file"):
    """(line number, object) for each non-blank line of a user's JSONL file; the first bad line is a UserError."""
    path = Path(path)
    check_file(path, what)
    with _opened(path, what) as f:
        for n, _, row, problem in jsonl_lines(f):
            if problem:
                raise UserError(problem, str(path), n)
            if not isinstance(row, dict):
                raise UserError(f"expected a JSON object, got {type(row).__name__}", str(path), n)
            yield n, row


def csv_rows(lines, file: str):
    """(line where the row starts, row as a list) for each non-blank row; `lines` yields (n, text) as text_lines does.
    A row starts on the line after the previous row ended, so blank lines and multi-line fields keep the count right."""
    reader = csv.reader((text for _, text in lines), strict=True)  # strict: a quote never closed is an error, not a prompt
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(f"malformed CSV: {e}", file, start) from None
        if row:  # a blank line
            yield start, row


def _read_jsonl(path: Path):
    for n, row in jsonl_objects(path, "prompts file"):
        yield _from_row(row, str(path), n)


def _read_csv(path: Path):
    rows = csv_rows(text_lines(path, "prompts file"), str(path))
    line, header = next(rows, (1, None))
    if header is None:
        return
    if "prompt" not in header:
        raise UserError(f"the CSV header has no `prompt` column (columns: {', '.join(header)})"[:300], str(path), line)
    column = header.index("prompt")
    for n, row in rows:
        yield _from_row({"prompt": row[column] if column < len(row) else None}, str(path), n)


def _read_text(path: Path):
    for n, line in text_lines(path, "prompts file"):
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
    for p in reader:
        prompts.setdefault(p.id, p)
        if limit and len(prompts) >= limit:
            break
    if not prompts:
        raise UserError("no prompts in the file (it is empty)", str(path), 1 if path.is_file() else None)
    return list(prompts.values())
