"""The number format follows the processor: bf16 where it is native, float32 on CPUs that emulate it."""

from __future__ import annotations

import pytest
import torch

from rlaif import hardware
from rlaif.backends import pool
from rlaif.spec.config import ModelConfig


@pytest.fixture
def cpu(monkeypatch):
    """A CPU-only machine whose bf16 support the test sets: `cpu(True)` or `cpu(False)`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def set_native(native: bool):
        hardware.native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)

    yield set_native
    hardware.native_bf16.cache_clear()


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_is_bf16_only_where_the_cpu_has_it(cpu, native, expected):
    cpu(native)
    assert hardware.native_bf16() is native
    assert hardware.engine_dtype("auto") == expected
    assert hardware.engine_dtype("bfloat16") == "bfloat16" and hardware.engine_dtype("float32") == "float32"  # as asked


def test_the_default_engine_runs_float32_on_a_cpu_without_bf16(cpu, monkeypatch):
    """Regression: the default vllm engine ran in bf16 on every CPU; on an AVX2 EPYC without AVX-512 BF16 bf16 is
    emulated and generation ran ~3x slower than float32 (bench/results/dtype.md)."""
    cpu(False)
    seen = {}

    class Engine:
        def __init__(self, path, **kwargs):
            seen.update(kwargs)

    import rlaif.backends.vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "VLLMGenerator", Engine)
    monkeypatch.setattr(pool, "resolve_model", lambda name: "/models/x")
    pool.load_engine(ModelConfig(model="/models/x"))
    assert seen["dtype"] == "float32"
    pool.load_engine(ModelConfig(model="/models/x", dtype="bfloat16"))
    assert seen["dtype"] == "bfloat16"  # a setting the user wrote is kept (the run says it is slow: test_advice)
