"""Minimum-norm solution Y X^+ and FA's implicit bias towards it (docs/background.rst)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import biofa.nn as bnn
from biofa.analysis import (distance_to_min_norm, effective_weight, min_norm_solution,
                            weight_alignment)
from biofa.errors import ConfigError, ShapeError


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 6), st.integers(0, 2**31 - 1))
def test_min_norm_closed_form(k, N, extra, seed):
    rng = np.random.default_rng(seed)
    d = N + extra  # d >= N: X (d, N) has full column rank almost surely
    X, Y = rng.standard_normal((d, N)), rng.standard_normal((k, N))
    W = min_norm_solution(X, Y)
    assert isinstance(W, np.ndarray) and W.shape == (k, d)
    np.testing.assert_allclose(W @ X, Y, atol=1e-9)  # interpolates
    # minimum norm: numpy's lstsq returns the least-norm solution of X^T W^T = Y^T
    np.testing.assert_allclose(W, np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T, atol=1e-9)
    # its rows lie in the column space of X: W = A X^T
    A = np.linalg.lstsq(X, W.T, rcond=None)[0].T
    np.testing.assert_allclose(A @ X.T, W, atol=1e-9)
    Wt = min_norm_solution(torch.from_numpy(X), torch.from_numpy(Y))
    assert torch.is_tensor(Wt) and np.allclose(Wt.numpy(), W)
    assert distance_to_min_norm(W, X, Y) == pytest.approx(0.0, abs=1e-12)


def test_distance_closed_form(f64):
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(8, 3, generator=g), torch.randn(2, 3, generator=g)
    W = min_norm_solution(X, Y)
    assert distance_to_min_norm(torch.zeros_like(W), X, Y) == pytest.approx(1.0, abs=1e-15)
    assert distance_to_min_norm(3 * W, X, Y) == pytest.approx(2.0, abs=1e-12)
    # another interpolating solution: add Z orthogonal to the columns of X
    P = torch.eye(8) - X @ torch.linalg.pinv(X)
    Z = torch.randn(2, 8, generator=g) @ P
    torch.testing.assert_close((W + Z) @ X, Y)
    assert distance_to_min_norm(W + Z, X, Y) == pytest.approx(float(Z.norm() / W.norm()), rel=1e-10)
    # a 1-D target is one output row
    assert min_norm_solution(X, Y[0]).shape == (1, 8)
    with pytest.raises(ShapeError, match="samples as columns"):
        min_norm_solution(X, torch.randn(2, 4))
    with pytest.raises(ShapeError, match="W_eff"):
        distance_to_min_norm(torch.zeros(3, 8), X, Y)
    with pytest.raises(ConfigError, match="zero"):
        distance_to_min_norm(W, X, torch.zeros(2, 3))


def test_effective_weight(f64):
    model = nn.Sequential(bnn.Linear(5, 4, bias=False), nn.Identity(), bnn.Linear(4, 3, bias=False))
    x = torch.randn(7, 5)
    W = effective_weight(model)
    torch.testing.assert_close(model(x).detach(), x @ W.T)
    torch.testing.assert_close(effective_weight([model[0].weight, model[2].weight]), W)
    with pytest.raises(ShapeError):
        effective_weight([torch.ones(4, 5), torch.ones(3, 5)])
    with pytest.raises(ConfigError):
        effective_weight([])


def _train_two_layer_fa(scale, k, *, d=100, N=30, h=50, steps=1000, lr=0.1, seed=0):
    """Full-batch GD with FA on 0.5 |W2 W1 X - Y|^2, W drawn Xavier-uniform times ``scale``.

    Returns the model, the data, W1 at the start and the final loss."""
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(d, N, generator=g) / math.sqrt(d), torch.randn(k, N, generator=g)
    model = nn.Sequential(bnn.Linear(d, h, bias=False, generator=g), bnn.Linear(h, k, bias=False, generator=g))
    with torch.no_grad():
        for layer in model:
            layer.weight.mul_(scale)  # B keeps its Xavier scale
    W1_0 = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((model(X.T) - Y.T) ** 2).sum()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-12  # both runs interpolate the data
    return model, X, Y, W1_0, float(loss.detach())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 10])
def test_fa_distance_to_min_norm_is_the_frozen_null_space_part(f64, k, seed):
    """FA's update of W1 is -lr B2^T E X^T: its rows lie in span(X), so W1 P = W1(0) P for the
    projector P = I - X X^+ onto span(X)'s complement. Once W2 W1 X = Y, W_eff (I - P) = Y X^+
    = W_mn, hence W_eff - W_mn = W2(T) W1(0) P exactly: the distance to the minimum-norm solution is
    the initial null-space part of W1 seen through W2, which a small init makes small
    (|W2 W1(0) P| <= |W2|_2 |W1(0) P|_F) and a large init does not."""
    for scale in (1e-3, 1.0):
        model, X, Y, W1_0, loss = _train_two_layer_fa(scale, k, seed=seed)
        W_mn, Xp = min_norm_solution(X, Y), torch.linalg.pinv(X)
        P = torch.eye(X.shape[0]) - X @ Xp
        W2 = model[1].weight.detach()
        frozen = float((W2 @ W1_0 @ P).norm() / W_mn.norm())
        # residual R = W_eff X - Y (|R| = sqrt(2 loss)) moves W_eff (I - P) by R X^+
        tol = math.sqrt(2 * loss) * float(torch.linalg.matrix_norm(Xp, 2)) / float(W_mn.norm())
        dist = distance_to_min_norm(effective_weight(model), X, Y)
        assert abs(dist - frozen) <= tol + 1e-12
        assert frozen <= float(torch.linalg.matrix_norm(W2, 2) * (W1_0 @ P).norm() / W_mn.norm()) * (1 + 1e-12)
        if scale == 1.0:
            assert dist > 1e3 * tol  # the frozen part is visible far above the residual's effect
        if k == 1 and scale == 1e-3:  # scalar output: W_2 becomes aligned with its feedback B_2
            w2, b2 = model[1].weight, model[1].feedback.matrix()
            assert math.cos(math.radians(weight_alignment(w2, b2))) > 1 - 1e-6
