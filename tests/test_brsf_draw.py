"""brSF's counter-based draw: the distribution it claims, independence across steps and synapses,
determinism per (seed, step), the same magnitudes in every dtype and through both code paths.

Distribution: each 32-bit word of the hash gives two 16-bit k; k + 2^15 is meant to be uniform on
{0, …, 2^16 − 1} and |R| = a (k + 2^15 + 1/2) / 2^16 the midpoint discretisation of U[0, a]. Its
CDF differs from the continuous one by at most 1/2^17 ≈ 7.6e-6, far below the KS test's
resolution at the sample sizes here (critical D ≈ 1.36/√n ≥ 1.4e-3), so the KS test against
U[0, a] is a test of the generator alone. Tests at level α = 1e-3 each; a correct generator fails
one of them with probability < 1% (fixed seeds: the outcome is deterministic).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import biofa.feedback as fb
from biofa.feedback import functional as F

ALPHA = 1e-3
N = 200_000


def draw(step, seed=12345, shape=(N,), bound=1.0, workspace=None):
    return F.uniform_magnitudes(shape, bound, torch.tensor(seed), torch.tensor(step), workspace)


@pytest.mark.parametrize("step", [0, 1, 2**31 + 7, 2**40])
def test_uniform_on_the_interval(step):
    r = draw(step).numpy().astype(np.float64)
    assert stats.kstest(r, "uniform").pvalue > ALPHA
    levels = np.round(r * 2**16 - 0.5)
    assert np.array_equal(levels, r * 2**16 - 0.5) and levels.min() >= 0 and levels.max() <= 2**16 - 1
    # the 16 bits one by one: each is a fair coin (both halves of the hash word are used)
    k = levels.astype(np.int64)
    for bit in range(16):
        ones = int(((k >> bit) & 1).sum())
        assert stats.binomtest(ones, N, 0.5).pvalue > ALPHA / 16, bit


@pytest.mark.parametrize("gap", [1, 2, 1024, 65536])
def test_independent_across_steps(gap):
    """The joint histogram of the same synapses at steps t and t + gap is flat (χ² on 32×32 cells)."""
    for t in (0, 999):
        a, b = draw(t).numpy(), draw(t + gap).numpy()
        cells, _, _ = np.histogram2d(a, b, bins=32, range=[[0, 1], [0, 1]])
        assert stats.chisquare(cells.ravel()).pvalue > ALPHA
        assert abs(np.corrcoef(a, b)[0, 1]) < 4.5 / np.sqrt(N)


def test_independent_across_neighbouring_synapses_and_seeds():
    r = draw(5).numpy()
    for a, b in ((r[0::2], r[1::2]), (r[:-1], r[1:]), (r, draw(5, seed=12346).numpy())):
        cells, _, _ = np.histogram2d(a, b, bins=32, range=[[0, 1], [0, 1]])
        assert stats.chisquare(cells.ravel()).pvalue > ALPHA


def test_deterministic_per_seed_and_step_and_the_same_in_both_paths():
    shape = (37, 29)  # an odd count: the last word's high half is unused
    ref = draw(7, shape=shape)
    assert ref.shape == shape and ref.dtype == torch.float32
    assert torch.equal(ref, draw(7, shape=shape))
    assert not torch.equal(ref, draw(8, shape=shape)) and not torch.equal(ref, draw(7, seed=1, shape=shape))
    words = -(-ref.numel() // 2)
    space = (torch.empty(words, dtype=torch.int32), torch.empty(ref.numel()))
    assert torch.equal(draw(7, shape=shape, workspace=space), ref)  # the in-place eager path
    # the first n of a larger draw: synapse i's magnitude depends on (seed, step, i) only
    assert torch.equal(draw(7, shape=(ref.numel() + 10,))[:ref.numel()], ref.flatten())


def test_counter_key_mixes_every_half():
    keys = {int(F.counter_key(torch.tensor(s), torch.tensor(t)))
            for s in (0, 1, 2**32, 2**32 + 1) for t in (0, 1, 2**32, 2**32 + 1)}
    assert len(keys) == 16


def test_the_same_magnitudes_in_every_dtype():
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        layer_w = torch.randn(40, 30)
        rule = fb.BRSF()
        rule.bind(_Holder(layer_w))
        r32 = rule.magnitudes(layer_w, 3).clone()
        rule._cache = None
        assert torch.equal(rule.magnitudes(layer_w.to(dtype), 3), r32.to(dtype))


class _Holder(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.weight = torch.nn.Parameter(w)
        self.init = "xavier"
