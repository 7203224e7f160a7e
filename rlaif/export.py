"""Turn stored records into TRL-native datasets: `messages` rows for SFT, prompt/chosen/rejected pairs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import datasets

MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
SFT_FEATURES = datasets.Features(
    {"messages": MESSAGES, "prompt_id": datasets.Value("string"), "sample": datasets.Value("int64"),
     "source": datasets.Value("string"), "principles": [datasets.Value("string")], "model": datasets.Value("string"),
     "constitution_sha256": datasets.Value("string"), "seed": datasets.Value("int64")}
)
PREF_FEATURES = datasets.Features(
    {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "prompt_id": datasets.Value("string"),
     "sample": datasets.Value("int64"), "source": datasets.Value("string"), "pair_type": datasets.Value("string"),
     "principles": [datasets.Value("string")], "rounds": datasets.Value("int64"), "critique": datasets.Value("string"),
     "policy_model": datasets.Value("string"), "critic_model": datasets.Value("string"),
     "constitution_sha256": datasets.Value("string"), "seed": datasets.Value("int64"),
     "response_key": datasets.Value("string"), "revision_key": datasets.Value("string")}
)


def final_answer(response: dict, rounds: list[dict], problem) -> tuple[str | None, list[dict], list[str]]:
    """The last usable revision (None if no round produced one), the rounds up to it, and each round's problem."""
    answer, used, problems = None, [], []
    current = response["text"]
    for i, rnd in enumerate(rounds):
        why = problem(rnd, current)
        problems.append(why)
        if why is None:
            answer, used, current = rnd["revision"], rounds[: i + 1], rnd["revision"]
    return answer, used, [p for p in problems if p]


def sl_cai_rows(responses: list[dict], history: dict[str, list[dict]] | None, meta: dict, problem=None) -> tuple[list, list, dict]:
    """SFT rows (final answers) and preference rows (final revision over initial response), plus counts.

    `problem(round_record, previous_answer)` says why a revision is unusable (or None); unusable
    revisions are counted in the stats and never become training targets.
    """
    problem = problem or (lambda rnd, prev: None if rnd["revision"] and rnd["revision"] != prev else "unusable")
    sft, prefs = [], []
    stats: dict = {"responses": len(responses), "empty_responses": 0, "no_usable_revision": 0, "revision_problems": {}}
    for r in responses:
        if not r["text"]:
            stats["empty_responses"] += 1
            continue
        common = {"prompt_id": r["prompt_id"], "sample": r["sample"], "constitution_sha256": meta["constitution_sha256"],
                  "seed": meta["seed"]}
        if history is None:  # no critique stage: the responses themselves are the SFT data
            sft.append({"messages": r["messages"] + [{"role": "assistant", "content": r["text"]}], "source": "response",
                        "principles": [], "model": r["model"], **common})
            continue
        answer, used, problems = final_answer(r, history.get(r["key"], []), problem)
        for why in problems:
            stats["revision_problems"][why] = stats["revision_problems"].get(why, 0) + 1
        if answer is None:
            stats["no_usable_revision"] += 1
            continue
        principles = [x["principle"] for x in used]
        sft.append({"messages": r["messages"] + [{"role": "assistant", "content": answer}], "source": "revision",
                    "principles": principles, "model": used[-1]["model"], **common})
        prefs.append({
            "prompt": r["messages"], "chosen": [{"role": "assistant", "content": answer}],
            "rejected": [{"role": "assistant", "content": r["text"]}], "source": "ai", "pair_type": "revision",
            "principles": principles, "rounds": len(used), "critique": used[-1]["critique"], "policy_model": r["model"],
            "critic_model": used[-1]["model"], "response_key": r["key"], "revision_key": used[-1]["key"], **common,
        })
    return sft, prefs, stats


def write_dataset(rows: list[dict], features: datasets.Features, run_dir: Path, name: str) -> None:
    """Write `name/` (datasets.save_to_disk) and `name.jsonl`, each replaced atomically."""
    ds = datasets.Dataset.from_list(rows, features=features) if rows else datasets.Dataset.from_dict(
        {k: [] for k in features}, features=features)
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp), num_shards=1)  # an empty dataset saved with 0 shards cannot be loaded back
    shutil.rmtree(run_dir / name, ignore_errors=True)
    os.replace(tmp, run_dir / name)
    with open(run_dir / f".{name}.jsonl.tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(run_dir / f".{name}.jsonl.tmp", run_dir / f"{name}.jsonl")
