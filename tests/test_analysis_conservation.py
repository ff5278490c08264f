"""FA conservation laws (docs/background.rst, "Conservation laws"): closed forms, gradient flow,
discrete drift, diagnostic."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from torch import nn

import biofa.nn as bnn
from biofa.analysis import (balancedness, conservation_diagnostic, drift, feedback_chain,
                            linear_invariants, relu_invariants)
from biofa.constraints import Dale
from biofa.errors import ConfigError, ShapeError


def _chain_model(widths, relu, generator, feedback="fa", bias=True):
    mods = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i and relu:
            mods.append(nn.ReLU())
        mods.append(bnn.Linear(a, b, bias=bias, feedback=feedback, generator=generator))
    model = nn.Sequential(*mods)
    if bias:
        with torch.no_grad():
            for m in model:
                if isinstance(m, bnn.Linear):
                    m.bias.normal_(0, 0.3, generator=generator)
    return model


# -- closed forms -----------------------------------------------------------------------------
@given(st.lists(st.integers(1, 5), min_size=3, max_size=5), st.integers(0, 2**31 - 1))
def test_invariants_match_elementwise_formulas(widths, seed):
    g = torch.Generator().manual_seed(seed)
    L = len(widths) - 1
    Ws = [torch.randn(widths[l + 1], widths[l], generator=g, dtype=torch.float64) for l in range(L)]
    Bs = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in Ws]
    bs = [torch.randn(w.shape[0], generator=g, dtype=torch.float64) for w in Ws]
    C = linear_invariants(Ws, Bs, bs=bs)
    c = relu_invariants(Ws, bs, Bs)
    assert len(C) == len(c) == L - 1
    for l in range(L - 1):
        W, Wn, Bn, b = Ws[l].numpy(), Ws[l + 1].numpy(), Bs[l + 1].numpy(), bs[l].numpy()
        n = W.shape[0]
        expect = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                expect[i, j] = (W[i] @ W[j] + b[i] * b[j]
                                - Bn[:, i] @ Wn[:, j] - Wn[:, i] @ Bn[:, j])
        np.testing.assert_allclose(C[l].numpy(), expect, rtol=1e-12, atol=1e-12)
        cexp = np.array([W[i] @ W[i] + b[i] ** 2 - 2 * Wn[:, i] @ Bn[:, i] for i in range(n)])
        np.testing.assert_allclose(c[l].numpy(), cexp, rtol=1e-12, atol=1e-12)
        # the ReLU law is the diagonal of the linear one
        np.testing.assert_allclose(c[l].numpy(), np.diag(C[l].numpy()), rtol=1e-12, atol=1e-12)
        # layer-wise alignment identity: 2<W_{l+1}, B_{l+1}> = |W_l|^2 + |b_l|^2 - sum_i c_i
        lhs = 2 * float((Wn * Bn).sum())
        rhs = float((W**2).sum() + (b**2).sum() - c[l].sum())
        assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_invariant_inputs_equivalent_forms(f64):
    g = torch.Generator().manual_seed(3)
    model = _chain_model([4, 5, 3, 2], relu=True, generator=g)
    Ws, bs, Bs = feedback_chain(model)
    from_model = relu_invariants(model)
    short = relu_invariants(Ws, bs, Bs[1:])       # B_2..B_L
    full = relu_invariants(Ws, bs, [None, *Bs[1:]])  # B_1 unused
    for a, b, c in zip(from_model, short, full):
        assert torch.equal(a, b) and torch.equal(a, c)
    # the chain is a copy: training does not change a stored initial value
    before = [w.clone() for w in Ws]
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, Ws))
    # balancedness is the law with B = W
    bal = balancedness(Ws, bs)
    lin = linear_invariants(Ws, Ws, bs=bs)
    for a, b, W, Wn in zip(bal, lin, Ws, Ws[1:]):
        torch.testing.assert_close(a - b, Wn.T @ Wn, rtol=1e-12, atol=1e-12)


def test_invariant_errors(f64):
    W1, W2 = torch.zeros(3, 4), torch.zeros(2, 3)
    with pytest.raises(ShapeError, match="B_2"):
        linear_invariants([W1, W2], [None, torch.zeros(3, 2)])
    with pytest.raises(ShapeError, match="not a chain"):
        linear_invariants([W1, torch.zeros(2, 5)], [torch.zeros(2, 5)])
    with pytest.raises(ConfigError, match="feedback matrices"):
        linear_invariants([W1, W2], [W1, W2, W2])
    with pytest.raises(ConfigError, match="at least two"):
        relu_invariants([W1], None, [W1])
    with pytest.raises(ShapeError, match="b_1"):
        relu_invariants([W1, W2], [torch.zeros(4), None], [W2])
    conv = nn.Sequential(bnn.Conv2d(1, 2, 3), bnn.Linear(2, 2))
    with pytest.raises(ConfigError, match="Conv2d"):
        feedback_chain(conv)
    dfa = bnn.convert(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), feedback="dfa")
    with pytest.raises(ConfigError, match="DFA"):
        relu_invariants(dfa)
    with pytest.raises(ShapeError, match="not a chain"):
        feedback_chain(nn.Sequential(bnn.Linear(3, 4), bnn.Linear(5, 2)))


def test_drift_closed_form(f64):
    a = [torch.tensor([3.0, 4.0]), torch.tensor([[0.0]])]
    b = [torch.tensor([3.0, 4.0 + 0.5]), torch.tensor([[1.2]])]
    assert drift(a, b) == pytest.approx(math.sqrt(0.25 + 1.44) / 5.0, rel=1e-14)
    assert drift(a, b, scale=2.0) == pytest.approx(math.sqrt(0.25 + 1.44) / 2.0, rel=1e-14)
    assert drift(torch.ones(3), torch.ones(3)) == 0.0
    with pytest.raises(ConfigError, match="scale="):
        drift([torch.zeros(2)], [torch.ones(2)])
    with pytest.raises(ShapeError):
        drift(a, b[:1])


# -- (a) gradient flow: the laws are exact -----------------------------------------------------
class _Flow:
    """dθ/dt = -∇^FA L for a biofa model, as a right-hand side for solve_ivp (FA gradients by biofa)."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.params = list(model.parameters())
        self.splits = np.cumsum([p.numel() for p in self.params])[:-1]

    def state(self):
        return np.concatenate([p.detach().reshape(-1).numpy() for p in self.params])

    def set_state(self, z):
        with torch.no_grad():
            for p, chunk in zip(self.params, np.split(z, self.splits)):
                p.copy_(torch.from_numpy(chunk).reshape(p.shape))

    def __call__(self, t, z):
        self.set_state(z)
        for p in self.params:
            p.grad = None
        (0.5 * ((self.model(self.x) - self.y) ** 2).sum(1).mean()).backward()
        return -np.concatenate([p.grad.reshape(-1).numpy() for p in self.params])

    def integrate(self, T, events=None):
        z0 = self.state()
        sol = solve_ivp(self, (0.0, T), z0, method="DOP853", rtol=1e-10, atol=1e-12, events=events)
        assert sol.status in (0, 1), sol.message
        self.set_state(sol.y[:, -1])
        return float(np.linalg.norm(sol.y[:, -1] - z0) / np.linalg.norm(z0))


