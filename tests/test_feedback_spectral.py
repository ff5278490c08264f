"""``scale="sn-spectral"``: B rescaled so that its spectral norm equals W's (float64).

W and B are viewed as (out, in·k) matrices. Exact mode (``power_iterations=0``) must match to
rounding; power iteration must satisfy its convergence bound
:math:`1 - \\hat\\sigma^2/\\sigma_1^2 \\le \\tan^2\\theta_0 (\\sigma_2/\\sigma_1)^{4k-2}`.
"""

import pytest
import torch

import biofa.nn as bnn
from biofa.errors import ConfigError
from biofa.feedback import functional as F

RULES = ["usf", "frsf", "brsf"]


def sigma(a):
    return torch.linalg.svdvals(a.reshape(a.shape[0], -1))


def power_bound(a, u0, k):
    """tan²θ0 (σ2/σ1)^(4k-2): the bound on 1 - σ̂²/σ1² after k steps from u0."""
    left, s, _ = torch.linalg.svd(a.reshape(a.shape[0], -1))
    c = left.T @ (u0 / u0.norm())
    tan2 = (1 - c[0] ** 2) / c[0] ** 2
    return float(tan2 * (s[1] / s[0]) ** (4 * k - 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(7, 13), (6, 3, 3, 3), (20, 20)])
def test_power_iteration_is_below_and_within_its_bound(f64, seed, shape):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=gen)
    u0 = torch.randn(shape[0], generator=gen)
    u0 = u0 / u0.norm()
    s1 = sigma(a)[0]
    exact, _ = F.spectral_norm(a)
    torch.testing.assert_close(exact, s1, rtol=1e-14, atol=0)
    for k in (1, 2, 5, 20):
        est, u = F.spectral_norm(a, u0, k)
        assert est <= s1 * (1 + 1e-14)
        assert 1 - (est / s1) ** 2 <= power_bound(a, u0, k) + 1e-14
        torch.testing.assert_close(u.norm(), torch.tensor(1.0), rtol=1e-14, atol=0)


def _train(layer, steps, lr=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    shape = (8, layer.weight.shape[1]) if layer.weight.dim() == 2 else (4, layer.weight.shape[1], 6, 6)
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(shape, generator=gen, requires_grad=True)
        layer(x).square().mean().backward()
        opt.step()


def _layer(kind, rule, k, sign="fixed"):
    fb = {"rule": rule, "scale": "sn-spectral", "power_iterations": k}
    if kind == "linear":
        return bnn.Linear(15, 9, feedback=fb, sign=sign)
    return bnn.Conv2d(3, 5, 3, feedback=fb, sign=sign)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("rule", RULES)
def test_exact_mode_matches_the_spectral_norm_every_step(f64, kind, rule):
    layer = _layer(kind, rule, 0)
    for _ in range(4):
        _train(layer, 1)
        w, b = layer.weight.detach(), layer.feedback.matrix()
        torch.testing.assert_close(sigma(b)[0], sigma(w)[0], rtol=1e-13, atol=0)
        assert torch.equal(torch.sign(b), torch.sign(w))
    assert layer.feedback.u_weight is None and "u_weight" not in layer.state_dict()


@pytest.mark.parametrize("rule", RULES)
def test_backward_uses_the_rescaled_b_and_advances_the_vectors(f64, rule):
    layer = _layer("linear", rule, 1)
    _train(layer, 3)
    fb = layer.feedback
    w = layer.weight.detach()
    unscaled = fb._unscaled(w, None)
    expected, u_b, u_w = F.match_spectral_norm(unscaled, w, 1, fb.u_feedback.clone(), fb.u_weight.clone())
    x = torch.randn(4, 15, requires_grad=True)
    g = torch.randn(4, 9)
    layer(x).backward(g)
    torch.testing.assert_close(x.grad, g @ expected, rtol=1e-14, atol=1e-15)
    assert torch.equal(fb.u_feedback, u_b) and torch.equal(fb.u_weight, u_w)
    assert torch.equal(torch.sign(expected), torch.sign(w))


@pytest.mark.parametrize("rule", ["usf", "frsf"])
def test_power_mode_converges_on_a_fixed_w_within_the_bound(f64, rule):
    layer = _layer("linear", rule, 1, sign=None)
    fb = layer.feedback
    w = layer.weight.detach()
    b0 = fb._unscaled(w, None)
    uw0, ub0 = fb.u_weight.clone(), fb.u_feedback.clone()
    k = 60
    for _ in range(k - 1):  # W never moves: every backward is one more step of the same iteration
        layer(torch.randn(2, 15, requires_grad=True)).sum().backward()
    b = fb.matrix()  # the k-th step
    eps = power_bound(w, uw0, k) + power_bound(b0, ub0, k)  # each σ̂²/σ² is within its bound
    ratio = float(sigma(b)[0] / sigma(w)[0])
    assert abs(ratio**2 - 1) <= 2 * eps + 1e-13


@pytest.mark.parametrize("rule", RULES)
def test_state_dict_round_trip_continues_identically(f64, rule):
    a = _layer("conv", rule, 1)
    _train(a, 3)
    b = _layer("conv", rule, 1)
    b.load_state_dict(a.state_dict())
    for key in ("feedback.u_weight", "feedback.u_feedback"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    x = torch.randn(2, 3, 6, 6)
    g = torch.randn(2, 5, 4, 4)
    grads = []
    for layer in (a, b):
        xi = x.clone().requires_grad_(True)
        layer(xi).backward(g)
        grads.append(xi.grad)
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(a.feedback.u_weight, b.feedback.u_weight)


def test_bad_power_iterations_and_clone(f64):
    with pytest.raises(ConfigError, match="power_iterations"):
        bnn.Linear(3, 2, feedback={"rule": "usf", "scale": "sn-spectral", "power_iterations": -1})
    layer = bnn.Linear(3, 2, feedback={"rule": "frsf", "scale": "sn-spectral", "power_iterations": 3})
    assert layer.feedback.clone().config() == {"scale": "sn-spectral", "init": None, "power_iterations": 3}


def test_sn_stays_frobenius(f64):
    layer = bnn.Linear(12, 9, feedback={"rule": "usf", "scale": "sn"})
    torch.testing.assert_close(layer.feedback.matrix().norm(), layer.weight.detach().norm(), rtol=1e-15, atol=0)
    assert "feedback.u_weight" not in layer.state_dict()
