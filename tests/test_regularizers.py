r"""The probes of ``unroll(..., probe=True)`` and the vanishing-gradient regulariser Ω (float64).

Everything is checked against an independent computation: a hand-written torch loop of the same
dynamics on a small E/I circuit (``feedback = "bp"`` on every synapse, noise off) in which a zero
leaf is added to the block's state before every step, so that its ``.grad`` is the total state
gradient :math:`a^n = \partial L/\partial s^n`. From those a's, Ω is pycog's formula evaluated
directly; its gradient is autograd of that formula with a, s and I held constant.
"""

import pytest
import torch

from biofa.circuit import Circuit, FeedforwardSynapses, Population
from biofa.circuit.regularizers import vanishing_gradient
from biofa.errors import ConfigError

DT = 1e-3
STEPS, BATCH = 14, 4
#: (dynamics form, activation of I, tau of E, tau of I): one k for the block, or one per unit
CASES = [("current", "relu", 0.01, 0.01), ("rate", "relu", 0.01, 0.01),
         ("current", "tanh", 0.01, 0.005), ("rate", "tanh", 0.01, 0.005)]
IDS = [f"{form}-{act}-{'k' if te == ti else 'k_per_unit'}" for form, act, te, ti in CASES]


def ei_circuit(form, act_i="relu", tau_e=0.01, tau_i=0.01, noise=None, seed=0):
    """x -> E, I; E <-> I (no autapses); E -> y, every synapse ``bp``; Dale's law on E and I."""
    g = torch.Generator().manual_seed(seed)
    x = Population("x", 3)
    e = Population("E", 6, sign="E", tau=tau_e, bias=0.1, noise=noise)
    i = Population("I", 3, sign="I", activation=act_i, tau=tau_i, bias=-0.05, noise=noise)
    y = Population("y", 2, activation="linear", tau=0.02, dynamics="rate")
    kw = {"generator": g, "feedback": "bp"}
    syns = [FeedforwardSynapses(x, e, **kw), FeedforwardSynapses(x, i, **kw),
            FeedforwardSynapses(e, e, autapses=False, **kw), FeedforwardSynapses(i, e, **kw),
            FeedforwardSynapses(e, i, **kw), FeedforwardSynapses(i, i, autapses=False, **kw),
            FeedforwardSynapses(e, y, **kw)]
    return Circuit([x, e, i, y], syns, input="x", output="y", readout="E", dynamics=form,
                   recurrent_init="gamma", generator=g)


def weight(c, pre, post):
    (s,) = [s for s in c.feedforward if s.pre.name == pre and s.post.name == post]
    return s.weight


def block_weight(c):
    """The recurrent block's W (rows: post E then I; columns: pre E then I), from the synapses."""
    return torch.cat([torch.cat([weight(c, "E", "E"), weight(c, "I", "E")], 1),
                      torch.cat([weight(c, "E", "I"), weight(c, "I", "I")], 1)], 0)


def act(name, v):
    return torch.relu(v) if name == "relu" else torch.tanh(v)


def act_prime(name, v):
    return (v > 0).to(v.dtype) if name == "relu" else 1 - torch.tanh(v) ** 2


