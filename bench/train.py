"""Benchmark: training throughput (tokens/s) of DPO and the reward model on the embedded model, TRL defaults
against padding-free batching, side by side in one run.

    python bench/train.py [--run-dir outputs/quickstart] [--steps 4] [--batch 4] [--max-length 128]

Needs a finished run with preference pairs (`make demo`). Writes bench/results/train.json and train.md.
Liger kernels need Triton on a GPU and are not measured on CPU. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(method: str, run_dir: str, trl: dict, out: Path) -> dict:
    from rlaif.train import train
    from rlaif.train.config import load_train_config

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{method}.yaml"
    path.write_text(json.dumps({"method": method, "model": "default", "dataset": run_dir, "output_dir": str(out / method),
                                "trl": {**trl, "include_num_input_tokens_seen": "non_padding", "save_strategy": "no"}}))
    m = train(load_train_config(path, method), log=lambda *_: None)
    return {"steps": m["steps"], "seconds": round(m["train_runtime"], 2), "tokens": int(m["tokens_seen"]),
            "tokens_per_s": round(m["tokens_seen"] / m["train_runtime"], 1)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=str(ROOT / "outputs" / "quickstart"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    base = {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "max_length": args.max_length,
            "logging_steps": 1, "learning_rate": 1e-6}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("dpo", "reward"):
            for variant, extra in (("defaults", {}), ("padding_free", {"padding_free": True})):
                try:
                    r = measure(method, args.run_dir, base | extra, Path(tmp) / f"{method}-{variant}")
                except Exception as e:  # a variant TRL refuses on this device: say so, keep the rest
                    r = {"error": f"{type(e).__name__}: {e}"[:200]}
                rows.append({"method": method, "variant": variant, **r})
                print(rows[-1], flush=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": "python bench/train.py " + " ".join(sys.argv[1:]),
              "device": device, "machine": platform.processor() or platform.machine(),
              "versions": {p: version(p) for p in ("torch", "transformers", "trl")}, "settings": base, "rows": rows}
    for method in ("dpo", "reward"):
        pair = {r["variant"]: r for r in rows if r["method"] == method and "tokens_per_s" in r}
        if len(pair) == 2:
            result[f"{method}_padding_free_over_defaults"] = round(pair["padding_free"]["tokens_per_s"] / pair["defaults"]["tokens_per_s"], 3)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Training throughput ({result['date']})", "", f"`{result['command']}` on {device}; embedded model (fp32), "
             f"{args.steps} steps, batch {args.batch}, max_length {args.max_length}", "",
             "| method | variant | steps | seconds | tokens (non-padding) | tokens/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['variant']} | " + (" | ".join(str(r[k]) for k in ("steps", "seconds", "tokens", "tokens_per_s"))
                                                          if "tokens_per_s" in r else f"failed: {r['error']} | | | |"))
    lines += ["", *(f"{k}: **{v}x**" for k, v in result.items() if k.endswith("_over_defaults"))]
    (out / "train.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
