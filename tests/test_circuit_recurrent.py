"""Recurrent circuits in time: the time convention, both dynamics forms, noise, masks,
recurrent initialisations, unroll (BPTT and feedback alignment through time), specs (float64)."""

import math

import pytest
import torch

import biofa.circuit as bc
from biofa.circuit import Circuit, FeedbackSynapses, FeedforwardSynapses, Population
from biofa.circuit.recurrent_init import recurrent_matrix, spectral_radius
from biofa.errors import ConfigError, ShapeError, SpecError

DT = 1e-3


def ei_circuit(dynamics=None, feedback="fa", seed=0, noise=None, p_connect=None, init="gamma", **pop):
    """x -> E, I; E <-> I with self-connections (no autapses); E -> y (read-out from E)."""
    g = torch.Generator().manual_seed(seed)
    x = Population("x", 3, **pop.get("x", {}))
    e = Population("E", 7, sign="E", tau=0.01, bias=0.1, noise=noise)
    i = Population("I", 3, sign="I", activation="tanh", tau=0.005, noise=noise)
    y = Population("y", 2, activation="linear", tau=0.002)
    kw = {"generator": g, "feedback": feedback}
    syns = [FeedforwardSynapses(x, e, **kw), FeedforwardSynapses(x, i, **kw),
            FeedforwardSynapses(e, e, autapses=False, p_connect=p_connect, **kw),
            FeedforwardSynapses(i, e, **kw), FeedforwardSynapses(e, i, **kw),
            FeedforwardSynapses(i, i, autapses=False, **kw), FeedforwardSynapses(e, y, **kw)]
    return Circuit([x, e, i, y], syns, input="x", output="y", readout="E", dynamics=dynamics,
                   recurrent_init=init, generator=g)


def hand_loop(c, u, dt, state0=None, xi=None):
    """The time convention written out, one population at a time: rates[n] before step n."""
    names = [p.name for p in c.populations if p.name != c.input]
    s = {n: torch.zeros(u.shape[1], c.population(n).size) if state0 is None else state0[n].clone() for n in names}
    form = {n: c.dynamics_of(n) for n in names}
    rate = {n: (c.population(n).act.f(s[n]) if form[n] == "current" else s[n]) for n in names}
    trace = {n: [rate[n]] for n in names}
    for step in range(u.shape[0]):
        r_all = dict(rate, **{c.input: u[step]})
        new = {}
        for n in names:
            p = c.population(n)
            i = sum(r_all[syn.pre.name] @ syn.weight.detach().T for syn in c.incoming(n)) + c.bias(n).detach()
            d = i if form[n] == "current" else p.act.f(i)
            if xi is not None and n in xi:
                d = d + p.noise * math.sqrt(2 * p.tau / dt) * xi[n][step]
            new[n] = s[n] + dt / p.tau * (d - s[n])
        s = new
        rate = {n: (c.population(n).act.f(s[n]) if form[n] == "current" else s[n]) for n in names}
        for n in names:
            trace[n].append(rate[n])
    return {n: torch.stack(v) for n, v in trace.items()}


# -- cycles and the time convention ---------------------------------------------------------
def test_cycle_has_no_steady_state_and_names_it(f64):
    c = ei_circuit()
    assert c.recurrent and c.recurrent_components == [["E", "I"]]
    with pytest.raises(ConfigError, match=r"cycle E -> E.*circuit.simulate.*circuit.unroll"):
        c(torch.zeros(1, 3))


@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_time_convention_against_a_hand_written_loop(f64, dynamics):
    c = ei_circuit(dynamics)
    x = torch.randn(12, 4, 3)
    tr = c.simulate(x, dt=DT)
    assert tr.t.shape == (13,) and tr.rates["E"].shape == (13, 4, 7)
    assert torch.equal(tr.rates["x"][:12], x) and torch.equal(tr.rates["x"][12], x[11])
    ref = hand_loop(c, x, DT)
    for name, v in ref.items():
        torch.testing.assert_close(tr.rates[name], v, rtol=0, atol=1e-13)
    if dynamics == "current":
        assert set(tr.states) == {"E", "I", "y"}
        torch.testing.assert_close(tr.rates["I"], torch.tanh(tr.states["I"]), rtol=0, atol=0)
    # the output after step n reads r^n: with tau_out = dt it is exactly f(I_out^n)
    c2 = ei_circuit(dynamics)
    c2.population("y").tau = DT
    tr2 = c2.simulate(x, dt=DT)
    inst = tr2.rates["E"][:12] @ c2.synapse("E->y").weight.T + c2.bias("y")
    torch.testing.assert_close(tr2.rates["y"][1:], inst, rtol=0, atol=1e-13)


