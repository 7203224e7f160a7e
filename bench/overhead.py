"""Benchmark: rlaif's own cost per record (templates, keys, store, parsing) with an instant scripted backend.

    python bench/overhead.py [--prompts 2000] [--n 2] [--format completion|chat|both] [--profile FILE]

The real respond, critique, judge and score stages run through the real store (a fresh SQLite file), templates
and constitution (constitutions/harmless.yaml, with its few-shot examples), exactly as `rlaif run` calls them,
batch_size 64; only the model is replaced by ScriptedGenerator, which answers at once. So records/s here is the
ceiling rlaif puts on a pipeline: on real hardware the engine should be the bottleneck, not this. Then the same
stages run again on the filled store (a resumed run: every record found, nothing generated).
Target (issue 7): at least 2,000 records/s. Writes bench/results/overhead.json and overhead.md. Not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 2000  # records/s


def make_prompts(directory: Path, count: int):
    """`count` distinct prompts: the shipped ones, varied, through the real prompt reader."""
    from rlaif.spec.inputs import load_prompts

    base = [json.loads(line)["prompt"] for line in (ROOT / "data" / "prompts.jsonl").read_text().splitlines()]
    path = directory / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{base[i % len(base)]} (case {i})"}) + "\n" for i in range(count)))
    return load_prompts(path)


def run_stages(store_path: Path, prompts, fmt: str, n: int) -> dict:
    """Run respond, critique, judge and score once on `store_path`; seconds and records per stage."""
    from rich.console import Console

    from rlaif.backends.scripted import ScriptedGenerator
    from rlaif.spec.config import CritiqueConfig, JudgeConfig, RespondConfig, ScoreConfig
    from rlaif.spec.constitution import load_constitution
    from rlaif.progress import Reporter
    from rlaif.stages.common import StageContext
    from rlaif.stages.critique import critique
    from rlaif.stages.judge import build_comparisons, judge
    from rlaif.stages.respond import respond
    from rlaif.stages.score import score
    from rlaif.rundir.store import Store
    from rlaif.spec.templates import Templates

    generator = ScriptedGenerator(words=60, chat=fmt == "chat")
    store = Store(store_path)
    reporter = Reporter(Console(file=io.StringIO(), force_terminal=False))  # the real progress bars, drawn nowhere
    ctx = StageContext(store, load_constitution(ROOT / "constitutions" / "harmless.yaml"), Templates(), reporter, seed=0)
    stages = {}

    def timed(name, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        stages[name] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        return out

    with reporter:
        responses = timed("respond", lambda: respond(ctx, generator, prompts, RespondConfig(n=n)))
        history = timed("critique", lambda: critique(ctx, generator, responses, CritiqueConfig(rounds=1)))
        finals = {k: (rounds[-1]["key"], rounds[-1]["revision"]) for k, rounds in history.items()}
        comparisons = lambda: build_comparisons(responses, finals, JudgeConfig(), 0)  # noqa: E731 - timed with the stage
        judged = timed("judge", lambda: judge(ctx, generator, comparisons(), JudgeConfig()))
        targets = [{k: r[k] for k in ("key", "text", "prompt_id", "messages")} for r in responses]
        rated = timed("score", lambda: score(ctx, generator, targets, ScoreConfig()))
    store.close()
    for name, records in (("respond", responses), ("critique", [r for h in history.values() for r in h]),
                          ("judge", judged), ("score", rated)):
        s = stages[name]
        s |= {"records": len(records), "records_per_s": round(len(records) / s["seconds"]),
              "records_per_cpu_s": round(len(records) / s["cpu_seconds"])}
        s["seconds"], s["cpu_seconds"] = round(s["seconds"], 3), round(s["cpu_seconds"], 3)
    seconds = sum(s["seconds"] for s in stages.values())
    records = sum(s["records"] for s in stages.values())
    core = [stages[k] for k in ("respond", "critique", "judge")]
    return {"stages": stages, "seconds": round(seconds, 3), "records": records, "records_per_s": round(records / seconds),
            "records_per_cpu_s": round(records / sum(s["cpu_seconds"] for s in stages.values())),
            "respond_critique_judge_records_per_s": round(sum(s["records"] for s in core) / sum(s["seconds"] for s in core))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--n", type=int, default=2, help="responses per prompt")
    ap.add_argument("--format", choices=["completion", "chat", "both"], default="both",
                    help="completion: few-shot Human:/Assistant: prompts (base models, the default model); chat: messages")
    ap.add_argument("--repeats", type=int, default=3, help="fresh runs per format; the table shows the median run")
    ap.add_argument("--profile", help="write cProfile stats of the first fresh run here, and print the top functions")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = ap.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = make_prompts(Path(tmp), args.prompts)
        for fmt in (["completion", "chat"] if args.format == "both" else [args.format]):
            runs = []
            for rep in range(args.repeats):
                db = Path(tmp) / f"{fmt}-{rep}.sqlite"
                profiler = cProfile.Profile() if args.profile and not results and not runs else None
                if profiler:
                    profiler.enable()
                runs.append(run_stages(db, prompts, fmt, args.n))
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                    pstats.Stats(args.profile).sort_stats("cumulative").print_stats(30)
            fresh = sorted(runs, key=lambda r: r["records_per_s"])[len(runs) // 2]
            resumed = run_stages(db, prompts, fmt, args.n)
            results[fmt] = {"fresh": fresh, "resumed": resumed, "fresh_runs_records_per_s": [r["records_per_s"] for r in runs]}
            print(fmt, json.dumps({"fresh": fresh["records_per_s"], "fresh_cpu": fresh["records_per_cpu_s"],
                                   "resumed": resumed["records_per_s"], "runs": results[fmt]["fresh_runs_records_per_s"],
                                   **{k: v["records_per_s"] for k, v in fresh["stages"].items()}}))

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/overhead.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "prompts": args.prompts, "n": args.n, "target_records_per_s": TARGET, "results": results,
        "load_average": os.getloadavg(),
    }
    if args.no_write:
        return
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Orchestration overhead ({result['date']})\n", f"`{result['command']}`\n",
             f"{os.cpu_count()} cores, Python {platform.python_version()}; {args.prompts} prompts, n={args.n}, "
             "critique 1 round, judge all pairs + (initial, revision) pairs, both orders, score 1 principle; "
             f"instant scripted backend (60 words per reply), fresh SQLite store, batch_size 64; "
             f"load average {result['load_average'][0]:.2f}.\n",
             "| format | run | respond | critique | judge | score | all stages | respond+critique+judge |",
             "|---|---|---|---|---|---|---|---|"]
    for fmt, runs in results.items():
        for kind in ("fresh", "resumed"):
            r, s = runs[kind], runs[kind]["stages"]
            cells = [f"{s[k]['records']} in {s[k]['seconds']:.2f} s = **{s[k]['records_per_s']}/s**"
                     for k in ("respond", "critique", "judge", "score")]
            cells += [f"**{r['records_per_s']}/s**", f"**{r['respond_critique_judge_records_per_s']}/s**"]
            lines.append(f"| {fmt} | {kind} | " + " | ".join(cells) + " |")
    lines.append(f"\nTarget: at least {TARGET} records/s (records/s = records the stage returns / its wall time). "
                 f"Fresh: the median of {args.repeats} runs on a new store (all runs: "
                 + "; ".join(f"{fmt} {r['fresh_runs_records_per_s']}" for fmt, r in results.items())
                 + " records/s); resumed: the same stages again on a filled store. Records per CPU-second (less "
                 "sensitive to other work on the machine), fresh: "
                 + ", ".join(f"{fmt} {r['fresh']['records_per_cpu_s']}" for fmt, r in results.items()) + ".\n")
    (out / "overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
