"""Training speed that leaves the math alone: bf16 only where the hardware has it, the LM head on labelled tokens only."""

from __future__ import annotations

from contextlib import contextmanager

from ..hardware import native_bf16


def precision_defaults() -> dict:
    """TRL config defaults for precision: bf16 autocast (over float32 master weights) where bf16 is native, else fp32.

    Where it is not native (a CPU without AVX-512 BF16 or AMX), torch emulates bf16 matmuls, ~100x slower than fp32.
    """
    return {"bf16": native_bf16()}


@contextmanager
def labelled_tokens_only():
    """Within it, TRL's fused LM head projects only the positions that have a label, on CPU too.

    TRL (trainer/utils.py `add_fused_lm_head`) scores only the labelled positions on CUDA and XPU, and every
    position elsewhere, so that Neuron's compiled tile shapes stay fixed; the other positions are then zeroed. On the
    CPU that spends most of a DPO step on prompt and padding positions through a 262k-entry head. Each labelled
    token's log-probability is the same dot products either way, so the loss is unchanged (pinned by
    tests/train/test_speed.py). Eager CPU has no shapes to keep fixed.
    """
    from trl.trainer import utils

    original = getattr(utils, "_use_triton", None)  # the switch of that choice (TRL 1.16)
    if original is None:  # a TRL without it: every position is scored again, slower, same loss; the test notices
        yield
        return
    utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        utils._use_triton = original