def test_constant_input_equals_repeated_rows_and_positional_call_works(f64):
    c = ei_circuit()
    x = torch.rand(2, 3)
    a = c.simulate(x, 0.01, DT)  # the old positional call
    b = c.simulate(x.expand(10, 2, 3).clone(), dt=DT)
    for name in a.rates:
        torch.testing.assert_close(a.rates[name], b.rates[name], rtol=0, atol=1e-15)


@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_unroll_is_simulate_with_gradients(f64, dynamics):
    c = ei_circuit(dynamics, noise=0.2, p_connect=0.6)
    x = torch.randn(15, 3, 3)
    a = c.simulate(x, dt=DT, generator=torch.Generator().manual_seed(1), r0={"E": 0.2})
    b = c.unroll(x, dt=DT, generator=torch.Generator().manual_seed(1), r0={"E": 0.2})
    for name in a.rates:
        torch.testing.assert_close(b.rates[name].detach(), a.rates[name], rtol=0, atol=1e-13)
    assert b.rates["y"].requires_grad
    c.population("y").tau = DT  # k = 1: the read-out without recursion
    a = c.simulate(x, dt=DT, generator=torch.Generator().manual_seed(2))
    b = c.unroll(x, dt=DT, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(b.rates["y"].detach(), a.rates["y"], rtol=0, atol=1e-13)


# -- noise -----------------------------------------------------------------------------------
def test_noise_scaling_and_pre_drawn_draws(f64):
    sigma, tau = 0.3, 0.01
    g = torch.Generator().manual_seed(0)
    x = Population("x", 2, noise=0.05, bias=0.2, rectify=True, tau=0.02)
    h = Population("h", 4, tau=tau, noise=sigma, bias=0.1)
    c = Circuit([x, h], [FeedforwardSynapses(x, h, generator=g), FeedforwardSynapses(h, h, generator=g)],
                input="x", dynamics="current")
    for s in c.feedforward:
        s.write_weight(torch.zeros_like(s.weight))
    xs = torch.randn(6, 5, 2)
    xi = {"x": torch.randn(6, 5, 2), "h": torch.randn(6, 5, 4)}
    tr = c.simulate(xs, dt=DT, noise=xi)
    u = torch.relu(xs + 0.2 + 0.05 * math.sqrt(2 * 0.02 / DT) * xi["x"])
    torch.testing.assert_close(tr.rates["x"][:6], u, rtol=0, atol=1e-15)
    # W = 0: x^1 = dt/tau (b + sigma sqrt(2 tau / dt) xi^0), per-step sd sigma sqrt(2 dt / tau)
    torch.testing.assert_close(tr.states["h"][1], DT / tau * (0.1 + sigma * math.sqrt(2 * tau / DT) * xi["h"][0]),
                               rtol=0, atol=1e-15)
    # drawn from the generator: the same numbers, in population order (input first)
    gen = torch.Generator().manual_seed(3)
    drawn = {"x": torch.randn(6, 5, 2, generator=gen), "h": torch.randn(6, 5, 4, generator=gen)}
    a = c.simulate(xs, dt=DT, generator=torch.Generator().manual_seed(3))
    b = c.simulate(xs, dt=DT, noise=drawn)
    torch.testing.assert_close(a.rates["h"], b.rates["h"], rtol=0, atol=0)
    with pytest.raises(ShapeError, match=r"noise\['h'\]: expected shape"):
        c.simulate(xs, dt=DT, noise={"x": xi["x"], "h": torch.randn(6, 5, 3)})
    with pytest.raises(ConfigError, match=r"missing draws .*\['h'\]"):
        c.simulate(xs, dt=DT, noise={"x": xi["x"]})


# -- masks -----------------------------------------------------------------------------------
def test_connectivity_masks_hold_for_w_b_and_gradients(f64):
    c = ei_circuit(p_connect=0.5)
    s = c.synapse("E->E")
    m = s.mask
    assert "feedforward.2.mask" in c.state_dict() and set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(torch.diagonal(m) == 0) and 0 < m.sum() < m.numel() - 7
    assert torch.all(s.weight[m == 0] == 0) and torch.all(s.feedback_synapses.matrix()[m == 0] == 0)
    assert torch.all(torch.diagonal(c.synapse("I->I").weight) == 0)
    c.unroll(torch.rand(8, 2, 3), dt=DT).rates["y"].sum().backward()
    grad = s.layer.weight.grad
    assert torch.all(grad[m == 0] == 0) and grad[m == 1].abs().sum() > 0
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="p_connect must be a number in"):
            FeedforwardSynapses(Population("a", 2), Population("b", 2), p_connect=bad)
    with pytest.raises(ConfigError, match="autapses = false"):
        FeedforwardSynapses(Population("a", 2), Population("b", 2), autapses=False)


