"""Judge diagnostics: position consistency, position bias, length bias, label spread, option mass, parse failures."""

from __future__ import annotations

import statistics
from collections import defaultdict

CONSISTENCY_WARNING = 0.6  # a judge whose two orders agree less often than this is close to chance: say so loudly


def _rate(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def _orders(r: dict) -> list[tuple[float | None, float | None]]:
    """(p, option mass) of each order a record asked for; mass None for parsed verdicts (and old records)."""
    first = (r["p_first"], r.get("option_mass_first"))
    return [first, (r["p_swapped"], r.get("option_mass_swapped"))] if r["orders"] == 2 else [first]


def mass_summary(masses: list[float]) -> dict | None:
    """Quantiles of the option (or digit) mass: how much of the judge's next token went to the answers."""
    if not masses:
        return None
    q = statistics.quantiles(masses, n=10, method="inclusive") if len(masses) > 1 else [masses[0]] * 9
    return {"n": len(masses), "min": round(min(masses), 4), "p10": round(q[0], 4), "median": round(statistics.median(masses), 4),
            "mean": round(statistics.fmean(masses), 4), "max": round(max(masses), 4)}


def summarise(records: list[dict], lengths: dict[str, int]) -> dict:
    """Statistics over judge records (one per comparison and principle); `lengths` maps candidate key -> chars."""
    orders = [o for r in records for o in _orders(r)]
    all_orders = [p for p, _ in orders]
    both = [r for r in records if r["orders"] == 2]
    failures = sum(p is None for p in all_orders)
    low_mass = sum(p is None and m is not None for p, m in orders)  # read, but the options got too little mass
    masses = [m for _, m in orders if m is not None]
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
        "parse_failure_reasons": {"low_option_mass": low_mass, "no_verdict": failures - low_mass},
        "option_mass": mass_summary(masses),
        "position_consistency": _rate([r["agree"] for r in both if r["agree"] is not None]),
        "tied_orders": sum(p == 0.5 for p in all_orders),  # an exact 0.5 picks no winner: never counted as agreement
        "single_order": sum(r.get("orders_scored") == 1 for r in both),  # both asked, one scored: its label keeps position bias
        "first_position_win_rate": _rate([p > 0.5 for p in valid]),  # before debiasing: how often option A wins
        "mean_p_first_position": round(sum(valid) / len(valid), 4) if valid else None,
        "longer_chosen_rate": _rate(longer),
        "label_mean": round(sum(labels) / len(labels), 4) if labels else None,
        "label_histogram": {f"{i / 10:.1f}-{(i + 1) / 10:.1f}": n for i, n in enumerate(hist)},
        # few distinct values mean quantised logits (bf16: log-odds in steps of 1/8 nat)
        "distinct_labels": len(set(labels)),
        "methods": sorted({r["method"] for r in records}),
        "logit_dtype": sorted({r.get("logit_dtype") or "unknown" for r in records if r["method"] == "logprobs"}),
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
    # short headers: at a non-terminal's 80 columns, long ones squeezed the principle column to nothing
    columns = {"judgements": "n", "position_consistency": "agree", "first_position_win_rate": "A wins",
               "longer_chosen_rate": "longer", "label_mean": "mean p", "parse_failure_rate": "unparsed"}
    table.add_column("principle", overflow="fold", min_width=16)
    for header in [*columns.values(), "mass"]:
        table.add_column(header, justify="right", no_wrap=True)
    rows = [("overall", stats["overall"])] + list(stats["per_principle"].items())
    for name, s in rows:
        mass = s.get("option_mass")  # the median share of the judge's next token that went to A or B
        cells = ["-" if s[c] is None else f"{s[c]:.3f}" if isinstance(s[c], float) else str(s[c]) for c in columns]
        table.add_row(name, *cells, "-" if not mass else f"{mass['median']:.3f}")
    console.print(table)
