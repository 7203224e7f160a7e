"""`rlaif eval reward-model`: pairwise accuracy of a trained reward model on held-out preference pairs."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..export.rows import load_saved
from ..spec.inputs import jsonl_objects
from ..stats import wilson_ci
from .winrate import _write, headline


def _read_jsonl(path: Path):
    """TRL-style pair rows from a JSONL file; a bad line is an error naming its line."""
    import datasets

    rows = []
    for n, row in jsonl_objects(path):
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in row]
        if missing:
            raise UserError(f"pair has no {', '.join(missing)}", str(path), n)
        rows.append(row)
    if not rows:
        raise UserError("no pairs in the file", str(path))
    return datasets.Dataset.from_list(rows)


def load_pairs(path: str):
    """Preference pairs from a run directory (its prefs/), a saved dataset, or a JSONL file of TRL rows."""
    import datasets

    p = Path(path)
    if (p / "prefs").is_dir():
        p = p / "prefs"
    if not p.exists():
        raise UserError(f"pairs: {path!r} not found")
    if p.is_file():
        return _read_jsonl(p)
    if not (p / "state.json").is_file() and not (p / "dataset_dict.json").is_file():
        raise UserError(f"pairs: {path!r} is neither a run directory nor a saved dataset")
    ds = load_saved(p, "pairs")
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"pairs: {path!r} holds splits {list(ds)}; point at one split's directory")
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise UserError(f"pairs: {path!r} has no {', '.join(missing)} column")
    if len(ds) == 0:
        raise UserError(f"pairs: {path!r} has no rows")
    return ds


def heldout_rows(model_dir: str, dataset) -> list[int]:
    """The rows `rlaif train reward` held out, rebuilt from its rlaif_train.json (same fraction, seed and grouping)."""
    from ..train.reward import split

    info_path = Path(model_dir) / "rlaif_train.json"
    if not info_path.is_file():
        raise UserError(f"{model_dir}: no rlaif_train.json, so the held-out split is unknown; use --split all", str(info_path))
    try:
        config = json.loads(info_path.read_text(encoding="utf-8"))["config"]
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON: {e.msg}; use --split all, or train again", str(info_path), e.lineno) from None
    except (KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"not an rlaif_train.json ({type(e).__name__}: {e}); use --split all", str(info_path)) from None
    fraction, seed = config.get("eval_fraction") or 0.0, config.get("trl", {}).get("seed", 42)  # RewardConfig's default seed
    if fraction == 0:
        raise UserError(f"{model_dir}: trained with eval_fraction 0, nothing was held out; use --split all", str(info_path))
    return split(dataset, fraction, seed, (str(info_path), None))[1]


def accuracy(model_dir: str, pairs: str, out_dir: Path, split: str = "heldout", batch_size: int = 8) -> dict:
    """Share of pairs whose chosen answer gets the higher reward (a tie counts as wrong), overall and per principle."""
    from ..train.rewards import RewardModelReward

    ds = load_pairs(pairs)
    rows = heldout_rows(model_dir, ds) if split == "heldout" else list(range(len(ds)))
    ds = ds.select(rows)
    reward = RewardModelReward(model_dir, batch_size=batch_size)
    chosen = reward(ds["prompt"], ds["chosen"])
    rejected = reward(ds["prompt"], ds["rejected"])
    principles = ds["principles"] if "principles" in ds.column_names else [[]] * len(ds)
    confidence = ds["p_chosen"] if "p_chosen" in ds.column_names else [None] * len(ds)
    out, per_principle = [], {}
    for i, (c, r, names, p) in enumerate(zip(chosen, rejected, principles, confidence)):
        correct = c > r
        for name in names or ["(none)"]:
            per_principle.setdefault(name, []).append(correct)
        out.append({"row": rows[i], "reward_chosen": c, "reward_rejected": r, "correct": correct, "p_chosen": p,
                    "principles": names})
    hits = sum(r["correct"] for r in out)
    margins = [r["reward_chosen"] - r["reward_rejected"] for r in out]
    rate, ci95 = round(hits / len(out), 4), wilson_ci(hits, len(out))
    summary = {"kind": "reward-model", "headline": headline("accuracy", rate, ci95), "model": model_dir, "pairs": str(pairs),
               "split": split, "n": len(out), "correct": hits, "accuracy": rate, "ci95": ci95,
               "mean_margin": round(sum(margins) / len(margins), 4),
               "per_principle": {k: {"n": len(v), "correct": sum(v), "accuracy": round(sum(v) / len(v), 4),
                                     "ci95": wilson_ci(sum(v), len(v))} for k, v in sorted(per_principle.items())}}
    _write(out_dir, "reward_model", summary, out)
    return summary