# -- recurrent initialisations ---------------------------------------------------------------
def test_gamma_scales_are_pycogs_mean_balanced_rows():
    from biofa.circuit.recurrent_init import mean_balanced_scales

    # 3 E then 2 I; row 0 has no autapse, row 4 misses one I entry (a mask)
    present = torch.ones(5, 5, dtype=torch.float64)
    present[0, 0] = present[4, 3] = 0
    sign = torch.tensor([1.0, 1, 1, -1, -1], dtype=torch.float64)
    c = mean_balanced_scales(present, sign)
    raw0 = torch.tensor([0, 1, 1, 1, 1], dtype=torch.float64)       # n_E / n_I = 2 / 2
    raw4 = torch.tensor([1, 1, 1, 0, 3], dtype=torch.float64)       # 3 / 1
    raw1 = torch.tensor([1, 1, 1, 1.5, 1.5], dtype=torch.float64)   # 3 / 2
    for row, raw in ((0, raw0), (4, raw4), (1, raw1)):
        torch.testing.assert_close(c[row], raw / raw.norm(), rtol=1e-15, atol=0)
    # E and I scales of every row sum to the same: excitation and inhibition balanced on average
    torch.testing.assert_close((c * (sign > 0)).sum(1), (c * (sign < 0)).sum(1), rtol=1e-15, atol=0)


def test_packaged_ei_circuit_is_balanced_on_average_and_stays_bounded(f64):
    c = bc.load("ei_recurrent")
    w = recurrent_matrix(c, ["E", "I"])
    assert spectral_radius(w) == pytest.approx(1.5, abs=1e-10)
    # gamma draws with pycog's scales: total excitation and inhibition agree up to sampling noise
    # (an unbalanced draw, I scaled like E, gives a ratio near n_E / n_I = 4)
    assert w.clamp(min=0).sum() / -w.clamp(max=0).sum() == pytest.approx(1.0, abs=0.1)
    tr = c.simulate(torch.rand(200, 4, 3), dt=0.02, generator=torch.Generator().manual_seed(0))
    assert tr.rates["E"][100:].abs().max() < 10  # 4 s at rho0 = 1.5 (unbalanced: ~1e7)


@pytest.mark.parametrize("rule", ["gamma", "balanced"])
def test_gamma_initialisations_reach_rho0(f64, rule):
    c = ei_circuit(init={"rule": rule, "rho0": 1.3}, p_connect=0.7)
    w = recurrent_matrix(c, ["E", "I"])
    assert spectral_radius(w) == pytest.approx(1.3, abs=1e-10)
    assert torch.all(w[:, :7] >= 0) and torch.all(w[:, 7:] <= 0)  # Dale's law, columns by type
    if rule == "balanced":
        torch.testing.assert_close(w.sum(1), torch.zeros(10), rtol=0, atol=1e-12)


def test_orthogonal_initialisation_and_errors(f64):
    g = torch.Generator().manual_seed(0)
    x, h = Population("x", 2), Population("h", 6, activation="tanh")
    c = Circuit([x, h], [FeedforwardSynapses(x, h, generator=g), FeedforwardSynapses(h, h, generator=g)],
                input="x", recurrent_init={"rule": "orthogonal", "rho0": 0.9}, generator=g)
    w = c.synapse("h->h").weight
    torch.testing.assert_close(w @ w.T, 0.81 * torch.eye(6), rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="'orthogonal' is for free-sign blocks"):
        ei_circuit(init="orthogonal")
    with pytest.raises(ConfigError, match="needs a recurrent block"):
        Circuit([x, h], [FeedforwardSynapses(x, h)], input="x", recurrent_init="gamma")
    with pytest.raises(ConfigError, match="recurrent_init.rho0 must be a number > 0"):
        ei_circuit(init={"rule": "gamma", "rho0": -1})


