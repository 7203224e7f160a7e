"""Benchmark: training throughput of DPO and the reward model on the embedded model, before and after the speed
defaults of issue 14, each lever alone, side by side in one run (variants alternate, same data and steps).

    python bench/train.py [--run-dir outputs/quickstart] [--steps 4] [--batch 4] [--max-length 128] [--rounds 1]
                          [--profile]

Data: a run directory's prefs/ when --run-dir has one; otherwise a preference set built here, deterministically,
from data/prompts.jsonl (the first steps x batch prompts) with the shipped harmless constitution's few-shot answers as
canned chosen (the revision) and rejected (the flawed response) turns, p_chosen 0.6-0.9, so no `make demo` is needed.

Variants (DPO): before (TRL's defaults as rlaif ran them until now: a reference model's forward every step, every
position through the LM head), after (rlaif's defaults now), precompute (before + precompute_ref_log_probs), labelled
(before + the LM head on labelled tokens only), lora (before + LoRA r 16 on every linear layer: a method choice, not
a default), bf16 (before + bf16 autocast, only where bf16 is native). Reward: before, after (the same settings on a
CPU without native bf16, so its ratio there is the noise), lora, bf16 where native.

Tokens/s counts non-padding tokens over init + train seconds (the trainer's constructor, where the tokenizing, the
reference model's load or the precompute happen, and `trainer.train()`; loading the policy and saving are left out,
being the same for all). FLOPs: DPO 8 N T (6 N T for the policy's forward and backward, 2 N T for the reference's
forward), N = every parameter (the tied 262k x 640 head is a matmul per token); reward 6 N' T, N' = parameters
without the embedding (a lookup); T = non-padding tokens; this ignores attention's T^2 term (small at 128 tokens) and
counts the prompt positions the labelled-only head skips, so it is the work of plain training. The fraction is over
the fp32 matmul peak measured here (the bf16 one for bf16 variants) on the training thread count.
Writes bench/results/train.json and train.md (--profile: also train-profile.md, the top ops of one DPO step of
before and after by self CPU time; the profiled step is the last one of that variant's first run, and profiled
runs are left out of the medians). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}
BEFORE = {"precompute_ref_log_probs": False, "bf16": False}  # what rlaif ran on a CPU until now
VARIANTS = {  # name -> (trl keys, peft, LM head on labelled tokens only); one lever each besides after
    "dpo": {"before": (BEFORE, None, False), "after": ({}, None, True),
            "precompute": ({**BEFORE, "precompute_ref_log_probs": True}, None, False),
            "labelled": (BEFORE, None, True), "lora": (BEFORE, LORA, False), "bf16": ({**BEFORE, "bf16": True}, None, False)},
    "reward": {"before": ({"bf16": False}, None, False), "after": ({}, None, False), "lora": ({"bf16": False}, LORA, False),
               "bf16": ({"bf16": True}, None, False)},
}


def build_prefs(out: Path, rows: int) -> Path:
    """A saved preference dataset: the first `rows` prompts of data/prompts.jsonl, canned answers (see the docstring)."""
    import datasets

    from rlaif.export.rows import PREF_FEATURES, pref_row
    from rlaif.spec.constitution import load_constitution

    prompts = [json.loads(line)["prompt"] for line in (ROOT / "data" / "prompts.jsonl").read_text().splitlines() if line.strip()]
    shots = load_constitution(ROOT / "constitutions" / "harmless.yaml").few_shot
    data = [pref_row([{"role": "user", "content": prompts[i % len(prompts)]}], shots[i % len(shots)].revision,
                     shots[i % len(shots)].response, p_chosen=0.6 + 0.3 * (i % 4) / 3, prompt_id=f"bench-{i}")
            for i in range(rows)]
    datasets.Dataset.from_list(data, features=PREF_FEATURES).save_to_disk(str(out / "prefs"))
    return out


def matmul_peak(dtype, n: int, seconds: float = 2.0) -> float:
    """GFLOP/s of an n x n matmul in `dtype` on torch's current thread count (best of repeated timings)."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return round(2 * n ** 3 / best / 1e9, 1)


