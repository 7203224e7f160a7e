"""What the machine computes fast: the one place that asks whether bf16 is native here."""

from __future__ import annotations


def native_bf16() -> bool:
    """Whether bf16 matmuls run natively here: a CUDA device with bf16, or a CPU with AVX-512 BF16 or AMX tiles."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # without these units torch emulates bf16 on the CPU, ~100x slower than fp32 (docs/method.md, "Training speed")
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