def test_normal_initialisation_and_initial_value(f64):
    """rule 'normal': a Gaussian block scaled to radius rho0 exactly; an initial_value is the
    state a trajectory starts from (fixed, not learned, without learn_initial_state)."""
    g = torch.Generator().manual_seed(0)
    x, h = Population("x", 1), Population("h", 30, activation="tanh")
    c = Circuit([x, h], [FeedforwardSynapses(x, h, generator=g), FeedforwardSynapses(h, h, generator=g)],
                input="x", recurrent_init="normal", initial_value=0.1, generator=g)
    assert abs(spectral_radius(c.synapse("h->h").weight) - 1.5) < 1e-9
    traj = c.simulate(torch.zeros(3, 2, 1), dt=0.01)
    torch.testing.assert_close(traj.rates["h"][0], torch.full((2, 30), 0.1), rtol=0, atol=0)
    assert not c.initial_state["h"].requires_grad
    with pytest.raises(ConfigError, match="'normal' is for free-sign blocks"):
        ei_circuit(init="normal")
    with pytest.raises(ConfigError, match="initial_value must be a finite number"):
        Circuit([x, h], [FeedforwardSynapses(x, h), FeedforwardSynapses(h, h)], input="x", initial_value=float("nan"))


def test_readout_from_e_only(f64):
    x, e, i, y = Population("x", 2), Population("e", 3, sign="E"), Population("i", 2, sign="I"), Population("y", 1)
    syns = [FeedforwardSynapses(x, e), FeedforwardSynapses(e, i), FeedforwardSynapses(i, y)]
    with pytest.raises(ConfigError, match=r"readout='E'.*\['i->y'\]"):
        Circuit([x, e, i, y], syns, input="x", output="y", readout="E")


# -- training through time ---------------------------------------------------------------------
def smooth_circuit(rule_rec="bp", dynamics=None, learn_initial_state=True):
    g = torch.Generator().manual_seed(2)
    x = Population("x", 2)
    h = Population("h", 4, activation="tanh", tau=0.004)
    k = Population("k", 3, activation="sigmoid", tau=0.003, dynamics="current")
    y = Population("y", 2, activation="linear", tau=0.002)
    syns = [FeedforwardSynapses(x, h, feedback="bp", generator=g),
            FeedforwardSynapses(h, h, feedback=rule_rec, generator=g, init=0.6),
            FeedforwardSynapses(h, k, feedback="bp", generator=g),
            FeedforwardSynapses(k, h, feedback="bp", generator=g),
            FeedforwardSynapses(h, y, feedback="bp", generator=g)]
    return Circuit([x, h, k, y], syns, input="x", output="y", dynamics=dynamics,
                   learn_initial_state=learn_initial_state)


def loss_of(c, x, target, mask, **kw):
    out = c.unroll(x, dt=DT, **kw).rates["y"][1:]
    return 0.5 * (mask[..., None] * (out - target) ** 2).sum()


@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_bptt_with_bp_equals_finite_differences(f64, dynamics):
    c = smooth_circuit("bp", dynamics)
    with torch.no_grad():
        for p in c.initial_state.values():
            p.normal_(0, 0.3)
    gx = torch.Generator().manual_seed(5)
    x, target = torch.randn(9, 3, 2, generator=gx), torch.randn(9, 3, 2, generator=gx)
    mask = (torch.rand(9, 3, generator=gx) > 0.3).to(torch.float64)
    loss_of(c, x, target, mask).backward()
    params = [p for p in c.parameters() if p.requires_grad]
    assert any(p is c.initial_state["h"] for p in params)
    eps = 1e-6
    for p in params:
        fd = torch.zeros_like(p)
        for j in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[j] += eps
                up = loss_of(c, x, target, mask)
                p.view(-1)[j] -= 2 * eps
                down = loss_of(c, x, target, mask)
                p.view(-1)[j] += eps
            fd.view(-1)[j] = (up - down) / (2 * eps)
        torch.testing.assert_close(p.grad, fd, rtol=1e-6, atol=1e-9)


