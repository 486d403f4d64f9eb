"""GPU-marked tests (``@pytest.mark.gpu``): run on a CUDA machine, skipped with a reason elsewhere.

On the lent GPU machine ``bash benchmarks/gpu_check.sh`` runs them (``pytest -m gpu tests/gpu``);
on a CPU-only machine ``pytest tests`` reports them as skipped, never as errors.
"""

import pytest
import torch

SKIP_REASON = "needs a CUDA GPU (run on the lent GPU machine: bash benchmarks/gpu_check.sh)"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def exact_fp32_matmuls():
    """fp32 matmuls in full fp32 for the duration of a test (TF32 keeps 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved
