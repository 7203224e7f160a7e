"""The report's sections: each reads what it needs from the run directory, draws its figures, builds its tables."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from . import plots
from ..rundir.reader import RunDir
from ..spec.methods import NAMES
from .tables import key_values, number, records, table

BIAS_METRICS = ("position_consistency", "first_position_win_rate", "longer_chosen_rate")
LOSS_KEYS = ("loss", "policy_loss", "value_loss")
REWARD_KEYS = ("reward", "score", "rewards/chosen", "rewards/rejected", "rewards/margins")
KL_KEYS = ("kl", "approx_kl", "objective/kl")
HEADLINE_KEYS = ("win_rate", "rate", "accuracy")  # older eval results (no `headline`): the main number, the first present


def section(key: str, title: str, missing: str | None = None, **parts) -> dict:
    """A section for the template; `missing` says what is not present (and then nothing else is shown)."""
    return {"id": key, "title": title, "missing": missing, "intro": parts.get("intro"), "warnings": parts.get("warnings", []),
            "figures": parts.get("figures", []), "tables": parts.get("tables", [])}


def figure(file: str, caption: str) -> dict:
    """An image of the section, relative to report.html."""
    return {"file": file, "caption": caption}


def _mapping(value) -> dict:
    """The value if it is a mapping, else empty: files written by other tools may have any shape."""
    return value if isinstance(value, dict) else {}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sft(run: RunDir, out: Path) -> dict:
    """The SFT rows: how many of each source, and the first few."""
    rows = run.jsonl("sft.jsonl")
    if not rows:
        return section("sft", "SFT data", "not present (no sft.jsonl)")
    sources = Counter(str(r.get("source")) for r in rows)
    examples = [{"source": r.get("source"), "principles": r.get("principles"), **_prompt_answer(r)} for r in rows[:5]]
    tables = [table("SFT rows by source (sft.jsonl)", ["source", "rows"], sorted(sources.items())),
              records("Example rows (the first 5)", examples)]
    problems = _mapping(run.info.get("counts")).get("revision_problems")
    if isinstance(problems, dict):
        tables.append(key_values("Revisions kept out of the data, by reason (run.json counts.revision_problems)", problems))
    return section("sft", "SFT data", tables=tables)


def labels(run: RunDir, out: Path) -> dict:
    """Soft labels and margins: the judge's label histogram, the preference rows' p_chosen and margins by pair type."""
    stats, prefs = run.json("judge_stats.json"), run.jsonl("prefs.jsonl")
    if not stats and not prefs:
        return section("labels", "Preference labels", "not present (no judge_stats.json or prefs.jsonl)")
    panels = []
    histogram = _mapping(_mapping(stats).get("overall")).get("label_histogram")
    if isinstance(histogram, dict) and histogram:
        panels.append({"title": "judge soft labels P(a ≻ b)", "xlabel": "P(a ≻ b), bin start", "bins": histogram})
    by_type = defaultdict(list)
    for row in prefs or []:
        by_type[str(row.get("pair_type"))].append(row)
    p_chosen = {t: [v for r in rows if (v := number(r.get("p_chosen"))) is not None] for t, rows in by_type.items()}
    margins = {t: [v for r in rows if (v := number(r.get("margin"))) is not None] for t, rows in by_type.items()}
    if any(p_chosen.values()):
        panels.append({"title": "p_chosen of preference rows", "xlabel": "p_chosen", "series": p_chosen, "range": (0.5, 1.0)})
    if any(margins.values()):
        panels.append({"title": "margins of preference rows", "xlabel": "margin", "series": margins, "range": (0.0, 1.0)})
    figures = [figure(plots.histograms(out / "fig-labels.png", panels), "Soft labels and margins")] if panels else []
    tables = []
    if prefs:
        rows = []
        for t, group in sorted(by_type.items()):
            agree = [r["orders_agree"] for r in group if isinstance(r.get("orders_agree"), bool)]
            sources = Counter(str(r.get("source")) for r in group)
            rows.append([t, len(group), dict(sources), _mean(p_chosen[t]), _mean(margins[t]),
                         sum(agree) / len(agree) if agree else None])
        tables.append(table("Preference rows by pair type (prefs.jsonl)",
                            ["pair type", "rows", "sources", "mean p_chosen", "mean margin", "orders agree"], rows))
        examples = [{"pair_type": r.get("pair_type"), "principles": r.get("principles"), "p_chosen": r.get("p_chosen"),
                     "margin": r.get("margin"), "prompt": _text(r.get("prompt")), "chosen": _text(r.get("chosen")),
                     "rejected": _text(r.get("rejected"))} for r in prefs[:8]]
        tables.append(records("Example pairs (the first 8)", examples))
    dropped = _mapping(_mapping(run.info.get("counts")).get("judge")).get("dropped")
    if isinstance(dropped, dict):
        tables.append(key_values("Comparisons without a label (run.json counts.judge.dropped)", dropped))
    if pairs := _mapping(_mapping(run.info.get("counts")).get("pairs")):  # one row per pair: merged, conflicts, ties
        tables.append(key_values("Pairs merged into one row each (run.json counts.pairs)", pairs))
    return section("labels", "Preference labels", figures=figures, tables=tables)


def _prompt_answer(row: dict) -> dict:
    """An SFT row's request and answer: prompt/completion rows, or the `messages` rows of older runs."""
    if "messages" in row and "completion" not in row:
        m = row["messages"] if isinstance(row["messages"], list) else []
        return {"prompt": _text(m[:-1]), "answer": _text(m[-1:])}
    return {"prompt": _text(row.get("prompt")), "answer": _text(row.get("completion"))}