def problem(seed=1):
    """Inputs, targets, a mask whose trials end at different steps (so that late a's are zero for
    some trials only) and a non-zero initial state of the block (E, I)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(STEPS, BATCH, 3, generator=g)
    targets = torch.rand(STEPS, BATCH, 2, generator=g)
    ends = torch.tensor([STEPS - 3, STEPS - 6, 8, STEPS - 2])
    mask = (torch.arange(STEPS)[:, None] < ends[None, :]).to(u.dtype)[..., None].expand(-1, -1, 2)
    r0 = {"E": 0.3 * torch.rand(BATCH, 6, generator=g), "I": 0.3 * torch.rand(BATCH, 3, generator=g) - 0.1}
    return u, targets, mask.contiguous(), r0


def loss_of(outputs, targets, mask):
    return (mask * (outputs - targets) ** 2).sum() / mask.sum()


class Hand:
    r"""The dynamics written out for the block s = (s_E, s_I), current form
    :math:`s^{n+1} = s^n + k(-s^n + I^n)`, :math:`r = f(s)`, or rate form
    :math:`s^{n+1} = s^n + k(-s^n + f(I^n))`, :math:`r = s`, with :math:`I^n = c^n + r^n W^\top`,
    :math:`c^n = u^n W_\mathrm{in}^\top + b`; the read-out
    :math:`y^{n+1} = y^n + k_y(-y^n + r_E^n W_y^\top + b_y)`."""

    def __init__(self, c, form, act_i):
        self.form, self.acts = form, ("relu", act_i)
        self.w = block_weight(c)
        self.w_in = torch.cat([weight(c, "x", "E"), weight(c, "x", "I")], 0)
        self.bias = torch.cat([c.bias("E"), c.bias("I")])
        self.k = torch.cat([torch.full((6,), DT / c.population("E").tau),
                            torch.full((3,), DT / c.population("I").tau)])
        self.w_y, self.b_y, self.k_y = weight(c, "E", "y"), c.bias("y"), DT / c.population("y").tau

    def f(self, v):
        return torch.cat([act(self.acts[0], v[..., :6]), act(self.acts[1], v[..., 6:])], -1)

    def f_prime(self, v):
        return torch.cat([act_prime(self.acts[0], v[..., :6]), act_prime(self.acts[1], v[..., 6:])], -1)

    def rate(self, s):
        return self.f(s) if self.form == "current" else s

    def step(self, s, c, w):
        """s^{n+1} from s^n with the external current c^n fixed."""
        current = c + self.rate(s) @ w.T
        drive = current if self.form == "current" else self.f(current)
        return s + self.k * (drive - s)

    def run(self, u, s0):
        """Outputs y^1..y^T, the zero leaves z^0..z^T (z^n.grad = a^n), states s^0..s^{T-1} and the
        currents I^0..I^{T-1}, external currents c^0..c^{T-1}."""
        s, y = s0.clone(), torch.zeros(u.shape[1], 2)
        leaves, states, currents, externals, outputs = [], [], [], [], []
        for n in range(u.shape[0]):
            z = torch.zeros_like(s, requires_grad=True)
            leaves.append(z)
            s = s + z
            c = u[n] @ self.w_in.T + self.bias
            states.append(s.detach())
            externals.append(c.detach())
            currents.append((c + self.rate(s) @ self.w.T).detach())
            y = y + self.k_y * (self.rate(s)[..., :6] @ self.w_y.T + self.b_y - y)
            outputs.append(y)
            s = self.step(s, c, self.w)
        z = torch.zeros_like(s, requires_grad=True)
        leaves.append(z)
        s = s + z
        return (torch.stack(outputs), leaves, torch.stack(states), torch.stack(currents),
                torch.stack(externals), s)


def independent(form, act_i, tau_e, tau_i):
    """The circuit, the problem, unroll's trajectory after ``loss.backward(retain_graph=True)`` and
    the hand loop's a^0..a^T (T + 1, batch, 9), states, currents and externals."""
    c = ei_circuit(form, act_i, tau_e, tau_i).double()
    u, targets, mask, r0 = problem()
    traj = c.unroll(u, dt=DT, r0=r0, probe=True)
    loss_of(traj.rates["y"][1:], targets, mask).backward(retain_graph=True)
    hand = Hand(c, form, act_i)
    outputs, leaves, states, currents, externals, _ = hand.run(u, torch.cat([r0["E"], r0["I"]], -1))
    torch.testing.assert_close(outputs, traj.rates["y"][1:], rtol=0, atol=1e-13)  # the same dynamics
    loss_of(outputs, targets, mask).backward()
    a = torch.stack([torch.zeros_like(z) if z.grad is None else z.grad for z in leaves])  # s^T: unused
    return c, traj, hand, a, states, currents, externals


