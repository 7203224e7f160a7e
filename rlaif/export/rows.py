"""Turn stored records into TRL-native datasets: prompt/completion rows for SFT, prompt/chosen/rejected pairs."""

from __future__ import annotations

from pathlib import Path

import datasets

from ..rundir import atomic
from ..errors import UserError
from ..stages.quality import clean_revision
from ..rundir.store import record_key

MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
SFT_FEATURES = datasets.Features(  # prompt-completion: TRL's SFTTrainer trains on the completion only
    {"prompt": MESSAGES, "completion": MESSAGES, "prompt_id": datasets.Value("string"), "sample": datasets.Value("int64"),
     "source": datasets.Value("string"), "principles": [datasets.Value("string")], "model": datasets.Value("string"),
     "constitution_sha256": datasets.Value("string"), "seed": datasets.Value("int64")}
)
PREF_FEATURES = datasets.Features(
    {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "prompt_id": datasets.Value("string"),
     "sample": datasets.Value("int64"), "source": datasets.Value("string"), "pair_type": datasets.Value("string"),
     "principles": [datasets.Value("string")], "rounds": datasets.Value("int64"), "critique": datasets.Value("string"),
     "policy_model": datasets.Value("string"), "critic_model": datasets.Value("string"),
     "constitution_sha256": datasets.Value("string"), "seed": datasets.Value("int64"),
     "response_key": datasets.Value("string"), "revision_key": datasets.Value("string"),
     # judged pairs (stage judge); None for unjudged revision pairs
     "p_chosen": datasets.Value("float64"), "margin": datasets.Value("float64"), "orders_agree": datasets.Value("bool"),
     "judge_model": datasets.Value("string"), "comparison_id": datasets.Value("string"),
     # scored pairs (stage score)
     "score_chosen": datasets.Value("float64"), "score_rejected": datasets.Value("float64"),
     "pair_id": datasets.Value("string"),  # stable id of the two answers, whichever is chosen (human labels use it)
     # one row per pair_id (rlaif.export.pairs): which signal decided the label, which signals the pair had, whether they disagreed
     "label_source": datasets.Value("string"), "signals": [datasets.Value("string")], "conflict": datasets.Value("bool")}
)