def _text(messages) -> str | None:
    """The last message's content of a conversational column (or the value itself)."""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return messages[-1].get("content")
    return messages


def judge_bias(run: RunDir, out: Path) -> dict:
    """Position consistency, first-position win rate and longer-chosen rate, overall and per principle."""
    stats = run.json("judge_stats.json")
    if not stats:
        return section("judge", "Judge bias", "not present (no judge_stats.json)")
    groups = {"overall": _mapping(stats.get("overall"))} | dict(sorted(_mapping(stats.get("per_principle")).items()))
    groups = {k: v for k, v in groups.items() if isinstance(v, dict)}
    series = {m: [number(g.get(m)) for g in groups.values()] for m in BIAS_METRICS}
    figures = [figure(plots.grouped_bars(out / "fig-judge-bias.png", "judge bias per principle", list(groups), series),
                      "Position consistency, first-position win rate and longer-chosen rate")]
    rows = [{"principle": name} | {k: v for k, v in g.items() if not isinstance(v, dict)} for name, g in groups.items()]
    intro = ("Position consistency: share of comparisons whose two orders pick the same winner (1 is best). "
             "First-position win rate and longer-chosen rate: 0.5 (dashed) means no position or length bias.")
    tables = [records("Judge statistics (judge_stats.json)", rows)]
    return section("judge", "Judge bias", intro=intro, figures=figures, tables=tables)


def scores(run: RunDir, out: Path) -> dict:
    """Pointwise 1-10 ratings: their distribution and the mean per principle."""
    rows = run.jsonl("scores.jsonl")
    if not rows:
        return section("scores", "Pointwise scores", "not present (no scores.jsonl)")
    by_principle = defaultdict(list)
    for r in rows:
        if (v := number(r.get("score"))) is not None:
            by_principle[str(r.get("principle"))].append(v)
    figures = []
    if by_principle:
        panel = {"title": "judge ratings (1-10)", "xlabel": "score", "series": {"all": sum(by_principle.values(), [])},
                 "range": (1, 10), "n_bins": 18}
        figures.append(figure(plots.histograms(out / "fig-scores.png", [panel]), "Distribution of the pointwise ratings"))
    table_rows = [[p, len(v), _mean(v), min(v), max(v)] for p, v in sorted(by_principle.items())]
    tables = [table("Ratings per principle (scores.jsonl)", ["principle", "ratings", "mean", "min", "max"], table_rows)]
    if counts := _mapping(_mapping(run.info.get("counts")).get("score")):
        tables.append(key_values("Score stage counts (run.json)", counts))
    return section("scores", "Pointwise scores", figures=figures, tables=tables)


