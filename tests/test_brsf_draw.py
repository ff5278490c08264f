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
from torch.func import functional_call

import biofa.feedback as fb
import biofa.nn as bnn
from biofa.feedback import functional as F
from biofa.init import init_bound

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


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, 2**32, 2**62 - 1])
def test_counter_key_of_python_ints_is_the_tensor_key(seed):
    """Eager calls key the draw in Python ints: the same 32 bits as the traced tensor key."""
    for step in (0, 1, 2**31, 2**32 + 3, 2**40):
        assert F.counter_key(seed, step) == int(F.counter_key(torch.tensor(seed), torch.tensor(step)))
    with pytest.raises(ValueError, match="non-negative"):
        F.counter_key(-1, 0)


def test_level_sign_feedback_is_sign_times_magnitudes_bit_for_bit():
    """B from the levels (sign, then one addcmul) = sign(W) ∘ |R|, every bit, zeros of W included."""
    shape, bound = (300, 77), 0.37
    w = torch.randn(shape)
    w[::7, ::3] = 0.0
    w[1::11, ::5] = -0.0
    key = F.counter_key(99, 4)
    levels = F.keyed_levels(shape, key, torch.device("cpu"))
    expected = F.random_magnitude_sign_feedback(w, F.keyed_magnitudes(shape, bound, key, torch.device("cpu")),
                                                nonnegative=True)
    got = F.level_sign_feedback(w, levels, F.magnitude_scale(bound))
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
    out = torch.empty(shape)
    assert F.level_sign_feedback(w, levels, F.magnitude_scale(bound), out) is out
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))


def test_every_workspace_gives_the_same_draw():
    shape = (37, 29)
    ref = draw(7, shape=shape)
    words, n = -(-ref.numel() // 2), ref.numel()
    key = F.counter_key(12345, 7)
    for space in ((torch.empty(words, dtype=torch.int32), torch.empty(n)),
                  (torch.empty(words, dtype=torch.int32), torch.empty(n + 5), F.weyl_counter(words))):
        assert torch.equal(F.keyed_magnitudes(shape, 1.0, key, workspace=space), ref)
    assert torch.equal(F.keyed_magnitudes(shape, 1.0, torch.tensor(key, dtype=torch.int32)), ref)


def _recorded_draws(monkeypatch):
    shapes = []
    real = F.keyed_levels

    def record(shape, *args, **kwargs):
        shapes.append(tuple(shape))
        return real(shape, *args, **kwargs)

    monkeypatch.setattr(F, "keyed_levels", record)
    return shapes


@pytest.mark.parametrize("input_grad", [False, True])
def test_the_backward_draws_only_where_an_input_gradient_is_sent(monkeypatch, input_grad):
    """The first layer of a network whose data needs no gradient never draws |R_t|; the others
    draw once per step, however many backward passes the step has."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(bnn.Linear(6, 5, feedback="brsf", generator=g), torch.nn.ReLU(),
                                bnn.Linear(5, 4, feedback="brsf", generator=g))
    fb.reset_step(3)
    shapes = _recorded_draws(monkeypatch)
    x = torch.randn(8, 6, requires_grad=input_grad)
    for _ in range(2):
        model(x).square().sum().backward()
    once = [(4, 5), (5, 6)] if input_grad else [(4, 5)]
    assert shapes == once
    fb.next_step()
    model(x).square().sum().backward()
    assert shapes == once + once


def test_a_graph_kept_past_a_step_sends_its_own_steps_error():
    """The forward captures the key of its step: backpropagating after the optimizer has stepped
    (and after another forward has drawn the next step) uses B_t, not B_{t+1}."""
    layer = bnn.Linear(7, 6, feedback="brsf")
    w = layer.weight.detach()
    fb.reset_step(10)
    x, g = torch.randn(3, 7, requires_grad=True), torch.randn(3, 6)
    out = layer(x)
    fb.next_step()
    layer(torch.randn(3, 7, requires_grad=True)).sum().backward()  # step 11 drawn into the workspace
    out.backward(g)
    b10 = torch.sign(w) * layer.feedback.magnitudes(w, 10)
    assert torch.equal(x.grad, g @ b10)
    assert not torch.equal(b10.abs(), layer.feedback.matrix().abs())


def test_functional_call_with_another_seed_draws_from_that_seed():
    layer = bnn.Linear(5, 4, feedback="brsf")
    w = layer.weight.detach()
    fb.reset_step(2)
    x, g = torch.randn(3, 5, requires_grad=True), torch.randn(3, 4)
    functional_call(layer, {"feedback.seed": torch.tensor(777)}, (x,)).backward(g)
    r777 = F.uniform_magnitudes(w.shape, init_bound(w.shape, "xavier"), torch.tensor(777), torch.tensor(2))
    assert torch.equal(x.grad, g @ (torch.sign(w) * r777))
    x.grad = None
    layer(x).backward(g)  # the module's own seed again
    assert torch.equal(x.grad, g @ layer.feedback.matrix())
    assert not torch.equal(layer.feedback.matrix().abs(), r777)


@pytest.mark.parametrize("count", [1, 2, 999, 1000])
def test_the_per_synapse_hash_of_traced_graphs_is_the_word_wise_draw(count):
    # compiled graphs draw synapse by synapse (one fused loop); eager draws two halves per word
    for key in (0, 1, -1, 2**31 - 1, -(2**31), 123456789):
        ref = F.keyed_levels((count,), torch.tensor(key, dtype=torch.int32))
        got = F._levels_per_synapse(count, torch.tensor(key, dtype=torch.int32), torch.device("cpu"))
        assert torch.equal(got, ref), key
