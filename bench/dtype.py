"""Benchmark: the generation engine's number format on this processor (what `dtype: auto` chooses, and why).

    python bench/dtype.py [--prompts N] [--max-tokens N] [--rounds N]

Measures the matmul peak of float32 and bfloat16 on this machine's threads (1024x1024 products), then loads the
default engine (vllm, the embedded model) in each dtype in turn, round after round, and samples the same seeded
prompts with the respond stage's default settings (temperature 0.8, top_p 1.0, the completion stop strings).
Writes bench/results/dtype.json and dtype.md. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generation import load_prompts  # noqa: E402
from sampling import _vllm_version, timed  # noqa: E402

from rlaif.backends.pool import load_engine  # noqa: E402
from rlaif.hardware import engine_dtype, native_bf16  # noqa: E402
from rlaif.spec.config import ModelConfig, RespondConfig  # noqa: E402


def matmul_gflops(dtype, size: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of a square matmul in `dtype` on the current thread count."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9


def main() -> None:
    """Peaks, then each engine dtype alternately for --rounds rounds; medians and the ratio."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    peaks = {"float32": round(matmul_gflops(torch.float32), 1), "bfloat16": round(matmul_gflops(torch.bfloat16, repeats=2), 2)}
    prompts, respond = load_prompts(args.prompts), RespondConfig()
    rates: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    starts: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(args.rounds):
        for dtype in rates:
            t0 = time.perf_counter()
            engine = load_engine(ModelConfig(dtype=dtype), seed=0)
            starts[dtype].append(time.perf_counter() - t0)
            try:
                timed(engine, prompts[:4], respond.temperature, 8, respond.top_p)  # first-call warm-up off the clock
                seconds, tokens = timed(engine, prompts, respond.temperature, args.max_tokens, respond.top_p)
                rates[dtype].append(tokens / seconds)
            finally:
                engine.close()
    med = {d: statistics.median(r) for d, r in rates.items()}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "cpu": _cpu_name(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
              "vllm": _vllm_version(), "native_bf16": native_bf16(), "auto_chooses": engine_dtype("auto"),
              "matmul_gflops": peaks, "prompts": args.prompts, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "sampling": {"temperature": respond.temperature, "top_p": respond.top_p, "min_p": respond.min_p},
              "tok_s": {d: [round(x, 1) for x in r] for d, r in rates.items()},
              "engine_start_s": {d: [round(x, 1) for x in r] for d, r in starts.items()},
              "float32_over_bfloat16": round(med["float32"] / med["bfloat16"], 2)}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dtype.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Engine number format on this processor ({result['date']})", "",
             f"`python bench/dtype.py --prompts {args.prompts} --max-tokens {args.max_tokens} --rounds {args.rounds}`: "
             f"{result['vllm']}, {result['cpu']}, {result['cpus']} CPUs, load average "
             f"{', '.join(f'{x:.1f}' for x in result['load_avg'])}; the default engine (vllm, embedded model) with the respond "
             f"stage's default sampling (T {respond.temperature}, top_p {respond.top_p}), dtypes alternated.", "",
             f"Native bf16: **{native_bf16()}**; `dtype: auto` chooses **{engine_dtype('auto')}**. "
             f"Matmul peak (1024², {torch.get_num_threads()} threads): float32 {peaks['float32']} GFLOP/s, "
             f"bfloat16 {peaks['bfloat16']} GFLOP/s.", "",
             "| dtype | median tok/s | runs | engine start s |", "|---|---|---|---|"]
    lines += [f"| {d} | {med[d]:.1f} | {', '.join(map(str, result['tok_s'][d]))} | "
              f"{', '.join(map(str, result['engine_start_s'][d]))} |" for d in rates]
    lines += ["", f"float32 / bfloat16 throughput: **{result['float32_over_bfloat16']}x**"]
    (out / "dtype.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
