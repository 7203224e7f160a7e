"""Benchmark: rlaif against a hand-written vLLM script doing the same SL-CAI work and judge pass.

    python bench/peer.py [--prompts N] [--max-tokens N] [--rounds N]

The same work on both sides: N prompts of data/prompts.jsonl, one response each, one critique and one revision
(at most --max-tokens tokens each, completion format, no few-shot examples), then the judge's two orders of
(response, revision) read from log-probabilities. rlaif side: `rlaif run` on a pipeline with the defaults a user
gets (the embedded model, backend vllm, `dtype: auto`, the respond and critique stages' default sampling, the
judge stage's defaults; only `drop_degenerate: false`, so that revisions cut at max_tokens are judged on both sides
alike) in a fresh run directory. Peer side: bench/peer_script.py, ~60 lines of plain vLLM with
the engine options and sampling rlaif uses. The two are alternated for --rounds rounds, each a fresh process, and
timed as a user would time them (wall, process start to exit) and by generation (rlaif: the run.json `phases`
of its progress bars; the peer: its `llm.generate` calls). Writes bench/results/peer.json and peer.md. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sampling import _vllm_version  # noqa: E402

from rlaif.backends.pool import resolve_model  # noqa: E402
from rlaif.backends.vllm import _ENV_DEFAULTS  # noqa: E402
from rlaif.hardware import engine_dtype  # noqa: E402
from rlaif.spec.config import COMPLETION_STOP, CritiqueConfig, ModelConfig, RespondConfig  # noqa: E402
from rlaif.spec.constitution import load_constitution  # noqa: E402

CONSTITUTION = ROOT / "constitutions" / "harmless.yaml"
PROMPTS = ROOT / "data" / "prompts.jsonl"


def pipeline_text(n: int, max_tokens: int) -> str:
    """The rlaif side: defaults everywhere but the work's size (and the same pairs judged as the peer)."""
    return (f"name: peer\nconstitution: {CONSTITUTION}\nprompts: {PROMPTS}\nlimit: {n}\nfew_shot: 0\n"
            # the peer judges every (response, revision) that differ; rlaif by default leaves out revisions cut at
            # max_tokens, which would be less work, not faster work
            "drop_degenerate: false\n"
            f"models:\n  policy: {{model: default}}\n"
            f"stages:\n  respond: {{n: 1, max_tokens: {max_tokens}}}\n  critique: {{rounds: 1, max_tokens: {max_tokens}}}\n"
            f"  judge: {{pairs: none, revisions: true}}\n")