def flops_per_token(method: str) -> float:
    """8 N (DPO: policy 6 N + reference 2 N) or 6 N' (reward, N' without the embedding lookup), see the docstring."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlaif.backends.pool import resolve_model

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model("default")))
    total = sum(p.numel() for p in model.parameters())  # tied head counted once
    return 8 * total if method == "dpo" else 6 * (total - model.get_input_embeddings().weight.numel())


@contextlib.contextmanager
def profiled(enabled: bool, steps: int, sink: list):
    """Profile the last training step (a TrainerCallback through rlaif's progress callback) into `sink`."""
    if not enabled:
        yield
        return
    import rlaif.train.common as common
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    original = common.progress_callback

    class Last(TrainerCallback):
        prof = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == steps - 1:
                self.prof = profile(activities=[ProfilerActivity.CPU])
                self.prof.start()

        def on_step_end(self, args, state, control, **kw):
            if self.prof is not None:
                self.prof.stop()
                sink.append(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
                self.prof = None

    def with_profile(method, log):
        cb = original(method, log)
        last = Last()
        for name in ("on_step_begin", "on_step_end"):
            setattr(cb, name, getattr(last, name))
        return cb

    common.progress_callback = with_profile
    import rlaif.train.dpo as dpo
    dpo.progress_callback = with_profile
    try:
        yield
    finally:
        common.progress_callback = dpo.progress_callback = original


def measure(method: str, variant: str, run_dir: str, base: dict, out: Path, profile_sink: list | None) -> dict:
    """One training run of a variant; its tokens/s and the thread count seen during training."""
    import torch

    import rlaif.train.dpo as dpo
    from rlaif.train import train
    from rlaif.train.config import load_train_config
    from rlaif.train.speed import labelled_tokens_only

    trl, peft, labelled = VARIANTS[method][variant]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{method}.yaml"
    path.write_text(json.dumps({"method": method, "model": "default", "dataset": run_dir, "output_dir": str(out / method),
                                **({"peft": peft} if peft else {}),
                                "trl": {**base, **trl, "include_num_input_tokens_seen": "non_padding", "save_strategy": "no"}}))
    threads: set[int] = set()
    dpo.labelled_tokens_only = labelled_tokens_only if labelled else contextlib.nullcontext  # "before" lacks it
    try:
        with profiled(profile_sink is not None, base["max_steps"], profile_sink if profile_sink is not None else []):
            m = train(load_train_config(path, method), log=lambda *_: threads.add(torch.get_num_threads()))
    finally:
        dpo.labelled_tokens_only = labelled_tokens_only
    seconds = m["init_seconds"] + m["train_runtime"]
    return {"steps": m["steps"], "init_seconds": m["init_seconds"], "train_seconds": round(m["train_runtime"], 2),
            "tokens": int(m["tokens_seen"]), "tokens_per_s": round(m["tokens_seen"] / seconds, 2),
            "threads_in_training": sorted(threads), "losses": [round(x, 5) for x in m["losses"]]}


def main() -> None:
    import torch

    from rlaif.hardware import native_bf16

    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=str(ROOT / "outputs" / "quickstart"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1, help="times each variant runs, alternating")
    ap.add_argument("--methods", default="dpo,reward")
    ap.add_argument("--profile", action="store_true", help="profile the last step of DPO before and after")
    args = ap.parse_args()
    base = {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "max_length": args.max_length,
            "logging_steps": 1, "learning_rate": 1e-6}
    native = native_bf16()
    peak = {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "fp32_gflops": matmul_peak(torch.float32, 1024),
            "bf16_gflops": matmul_peak(torch.bfloat16, 1024 if native else 256), "native_bf16": native}
    print("matmul peak", peak, flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, data = args.run_dir, "run directory"
        if not (Path(run_dir) / "prefs").is_dir():
            run_dir, data = str(build_prefs(Path(tmp) / "run", args.steps * args.batch)), "built from data/prompts.jsonl"
        for method in args.methods.split(","):
            names = [v for v in VARIANTS[method] if v != "bf16" or native]
            for rnd in range(args.rounds):
                for variant in names[rnd % len(names):] + names[:rnd % len(names)]:  # a different order each round
                    sink = [] if args.profile and method == "dpo" and rnd == 0 and variant in ("before", "after") else None
                    try:
                        r = measure(method, variant, run_dir, base, Path(tmp) / f"{method}-{variant}-{rnd}", sink)
                    except Exception as e:  # a variant TRL refuses on this device: say so, keep the rest
                        r = {"error": f"{type(e).__name__}: {e}"[:300]}
                    if sink:
                        profiles[variant] = sink[0]
                    rows.append({"method": method, "variant": variant, "round": rnd, **r, "profiled": sink is not None})
                    print(rows[-1], flush=True)
                    write(summarize(rows, peak, base, device, data), profiles)  # so far: a killed run keeps its rows
                    gc.collect()


def summarize(rows: list[dict], peak: dict, base: dict, device: str, data: str) -> dict:
    """Median tokens/s per variant, after/before and each lever over before, FLOPs and the fraction of the peak."""
    import statistics

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/train.py " + " ".join(sys.argv[1:]), "device": device, "data": data,
              "machine": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
              "versions": {p: version(p) for p in ("torch", "transformers", "trl", "peft")}, "settings": base,
              "matmul_peak": peak, "rows": rows, "variants": {}}
    for method in dict.fromkeys(r["method"] for r in rows):
        fpt = flops_per_token(method)
        med = {}
        for variant in dict.fromkeys(r["variant"] for r in rows if r["method"] == method):
            ok = [r for r in rows if r["method"] == method and r["variant"] == variant and "tokens_per_s" in r
                  and not r.get("profiled")]  # the profiler slows its step several times over
            if ok:
                med[variant] = statistics.median(r["tokens_per_s"] for r in ok)
        for variant, tps in med.items():
            gflops = tps * fpt / 1e9
            top = peak["bf16_gflops"] if variant == "bf16" else peak["fp32_gflops"]
            result["variants"][f"{method}/{variant}"] = {
                "tokens_per_s": tps, "over_before": round(tps / med["before"], 3) if "before" in med else None,
                "gflops": round(gflops, 1), "fraction_of_peak": round(gflops / top, 3)}
        if method == "reward" and "before" in med and not peak["native_bf16"]:
            result["variants"]["reward/before"]["note"] = "after = before here: bf16 is not native on this CPU"
    return result


def write(result: dict, profiles: dict) -> None:
    """bench/results/train.json, train.md (and train-profile.md with profiles)."""
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    s, p = result["settings"], result["matmul_peak"]
    lines = [f"# Training throughput ({result['date']})", "",
             f"`{result['command']}` on {result['device']}, load average {', '.join(f'{x:.1f}' for x in result['load_average'])} "
             f"at the end (a shared machine: only ratios within this run count); embedded model, fp32 unless bf16; "
             f"{s['max_steps']} steps, batch {s['per_device_train_batch_size']}, max_length {s['max_length']}; data "
             f"{result['data']}.", "",
             f"Matmul peak on {p['threads']} threads ({p['cores']} cores): fp32 {p['fp32_gflops']} GFLOP/s, bf16 "
             f"{p['bf16_gflops']} GFLOP/s (native bf16: {p['native_bf16']}).", "",
             "Tokens/s: non-padding tokens over init + train seconds. GFLOP/s: DPO 8 N T, reward 6 N' T (bench/train.py). "
             "Medians leave out the profiled runs (their last step ran under torch.profiler).", "",
             "| method | variant | round | init s | train s | tokens | tokens/s | threads | losses |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "tokens_per_s" in r:
            lines.append(f"| {r['method']} | {r['variant']}{' (profiled)' if r.get('profiled') else ''} | {r['round']} | "
                         f"{r['init_seconds']} | {r['train_seconds']} | "
                         f"{r['tokens']} | {r['tokens_per_s']} | {r['threads_in_training']} | {r['losses']} |")
        else:
            lines.append(f"| {r['method']} | {r['variant']} | {r['round']} | failed: {r['error']} | | | | | |")
    lines += ["", "| method/variant | tokens/s (median) | over before | GFLOP/s | fraction of peak |", "|---|---|---|---|---|"]
    for k, v in result["variants"].items():
        lines.append(f"| {k} | {v['tokens_per_s']} | {v['over_before']} | {v['gflops']} | {v['fraction_of_peak']} |"
                     + (f" {v['note']}" if "note" in v else ""))
    (out / "train.md").write_text("\n".join(lines) + "\n")
    if profiles:
        text = [f"# One DPO step, top ops by self CPU time ({result['date']})", "", f"`{result['command']}`; the last "
                "step of each variant's run in that command.", ""]
        for variant, table in profiles.items():
            text += [f"## {variant}", "", "```", table, "```", ""]
        (out / "train-profile.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
