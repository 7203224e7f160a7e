"""Read human labels: verdicts on exported pair ids, TRL-style preference files, Argilla exports.

Every row becomes a `Vote` or a `Reject` (file, line, reason); a bad row never stops the others.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..spec.inputs import ROLES, check_file, csv_rows, decoded_lines, jsonl_lines
from ..spec.loader import short
from .annotate import from_spreadsheet

VERDICTS = {"a": "a", "b": "b", "tie": "tie", "response_a": "a", "response_b": "b", "=": "tie", "equal": "tie", "same": "tie"}


@dataclass(frozen=True)
class Vote:
    """One person's verdict on one pair, in the pair's own terms (`chosen`/`rejected` of the AI row, or `tie`)."""

    pair_id: str
    annotator: str
    verdict: str  # "a", "b" or "tie" for exported pairs; "chosen" for a TRL-style row (its chosen side won)
    comment: str
    file: str
    line: int
    pair: dict | None = None  # a TRL-style row: the pair itself (prompt, chosen, rejected), for pairs new to the run


@dataclass(frozen=True)
class Reject:
    """A row that could not be used, and why."""

    file: str
    line: int
    reason: str
    raw: str


class _Bad(Exception):
    """A row that cannot be used; the message is the reason."""


def _lines(path: Path, bad: dict[int, str]):
    """(line number, text) of a labels file; a line that is not UTF-8 is noted in `bad` and read with U+FFFD in place."""
    with path.open("rb") as f:
        for n, text, problem in decoded_lines(f):
            if problem:
                bad[n] = problem
            yield n, text


def _csv_rows(path: Path) -> tuple[list[tuple[int, object]], list[Reject]]:
    bad: dict[int, str] = {}
    rows, rejects, header = [], [], None

    def flush(line: int, raw: str) -> bool:  # rejects for the bad lines read so far; True if the row had one
        found = sorted(n for n in bad if n >= line)
        for n in found:
            rejects.append(Reject(str(path), n, bad.pop(n), raw[:500]))
        return bool(found)

    try:
        for line, cells in csv_rows(_lines(path, bad), str(path)):
            if header is None:
                header = cells
                flush(line, ",".join(cells))
                continue
            row = {h: cells[i] if i < len(cells) else None for i, h in enumerate(header)}
            if not flush(line, ",".join(cells)):
                rows.append((line, from_spreadsheet(row) if "pair_id" in row else row))
    except UserError as e:  # a quote never closed, and the like: nothing after it can be read reliably
        rejects.append(Reject(str(path), e.line or 1, f"{e.message}; the rest of the file was not read", ""))
    flush(1, "")
    return rows, rejects


def _item_lines(text: str) -> list[int]:
    """The line each item of a JSON document's list (top level, or its `records`) starts on, found by decoding item
    by item with the json module; [] when the document has another shape."""
    decoder, pos, lines, line, seen = json.JSONDecoder(), 0, [], 1, 0

    def skip(i: int) -> int:
        return _SPACE.match(text, i).end()

    pos = skip(0)
    if text[pos] == "{":  # find "records": [
        pos = skip(pos + 1)
        while text[pos] == '"':
            key, pos = decoder.raw_decode(text, pos)
            pos = skip(skip(pos) + 1)  # the colon
            if key == "records":
                break
            pos = skip(decoder.raw_decode(text, pos)[1])
            pos = skip(pos + 1) if text[pos] == "," else pos
    if text[pos] != "[":
        return []
    pos = skip(pos + 1)
    while text[pos] != "]":
        line, seen = line + text.count("\n", seen, pos), pos
        lines.append(line)
        pos = skip(decoder.raw_decode(text, pos)[1])
        pos = skip(pos + 1) if text[pos] == "," else pos
    return lines


_SPACE = re.compile(r"[ \t\n\r]*")


def _json_rows(path: Path) -> tuple[list[tuple[int, object]], list[Reject]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return [], [Reject(str(path), raw[: e.start].count(b"\n") + 1, f"not UTF-8 ({e.reason} at byte {e.start})", "")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return [], [Reject(str(path), e.lineno, f"not a JSON document: {e.msg} (column {e.colno})", "")]
    except (RecursionError, ValueError) as e:  # nesting, or an int of more than 4,300 digits
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
        return [], [Reject(str(path), 1, f"not a usable JSON document: {why}", "")]
    items = data if isinstance(data, list) else data.get("records") if isinstance(data, dict) else None
    if not isinstance(items, list):
        got = f"records: {type(items).__name__}" if isinstance(data, dict) else type(data).__name__
        return [], [Reject(str(path), 1, f'a .json labels file holds a list of rows or {{"records": [...]}}, got {got}', "")]
    try:
        lines = _item_lines(text)
    except (ValueError, IndexError, RecursionError):
        lines = []
    if len(lines) != len(items):  # a shape the walk does not follow (e.g. "records" twice): number the items instead
        lines = list(range(1, len(items) + 1))
    return list(zip(lines, items)), []


def _rows(path: Path) -> tuple[list[tuple[int, object]], list[Reject]]:
    """(line, parsed row) pairs from .jsonl, .json (a list) or .csv; undecodable lines become rejects."""
    check_file(path, "labels file")
    size = path.stat().st_size
    if size == 0 or (size < 4096 and not path.read_bytes().strip()):
        return [], [Reject(str(path), 1, "empty file", "")]
    if path.suffix.lower() == ".csv":
        return _csv_rows(path)
    if path.suffix.lower() == ".json":
        return _json_rows(path)
    rows, rejects = [], []
    with path.open("rb") as f:
        for n, text, row, problem in jsonl_lines(f):
            if problem:
                rejects.append(Reject(str(path), n, problem, text[:500]))
            else:
                rows.append((n, row))
    return rows, rejects


def _kind(row) -> str | None:
    if not isinstance(row, dict):
        return None
    if "chosen" in row and "rejected" in row:
        return "trl"
    if isinstance(row.get("responses"), dict) or any(str(k).endswith(".responses") for k in row):
        return "argilla"
    if "pair_id" in row or "verdict" in row:
        return "verdicts"
    return None


def _message_list(value, field: str, last: str | None) -> list[dict]:
    """A TRL message list, checked: roles system/user/assistant, string contents, and the last one from `last`."""
    if not (isinstance(value, list) and value):
        raise _Bad(f"{field}: expected a string or a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _Bad(f"{field}[{i}]: a message needs a role ({'/'.join(ROLES)}), got {short(m)}")
        if not isinstance(m.get("content"), str):
            raise _Bad(f"{field}[{i}]: the content must be a string, got {type(m.get('content')).__name__}")
    if last and value[-1]["role"] != last:
        raise _Bad(f"{field}: the last message must be from the {last}, got {value[-1]['role']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _text(value, field: str) -> str:
    text = value if isinstance(value, str) else _message_list(value, field, "assistant")[-1]["content"]
    if not text.strip():
        raise _Bad(f"missing or empty {field}")
    return text


def _messages(value) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise _Bad("missing or empty prompt")
        return [{"role": "user", "content": value}]
    return _message_list(value, "prompt", "user")


def _mapping(row: dict, key: str) -> dict:
    value = row.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"Argilla record: `{key}` must be a mapping, got {type(value).__name__}")
    return value


def _argilla_votes(row: dict, question: str | None) -> list[tuple[str, str]]:
    """(annotator, value) pairs from an Argilla record, nested (`responses: {q: [...]}`) or flattened (`q.responses`)."""
    if isinstance(row.get("responses"), dict):
        questions = [question] if question else list(row["responses"])
        for q in questions:
            answers = row["responses"].get(q) or []
            if not isinstance(answers, list):
                raise _Bad(f"Argilla record: responses.{q} must be a list of answers, got {type(answers).__name__}")
            if answers:
                return [(str(a.get("user_id", "")), _ranked(a.get("value"))) for a in answers if isinstance(a, dict)]
        return []
    keys = [k for k in row if str(k).endswith(".responses") and (question is None or k == f"{question}.responses")]
    if not keys:
        return []
    values, users = row[keys[0]] or [], row.get(keys[0] + ".users") or []
    for name, value in ((keys[0], values), (keys[0] + ".users", users)):
        if not isinstance(value, list):
            raise _Bad(f"Argilla record: {name} must be a list, got {type(value).__name__}")
    return [(str(users[i]) if i < len(users) else "", _ranked(v)) for i, v in enumerate(values)]


def _ranked(value):
    """A ranking answer ([{"value": "response_a", "rank": 1}, ...]) becomes its top item's value."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        ranks = [v.get("rank", 99) for v in value]
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ranks):
            raise _Bad(f"Argilla record: a ranking needs numeric ranks, got {short(ranks)}")
        return min(value, key=lambda v: v.get("rank", 99)).get("value")
    return value