def _linear_law(model):
    Ws, bs, Bs = feedback_chain(model)
    return linear_invariants(Ws, Bs, bs=bs)


# Tolerances of the flow tests. solve_ivp(DOP853, rtol=1e-10, atol=1e-12) keeps each step's local
# error below ~1e-10 relative; over the few hundred steps of a run the global error of a quadratic
# invariant stays below LAW_TOL = 1e-8 (relative drift). A quantity the flow does NOT conserve is
# required to drift by at least MOVED = 100 * LAW_TOL over the same interval: the run went far
# enough that a wrong law would have failed LAW_TOL a hundredfold, so the test can fail.
LAW_TOL, MOVED = 1e-8, 1e-6


def _rate(f, flow):
    """d f(theta(t))/dt at the current state, exact for a quadratic f: with v = dtheta/dt,
    f(theta + e v) - f(theta - e v) = 2 e Df.v (the quadratic term cancels)."""
    z = flow.state()
    v, e = flow(0.0, z), 1e-3
    flow.set_state(z + e * v)
    plus = f(flow.model)
    flow.set_state(z - e * v)
    minus = f(flow.model)
    flow.set_state(z)
    scale = max(float(a.abs().max()) for a in plus)
    return max(float((a - b).abs().max()) for a, b in zip(plus, minus)) / (2 * e) / scale


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_gradient_flow_conserves_linear_invariants(f64, seed):
    g = torch.Generator().manual_seed(seed)
    model = _chain_model([5, 6, 4, 3], relu=False, generator=g)
    x, y = torch.randn(24, 5, generator=g), torch.randn(24, 3, generator=g)
    assert conservation_diagnostic(model, torch.optim.SGD(model.parameters(), lr=0.1)) == []
    B0 = feedback_chain(model)[2]
    flow = _Flow(model, x, y)
    # at t = 0 the law's rate is 0 up to rounding (~1e-16 / e), GD's balancedness moves
    assert _rate(_linear_law, flow) < 1e-9
    assert _rate(balancedness, flow) > MOVED
    C0, bal0 = _linear_law(model), balancedness(model)
    flow.integrate(T=3.0)
    assert drift(C0, _linear_law(model)) < LAW_TOL
    assert drift(bal0, balancedness(model)) > MOVED  # GD's law is not FA's
    assert all(torch.equal(a, b) for a, b in zip(B0, feedback_chain(model)[2]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_flow_conserves_relu_invariants(f64, seed):
    """Integrated up to the first kink (a pre-activation crossing 0), found by a solve_ivp event;
    at a kink the adaptive integrator would stall and the flow is not smooth."""
    g = torch.Generator().manual_seed(seed)
    model = _chain_model([5, 6, 4, 3], relu=True, generator=g)
    l1, l2 = model[0], model[2]
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
    with torch.no_grad():  # each hidden bias in the widest gap of its unit's pre-activations
        h = x
        for lin in (l1, l2):
            a = h @ lin.weight.T
            s = torch.sort(a, 0).values
            s = torch.cat([s[:1] - 1.0, s, s[-1:] + 1.0])
            gap = s[1:] - s[:-1]
            k, cols = gap.argmax(0), torch.arange(a.shape[1])
            lin.bias.copy_(-(s[k, cols] + gap[k, cols] / 2))
            h = torch.relu(lin(h))

    def preactivations():
        with torch.no_grad():
            a1 = l1(x)
            return torch.cat([a1.reshape(-1), l2(torch.relu(a1)).reshape(-1)])

    signs = torch.sign(preactivations())
    assert (signs != 0).all()  # the bias sits in a gap: the start is not on a kink
    flow = _Flow(model, x, y)
    # at t = 0: the ReLU law's rate is 0; the full linear law (needs a linear network unless every
    # unit is on for every sample) and GD's balancedness move
    assert _rate(relu_invariants, flow) < 1e-9
    linear_moves = bool(((signs < 0).any()))
    if linear_moves:
        assert _rate(_linear_law, flow) > MOVED
    assert _rate(balancedness, flow) > MOVED

    def kink(t, z):
        flow.set_state(z)
        return float((signs * preactivations()).min())

    kink.terminal = True
    c0, C0, bal0 = relu_invariants(model), _linear_law(model), balancedness(model)
    flow.integrate(T=3.0, events=kink)
    assert drift(c0, relu_invariants(model)) < LAW_TOL
    assert drift(bal0, balancedness(model)) > MOVED
    if linear_moves:
        assert drift(C0, _linear_law(model)) > MOVED


# -- (b) discrete steps: drift O(lr) -----------------------------------------------------------
def _sgd_drift(lr, relu, seed=5):
    g = torch.Generator().manual_seed(seed)
    model = _chain_model([6, 8, 7, 3], relu=relu, generator=g)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)
    law = relu_invariants if relu else _linear_law
    c0, bal0 = law(model), balancedness(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    assert conservation_diagnostic(model, opt) == []
    for _ in range(round(1.0 / lr)):  # the same time T = 1 at both step sizes
        opt.zero_grad()
        (0.5 * ((model(x) - y) ** 2).sum(1).mean()).backward()
        opt.step()
    return drift(c0, law(model)), drift(bal0, balancedness(model))


@pytest.mark.parametrize("seed", [5, 6, 7])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_sgd_drift_is_first_order_in_lr(f64, relu, seed):
    """SGD is the flow's Euler scheme: the law drifts by K lr + O(lr^2) over a fixed time T = 1, so
    ten times smaller steps give big/small = 10 (1 + O(lr)); the window [10/3, 30] admits an O(lr)
    correction of up to a factor 3. A wrong law would drift by O(1) at both step sizes (ratio ~1).
    Balancedness is not conserved: it follows the flow, so at both step sizes it drifts by the
    same amount up to the O(lr) discretisation error (ratio 1, window [1/2, 2])."""
    big, bal_big = _sgd_drift(1e-2, relu, seed)
    small, bal_small = _sgd_drift(1e-3, relu, seed)
    assert 10 / 3 < big / small < 30
    assert 0.5 < bal_small / bal_big < 2
    assert bal_small > 10 * small  # the law is not balancedness in disguise


# -- (c) the diagnostic ------------------------------------------------------------------------
def _mlp(feedback="fa", **kw):
    return nn.Sequential(bnn.Linear(4, 5, **kw), nn.ReLU(), bnn.Linear(5, 3, feedback=feedback, **kw))


def test_diagnostic_clean_for_plain_fa_sgd():
    model = _mlp()
    assert conservation_diagnostic(model) == []
    assert conservation_diagnostic(model, torch.optim.SGD(model.parameters(), lr=0.1)) == []
    # the first layer's B enters no law: a learned B_1 does not break anything
    first_kp = nn.Sequential(bnn.Linear(4, 5, feedback="kp"), nn.ReLU(), bnn.Linear(5, 3))
    assert conservation_diagnostic(first_kp) == []


@pytest.mark.parametrize("make_opt, needle", [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "momentum=0.9"),
    (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-4), "weight_decay=0.0001"),
    (lambda p: torch.optim.Adam(p, lr=1e-3), "Adam is not plain SGD"),
    (lambda p: torch.optim.RMSprop(p, lr=1e-3), "RMSprop is not plain SGD"),
])
def test_diagnostic_flags_optimizer(make_opt, needle):
    model = _mlp()
    reasons = conservation_diagnostic(model, make_opt(model.parameters()))
    assert len(reasons) == 1 and needle in reasons[0]


