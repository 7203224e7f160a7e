"""Merge human votes with the AI's preference pairs by a stated policy, and measure how far they agree.

Votes are kept in the run's SQLite store (table `human_votes`, one row per pair and annotator), so
merging the same file twice changes nothing, and every merge recomputes the dataset from all votes.
Sides are canonical: `first` / `second` are the pair's two answers in sorted order, whatever the AI chose.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import datasets

from ..rundir import atomic
from ..errors import UserError
from ..export.rows import PREF_FEATURES, pair_id, pair_turns, pref_row, write_dataset
from ..rundir.guard import LOG_NAME, read_run_json
from ..rundir.lock import run_lock
from ..runlog import capture
from ..export.pairs import oriented
from ..export.publish import load_run, unique_pairs
from ..rundir.store import readable
from .annotate import read_order
from .read import Reject, read_labels

POLICIES = ("human-overrides", "ai-where-missing", "weighted")
MERGED_FEATURES = datasets.Features(
    {**PREF_FEATURES, "human_votes": datasets.Value("int64"), "human_majority": datasets.Value("string"),
     "annotator_agreement": datasets.Value("float64"), "ai_human_conflict": datasets.Value("bool")}
)


def ai_confidence(row: dict) -> float:
    """How sure the AI label is that `chosen` wins: p_chosen, else (1 + margin) / 2, else 1 (an unjudged revision pair).

    The same rule as rlaif.train.confidences, so the weighted policy mixes the confidence training would use.
    """
    if row.get("p_chosen") is not None:
        return row["p_chosen"]
    return (1 + row["margin"]) / 2 if row.get("margin") is not None else 1.0


def _canon(chosen: str, rejected: str) -> str:
    return "first" if chosen <= rejected else "second"  # which sorted position the chosen answer holds


def _resolve(votes, prefs: dict, order: dict) -> tuple[list[tuple], list[Reject]]:
    """Votes as (pair_id, annotator, side, comment, file, line, pair json or None); unusable ones rejected."""
    out, rejects = [], []
    for v in votes:
        if v.pair is not None:  # a TRL-style row: the texts say which answer won
            row = pair_turns(v.pair["prompt"], v.pair["chosen"], v.pair["rejected"])  # stored with the vote as it is
            pid = pair_id(row)
            out.append((pid, v.annotator, _canon(v.pair["chosen"], v.pair["rejected"]), v.comment, v.file, v.line,
                        None if pid in prefs else json.dumps(row, ensure_ascii=False)))
            continue
        if v.pair_id not in prefs:
            rejects.append(Reject(v.file, v.line, f"unknown pair id {v.pair_id!r}", v.pair_id))
            continue
        if v.pair_id not in order:
            rejects.append(Reject(v.file, v.line, "no annotation order for this pair (run `rlaif export --for-annotation` first)", v.pair_id))
            continue
        if v.verdict == "tie":
            side = "tie"
        else:
            row = prefs[v.pair_id]
            won = order[v.pair_id][v.verdict]  # "chosen" or "rejected": which AI side the letter showed
            text = row[won][-1]["content"]
            other = row["rejected" if won == "chosen" else "chosen"][-1]["content"]
            side = _canon(text, other)
        out.append((v.pair_id, v.annotator, side, v.comment, v.file, v.line, None))
    return out, rejects


def _store(db_path: Path, votes: list[tuple]) -> list[tuple]:
    """Add votes (a re-merged vote replaces the same annotator's earlier one); return all votes stored."""
    with readable(db_path):
        db = sqlite3.connect(db_path, timeout=60)
        try:
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS human_votes (pair_id TEXT, annotator TEXT, side TEXT, comment TEXT,"
                           " file TEXT, line INTEGER, pair TEXT, PRIMARY KEY (pair_id, annotator))")
                db.executemany("INSERT OR REPLACE INTO human_votes VALUES (?, ?, ?, ?, ?, ?, ?)", votes)
            return db.execute("SELECT pair_id, annotator, side, comment, file, line, pair FROM human_votes").fetchall()
        finally:
            db.close()


def majority(sides: list[str]) -> tuple[str, float]:
    """The majority side (a tie at the top is `tie`) and the share of votes that agree with it."""
    counts = Counter(sides).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie", counts[0][1] / len(sides)
    return counts[0][0], counts[0][1] / len(sides)


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over categorical labels: (p_o - p_e) / (1 - p_e)."""
    if not pairs:
        return None
    n = len(pairs)
    p_o = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / n**2
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement(items: list[tuple[str, str, str, list[str]]]) -> dict:
    """AI-human agreement over (pair_id, ai side, human majority, groups): rate, kappa, confusion, conflicts."""
    def report(rows):
        pairs = [(ai, human) for _, ai, human, _ in rows]
        confusion = defaultdict(Counter)
        for ai, human in pairs:
            confusion[ai][human] += 1
        decided = [(a, h) for a, h in pairs if h != "tie"]
        kappa = cohen_kappa(pairs)
        return {"pairs": len(pairs), "agreement": round(sum(a == h for a, h in decided) / len(decided), 4) if decided else None,
                "human_ties": len(pairs) - len(decided), "cohen_kappa": None if kappa is None else round(kappa, 4),
                "confusion": {ai: dict(c) for ai, c in sorted(confusion.items())},
                "conflicts": sorted(pid for pid, ai, h, _ in rows if h != "tie" and h != ai)}
    groups = defaultdict(list)
    for item in items:
        for g in item[3]:
            groups[g].append(item)
    return {"overall": report(items), "per_group": {g: report(rows) for g, rows in sorted(groups.items())}}


def _principle_tags(info: dict) -> dict[str, tuple]:
    """Tags by principle name, from the run's constitution if it is still where the run found it."""
    from ..spec.constitution import load_constitution

    try:
        return {p.name: p.tags for p in load_constitution(info["constitution"]["path"]).principles}
    except UserError:
        return {}


def merge_human(run_dir, files: list[str], policy: str = "human-overrides", weight: float = 0.5, strict: bool = False,
                argilla_question: str | None = None) -> dict:
    """Import label files into RUN_DIR, write merged/ merged.jsonl human_agreement.json human_rejects.jsonl.

    Under the run's lock; the four files are published together (atomic.Commit): after a kill they all come from
    this merge or all from the previous one. What the libraries print is appended to RUN/run.log.
    """
    read_run_json(run_dir)  # not a run: refused before anything is written into the directory
    with run_lock(run_dir), capture(Path(run_dir) / LOG_NAME):
        return _merge(Path(run_dir), files, policy, weight, strict, argilla_question)


def _merge(run_dir: Path, files: list[str], policy: str, weight: float, strict: bool, argilla_question: str | None) -> dict:
    info, found = load_run(run_dir)
    prefs: dict[str, dict] = {}  # pair_id -> its row; runs before pairs were merged could list a pair twice
    for row in (unique_pairs(found["prefs"]) if "prefs" in found else []):
        prefs.setdefault(row["pair_id"], row)
    rows_in = list(prefs.values())  # one merged row per pair, whatever the run's prefs/ held
    order = read_order(run_dir / "annotation_order.json")
    votes, rejects = [], []
    for f in files:
        v, r = read_labels(f, argilla_question)
        votes += v
        rejects += r
    resolved, more = _resolve(votes, prefs, order)
    rejects += more
    if strict and rejects:
        first = rejects[0]
        raise UserError(f"{first.reason} ({len(rejects)} bad rows in all; --strict: nothing merged)", first.file, first.line or None)
    stored = _store(run_dir / "records.sqlite", resolved)

    by_pair, new_pairs = defaultdict(list), {}
    for pid, _annotator, side, _comment, _file, _line, pair in stored:
        by_pair[pid].append(side)
        if pair and pid not in prefs:
            new_pairs[pid] = json.loads(pair)
    tags = _principle_tags(info)
    rows, dropped, items, counted = [], Counter(), [], set()
    human_prompts = {json.dumps(prefs[p]["prompt"] if p in prefs else new_pairs[p]["prompt"]) for p in by_pair}
    for row in rows_in:
        pid = row["pair_id"]
        ai_side = _canon(row["chosen"][-1]["content"], row["rejected"][-1]["content"])
        if pid not in by_pair:
            if policy == "ai-where-missing" and json.dumps(row["prompt"]) in human_prompts:
                dropped["ai_pair_on_human_prompt"] += 1
                continue
            rows.append(row | {"human_votes": 0, "human_majority": None, "annotator_agreement": None, "ai_human_conflict": None})
            continue
        human, share = majority(by_pair[pid])
        groups = list(row["principles"]) or ["(no principle)"]
        if pid not in counted:  # a pair counts once, whatever pair types carry it
            counted.add(pid)
            items.append((pid, ai_side, human, groups + sorted({f"tag:{t}" for p in row["principles"] for t in tags.get(p, ())})))
        winner = human
        p = share
        if policy == "weighted":
            votes_first = sum(1.0 if s == "first" else 0.5 if s == "tie" else 0.0 for s in by_pair[pid]) / len(by_pair[pid])
            ai_p = ai_confidence(row)
            ai_first = ai_p if ai_side == "first" else 1 - ai_p
            mixed = weight * votes_first + (1 - weight) * ai_first
            winner, p = ("first", mixed) if mixed > 0.5 else ("second", 1 - mixed) if mixed < 0.5 else ("tie", 0.5)
        if winner == "tie":
            dropped["human_tie"] += 1
            continue
        texts = sorted([row["chosen"][-1]["content"], row["rejected"][-1]["content"]])
        conflict = human != "tie" and human != ai_side
        # the human signal joins the pair's others; the columns (scores too) follow the chosen answer
        rows.append(oriented(row, texts[0] if winner == "first" else texts[1]) | {
            "source": "both", "p_chosen": p, "margin": abs(2 * p - 1), "human_votes": len(by_pair[pid]),
            "label_source": "weighted" if policy == "weighted" else "human", "signals": [*(row.get("signals") or []), "human"],
            "conflict": bool(row.get("conflict")) or conflict,
            "human_majority": human, "annotator_agreement": share, "ai_human_conflict": conflict})
    for pid, pair in new_pairs.items():
        human, share = majority(by_pair[pid])
        if human == "tie":
            dropped["human_tie"] += 1
            continue
        texts = sorted([pair["chosen"][-1]["content"], pair["rejected"][-1]["content"]])
        chosen, rejected = (texts[0], texts[1]) if human == "first" else (texts[1], texts[0])
        rows.append(pref_row(
            pair["prompt"], chosen, rejected, MERGED_FEATURES, source="human", pair_type="human", principles=[],
            p_chosen=share, margin=abs(2 * share - 1), pair_id=pid, label_source="human", signals=["human"], conflict=False,
            constitution_sha256=info["constitution"]["sha256"], seed=info["seed"], human_votes=len(by_pair[pid]),
            human_majority=human, annotator_agreement=share))
    report = agreement(items) | {"policy": policy, "weight": weight if policy == "weighted" else None}
    with atomic.Commit(run_dir) as commit:
        write_dataset(rows, MERGED_FEATURES, run_dir, "merged", commit)
        atomic.write_json(commit.path("human_agreement.json"), report)
        atomic.write_jsonl(commit.path("human_rejects.jsonl"),
                           ({"file": r.file, "line": r.line, "reason": r.reason, "raw": r.raw} for r in rejects))
    return {"votes_read": len(votes), "votes_stored": len(stored), "rejects": len(rejects), "merged_rows": len(rows),
            "sources": dict(Counter(r["source"] for r in rows)), "dropped": dict(dropped), "agreement": report["overall"],
            "rejects_file": str(run_dir / "human_rejects.jsonl")}