def human(run: RunDir, out: Path) -> dict:
    """AI-human agreement and Cohen's kappa per principle, the confusion matrix, conflicts and rejected label rows."""
    data, rejects = run.json("human_agreement.json"), run.jsonl("human_rejects.jsonl")
    if not data:
        return section("human", "Human-AI agreement", "not present (no human_agreement.json; see `rlaif merge-human`)")
    groups = {"overall": _mapping(data.get("overall"))} | dict(sorted(_mapping(data.get("per_group")).items()))
    groups = {k: v for k, v in groups.items() if isinstance(v, dict)}
    series = {"agreement": [number(g.get("agreement")) for g in groups.values()],
              "Cohen's kappa": [number(g.get("cohen_kappa")) for g in groups.values()]}
    figures = [figure(plots.grouped_bars(out / "fig-human.png", "AI-human agreement per principle", list(groups), series,
                                         reference=0.0, ylim=(-1, 1)), "Agreement and Cohen's kappa")]
    rows = [[name, g.get("pairs"), g.get("agreement"), g.get("cohen_kappa"), g.get("human_ties"), len(g.get("conflicts") or [])]
            for name, g in groups.items()]
    columns = ["group", "pairs", "agreement", "Cohen's kappa", "human ties", "conflicts"]
    tables = [table("Agreement (human_agreement.json)", columns, rows),
              key_values("Merge policy", {k: v for k, v in data.items() if k not in ("overall", "per_group")})]
    confusion = groups["overall"].get("confusion")
    if isinstance(confusion, dict) and confusion:
        sides = sorted({h for row in confusion.values() if isinstance(row, dict) for h in row})
        tables.append(table("Confusion, overall (rows: AI's choice, columns: human's)", ["AI \\ human"] + sides,
                            [[ai] + [row.get(h, 0) for h in sides]
                             for ai, row in sorted(confusion.items()) if isinstance(row, dict)]))
    prompts = {r.get("pair_id"): _text(r.get("prompt")) for r in run.jsonl("prefs.jsonl") or []}
    conflicts = groups["overall"].get("conflicts") or []
    if conflicts:
        tables.append(table("Conflicts: pairs where the human chose the other answer", ["pair id", "prompt"],
                            [[c, prompts.get(c)] for c in conflicts]))
    if merged := run.jsonl("merged.jsonl"):
        sources = Counter(str(r.get("source")) for r in merged)
        tables.append(table("Merged preference rows by source (merged.jsonl)", ["source", "rows"], sorted(sources.items())))
    if rejects:
        tables.append(records("Label rows that were rejected (human_rejects.jsonl)", rejects,
                              first=("file", "line", "reason"), skip=("raw",)))
    return section("human", "Human-AI agreement", figures=figures, tables=tables)


def _history(run: RunDir, method: str, metrics: dict) -> list[dict]:
    """Per-step rows: rlaif_train.json's metrics.history, {step, loss, ...} per row for every trainer (rlaif.train.common)."""
    rows = metrics.get("history")
    if isinstance(rows, list) and rows and all(isinstance(h, dict) and "step" in h and "loss" in h for h in rows):
        return rows
    return run.older_history(method, metrics)  # a run directory from before the uniform rows


def _lines(history: list[dict], keys: tuple[str, ...]) -> dict:
    """{key: (steps, values)} for each key some row has a number for."""
    lines = {}
    for key in keys:
        points = [(number(h.get("step")) or i + 1, v) for i, h in enumerate(history) if (v := number(h.get(key))) is not None]
        if points:
            lines[key] = ([x for x, _ in points], [y for _, y in points])
    return lines


def training(run: RunDir, out: Path) -> dict:
    """Per training method: loss, reward and KL curves, the final metrics and the settings."""
    methods = run.training_methods()
    if not methods:
        return section("training", "Training", f"not present (no training output directory: {', '.join(NAMES)})")
    figures, tables = [], []
    for method in methods:
        where = run.method_dir(method)
        record = run.json(f"{where}/rlaif_train.json") or {}
        metrics = _mapping(record.get("metrics"))
        history = _history(run, method, metrics)
        panels = [{"title": f"{method}: {title}", "lines": lines}
                  for title, keys in (("loss", LOSS_KEYS), ("reward", REWARD_KEYS), ("KL", KL_KEYS))
                  if (lines := _lines(history, keys))]
        if panels:
            figures.append(figure(plots.curves(out / f"fig-train-{method}.png", panels), f"{method}: training curves"))
        if not record:
            tables.append(table(f"{method}", [], [], note=f"no {where}/rlaif_train.json: the training did not finish"))
            continue
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        scalars |= {k: record[key] for k, key in (("model", "model_id"), ("seconds", "seconds")) if record.get(key) is not None}
        tables.append(key_values(f"{method}: metrics ({where}/rlaif_train.json)", scalars))
        tables.append(key_values(f"{method}: settings", _mapping(record.get("config"))))
    return section("training", "Training", figures=figures, tables=tables)