def pycog_omega(hand, a, states, currents, w, bound=1e-20):
    r"""pycog's Ω written out: :math:`\mathrm{num} = \lVert(1-k)a^{n+1} + \rho'(s^n)\odot((k a^{n+1}
    \odot d'(I^n))W)\rVert^2`, :math:`\mathrm{den} = \lVert a^{n+1}\rVert^2`, the steps with
    den >= bound kept; mean over the batch, summed over time, divided by the summed mean count."""
    a_next = a[1:]
    d_prime = torch.ones_like(currents) if hand.form == "current" else hand.f_prime(currents)
    r_prime = hand.f_prime(states) if hand.form == "current" else torch.ones_like(states)
    jac = (1 - hand.k) * a_next + r_prime * ((hand.k * a_next * d_prime) @ w)
    num, den = (jac ** 2).sum(-1), (a_next ** 2).sum(-1)
    kept = den >= bound
    terms = torch.where(kept, (num / torch.where(kept, den, 1.0) - 1) ** 2, 0.0)
    return terms.mean(1).sum() / kept.double().mean(1).sum(), jac


# -- (a) the probe gradient is k times the total state gradient ------------------------------------
@pytest.mark.parametrize(("form", "act_i", "tau_e", "tau_i"), CASES, ids=IDS)
def test_probe_gradient_is_k_times_the_total_state_gradient(f64, form, act_i, tau_e, tau_i):
    c, traj, hand, a, states, currents, externals = independent(form, act_i, tau_e, tau_i)
    (block,) = traj.blocks
    assert block.names == ["E", "I"] and block.probe.shape == (STEPS, BATCH, 9)
    assert a[1:].abs().amax() > 0 and (a[-1] == 0).all()  # s^T drives nothing: a^T = 0
    torch.testing.assert_close(block.probe.grad, hand.k * a[1:], rtol=1e-10, atol=1e-15)
    # the block keeps what Ω reads: s^0..s^{T-1}, the external currents and the assembled W
    torch.testing.assert_close(block.states, states, rtol=0, atol=1e-13)
    torch.testing.assert_close(block.external, externals, rtol=0, atol=1e-13)
    torch.testing.assert_close(block.weight, hand.w, rtol=0, atol=0)
    k = torch.as_tensor(block.k, dtype=torch.float64).expand(9)
    torch.testing.assert_close(k, hand.k, rtol=0, atol=1e-15)


# -- (b) Ω equals pycog's formula on the independent a's -------------------------------------------
@pytest.mark.parametrize(("form", "act_i", "tau_e", "tau_i"), CASES, ids=IDS)
def test_omega_equals_pycogs_formula(f64, form, act_i, tau_e, tau_i):
    c, traj, hand, a, states, currents, _ = independent(form, act_i, tau_e, tau_i)
    expected, jac = pycog_omega(hand, a, states, currents, hand.w.detach())
    # the formula is a^{n+1} J^n, J^n = ds^{n+1}/ds^n of the hand-written step (autograd's VJP)
    for n in (0, STEPS // 2, STEPS - 1):
        c_n = currents[n] - hand.rate(states[n]) @ hand.w.detach().T
        _, vjp = torch.autograd.functional.vjp(lambda s: hand.step(s, c_n, hand.w.detach()), states[n], a[n + 1])
        torch.testing.assert_close(jac[n], vjp, rtol=1e-10, atol=1e-15)
    # some (step, trial) pairs are masked out (den = 0), others kept, so the count matters
    den = (a[1:] ** 2).sum(-1)
    assert (den < 1e-20).any() and (den >= 1e-20).any()
    omega = vanishing_gradient(traj)
    assert omega.dim() == 0 and omega.dtype == torch.float64 and omega.item() > 0
    torch.testing.assert_close(omega, expected, rtol=1e-10, atol=0)
    # the bound: masking every step of a^{n+1} below it leaves nothing (Ω = 0)
    assert vanishing_gradient(traj, bound=float(den.max()) * 2).item() == 0.0


# -- (c) its gradient: the immediate derivative with respect to W ---------------------------------
@pytest.mark.parametrize(("form", "act_i", "tau_e", "tau_i"), CASES, ids=IDS)
def test_omega_gradient_is_its_immediate_derivative_in_w(f64, form, act_i, tau_e, tau_i):
    c, traj, hand, a, states, currents, _ = independent(form, act_i, tau_e, tau_i)
    (block,) = traj.blocks
    omega = vanishing_gradient(traj)
    w_leaf = hand.w.detach().clone().requires_grad_(True)
    direct, _ = pycog_omega(hand, a, states, currents, w_leaf)  # a, s, I constants
    (expected,) = torch.autograd.grad(direct, w_leaf)
    (got,) = torch.autograd.grad(omega, block.weight, retain_graph=True)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-14)
    # ... and through the assembled W to every recurrent synapse's parameters; none to the others
    recurrent = [s for s in c.feedforward if s.pre.name in "EI" and s.post.name in "EI"]
    params = [p for s in recurrent for p in s.parameters()]
    others = [p for s in c.feedforward if s not in recurrent for p in s.parameters()]
    got = torch.autograd.grad(omega, params + others, allow_unused=True)
    direct, _ = pycog_omega(hand, a, states, currents, block_weight(c))
    expected = torch.autograd.grad(direct, params)
    for g, e in zip(got[:len(params)], expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-14)
    assert all(g is None for g in got[len(params):])


