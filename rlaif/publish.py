"""`rlaif export`: a run's datasets in another format, with a dataset card; pairs for human annotation."""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from pathlib import Path

from .errors import UserError
from .templates import Templates

DATASETS = ("prefs", "sft")


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    """run.json and the run's datasets (those that exist); a missing or unfinished run is a UserError."""
    import datasets

    datasets.disable_progress_bars()
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise UserError("not a run directory (no run.json)", str(run_dir))
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if info.get("status") != "complete":
        raise UserError("the run has not finished; run the same `rlaif run` command again to complete it", str(run_dir / "run.json"))
    found = {name: datasets.load_from_disk(str(run_dir / name)) for name in DATASETS if (run_dir / name).is_dir()}
    return info, found


def _prefs_summary(prefs) -> dict | None:
    if prefs is None or len(prefs) == 0:
        return None
    p = [x for x in prefs["p_chosen"] if x is not None]
    m = [x for x in prefs["margin"] if x is not None]
    agree = [x for x in prefs["orders_agree"] if x is not None]
    hist = Counter(min(int((x - 0.5) * 10), 4) for x in p)
    return {"pair_types": dict(Counter(prefs["pair_type"])), "sources": dict(Counter(prefs["source"])),
            "p_chosen_mean": sum(p) / len(p) if p else None, "margin_mean": sum(m) / len(m) if m else None,
            "agree": sum(agree), "agree_known": len(agree),
            "p_histogram": {f"{0.5 + b / 10:.1f}-{0.6 + b / 10:.1f}": hist.get(b, 0) for b in range(5)}}


def dataset_card(info: dict, found: dict, files: dict, repo: str | None = None) -> str:
    """The README.md written next to exported data."""
    stages = [name for name, cfg in info["config"]["stages"].items() if cfg is not None]
    return Templates().render("cards/dataset.md.j2", run=info, counts={k: len(v) for k, v in found.items()}, files=files,
                              prefs=_prefs_summary(found.get("prefs")), stages=stages, judge=info["config"]["stages"].get("judge"),
                              repo=repo)


def unique_pairs(prefs):
    """The preference dataset with one row per pair_id: a run made before pairs were merged gets them merged now.

    The rule is the pipeline's (rlaif.pairs); the run's filters were already applied, so nothing more is dropped.
    """
    import datasets

    from .export import PREF_FEATURES
    from .pairs import merge_pairs

    if len(set(prefs["pair_id"])) == len(prefs):
        return prefs
    rows, _ = merge_pairs(list(prefs), lambda row: row["pair_id"], tie_band=0.0, drop_ties=False)
    return datasets.Dataset.from_list([{k: row.get(k) for k in PREF_FEATURES} for row in rows], features=PREF_FEATURES)


def export(run_dir, fmt: str, out: str | None = None, push_to_hub: str | None = None) -> Path:
    """Write the run's datasets as hf (save_to_disk), jsonl or parquet into `out`, with README.md; optionally push."""
    info, found = load_run(run_dir)
    if "prefs" in found:
        found["prefs"] = unique_pairs(found["prefs"])
    out_dir = Path(out) if out else Path(run_dir) / f"export-{fmt}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, ds in found.items():
        if fmt == "hf":
            ds.save_to_disk(str(out_dir / name), num_shards=1)
            files[name] = f"{name}/*.arrow"
        elif fmt == "jsonl":
            ds.to_json(str(out_dir / f"{name}.jsonl"), lines=True, force_ascii=False)
            files[name] = f"{name}.jsonl"
        else:
            ds.to_parquet(str(out_dir / f"{name}.parquet"))
            files[name] = f"{name}.parquet"
    (out_dir / "README.md").write_text(dataset_card(info, found, files, push_to_hub), encoding="utf-8")
    if push_to_hub:
        _push(found, push_to_hub, out_dir / "README.md")
    return out_dir


def _push(found: dict, repo: str, card: Path) -> None:
    from huggingface_hub import HfApi, get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise UserError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    for name, ds in found.items():
        ds.push_to_hub(repo, config_name=name, token=token)
    HfApi(token=token).upload_file(path_or_fileobj=str(card), path_in_repo="README.md", repo_id=repo, repo_type="dataset")


def _conversation(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def for_annotation(run_dir, file: str) -> tuple[Path, Path, int]:
    """Write the preference pairs for people (CSV and JSONL) in a seeded random order per pair; keep the order."""
    info, found = load_run(run_dir)
    prefs = found.get("prefs")
    if prefs is None or len(prefs) == 0:
        raise UserError("the run has no preference pairs to annotate", str(Path(run_dir) / "prefs"))
    base = Path(file)
    base = base.with_suffix("") if base.suffix in (".csv", ".jsonl") else base
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
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with jsonl_path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    # which side each letter shows, so verdicts can be mapped back (merge-human reads this)
    (Path(run_dir) / "annotation_order.json").write_text(json.dumps(order, indent=1) + "\n", encoding="utf-8")
    return csv_path, jsonl_path, len(rows)