def watch(run: RunDir, out: Path) -> dict:
    """Reward-hacking watch during RL: reward, judge win rate and KL over steps; every warning listed."""
    found = [(m, rows) for m in run.training_methods() if (rows := run.jsonl(f"{run.method_dir(m)}/watch.jsonl"))]
    if not found:
        return section("watch", "Reward-hacking watch", "not present (no <method>/watch.jsonl)")
    figures, tables, warnings = [], [], []
    for method, rows in found:
        marks = [number(r.get("step")) or i + 1 for i, r in enumerate(rows) if r.get("warning")]
        warnings += [f"{method}, step {r.get('step', i + 1)}: {r['warning']}" for i, r in enumerate(rows) if r.get("warning")]
        panels = [{"title": f"{method}: {title}", "lines": lines, "ylim": ylim} for title, key, ylim in
                  (("reward", "reward", None), ("judge win rate", "judge_win_rate", (0, 1)), ("KL", "kl", None))
                  if (lines := _lines(rows, (key,)))]
        if panels:
            figures.append(figure(plots.curves(out / f"fig-watch-{method}.png", panels, marks),
                                  f"{method}: reward vs judge win rate vs KL (dotted red: a warning)"))
        tables.append(records(f"{method}: checks ({run.method_dir(method)}/watch.jsonl)", rows,
                              first=("step", "reward", "judge_win_rate", "kl", "warning")))
    intro = "Reward hacking shows as reward going up while the judge's win rate falls and KL grows."
    return section("watch", "Reward-hacking watch", intro=intro, warnings=warnings, figures=figures, tables=tables)


def _headline(result: dict) -> dict | None:
    """An eval result's `headline` block {name, value, ci95, unit} (rlaif.evaluate.winrate.headline), or None."""
    head = result.get("headline")
    if isinstance(head, dict) and isinstance(head.get("name"), str):
        return head
    # fallback for results written before the `headline` block: the first HEADLINE_KEYS key is the main rate
    name = next((key for key in HEADLINE_KEYS if key in result), None)
    return None if name is None else {"name": name, "value": result[name], "ci95": result.get("ci95"), "unit": "rate"}


def _point(name: str, value, ci) -> tuple[str, float, list | None] | None:
    """(name, value, [lo, hi] or None) to draw, or None when the value is not a number."""
    if (value := number(value)) is None:
        return None
    ok = isinstance(ci, list) and len(ci) == 2 and all(number(c) is not None for c in ci)
    return name, value, ci if ok else None


def evaluation(run: RunDir, out: Path) -> dict:
    """Evaluation results (eval/*.json): win rates and rates with 95% intervals, overall and per principle, and tables."""
    results = run.evals()
    if not results:
        return section("eval", "Evaluation", "not present (no eval/*.json)")
    figures, tables, points, warnings = [], [], [], []
    for i, (name, result) in enumerate(results):
        kind = result.get("kind", "unknown kind")
        title = name if kind == name else f"{name} ({kind})"
        head = _headline(result)
        rate = head is not None and head.get("unit") == "rate"  # only shares go on the 0-1 figures (not KL's nats)
        if rate and (point := _point(f"{title}: {head['name']}", head.get("value"), head.get("ci95"))):
            points.append(point)
        per = {p: r for p, r in _mapping(result.get("per_principle")).items() if isinstance(r, dict)}
        heads = {p: h for p, r in sorted(per.items()) if rate and (h := _point(p, r.get(head["name"]), r.get("ci95")))}
        if heads:
            file = out / f"fig-eval-{i}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"  # a safe URL whatever the file name
            figures.append(figure(plots.intervals(file, f"{title} per principle", list(heads),
                                                  [h[1] for h in heads.values()], [h[2] for h in heads.values()]),
                                  f"{title}: per principle, with 95% intervals"))
        warnings += [f"{name}: {w}" for w in result.get("warnings") or [] if isinstance(w, str)]
        tables.append(key_values(f"{title} (eval/{name}.json)", result, skip=("per_principle", "headline")))  # it repeats keys
        if per:
            tables.append(records(f"{title}: per principle", [{"principle": p} | r for p, r in sorted(per.items())]))
    if points:
        figures.insert(0, figure(plots.intervals(out / "fig-eval.png", "evaluation results", [p[0] for p in points],
                                                 [p[1] for p in points], [p[2] for p in points]),
                                 "Win rates and rates with 95% intervals (dashed: 0.5)"))
    return section("eval", "Evaluation", figures=figures, tables=tables, warnings=warnings)


SECTIONS = (sft, labels, judge_bias, scores, human, training, watch, evaluation)
