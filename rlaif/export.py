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


def final_answer(response: dict, rounds: list[dict]) -> tuple[str, list[dict]]:
    """The last non-empty revision (or the response itself), and the rounds that led to it."""
    answer, used = response["text"], []
    for rnd in rounds:
        used.append(rnd)
        if rnd["revision"]:
            answer = rnd["revision"]
    return answer, used


def sl_cai_rows(responses: list[dict], history: dict[str, list[dict]] | None, meta: dict) -> tuple[list, list, dict]:
    """SFT rows (final answers) and preference rows (final revision over initial response), plus counts."""
    sft, prefs, stats = [], [], {"responses": len(responses), "empty": 0, "unchanged": 0}
    for r in responses:
        rounds = (history or {}).get(r["key"], [])
        answer, used = final_answer(r, rounds)
        principles = [x["principle"] for x in used]
        if not answer:
            stats["empty"] += 1
            continue
        common = {"prompt_id": r["prompt_id"], "sample": r["sample"], "principles": principles,
                  "constitution_sha256": meta["constitution_sha256"], "seed": meta["seed"]}
        sft.append({"messages": r["messages"] + [{"role": "assistant", "content": answer}],
                    "source": "revision" if history is not None else "response", "model": rounds[-1]["model"] if rounds else r["model"], **common})
        if history is None or not r["text"]:
            continue
        if answer == r["text"]:  # nothing was revised: no preference to learn from
            stats["unchanged"] += 1
            continue
        prefs.append({
            "prompt": r["messages"], "chosen": [{"role": "assistant", "content": answer}],
            "rejected": [{"role": "assistant", "content": r["text"]}], "source": "ai", "pair_type": "revision",
            "rounds": len(used), "critique": used[-1]["critique"], "policy_model": r["model"], "critic_model": used[-1]["model"],
            "response_key": r["key"], "revision_key": used[-1]["key"], **common,
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
