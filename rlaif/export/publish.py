"""`rlaif export`: a run's datasets in another format, with a dataset card; pairs for human annotation."""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from pathlib import Path

from ..rundir import atomic
from ..errors import UserError
from ..rundir.guard import check_targets, read_run_json
from ..rundir.lock import lock_owner, run_lock
from ..spec.templates import Templates

DATASETS = ("prefs", "sft")


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    """run.json and the run's datasets (those that exist); a missing or unfinished run is a UserError."""
    import datasets

    datasets.disable_progress_bars()
    from .rows import load_saved

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("is a file, not a run directory", str(run_dir))
    info = read_run_json(run_dir)
    # a run that failed after writing its datasets (in training, eval or report: run.json has `finished`) keeps them
    if info.get("status") == "failed" and not info.get("finished"):
        raise UserError(f"the run failed before its datasets were written ({info.get('error')}); "
                        "run the same `rlaif run` command again", str(run_dir / "run.json"))
    if info.get("status") not in ("complete", "failed"):
        raise UserError("the run has not finished; run the same `rlaif run` command again to complete it", str(run_dir / "run.json"))
    found = {name: load_saved(run_dir / name, name) for name in DATASETS if (run_dir / name).is_dir()}
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


EXPORT_NAMES = {"hf": "{}", "jsonl": "{}.jsonl", "parquet": "{}.parquet"}


def unique_pairs(prefs):
    """The preference dataset with one row per pair_id: a run made before pairs were merged gets them merged now.

    The rule is the pipeline's (rlaif.pairs); the run's filters were already applied, so nothing more is dropped.
    """
    import datasets

    from .rows import PREF_FEATURES
    from .pairs import merge_pairs

    if len(set(prefs["pair_id"])) == len(prefs):
        return prefs
    rows, _ = merge_pairs(list(prefs), lambda row: row["pair_id"], tie_band=0.0, drop_ties=False)
    return datasets.Dataset.from_list([{k: row.get(k) for k in PREF_FEATURES} for row in rows], features=PREF_FEATURES)


def export(run_dir, fmt: str, out: str | None = None, push_to_hub: str | None = None) -> Path:
    """Write the run's datasets as hf (save_to_disk), jsonl or parquet into `out`, with README.md; optionally push.

    The files are published together (atomic.Commit); a target inside the run's own files is refused (guard).
    """
    out_dir = Path(out) if out else Path(run_dir) / f"export-{fmt}"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("--out: is a file; give a directory", str(out_dir))
    targets = {name: out_dir / EXPORT_NAMES[fmt].format(name) for name in DATASETS}
    check_targets(run_dir, [out_dir, *targets.values(), out_dir / "README.md"], "--out")
    for target in targets.values():
        if fmt == "hf" and target.is_dir() and not (target / "state.json").is_file():  # replacing it would delete it
            raise UserError("--out: this directory is not a saved dataset, so export will not replace it", str(target))
        if fmt != "hf" and target.is_dir():
            raise UserError("--out: a directory is in the way of the exported file", str(target))
    with lock_owner(out_dir):  # the default RUN/export-FORMAT lies in the run: hold its lock
        info, found = load_run(run_dir)
        if "prefs" in found:
            found["prefs"] = unique_pairs(found["prefs"])
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {}
        with atomic.Commit(out_dir) as commit:
            for name, ds in found.items():
                staged = str(commit.path(targets[name].name))
                if fmt == "hf":
                    ds.save_to_disk(staged, num_shards=1)
                    files[name] = f"{name}/*.arrow"
                elif fmt == "jsonl":
                    ds.to_json(staged, lines=True, force_ascii=False)
                    files[name] = f"{name}.jsonl"
                else:
                    ds.to_parquet(staged)
                    files[name] = f"{name}.parquet"
            atomic.write_text(commit.path("README.md"), dataset_card(info, found, files, push_to_hub))
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