def peer_config(n: int, max_tokens: int) -> dict:
    """The peer side: rlaif's engine options (rlaif/backends/vllm.py on CPU) and default sampling, written out."""
    m, r, c = ModelConfig(), RespondConfig(), CritiqueConfig()
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()][:n]
    engine = {"dtype": engine_dtype(m.dtype), "max_model_len": m.max_model_len, "kv_cache_memory_bytes": int(m.kv_cache_gb * 2**30),
              "enforce_eager": True, "seed": 0, "enable_prefix_caching": True, "enable_chunked_prefill": False,
              "max_num_batched_tokens": max(m.max_model_len, 8192)}
    principles = [{"critique": p.critique, "revision": p.revision, "comparison": p.comparison}
                  for p in load_constitution(CONSTITUTION).principles]
    return {"model": resolve_model("default"), "engine": engine, "env": dict(_ENV_DEFAULTS), "prompts": prompts,
            "principles": principles, "stop": list(COMPLETION_STOP),
            "sampling": {"respond": {"temperature": r.temperature, "top_p": r.top_p, "max_tokens": max_tokens},
                         "critique": {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": max_tokens}}}


def run_rlaif(work: Path, pipe: Path, i: int) -> dict:
    """One `rlaif run` in a fresh run directory: wall seconds, generation seconds (phases), tokens."""
    out = work / f"run-{i}"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rlaif", "run", str(pipe), "--output", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"rlaif run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    info = json.loads((out / "run.json").read_text())
    phases = {p["name"]: p for p in info["phases"]}
    return {"wall_s": wall, "generate_s": sum(p["seconds"] for p in phases.values()),
            "phases_s": {k: p["seconds"] for k, p in phases.items()}, "tokens": {k: p["tokens"] for k, p in phases.items()},
            "comparisons": info["counts"]["judge"]["comparisons"] if "judge" in info["counts"] else None,
            "engine_starts": info["counts"]["engine_starts"]["total"]}


def run_peer(config: Path) -> dict:
    """One run of the hand-written script: wall seconds and its own generate timings."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "peer_script.py"), str(config)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"peer script failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "generate_s": sum(out["generate_s"].values()), "phases_s": out["generate_s"],
            "tokens": out["tokens"], "comparisons": out["comparisons"]}


def main() -> None:
    """Alternate the two sides for --rounds rounds; medians and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"rlaif": [], "peer": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pipe = work / "peer.yaml"
        pipe.write_text(pipeline_text(args.prompts, args.max_tokens))
        config = work / "peer.json"
        config.write_text(json.dumps(peer_config(args.prompts, args.max_tokens)))
        for i in range(args.rounds):
            sides = ["rlaif", "peer"] if i % 2 == 0 else ["peer", "rlaif"]  # neither side always goes first
            for side in sides:
                runs[side].append(run_rlaif(work, pipe, i) if side == "rlaif" else run_peer(config))
                print(side, {k: v for k, v in runs[side][-1].items() if k != "tokens"}, flush=True)
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "generate_s")} for side, rs in runs.items()}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "vllm": _vllm_version(), "prompts": args.prompts,
              "max_tokens": args.max_tokens, "rounds": args.rounds, "engine_dtype": engine_dtype(ModelConfig().dtype),
              "runs": runs, "median": med,
              "wall_ratio": round(med["rlaif"]["wall_s"] / med["peer"]["wall_s"], 3),
              "generate_ratio": round(med["rlaif"]["generate_s"] / med["peer"]["generate_s"], 3)}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.json").write_text(json.dumps(result, indent=2) + "\n")
    fmt = lambda rs, k: ", ".join(f"{r[k]:.1f}" for r in rs)
    lines = [f"# rlaif against a hand-written vLLM script ({result['date']})", "",
             f"`python bench/peer.py --prompts {args.prompts} --max-tokens {args.max_tokens} --rounds {args.rounds}`: "
             f"{result['vllm']}, {result['cpus']} CPUs, load average {', '.join(f'{x:.1f}' for x in result['load_avg'])}. "
             f"Same work: {args.prompts} prompts, one response, one critique, one revision (at most {args.max_tokens} tokens "
             "each, no few-shot), the judge's two orders of (response, revision), comparisons counted on both sides. rlaif's defaults (embedded model, vllm, "
             f"`dtype: auto` = {result['engine_dtype']}, default sampling and judge); the peer uses the same engine options "
             "and sampling. Sides alternated, each a fresh process.", "",
             "| side | median wall s | wall runs | median generation s | generation runs | comparisons judged |", "|---|---|---|---|---|---|"]
    lines += [f"| {side} | {med[side]['wall_s']:.1f} | {fmt(rs, 'wall_s')} | {med[side]['generate_s']:.1f} | {fmt(rs, 'generate_s')} | "
              f"{', '.join(str(r['comparisons']) for r in rs)} |"
              for side, rs in runs.items()]
    lines += ["", f"rlaif / peer: wall **{result['wall_ratio']}x** (target ≤ 1.10x), generation **{result['generate_ratio']}x** "
              "(target ≤ 1.05x).", "", "Per phase (seconds, each run):", ""]
    for side, rs in runs.items():
        for name in rs[0]["phases_s"]:
            each = ", ".join(f"{r['phases_s'].get(name, 0):.1f}" for r in rs)
            lines.append(f"- {side} {name}: {each} (tokens {rs[0]['tokens'].get(name)})")
    (out / "peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
