"""`rlaif export`: a run's datasets in another format, with a dataset card."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..rundir import atomic
from ..errors import UserError
from ..rundir.guard import check_targets, read_run_json
from ..rundir.lock import lock_owner
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

    The rule is the pipeline's (rlaif.export.pairs); the run's filters were already applied, so nothing more is dropped.
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
