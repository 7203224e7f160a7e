"""One preference row per pair of answers: every signal about a pair merged by one stated rule (docs/method.md §5).

A pair (the same two answers to the same prompt, `pair_id`) can get several signals: the judge's soft label
(stage judge), a best-vs-worst score gap (stage score), and the SL-CAI assumption that a revision beats its
initial response. The rule:

1. Each signal says which answer wins and how surely: the judge's label P(chosen > rejected); the score's
   (1 + gap / 9) / 2 (a gap of 9 is certain); the revision assumption gives a hard label (p_chosen None).
2. The label comes from the first signal present in PRECEDENCE: the judge compares the two answers directly,
   the scores rate each alone (possibly under different principles), the revision is only assumed better.
   Several rows of the same source are averaged.
3. Judge-decided ties are a band: a label within `tie_band` of 0.5 is not a preference (dropped unless
   `drop_ties` is off); so are orders that disagree (`drop_inconsistent`) and margins below `min_margin`.
4. A pair whose chosen answer was cut at max_tokens (in `truncated`) is dropped: it would teach stopping
   mid-sentence.
5. A conflict is another signal picking the other answer; the row keeps the decided label, says
   `conflict: true`, and conflicts are counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict

PRECEDENCE = ("judge", "score", "revision")


def signal(row: dict) -> str:
    """Which kind of signal a row carries (rows of older runs have no `label_source`)."""
    if row.get("label_source"):
        return row["label_source"]
    if row.get("pair_type") == "best_vs_worst":
        return "score"
    return "judge" if row.get("p_chosen") is not None else "revision"


def _first_wins(row: dict, first: str) -> float:
    """P(first answer > second answer) according to one row; a hard (None) label counts as certain."""
    p = row["p_chosen"] if row.get("p_chosen") is not None else 1.0
    return p if row["chosen"][-1]["content"] == first else 1 - p


def oriented(row: dict, chosen_text: str) -> dict:
    """The row with `chosen_text` as the chosen side (score and judge columns follow the answers)."""
    if row["chosen"][-1]["content"] == chosen_text:
        return row
    flipped = row | {"chosen": row["rejected"], "rejected": row["chosen"],
                     "score_chosen": row.get("score_rejected"), "score_rejected": row.get("score_chosen")}
    if row.get("p_chosen") is not None:
        flipped["p_chosen"] = 1 - row["p_chosen"]
    return flipped


def merge_pairs(rows: list[dict], pair_id, tie_band: float = 0.05, drop_ties: bool = True, drop_inconsistent: bool = False,
                min_margin: float = 0.0, truncated: frozenset = frozenset()) -> tuple[list[dict], dict]:
    """One row per `pair_id(row)` by the rule above, and the counts (rows in, merged, conflicts, dropped by reason).

    `truncated` holds (prompt_id, text) of answers cut at max_tokens.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[pair_id(row)].append(row)
    out, dropped, conflicts, decided_by = [], Counter(), 0, Counter()
    for pid, group in groups.items():
        by_source = defaultdict(list)
        for row in group:
            by_source[signal(row)].append(row)
        source = next(s for s in PRECEDENCE if s in by_source)
        decided = by_source[source]
        first, second = sorted([group[0]["chosen"][-1]["content"], group[0]["rejected"][-1]["content"]])
        hard = source == "revision"
        p_first = sum(_first_wins(r, first) for r in decided) / len(decided)
        chosen_text = first if p_first >= 0.5 else second
        p = None if hard else max(p_first, 1 - p_first)
        if source == "judge":
            agree = [r["orders_agree"] for r in decided if r.get("orders_agree") is not None]
            if p <= 0.5 + tie_band and drop_ties:  # p >= 0.5; the same comparison as eval's outcome()
                dropped["tie"] += 1
                continue
            if drop_inconsistent and agree and not all(agree):
                dropped["inconsistent"] += 1
                continue
            if abs(2 * p - 1) < min_margin:
                dropped["low_margin"] += 1
                continue
        base = oriented(decided[0], chosen_text)
        if (base["prompt_id"], chosen_text) in truncated:
            dropped["truncated_chosen"] += 1
            continue
        others = [r for s, rs in by_source.items() if s != source for r in rs]
        conflict = any(_first_wins(r, first) != 0.5 and (_first_wins(r, first) > 0.5) != (chosen_text == first) for r in others)
        conflicts += conflict
        decided_by[source] += 1
        row = base | {"p_chosen": p, "margin": None if hard else abs(2 * p - 1), "label_source": source,
                      "signals": sorted(by_source, key=PRECEDENCE.index), "conflict": conflict, "pair_id": pid}
        if source == "judge" and len(decided) > 1:
            row["orders_agree"] = all(a for r in decided if (a := r.get("orders_agree")) is not None)
        for other in others:  # keep every source's own columns: the score pair's ratings, the judge's model
            o = oriented(other, chosen_text)
            for k in ("score_chosen", "score_rejected", "judge_model"):
                if row.get(k) is None and o.get(k) is not None:
                    row[k] = o[k]
        out.append(row)
    stats = {"rows_in": len(rows), "pairs": len(out), "duplicates_merged": len(rows) - len(groups), "conflicts": conflicts,
             "label_source": dict(decided_by), "dropped": {k: dropped[k] for k in ("tie", "inconsistent", "low_margin",
                                                                                   "truncated_chosen")}}
    return out, stats