def _row_votes(row, kind: str, path: Path, line: int, question: str | None, bad) -> list[Vote]:
    """The votes in one row; _Bad if the row cannot be used (a bad answer inside an Argilla record is its own reject)."""
    default = f"{path.name}:{line}"
    if kind == "trl":
        pair = {"prompt": _messages(row.get("prompt")), "chosen": _text(row.get("chosen"), "chosen"),
                "rejected": _text(row.get("rejected"), "rejected")}
        return [Vote("", str(row.get("annotator") or default), "chosen", str(row.get("comment") or ""), str(path), line, pair)]
    if kind == "verdicts":
        pid, verdict = str(row.get("pair_id") or "").strip(), VERDICTS.get(str(row.get("verdict") or "").strip().lower())
        if not pid:
            raise _Bad("missing pair_id")
        if verdict is None:
            raise _Bad(f"invalid verdict {short(row.get('verdict'))} (expected a, b or tie)" if row.get("verdict") else "missing verdict")
        return [Vote(pid, str(row.get("annotator") or default), verdict, str(row.get("comment") or ""), str(path), line)]
    meta, fields = _mapping(row, "metadata"), _mapping(row, "fields")
    pid = str(meta.get("pair_id") or fields.get("pair_id") or row.get("pair_id") or "").strip()
    if not pid:
        raise _Bad("Argilla record without metadata.pair_id (or fields.pair_id)")
    answers = _argilla_votes(row, question)
    if not answers:
        raise _Bad("Argilla record with no responses")
    found = []
    for i, (user, value) in enumerate(answers):
        verdict = VERDICTS.get(str(value or "").strip().lower())
        if verdict is None:
            bad(f"invalid verdict {short(value)} from annotator {user or i} (expected a, b or tie)")
            continue
        found.append(Vote(pid, user or f"{default}:{i}", verdict, "", str(path), line))
    return found


def read_labels(path: str | Path, argilla_question: str | None = None) -> tuple[list[Vote], list[Reject]]:
    """All votes in a labels file, and the rows that could not be used (with line numbers and reasons).

    A file that is missing, not a regular file or too large is a UserError: there is nothing to read row by row."""
    path = Path(path)
    rows, rejects = _rows(path)
    votes: list[Vote] = []
    seen: set[tuple[str, str]] = set()
    for line, row in rows:
        kind = _kind(row)
        try:
            raw = json.dumps(row, ensure_ascii=False)[:500]
        except (RecursionError, ValueError):
            raw = short(row)

        def bad(reason: str):
            rejects.append(Reject(str(path), line, reason, raw))

        if kind is None:
            bad("not a verdict, a TRL preference row or an Argilla record (needs pair_id + verdict, or prompt/chosen/rejected)")
            continue
        try:
            found = _row_votes(row, kind, path, line, argilla_question, bad)
        except _Bad as e:
            bad(str(e))
            continue
        except (AttributeError, TypeError, KeyError, ValueError, RecursionError) as e:  # a shape no check above foresaw
            bad(f"malformed {kind} row ({type(e).__name__}: {e})"[:300])
            continue
        for vote in found:
            ident = (vote.pair_id or json.dumps(vote.pair, sort_keys=True), vote.annotator)
            if ident in seen:
                bad(f"duplicate: annotator {vote.annotator!r} already judged this pair in this file")
                continue
            seen.add(ident)
            votes.append(vote)
    if not rows and not rejects:
        rejects.append(Reject(str(path), 1, "no rows", ""))
    return votes, rejects