def pair_turns(prompt: list[dict], chosen: str, rejected: str) -> dict:
    """A pair's conversation: the prompt's messages, each answer as a one-message assistant turn."""
    return {"prompt": list(prompt), "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def pref_row(prompt: list[dict], chosen: str, rejected: str, features: datasets.Features = PREF_FEATURES, **columns) -> dict:
    """A preference row with every column of `features`: the given ones, None for the rest."""
    unknown = sorted(set(columns) - set(features))
    if unknown:  # a misspelt column would otherwise vanish when the dataset is built from the features
        raise TypeError(f"pref_row: not a column of the dataset: {', '.join(unknown)}")
    return dict.fromkeys(features) | pair_turns(prompt, chosen, rejected) | columns


def final_answer(response: dict, rounds: list[dict], problem) -> tuple[str | None, list[dict], list[str]]:
    """The last usable revision (preamble stripped; None if no round produced one), the usable rounds, each round's problem.

    Rounds chain as the critique stage chains them: each is checked against the last usable answer before it.
    """
    answer, used, problems = None, [], []
    current = response["text"]
    for rnd in rounds:
        why = problem(rnd, current, response["messages"])
        problems.append(why)
        if why is None:
            answer = current = clean_revision(rnd["revision"])
            used.append(rnd)
    return answer, used, [p for p in problems if p]


def sft_turns(messages: list[dict], answer: str) -> dict:
    """An SFT row's inputs: the conversation as `prompt`, the answer as a one-message `completion` (loss on it only)."""
    return {"prompt": list(messages), "completion": [{"role": "assistant", "content": answer}]}


def _usable(rnd: dict, previous: str, messages: list) -> str | None:
    text = clean_revision(rnd["revision"])
    return None if text and text != previous else "unusable"


def sl_cai_rows(responses: list[dict], history: dict[str, list[dict]] | None, meta: dict, problem=None,
                drop_truncated: bool = False) -> tuple[list, list, dict]:
    """SFT rows (final answers) and preference rows (final revision over initial response), plus counts.

    `problem(round_record, previous_answer, messages)` says why a revision is unusable (or None); unusable
    revisions are counted in the stats and never become training targets. Without a critique stage the
    responses are the SFT targets; with `drop_truncated` one cut at max_tokens is not (counted).
    """
    problem = problem or _usable
    sft, prefs = [], []
    stats: dict = {"responses": len(responses), "empty_responses": 0, "no_usable_revision": 0, "revision_problems": {}}
    if history is None:
        stats["truncated_responses"] = 0
    for r in responses:
        if not r["text"]:
            stats["empty_responses"] += 1
            continue
        common = {"prompt_id": r["prompt_id"], "sample": r["sample"], "constitution_sha256": meta["constitution_sha256"],
                  "seed": meta["seed"]}
        if history is None:  # no critique stage: the responses themselves are the SFT data
            if drop_truncated and r.get("finish_reason") == "length":
                stats["truncated_responses"] += 1
                continue
            sft.append({**sft_turns(r["messages"], r["text"]), "source": "response", "principles": [], "model": r["model"],
                        **common})
            continue
        answer, used, problems = final_answer(r, history.get(r["key"], []), problem)
        for why in problems:
            stats["revision_problems"][why] = stats["revision_problems"].get(why, 0) + 1
        if answer is None:
            stats["no_usable_revision"] += 1
            continue
        principles = [x["principle"] for x in used]
        sft.append({**sft_turns(r["messages"], answer), "source": "revision", "principles": principles,
                    "model": used[-1]["model"], **common})
        prefs.append(pref_row(
            r["messages"], answer, r["text"], source="ai", pair_type="revision", principles=principles, rounds=len(used),
            critique=used[-1]["critique"], policy_model=r["model"], critic_model=used[-1]["model"], response_key=r["key"],
            revision_key=used[-1]["key"], **common, label_source="revision"))
    return sft, prefs, stats


def judged_rows(comparisons, records: list[dict], meta: dict) -> tuple[list[dict], dict]:
    """Preference rows from judged comparisons: the label averaged over principles decides chosen/rejected.

    Every labelled comparison becomes a row; ties, inconsistent orders and low margins are filtered when the
    pairs are merged (rlaif.export.pairs.merge_pairs). Comparisons with no label are counted.
    """
    by_comparison: dict[str, list[dict]] = {}
    for r in records:
        by_comparison.setdefault(r["comparison_id"], []).append(r)
    rows, no_label = [], 0
    for c in comparisons:
        judged = by_comparison.get(c.id, [])
        labels = [r["label"] for r in judged if r["label"] is not None]
        if not labels:
            no_label += 1
            continue
        label = sum(labels) / len(labels)
        agreement = [r["agree"] for r in judged if r["agree"] is not None]
        agree = all(agreement) if agreement else None
        chosen, rejected = (c.a, c.b) if label >= 0.5 else (c.b, c.a)
        rows.append(pref_row(
            list(c.messages), chosen.text, rejected.text, prompt_id=c.prompt_id, source="ai", pair_type=c.kind,
            principles=[r["principle"] for r in judged], critic_model=meta.get("critic_model"),
            # with pairs_from the sampled pairs come from the trained stage's model, the revision pairs from the start
            policy_model=meta.get("samples_model", meta.get("policy_model")) if c.kind == "samples" else meta.get("policy_model"),
            constitution_sha256=meta["constitution_sha256"], seed=meta["seed"], response_key=c.a.key,
            revision_key=c.b.key if c.kind == "revision" else None, p_chosen=max(label, 1 - label),
            margin=abs(2 * label - 1), orders_agree=agree, judge_model=judged[0]["model"], comparison_id=c.id,
            label_source="judge"))
    return rows, {"comparisons": len(comparisons), "labelled": len(rows), "dropped": {"no_label": no_label}}


def pair_id(row: dict) -> str:
    """The same two answers to the same prompt always get the same id, whichever side is chosen."""
    texts = sorted([row["chosen"][-1]["content"], row["rejected"][-1]["content"]])
    return record_key(prompt=row["prompt"], texts=texts)[:16]


def write_dataset(rows: list[dict], features: datasets.Features, run_dir: Path, name: str,
                  commit: atomic.Commit | None = None) -> None:
    """Write `name/` (datasets.save_to_disk) and `name.jsonl`, published together (atomic.Commit); or stage them in `commit`."""
    ds = datasets.Dataset.from_list(rows, features=features) if rows else datasets.Dataset.from_dict(
        {k: [] for k in features}, features=features)
    own = commit is None
    commit = commit or atomic.Commit(run_dir)
    try:
        ds.save_to_disk(str(commit.path(name)), num_shards=1)  # an empty dataset saved with 0 shards cannot be loaded back
        atomic.write_jsonl(commit.path(f"{name}.jsonl"), rows)
    except BaseException:
        if own:
            commit.abandon()
        raise
    if own:
        commit.publish()


def load_saved(path: str | Path, what: str = "dataset"):
    """A save_to_disk dataset; a damaged one (truncated or garbled arrow file, broken state.json) is a UserError."""
    path = Path(path)
    if (path.parent / atomic.PENDING).is_dir():  # a writer was killed while publishing it: finish that first
        from ..rundir.lock import run_lock

        with run_lock(path.parent):
            pass
    try:
        return datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
            raise UserError(f"{what}: not a saved dataset (save_to_disk)", str(path)) from None
        raise UserError(f"{what}: the saved dataset is incomplete ({e}); run the command that wrote it again",
                        str(path)) from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError; a short read an OSError
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"{what}: the saved dataset is damaged ({type(e).__name__}: {reason}); "
                        "run the command that wrote it again", str(path)) from None


def scored_rows(pairs, meta: dict) -> list[dict]:
    """Best-vs-worst-of-n rows from pointwise scores: p_chosen = (1 + gap / 9) / 2, margin = gap / 9 = 2 p_chosen - 1."""
    return [pref_row(
        best["messages"], best["text"], worst["text"], prompt_id=best["prompt_id"], source="ai", pair_type="best_vs_worst",
        principles=[], policy_model=meta.get("samples_model", meta.get("policy_model")), critic_model=meta.get("critic_model"),
        constitution_sha256=meta["constitution_sha256"], seed=meta["seed"], response_key=best["key"],
        p_chosen=(1 + (high - low) / 9) / 2, margin=(high - low) / 9, judge_model=meta.get("judge_model"),
        score_chosen=high, score_rejected=low, label_source="score",
    ) for best, worst, high, low in pairs]
