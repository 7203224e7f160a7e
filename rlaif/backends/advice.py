"""Settings known to be slow on the engine that runs them: one line each, said at the start of a run.

The figures are measured (docs/method.md §11, bench/sampling.py, bench/dtype.py); a note never changes a setting.
"""

from __future__ import annotations

from ..hardware import native_bf16
from ..spec.config import Pipeline

LOCAL = ("vllm", "hf")  # engines that run here, on this machine's processor


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def slow_settings(pipeline: Pipeline) -> list[str]:
    """One note per setting of this pipeline that is known to be slow on this machine's engines."""
    if not _on_cpu():
        return []
    notes = []
    roles = {"models.policy": pipeline.models.policy, "models.critic": pipeline.models.critic,
             "models.judge": pipeline.models.judge}
    for where, cfg in roles.items():
        if cfg is not None and cfg.backend in LOCAL and cfg.dtype == "bfloat16" and not native_bf16():
            notes.append(f"{where}.dtype bfloat16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so it is emulated; "
                         "generation measured ~3x slower than float32 here (`dtype: auto` picks float32)")
    sampled = {"stages.respond": (pipeline.stages.respond, pipeline.models.policy),
               "stages.critique": (pipeline.stages.critique, pipeline.critic)}
    for where, (stage, cfg) in sampled.items():
        if stage is not None and cfg.backend in LOCAL and stage.top_p < 1 and stage.temperature > 0:
            notes.append(f"{where}.top_p {stage.top_p}: on a CPU the nucleus filter sorts the whole vocabulary every token "
                         "(0.95 measured up to 4.1x slower with the embedded model); `min_p` truncates at no measured cost")
    return notes