def manual_fa_through_time(c, x, target, mask, B):
    """BPTT written by hand for x -> h (h -> h with feedback B) ...: B replaces W_hh^T at every step."""
    tr = c.simulate(x, dt=DT)
    names = ["h", "k", "y"]
    pops = {n: c.population(n) for n in names}
    W = {s.name: s.weight.detach() for s in c.feedforward}
    r = tr.rates
    st = {n: (tr.states[n] if n in tr.states else r[n]) for n in names}
    T = x.shape[0]
    cur = {n: [] for n in names}  # currents I^n
    for n in range(T):
        cur["h"].append(r["x"][n] @ W["x->h"].T + r["h"][n] @ W["h->h"].T + r["k"][n] @ W["k->h"].T + c.bias("h").detach())
        cur["k"].append(r["h"][n] @ W["h->k"].T + c.bias("k").detach())
        cur["y"].append(r["h"][n] @ W["h->y"].T + c.bias("y").detach())
    kk = {n: DT / pops[n].tau for n in names}
    # total derivative dL/ds^n of every state, backwards
    gs = {n: torch.zeros_like(st[n][0]) for n in names}
    grads = {s.name: torch.zeros_like(W[s.name]) for s in c.feedforward}
    for n in range(T - 1, -1, -1):
        gs["y"] = gs["y"] + mask[n][:, None] * (r["y"][n + 1] - target[n])  # L on rates[y][n + 1]
        delta = {}
        for q in names:  # dL/dI^n_q through s^{n+1} = s^n + k (d(I^n) - s^n)
            i = cur[q][n]
            form = c.dynamics_of(q)
            dprime = torch.ones_like(i) if form == "current" else pops[q].act.prime(i)
            delta[q] = kk[q] * gs[q] * dprime
        grads["x->h"] += delta["h"].T @ r["x"][n]
        grads["h->h"] += delta["h"].T @ r["h"][n]
        grads["k->h"] += delta["h"].T @ r["k"][n]
        grads["h->k"] += delta["k"].T @ r["h"][n]
        grads["h->y"] += delta["y"].T @ r["h"][n]
        g_rate_h = delta["h"] @ B + delta["k"] @ W["h->k"] + delta["y"] @ W["h->y"]  # B, not W_hh
        g_rate_k = delta["h"] @ W["k->h"]
        new = {}
        for q, g_rate in (("h", g_rate_h), ("k", g_rate_k), ("y", torch.zeros_like(gs["y"]))):
            form = c.dynamics_of(q)
            via_rate = g_rate * (pops[q].act.prime(st[q][n]) if form == "current" else 1.0)
            new[q] = (1 - kk[q]) * gs[q] + via_rate
        gs = new
    return grads


@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "brsf"])
@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_fa_on_a_recurrent_synapse_equals_a_hand_written_loop(f64, dynamics, rule):
    c = smooth_circuit(rule, dynamics, learn_initial_state=False)
    gx = torch.Generator().manual_seed(6)
    x, target = torch.randn(10, 3, 2, generator=gx), torch.randn(10, 3, 2, generator=gx)
    mask = (torch.rand(10, 3, generator=gx) > 0.3).to(torch.float64)
    loss_of(c, x, target, mask).backward()
    B = c.synapse("h->h").feedback_synapses.matrix()
    ref = manual_fa_through_time(c, x, target, mask, B)
    for s in c.feedforward:
        torch.testing.assert_close(s.layer.weight.grad, ref[s.name], rtol=1e-10, atol=1e-12)
    # the loop with W_hh^T in place of B is a different gradient: the test can tell them apart
    exact = manual_fa_through_time(c, x, target, mask, c.synapse("h->h").weight.detach())
    assert (exact["x->h"] - ref["x->h"]).abs().max() > 1e-6


def test_brsf_draws_once_per_training_step_not_per_time_step(f64):
    from biofa.feedback import next_step

    c = smooth_circuit("brsf", learn_initial_state=False)
    gx = torch.Generator().manual_seed(7)
    x, target, mask = torch.randn(8, 2, 2, generator=gx), torch.randn(8, 2, 2, generator=gx), torch.ones(8, 2)

    def grads():
        c.zero_grad()
        loss_of(c, x, target, mask).backward()
        return c.synapse("x->h").layer.weight.grad.clone(), c.synapse("h->h").feedback_synapses.matrix()

    (g1, b1), (g2, b2) = grads(), grads()
    assert torch.equal(g1, g2) and torch.equal(b1, b2)  # the same step: the same B, the same gradient
    # one B for the whole sequence: the hand loop with that single B at every step
    torch.testing.assert_close(g1, manual_fa_through_time(c, x, target, mask, b1)["x->h"], rtol=1e-10, atol=1e-12)
    next_step()
    g3, b3 = grads()
    assert not torch.equal(b3, b1) and (g3 - g1).abs().max() > 1e-8
    torch.testing.assert_close(g3, manual_fa_through_time(c, x, target, mask, b3)["x->h"], rtol=1e-10, atol=1e-12)


