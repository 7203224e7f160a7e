"""Judge diagnostics: position consistency, position bias, length bias, label spread, parse failures."""

from __future__ import annotations

from collections import defaultdict


def _rate(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def summarise(records: list[dict], lengths: dict[str, int]) -> dict:
    """Statistics over judge records (one per comparison and principle); `lengths` maps candidate key -> chars."""
    all_orders = [p for r in records for p in ((r["p_first"], r["p_swapped"]) if r["orders"] == 2 else (r["p_first"],))]
    both = [r for r in records if r["orders"] == 2]
    failures = sum(p is None for p in all_orders)
    valid = [p for p in all_orders if p is not None]
    longer = []
    for r in records:
        la, lb = lengths.get(r["a_key"], 0), lengths.get(r["b_key"], 0)
        if r["label"] is not None and r["label"] != 0.5 and la != lb:
            longer.append((r["label"] > 0.5) == (la > lb))
    hist = [0] * 10
    for r in records:
        if r["label"] is not None:
            hist[min(int(r["label"] * 10), 9)] += 1
    labels = [r["label"] for r in records if r["label"] is not None]
    return {
        "comparisons": len({r["comparison_id"] for r in records}),
        "judgements": len(records),
        "orders_scored": len(all_orders),
        "parse_failures": failures,
        "parse_failure_rate": round(failures / len(all_orders), 4) if all_orders else None,
        "position_consistency": _rate([r["agree"] for r in both if r["agree"] is not None]),
        "first_position_win_rate": _rate([p > 0.5 for p in valid]),  # before debiasing: how often option A wins
        "mean_p_first_position": round(sum(valid) / len(valid), 4) if valid else None,
        "longer_chosen_rate": _rate(longer),
        "label_mean": round(sum(labels) / len(labels), 4) if labels else None,
        "label_histogram": {f"{i / 10:.1f}-{(i + 1) / 10:.1f}": n for i, n in enumerate(hist)},
    }


def judge_stats(records: list[dict], lengths: dict[str, int]) -> dict:
    """Overall and per-principle statistics."""
    by_principle = defaultdict(list)
    for r in records:
        by_principle[r["principle"]].append(r)
    return {"overall": summarise(records, lengths),
            "per_principle": {name: summarise(rs, lengths) for name, rs in sorted(by_principle.items())}}


def print_judge_stats(console, stats: dict) -> None:
    """A table of the main diagnostics, overall and per principle."""
    from rich.table import Table

    table = Table(title="judge diagnostics", title_justify="left")
    columns = {"judgements": "n", "position_consistency": "orders agree", "first_position_win_rate": "A wins",
               "longer_chosen_rate": "longer wins", "label_mean": "mean p", "parse_failure_rate": "unparsed"}
    table.add_column("principle", overflow="fold")
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    rows = [("overall", stats["overall"])] + list(stats["per_principle"].items())
    for name, s in rows:
        table.add_row(name, *("-" if s[c] is None else f"{s[c]:.3f}" if isinstance(s[c], float) else str(s[c]) for c in columns))
    console.print(table)
