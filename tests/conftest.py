"""Shared test configuration: deterministic seeds, one thread, strict warnings (pyproject)."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("BIOFA_TEST_THREADS", "1")))

settings.register_profile(
    "biofa", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("biofa")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def f64():
    """Run a test with float64 as torch's default dtype (math tests)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)
