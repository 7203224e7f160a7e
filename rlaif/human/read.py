"""Read human labels: verdicts on exported pair ids, TRL-style preference files, Argilla exports.

Every row becomes a `Vote` or a `Reject` (file, line, reason); a bad row never stops the others.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

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


def _rows(path: Path) -> tuple[list[tuple[int, object]], list[Reject]]:
    """(line, parsed row) pairs from .jsonl, .json (a list) or .csv; undecodable lines become rejects."""
    raw = path.read_bytes()
    rejects: list[Reject] = []
    if not raw.strip():
        return [], [Reject(str(path), 1, "empty file", "")]
    if path.suffix.lower() == ".csv":
        text = raw.decode("utf-8", errors="replace")
        for n, line in enumerate(raw.split(b"\n"), 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                rejects.append(Reject(str(path), n, f"not UTF-8 ({e.reason} at byte {e.start})", line.decode("utf-8", "replace")))
        bad = {r.line for r in rejects}
        reader = csv.DictReader(io.StringIO(text))
        rows, start = [], 2
        for row in reader:
            line, start = start, reader.line_num + 1
            if line not in bad:
                rows.append((line, row))
        return rows, rejects
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return [], [Reject(str(path), getattr(e, "lineno", 1), f"not a JSON document: {e}", "")]
        items = data if isinstance(data, list) else data.get("records", []) if isinstance(data, dict) else []
        return [(i + 1, item) for i, item in enumerate(items)], rejects
    rows = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as e:
            rejects.append(Reject(str(path), n, f"not UTF-8 ({e.reason} at byte {e.start})", line.decode("utf-8", "replace")))
        except json.JSONDecodeError as e:
            rejects.append(Reject(str(path), n, f"invalid JSON: {e.msg}", line.decode("utf-8", "replace")))
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


def _text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return value[-1]["content"]
    return None


def _messages(value) -> list[dict] | None:
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


def _argilla_votes(row: dict, question: str | None) -> list[tuple[str, str]]:
    """(annotator, value) pairs from an Argilla record, nested (`responses: {q: [...]}`) or flattened (`q.responses`)."""
    if isinstance(row.get("responses"), dict):
        questions = [question] if question else list(row["responses"])
        for q in questions:
            answers = row["responses"].get(q) or []
            if answers:
                return [(str(a.get("user_id", "")), _ranked(a.get("value"))) for a in answers if isinstance(a, dict)]
        return []
    keys = [k for k in row if str(k).endswith(".responses") and (question is None or k == f"{question}.responses")]
    if not keys:
        return []
    values, users = row[keys[0]] or [], row.get(keys[0] + ".users") or []
    return [(str(users[i]) if i < len(users) else "", _ranked(v)) for i, v in enumerate(values)]


def _ranked(value):
    """A ranking answer ([{"value": "response_a", "rank": 1}, ...]) becomes its top item's value."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return min(value, key=lambda v: v.get("rank", 99)).get("value")
    return value


def read_labels(path: str | Path, argilla_question: str | None = None) -> tuple[list[Vote], list[Reject]]:
    """All votes in a labels file, and the rows that could not be used (with line numbers and reasons)."""
    path = Path(path)
    if not path.is_file():
        return [], [Reject(str(path), 0, "file not found", "")]
    rows, rejects = _rows(path)
    votes: list[Vote] = []
    seen: set[tuple[str, str]] = set()
    for line, row in rows:
        kind = _kind(row)
        raw = json.dumps(row, ensure_ascii=False)[:500]

        def bad(reason: str):
            rejects.append(Reject(str(path), line, reason, raw))

        if kind is None:
            bad("not a verdict, a TRL preference row or an Argilla record (needs pair_id + verdict, or prompt/chosen/rejected)")
            continue
        if kind == "trl":
            prompt, chosen, rejected = _messages(row.get("prompt")), _text(row.get("chosen")), _text(row.get("rejected"))
            if prompt is None or not chosen or not rejected:
                bad("missing or empty prompt, chosen or rejected")
                continue
            pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            found = [Vote("", str(row.get("annotator") or f"{path.name}:{line}"), "chosen", str(row.get("comment") or ""),
                          str(path), line, pair)]
        elif kind == "verdicts":
            pid, verdict = str(row.get("pair_id") or "").strip(), VERDICTS.get(str(row.get("verdict") or "").strip().lower())
            if not pid:
                bad("missing pair_id")
                continue
            if verdict is None:
                bad(f"invalid verdict {row.get('verdict')!r} (expected a, b or tie)" if row.get("verdict") else "missing verdict")
                continue
            found = [Vote(pid, str(row.get("annotator") or f"{path.name}:{line}"), verdict, str(row.get("comment") or ""), str(path), line)]
        else:
            meta, fields = row.get("metadata") or {}, row.get("fields") or {}
            pid = str(meta.get("pair_id") or fields.get("pair_id") or row.get("pair_id") or "").strip()
            answers = _argilla_votes(row, argilla_question)
            if not pid:
                bad("Argilla record without metadata.pair_id (or fields.pair_id)")
                continue
            found = []
            for i, (user, value) in enumerate(answers):
                verdict = VERDICTS.get(str(value or "").strip().lower())
                if verdict is None:
                    bad(f"invalid verdict {value!r} from annotator {user or i} (expected a, b or tie)")
                    continue
                found.append(Vote(pid, user or f"{path.name}:{line}:{i}", verdict, "", str(path), line))
            if not answers:
                bad("Argilla record with no responses")
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
