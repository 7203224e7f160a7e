"""`rlaif export RUN --for-annotation FILE`: the preference pairs for people, each shown in a seeded random order.

The order (`annotation_order.json` in the run) says which side each letter showed, so merge-human maps verdicts back.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

from ..errors import UserError
from ..export.publish import load_run
from ..rundir import atomic
from ..rundir.guard import check_targets, read_run_json
from ..rundir.lock import run_lock

# A cell that starts with one of these runs as a formula when a spreadsheet opens the CSV (=HYPERLINK(...), DDE);
# prompts come from red-team sets and answers from models, so both are someone else's text. OWASP's rule: prefix "'".
# "'" itself is on the list so the prefix can always be taken off again: a text that began with "'" gets a second one.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
ANNOTATION_TEXT = ("prompt", "response_a", "response_b")  # the annotation CSV's columns of someone else's text


def spreadsheet_safe(text: str) -> str:
    """A CSV cell that no spreadsheet runs as a formula (OWASP CSV injection: prefix "'")."""
    return "'" + text if text.startswith(FORMULA_START) else text


def from_spreadsheet(row: dict) -> dict:
    """An annotation CSV row with its text cells as the model wrote them (undoes `spreadsheet_safe`).

    A spreadsheet that saves the file may drop the prefix itself; then a text that began with "'" comes back one
    quote short. Votes never depend on these cells: they follow `pair_id`, which is hex."""
    return {k: v[1:] if k in ANNOTATION_TEXT and isinstance(v, str) and v.startswith("'") else v for k, v in row.items()}


def _conversation(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def for_annotation(run_dir, file: str) -> tuple[Path, Path, int]:
    """Write the preference pairs for people (CSV and JSONL) in a seeded random order per pair; keep the order."""
    base = Path(file)
    where = "--for-annotation: names a directory; give a file name such as DIR/ann.csv (ann.csv and ann.jsonl are written)"
    if base.name in ("", ".", "..") or str(file).endswith(("/", os.sep)):
        raise UserError(where, str(file))
    base = base.with_suffix("") if base.suffix in (".csv", ".jsonl") else base
    check_targets(run_dir, [base.with_suffix(".csv"), base.with_suffix(".jsonl")], "--for-annotation")
    if Path(file).is_dir():
        raise UserError(where, str(file))
    for path in (base.with_suffix(".csv"), base.with_suffix(".jsonl")):
        if path.is_dir():
            raise UserError("--for-annotation: a directory is in the way of the annotation file", str(path))
    read_run_json(run_dir)  # not a run: refused before anything is written into the directory
    with run_lock(run_dir):  # annotation_order.json goes into the run
        return _write_annotation(run_dir, base)


def read_order(path: Path) -> dict:
    """annotation_order.json: pair id -> {"a": "chosen"|"rejected", "b": ...}; a damaged file is a UserError."""
    if not path.is_file():
        return {}
    try:
        order = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON: {e.msg}; export the pairs again (`rlaif export RUN --for-annotation FILE`) "
                        "to rewrite it", str(path), e.lineno) from None
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"cannot be read ({e}); export the pairs again to rewrite it", str(path)) from None
    sides = ({"a": "chosen", "b": "rejected"}, {"a": "rejected", "b": "chosen"})
    if not isinstance(order, dict) or not all(v in sides for v in order.values()):
        raise UserError("expected {pair_id: {\"a\": \"chosen\"|\"rejected\", \"b\": ...}}; export the pairs again "
                        "to rewrite it", str(path), 1)
    return order


def _write_annotation(run_dir, base: Path) -> tuple[Path, Path, int]:
    info, found = load_run(run_dir)
    prefs = found.get("prefs")
    if prefs is None or len(prefs) == 0:
        raise UserError("the run has no preference pairs to annotate", str(Path(run_dir) / "prefs"))
    rows, order = [], {}
    for row in prefs:
        if row["pair_id"] in order:  # the same two answers as another pair type: people judge them once
            continue
        flip = random.Random(f"{info['seed']}:{row['pair_id']}:annotate").random() < 0.5
        first, second = ("rejected", "chosen") if flip else ("chosen", "rejected")
        order[row["pair_id"]] = {"a": first, "b": second}
        rows.append({"pair_id": row["pair_id"], "prompt": _conversation(row["prompt"]), "response_a": row[first][-1]["content"],
                     "response_b": row[second][-1]["content"], "verdict": "", "annotator": "", "comment": ""})
    csv_path, jsonl_path = base.with_suffix(".csv"), base.with_suffix(".jsonl")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    # which side each letter shows, so verdicts can be mapped back (merge-human reads this). Written first, and kept
    # for pairs exported earlier (the order is seeded, so it never changes): every annotation file ever written maps.
    order_path = Path(run_dir) / "annotation_order.json"
    try:
        earlier = read_order(order_path)
    except UserError:  # damaged: rewritten from scratch (the current pairs' order is recomputed the same)
        earlier = {}
    atomic.write_json(order_path, earlier | order, indent=1)
    with atomic.open_text(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in r.items()} for r in rows)  # the JSONL keeps the raw text
    atomic.write_jsonl(jsonl_path, rows)
    return csv_path, jsonl_path, len(rows)