def test_omega_backward_adds_to_the_loss_gradient(f64):
    """How the runner uses it: loss.backward(retain_graph=True), then (λ Ω).backward() adds λ ∂Ω/∂θ."""
    c, traj, hand, a, states, currents, _ = independent(*CASES[0])
    params = [p for p in c.parameters() if p.requires_grad]
    before = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    omega = vanishing_gradient(traj)
    extra = torch.autograd.grad(2.0 * omega, params, allow_unused=True, retain_graph=True)
    (2.0 * omega).backward()
    for p, b, e in zip(params, before, extra):
        torch.testing.assert_close(p.grad, b + (0 if e is None else e), rtol=1e-12, atol=1e-15)


# -- (d) clear errors ----------------------------------------------------------------------------
def test_errors_name_the_missing_piece(f64):
    c = ei_circuit("current").double()
    u, targets, mask, r0 = problem()
    with pytest.raises(ConfigError, match="no recurrent blocks.*probe=True"):
        vanishing_gradient(c.unroll(u, dt=DT))  # unrolled without probes
    traj = c.unroll(u, dt=DT, probe=True)
    with pytest.raises(ConfigError, match="no gradient yet.*loss.backward()"):
        vanishing_gradient(traj)
    g = torch.Generator().manual_seed(0)
    x, h, y = Population("x", 3), Population("h", 5, tau=0.01), Population("y", 2, activation="linear")
    feedforward = Circuit([x, h, y], [FeedforwardSynapses(x, h, generator=g), FeedforwardSynapses(h, y, generator=g)],
                          input="x", output="y").double()
    traj = feedforward.unroll(u, dt=DT, probe=True)
    assert traj.blocks == []
    with pytest.raises(ConfigError, match="no recurrent blocks to regularise"):
        vanishing_gradient(traj)


# -- (e) probes do not change the forward pass -----------------------------------------------------
@pytest.mark.parametrize("noise", [None, 0.2])
@pytest.mark.parametrize("form", ["current", "rate"])
def test_probe_leaves_the_forward_values_bit_equal(f64, form, noise):
    c = ei_circuit(form, "tanh", 0.01, 0.005, noise=noise).double()
    u, _, _, r0 = problem()
    plain = c.unroll(u, dt=DT, r0=r0, generator=torch.Generator().manual_seed(3))
    probed = c.unroll(u, dt=DT, r0=r0, generator=torch.Generator().manual_seed(3), probe=True)
    assert plain.blocks == [] and len(probed.blocks) == 1
    assert plain.rates.keys() == probed.rates.keys() and plain.states.keys() == probed.states.keys()
    for name in plain.rates:
        assert torch.equal(plain.rates[name], probed.rates[name]), name
    for name in plain.states:
        assert torch.equal(plain.states[name], probed.states[name]), name
