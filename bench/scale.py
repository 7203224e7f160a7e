"""Benchmark: the Ray path against the in-process path on the same cores, 1 vs 2 replicas, and the driver's commit rate.

    python bench/scale.py [--prompts N] [--max-tokens N] [--chunk N] [--rounds N]

On the embedded model with the vLLM backend: requests go through the Generator seam in chunks of `--chunk`, as the
stages send them. The in-process engine and a 1-replica Ray engine (num_cpus = every core) are alive together and
timed in alternating rounds, so both see the same machine load; then the 1-replica set is closed and a 2-replica
set (one core each) is timed. Separately, the rate at which the driver commits records to the run's SQLite store.
Writes bench/results/scale.json and bench/results/scale.md. Not a test: the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from generation import load_prompts, machine  # noqa: E402

from rlaif.backends.base import Request, Sampling  # noqa: E402
from rlaif.spec.config import ModelConfig, ScaleConfig  # noqa: E402
from rlaif.rundir.store import Store, record_key  # noqa: E402


def run_once(gen, requests: list[Request], chunk: int) -> dict:
    """Generate every request in chunks, as a stage does; tokens counted, not assumed."""
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(requests), chunk):
        tokens += sum(o.tokens for c in gen.generate(requests[i : i + chunk]) for o in c.outputs)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(seconds, 2), "tok_s": round(tokens / seconds, 1)}


def summary(runs: list[dict]) -> dict:
    """Total tokens over total seconds across the timed rounds, and each round."""
    tokens, seconds = sum(r["tokens"] for r in runs), sum(r["seconds"] for r in runs)
    return {"tok_s": round(tokens / seconds, 1), "runs": runs}


def commit_rate(batch: int, records: int = 20000) -> dict:
    """Records/s the driver commits with Store.put_many (one transaction per batch), response-sized records."""
    text = "I can't help with that, but here is a safer way to think about it. " * 6  # ~400 characters, a typical answer
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "records.sqlite")
        start = time.perf_counter()
        for b in range(0, records, batch):
            store.put_many("respond", {record_key(i=i): {"prompt_id": f"p{i}", "messages": [{"role": "user", "content": text}],
                                                        "sample": 0, "text": text, "tokens": 96, "finish_reason": "stop",
                                                        "prompt_tokens": 400, "model": "m", "format": "completion"}
                                       for i in range(b, min(b + batch, records))})
        seconds = time.perf_counter() - start
        store.close()
    return {"batch": batch, "records": records, "seconds": round(seconds, 2), "records_s": round(records / seconds)}


def write_results(r: dict) -> None:
    out = ROOT / "bench" / "results"
    (out / "scale.json").write_text(json.dumps(r, indent=2) + "\n")
    m, s = r["machine"], r["starts"]
    lines = [
        f"# Scaling benchmark ({r['date']})", "",
        f"`{r['command']}`", "",
        f"{m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        f"Embedded model, vLLM backend, {r['prompts']} prompts x up to {r['max_tokens']} new tokens (temperature 0.8, "
        f"a seed per request), sent in chunks of {r['chunk']}; {r['rounds']} timed rounds each after one warm-up chunk. "
        f"Load average {r['load_before']} before / {r['load_after']} after "
        "(the machine is shared with other engineers' tests).", "",
        "| path | resources | engine start, s | tokens/s (all rounds) | rounds, tokens/s |", "|---|---|---|---|---|",
        *[f"| {name} | {res} | {s[key]} | {r[key]['tok_s']} | {', '.join(str(x['tok_s']) for x in r[key]['runs'])} |"
          for name, res, key in (("in-process", "this process, every core", "inprocess"),
                                 ("ray, 1 replica", "1 actor x all cores", "ray1"),
                                 ("ray, 2 replicas", "2 actors x 1 core", "ray2"))], "",
        f"Ray overhead against in-process, same cores (rounds alternated): **{r['overhead_pct']}%** of throughput over "
        f"all rounds, median of the paired rounds **{r['overhead_median_pct']}%** "
        f"(round by round: {', '.join(str(x) for x in r['overhead_by_round'])}%; negative: Ray was faster).", "",
        f"2 replicas / 1 replica: **{r['scaling_2_over_1']}x**.", "",
        "Driver commit rate (`Store.put_many`, one transaction per batch, ~1 KB response records):", "",
        "| batch | records | seconds | records/s |", "|---|---|---|---|",
        *[f"| {c['batch']} | {c['records']} | {c['seconds']} | {c['records_s']} |" for c in r["commits"]], "",
    ]
    (out / "scale.md").write_text("\n".join(lines))


def main() -> None:
    """Parse, time the three paths and the commit rate, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="number of prompts (default 64)")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per prompt at most (default 64)")
    parser.add_argument("--chunk", type=int, default=32, help="requests per generate call, like batch_size (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per path (default 3)")
    args = parser.parse_args()

    import ray

    from rlaif.backends.pool import load_engine
    from rlaif.backends.ray import RayGenerator

    cfg = ModelConfig()  # model: default, backend: vllm, as the quickstart
    requests = [Request(prompt=p, sampling=Sampling(temperature=0.8, max_tokens=args.max_tokens, seed=i))
                for i, p in enumerate(load_prompts(args.prompts))]
    warm = requests[: args.chunk]
    load_before = os.getloadavg()[0]
    cores = os.cpu_count()
    starts, results = {}, {"inprocess": [], "ray1": [], "ray2": []}

    t = time.perf_counter()
    local = load_engine(cfg)
    starts["inprocess"] = round(time.perf_counter() - t, 1)
    print(f"in-process engine started in {starts['inprocess']} s", flush=True)
    t = time.perf_counter()
    os.environ.setdefault("RAY_worker_niceness", "0")  # as rlaif's Cluster does for a local Ray: replicas not niced
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    one = RayGenerator(cfg, 0, ScaleConfig(engine="ray", replicas=1), num_cpus=cores, num_gpus=0)
    starts["ray1"] = round(time.perf_counter() - t, 1)
    print(f"ray.init + 1 replica started in {starts['ray1']} s", flush=True)
    for gen in (local, one):
        run_once(gen, warm, args.chunk)
    for i in range(args.rounds):  # alternate, so a burst of load from elsewhere hits both paths
        for key, gen in (("inprocess", local), ("ray1", one)):
            results[key].append(run_once(gen, requests, args.chunk))
            print(f"  round {i + 1} {key}: {results[key][-1]['tok_s']} tok/s", flush=True)
    local.close()
    one.close()

    t = time.perf_counter()
    two = RayGenerator(cfg, 0, ScaleConfig(engine="ray", replicas=2), num_cpus=max(1, cores // 2), num_gpus=0)
    starts["ray2"] = round(time.perf_counter() - t, 1)
    print(f"2 replicas started in {starts['ray2']} s", flush=True)
    run_once(two, warm, args.chunk)
    for i in range(args.rounds):
        results["ray2"].append(run_once(two, requests, args.chunk))
        print(f"  round {i + 1} ray2: {results['ray2'][-1]['tok_s']} tok/s", flush=True)
    two.close()
    ray.shutdown()

    commits = [commit_rate(b) for b in (64, 512)]
    print("commit rate: " + ", ".join(f"batch {c['batch']}: {c['records_s']} records/s" for c in commits), flush=True)
    r = {key: summary(runs) for key, runs in results.items()}
    by_round = [round(100 * (1 - b["tok_s"] / a["tok_s"]), 1) for a, b in zip(results["inprocess"], results["ray1"])]
    out = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/scale.py", *sys.argv[1:]]), "machine": machine(),
        "prompts": args.prompts, "max_tokens": args.max_tokens, "chunk": args.chunk, "rounds": args.rounds,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "starts": starts, **r,
        "overhead_pct": round(100 * (1 - r["ray1"]["tok_s"] / r["inprocess"]["tok_s"]), 1), "overhead_by_round": by_round,
        "overhead_median_pct": statistics.median(by_round),
        "scaling_2_over_1": round(r["ray2"]["tok_s"] / r["ray1"]["tok_s"], 2), "commits": commits,
    }
    out["machine"]["versions"]["ray"] = ray.__version__
    write_results(out)
    print(f"overhead {out['overhead_pct']}% (median {out['overhead_median_pct']}%), "
          f"2/1 replicas {out['scaling_2_over_1']}x; wrote bench/results/scale.md")


if __name__ == "__main__":
    main()
