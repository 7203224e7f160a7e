"""What this machine's processor does fast: engines and trainers choose their number format by it."""

from __future__ import annotations

import functools


@functools.cache
def native_bf16() -> bool:
    """Whether bf16 matrix products run in hardware: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 or AMX.

    Elsewhere torch emulates bf16: on a 2-core AVX2 EPYC a 1024x1024 bf16 matmul ran at 0.84 GFLOP/s against
    103 GFLOP/s in float32 (bench/results/dtype.md).
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def engine_dtype(setting: str) -> str:
    """The number format a generation engine runs in: `auto` is bf16 where it is native, float32 on other CPUs.

    On a GPU `auto` is left to the engine (the model's own dtype, vLLM casts bf16 to fp16 on GPUs without bf16).
    """
    import torch

    if setting != "auto" or torch.cuda.is_available():
        return setting
    return "bfloat16" if native_bf16() else "float32"