def test_dale_norms_and_masks_hold_on_recurrent_synapses_after_training_steps(f64):
    g = torch.Generator().manual_seed(4)
    x = Population("x", 3)
    e = Population("E", 6, sign="E", tau=0.01)
    i = Population("I", 3, sign="I", tau=0.005)
    y = Population("y", 2, activation="linear", tau=DT)
    syns = [FeedforwardSynapses(x, e, generator=g), FeedforwardSynapses(x, i, generator=g),
            FeedforwardSynapses(e, e, p_connect=0.5, autapses=False, norm="const", generator=g),
            FeedforwardSynapses(i, e, norm={"rule": "const", "per": "unit"}, generator=g),
            FeedforwardSynapses(e, i, generator=g), FeedforwardSynapses(i, i, generator=g),
            FeedforwardSynapses(e, y, generator=g)]
    c = Circuit([x, e, i, y], syns, input="x", output="y", readout="E", dynamics="current",
                recurrent_init={"rule": "gamma", "rho0": 1.2}, generator=g)
    ee, ie = c.synapse("E->E"), c.synapse("I->E")
    norm_ee, norms_ie = ee.weight.detach().norm(), ie.weight.detach().norm(dim=1)
    start = {s.name: s.weight.detach().clone() for s in c.feedforward}
    opt = torch.optim.SGD(c.parameters(), lr=0.5)
    gx = torch.Generator().manual_seed(8)
    xs, target = torch.rand(12, 4, 3, generator=gx), torch.rand(12, 4, 2, generator=gx)
    for _ in range(5):
        opt.zero_grad()
        (0.5 * (c.unroll(xs, dt=DT).rates["y"][1:] - target) ** 2).sum().backward()
        opt.step()  # the constraints are projected after the step, recurrent synapses included
    for s in c.feedforward:
        w = s.weight.detach()
        assert not torch.equal(w, start[s.name]), s.name
        if s.pre.sign is not None:  # Dale's law from the presynaptic type (x is untyped, free)
            assert (w >= 0).all() if s.pre.sign == "E" else (w <= 0).all(), s.name
    assert torch.all(ee.layer.weight.detach()[ee.mask == 0] == 0)
    torch.testing.assert_close(ee.weight.detach().norm(), norm_ee, rtol=1e-12, atol=0)
    torch.testing.assert_close(ie.weight.detach().norm(dim=1), norms_ie, rtol=1e-12, atol=0)


def test_kolen_pollack_b_gets_ws_gradient_through_time(f64):
    c = smooth_circuit("kp", learn_initial_state=False)
    loss_of(c, torch.randn(6, 2, 2), torch.randn(6, 2, 2), torch.ones(6, 2)).backward()
    layer = c.synapse("h->h").layer
    torch.testing.assert_close(layer.feedback.B.grad, layer.weight.grad, rtol=0, atol=0)


def test_truncation_cuts_the_gradient_every_k_steps(f64):
    c = smooth_circuit("bp", learn_initial_state=True)
    x = torch.randn(8, 2, 2)

    def x0_grad(step, k):
        c.zero_grad()
        c.unroll(x, dt=DT, truncate=k).rates["y"][step].sum().backward()
        return c.initial_state["h"].grad.abs().sum()

    assert x0_grad(3, 3) > 0 and x0_grad(4, 3) == 0 and x0_grad(8, 8) > 0
    full = c.unroll(x, dt=DT).rates["y"][8].sum()
    c.zero_grad()
    full.backward()
    g_full = c.synapse("h->h").layer.weight.grad.clone()
    c.zero_grad()
    c.unroll(x, dt=DT, truncate=8).rates["y"][8].sum().backward()
    torch.testing.assert_close(c.synapse("h->h").layer.weight.grad, g_full, rtol=0, atol=1e-15)


def test_direct_feedback_through_time_reaches_the_hidden_rates(f64):
    g = torch.Generator().manual_seed(0)
    x, h, y = Population("x", 2), Population("h", 4, activation="tanh"), Population("y", 3, activation="linear")
    fb = FeedbackSynapses(y, h, generator=g)
    c = Circuit([x, h, y], [FeedforwardSynapses(x, h, generator=g, feedback="bp"),
                            FeedforwardSynapses(h, h, generator=g, feedback="bp"),
                            FeedforwardSynapses(h, y, feedback="none", generator=g)], input="x", output="y", feedback=[fb])
    tr = c.unroll(torch.randn(5, 2, 2), dt=DT)
    e = torch.randn(5, 2, 3)
    grad_h, = torch.autograd.grad((tr.rates["y"][1:] * e).sum(), tr.rates["h"], retain_graph=True)
    # the error of the output after step n reaches r_h^n as e B (and then flows back in time)
    torch.testing.assert_close(grad_h[4], e[4] @ fb.B, rtol=0, atol=1e-15)


