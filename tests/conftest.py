"""Shared test configuration: deterministic seeds, one thread, strict warnings (pyproject)."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("BIOFA_TEST_THREADS", "1")))

# Hypothesis draws new examples on every run. So that a failure reproduces: locally, the failing
# example is printed with the @reproduce_failure blob that replays it (print_blob); in CI (the
# environment variable CI set, as GitHub Actions, GitLab CI and most others do), the examples are
# derandomized (a fixed sequence per test, no example database), so every CI run tries the same
# examples and a failure there fails again on rerun and on any machine with CI set (Hypothesis's own
# test: the variable exists). BIOFA_HYPOTHESIS_PROFILE=biofa-ci (or biofa) chooses explicitly.
settings.register_profile(
    "biofa", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("biofa-ci", settings.get_profile("biofa"), derandomize=True, database=None)
settings.load_profile(os.environ.get("BIOFA_HYPOTHESIS_PROFILE") or ("biofa-ci" if "CI" in os.environ else "biofa"))


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