def test_diagnostic_flags_adamw_twice():
    model = _mlp()
    reasons = conservation_diagnostic(model, torch.optim.AdamW(model.parameters()))
    assert any("AdamW is not plain SGD" in r for r in reasons)
    assert any("weight_decay" in r for r in reasons)


@pytest.mark.parametrize("rule", ["bp", "usf", "frsf", "brsf", "kp", "wm"])
def test_diagnostic_flags_rules(rule):
    reasons = conservation_diagnostic(_mlp(feedback=rule))
    assert len(reasons) == 1 and "layer '2'" in reasons[0] and (rule in reasons[0] or "backprop" in reasons[0])


def test_diagnostic_flags_model_properties():
    bn = nn.Sequential(bnn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.LayerNorm(5), bnn.Linear(5, 3))
    reasons = conservation_diagnostic(bn)
    assert any("'1' (BatchNorm1d)" in r for r in reasons)
    assert any("'2' (Tanh) is not positively homogeneous" in r for r in reasons)
    assert any("'3' (LayerNorm)" in r for r in reasons)
    assert len(reasons) == 3
    dale = nn.Sequential(bnn.Linear(4, 5, sign=Dale()), nn.ReLU(), bnn.Linear(5, 3))
    assert conservation_diagnostic(dale) == ["layer '0': sign constraint Dale (projection)"]
    reparam = nn.Sequential(bnn.Linear(4, 5, sign=Dale(enforce="abs")), bnn.Linear(5, 3))
    assert "reparameterisation" in conservation_diagnostic(reparam)[0]
    normed = nn.Sequential(bnn.Linear(4, 5), bnn.Linear(5, 3, norm="const"))
    assert "norm projection" in conservation_diagnostic(normed)[0]
    bm = nn.Sequential(bnn.Linear(4, 5, batch_manhattan=True), bnn.Linear(5, 3))
    assert "Batch Manhattan" in conservation_diagnostic(bm)[0]
    dfa = bnn.convert(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)), feedback="dfa")
    reasons = conservation_diagnostic(dfa, torch.optim.SGD(dfa.parameters(), lr=0.1, momentum=0.5))
    assert any("direct feedback alignment" in r for r in reasons)
    assert any("momentum=0.5" in r for r in reasons)