# -- specs and bad input -------------------------------------------------------------------------
def test_packaged_recurrent_circuit_simulates_in_both_forms_and_round_trips(f64, tmp_path):
    c = bc.load("ei_recurrent")
    assert c.dynamics == "current" and c.recurrent
    x = torch.rand(20, 2, 3)
    out = {}
    for form in ("current", "rate"):
        spec = c.to_spec()
        spec["dynamics"] = form
        d = bc.from_spec(spec)
        assert [d.dynamics_of(n) for n in ("E", "I", "y")] == [form, form, "rate"]
        tr = d.simulate(x, dt=0.02, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(tr.rates["y"]).all() and (set(tr.states) == {"E", "I"}) == (form == "current")
        assert tr.rates["E"][1:].abs().amax(dim=(1, 2)).min() > 0  # the network moves at every step
        out[form] = tr.rates["E"]
    assert (out["current"] - out["rate"]).abs().max() > 1e-3  # two forms, two trajectories
    path = tmp_path / "c.toml"
    c.save(path)
    again = bc.load(path)
    assert again.to_spec() == c.to_spec()
    for k, v in c.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)


def test_every_new_key_round_trips(f64, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = Population("x", 2, bias=0.2, noise=0.01, rectify=True)
    e = Population("e", 5, sign="E", dynamics="current", noise=0.1)
    i = Population("i", 2, sign="I", dynamics="rate")
    y = Population("y", 1, activation="linear")
    syns = [FeedforwardSynapses(x, e, generator=g), FeedforwardSynapses(e, e, p_connect=0.5, autapses=False, generator=g),
            FeedforwardSynapses(e, i, generator=g), FeedforwardSynapses(i, e, generator=g, feedback="kp"),
            FeedforwardSynapses(e, y, generator=g)]
    c = Circuit([x, e, i, y], syns, input="x", output="y", dynamics="current", learn_initial_state=True,
                readout="E", recurrent_init={"rule": "balanced", "rho0": 1.1})
    spec = c.to_spec()
    assert spec["dynamics"] == "current" and spec["learn_initial_state"] and spec["readout"] == "E"
    assert spec["recurrent_init"] == {"rule": "balanced", "rho0": 1.1}
    assert spec["populations"]["x"]["rectify"] and spec["populations"]["e"]["noise"] == 0.1
    assert spec["synapses"][1]["p_connect"] == 0.5 and spec["synapses"][1]["autapses"] is False
    path = tmp_path / "c.toml"
    c.seed = 0
    c.save(path)
    assert bc.load(path).to_spec() == c.to_spec()
    again = bc.load(path)
    again.load_state_dict(c.state_dict())
    xs = torch.rand(6, 2, 2)
    a = c.simulate(xs, dt=DT, generator=torch.Generator().manual_seed(1))
    b = again.simulate(xs, dt=DT, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.rates["y"], b.rates["y"], rtol=0, atol=0)


@pytest.mark.parametrize("call, error, message", [
    (lambda c: c.simulate(torch.rand(5, 2, 4), dt=DT), ShapeError, r"x: the input population 'x' has 3 neurons"),
    (lambda c: c.simulate(torch.ones(5, 2, 3, dtype=torch.int64), dt=DT), ConfigError, "floating-point"),
    (lambda c: c.simulate(torch.rand(5, 2, 3, dtype=torch.float32), dt=DT), ConfigError, "x has dtype torch.float32"),
    (lambda c: c.unroll(torch.rand(5, 2, 3), dt=DT, truncate=0), ConfigError, "truncate must be an integer >= 1"),
    (lambda c: c.unroll(torch.rand(5, 2, 3), dt=0.004), ConfigError, r"dt = 0.004 is larger than .* tau = 0.002 of population 'y'"),
    (lambda c: c.simulate(torch.rand(2, 3), dt=DT), ConfigError, "duration is missing"),
    (lambda c: c.simulate(torch.rand(5, 2, 3), duration=0.01, dt=DT), ConfigError, "x has T = 5 rows"),
    (lambda c: c.unroll(torch.rand(5, 2, 3)), ConfigError, "dt is missing"),
])
def test_bad_input_names_the_argument(f64, call, error, message):
    with pytest.raises(error, match=message):
        call(ei_circuit())


def test_a_study_of_a_cyclic_circuit_stops_before_writing_anything(tmp_path):
    from biofa.cli import main

    circuit = tmp_path / "cyc.toml"
    circuit.write_text('input = "x"\noutput = "y"\n[populations.x]\nsize = 64\n'
                       '[populations.h]\nsize = 4\nactivation = "tanh"\n'
                       '[populations.y]\nsize = 10\nactivation = "linear"\n'
                       '[[synapses]]\npre = "x"\npost = "h"\n[[synapses]]\npre = "h"\npost = "h"\n'
                       '[[synapses]]\npre = "h"\npost = "y"\n')
    spec = tmp_path / "exp.toml"
    spec.write_text(f'[experiment]\nname = "cyc"\n[data]\nname = "digits"\nn_train = 100\nn_test = 50\n'
                    f'[model]\ncircuit = "{circuit.as_posix()}"\n[train]\nepochs = 1\n')
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert not out.exists()
    circuit.write_text(circuit.read_text().replace('pre = "h"\npost = "h"\n', 'pre = "h"\npost = "h"\np_connect = 0\n'))
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert not out.exists()


def test_bad_spec_keys_name_the_key(f64):
    spec = bc.read("ei_recurrent")
    for path, value, message in [
        (("populations", "E", "noise"), -0.1, r"populations\.E: .*noise must be a number >= 0"),
        (("synapses", 2, "p_connect"), 0, r"synapses\[2\]: .*p_connect must be a number in \(0, 1\]"),
        (("populations", "E", "dynamics"), "spiking", r"populations\.E: .*'dynamics' parameter"),
        (("populations", "E", "rectify"), True, r"rectify applies to the input population"),
    ]:
        bad = bc.read("ei_recurrent")
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(SpecError, match=message):
            bc.from_spec(bad)
    assert bc.from_spec(spec).recurrent


# -- CUDA (not run where there is no GPU) -----------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_cuda_simulate_and_unroll_match_cpu(f64, dynamics):
    c = ei_circuit(dynamics, noise=0.1, p_connect=0.6)
    x = torch.randn(20, 4, 3)
    xi = {n: torch.randn(20, 4, c.population(n).size) for n in ("E", "I")}
    ref = c.simulate(x, dt=DT, noise=xi)
    c.zero_grad()
    c.unroll(x, dt=DT, noise=xi).rates["y"].sum().backward()
    ref_grad = c.synapse("E->E").layer.weight.grad.clone()
    c = c.cuda()
    c.zero_grad()
    xi_cuda = {k: v.cuda() for k, v in xi.items()}
    got = c.simulate(x.cuda(), dt=DT, noise=xi_cuda)
    torch.testing.assert_close(got.rates["y"].cpu(), ref.rates["y"], rtol=0, atol=1e-12)
    c.unroll(x.cuda(), dt=DT, noise=xi_cuda).rates["y"].sum().backward()
    torch.testing.assert_close(c.synapse("E->E").layer.weight.grad.cpu(), ref_grad, rtol=0, atol=1e-10)


# -- Li et al.'s recurrent ColEI initialisation ------------------------------------------------
def test_colei_recurrent_init_is_dale_signed_balanced_and_at_its_radius(f64):
    c = ei_circuit(init="colei")
    (comp,) = c.recurrent_components
    m = recurrent_matrix(c, comp)
    assert spectral_radius(m) == pytest.approx(1.5, rel=1e-9)
    n_e = 7
    assert bool((m[:, :n_e] >= 0).all()) and bool((m[:, n_e:] <= 0).all())  # columns: E then I
    # the magnitudes before the radius scaling are Exp(1) draws times the row's balance ratio:
    # the same circuit with rho0 = 1 is the same matrix scaled
    m1 = recurrent_matrix(ei_circuit(init={"rule": "colei", "rho0": 1.0}), comp)
    torch.testing.assert_close(m1 * 1.5, m)
    with pytest.raises(ConfigError, match="gamma shape"):
        ei_circuit(init={"rule": "colei", "k": 2})


def test_colei_recurrent_rows_balance_in_expectation(f64):
    from biofa.circuit.recurrent_init import balance_ratios

    present = torch.ones(4, 10) - torch.eye(4, 10)
    sign = torch.tensor([1.0] * 8 + [-1.0] * 2)
    r = balance_ratios(present, sign)
    # Exp(1) has mean 1: expected excitation = sum of E ratios, inhibition = sum of I ratios
    torch.testing.assert_close((r * (sign > 0)).sum(1), (r * (sign < 0)).sum(1))
