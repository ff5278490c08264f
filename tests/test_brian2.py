"""biofa.brian2 against the torch engine: same circuit, float64, same dt and step order.

Parity bar: relative error <= 1e-9 on trajectories and on the weights after online learning
(exact agreement is achievable: docs/guide/brian2.rst). The numpy target runs here (no
compiler); the compiled targets are in the ``slow`` tests at the end.
"""

import copy
import subprocess
import sys

import pytest
import torch

from biofa.circuit import Circuit, FeedbackSynapses, FeedforwardSynapses, Population
from biofa.errors import ConfigError, ShapeError

brian2 = pytest.importorskip("brian2")
b2 = pytest.importorskip("biofa.brian2")

pytestmark = pytest.mark.brian2
TOL = 1e-9


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def ei_circuit(seed, *, rule="fa", act="relu", dfa=False, sizes=None, out_act=None, sign_out=False,
               norm=None, feedback_sign=None):
    """A random E/I circuit: in -> (E, I) with E -> I, (E, I) -> out; Dale's law from E and I."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    n_in, n_e, n_i, n_out = sizes or (draw(2, 6), draw(3, 8), draw(2, 5), draw(2, 5))
    taus = (0.01 + 0.02 * torch.rand(3, generator=g)).tolist()
    bias = (0.2 * torch.rand(3, generator=g) - 0.05).tolist()
    x = Population("x", n_in)
    e = Population("E", n_e, sign="E", activation=act, tau=taus[0], bias=bias[0])
    i = Population("I", n_i, sign="I", activation=act, tau=taus[1], bias=bias[1])
    y = Population("y", n_out, sign="E" if sign_out else None, activation=out_act or act, tau=taus[2],
                   bias=bias[2])
    hidden = "none" if dfa else rule
    syn = [FeedforwardSynapses(x, e, feedback=hidden, generator=g),
           FeedforwardSynapses(x, i, feedback=hidden, generator=g),
           FeedforwardSynapses(e, i, feedback=hidden, generator=g),
           FeedforwardSynapses(e, y, feedback=hidden if dfa else rule, generator=g, norm=norm,
                               feedback_sign=feedback_sign),
           FeedforwardSynapses(i, y, feedback=hidden if dfa else rule, generator=g)]
    direct = [FeedbackSynapses(y, e, generator=g), FeedbackSynapses(y, i, generator=g)] if dfa else []
    return Circuit([x, e, i, y], syn, input="x", output="y", feedback=direct)


# -- rate dynamics -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed,act,batch", [(0, "relu", 3), (1, "tanh", 1), (2, "sigmoid", 2),
                                            (3, "softplus", 2), (4, "linear", 1)])
def test_simulate_matches_torch_engine(f64, seed, act, batch):
    c = ei_circuit(seed, act=act)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(batch, c.population("x").size, generator=g) * 2
    r0 = {"E": torch.rand(c.population("E").size, generator=g)}
    ref = c.simulate(x, duration=0.004, dt=1e-4, r0=r0)
    got = b2.simulate(c, x, duration=0.004, dt=1e-4, r0=r0)
    assert torch.equal(got.t, ref.t)
    assert set(got.rates) == set(ref.rates)
    for name, trace in ref.rates.items():
        assert got.rates[name].shape == trace.shape
        assert got.rates[name].dtype == torch.float64
        assert rel_err(got.rates[name], trace) <= TOL, name


def test_simulate_one_dimensional_input_is_a_batch_of_one(f64):
    c = ei_circuit(5)
    x = torch.rand(c.population("x").size)
    ref, got = c.simulate(x, 0.002, 1e-4), b2.simulate(c, x, 0.002, 1e-4)
    assert got.rates["y"].shape == ref.rates["y"].shape == (21, 1, c.population("y").size)
    assert rel_err(got.rates["y"], ref.rates["y"]) <= TOL


# -- online learning ---------------------------------------------------------------------------
def _learn_both(c, x, y, steps, dt, lr, **kw):
    torch_c = copy.deepcopy(c)
    ref = torch_c.learn_online(x, y, steps * dt, dt, lr, **kw)
    got = b2.learn_online(c, x, y, steps * dt, dt, lr, record=True, **kw)
    return torch_c, ref, got


@pytest.mark.filterwarnings("ignore::biofa.errors.DegenerateFeedbackWarning")  # uSF under Dale
@pytest.mark.parametrize("rule,act,batch", [("fa", "relu", 3), ("dfa", "tanh", 2), ("kp", "softplus", 2),
                                            ("bp", "sigmoid", 1), ("usf", "tanh", 2), ("frsf", "relu", 2)])
def test_online_learning_matches_torch_engine(f64, rule, act, batch):
    c = ei_circuit(10 + len(rule) + batch, rule="fa" if rule == "dfa" else rule, act=act, dfa=rule == "dfa",
                   out_act="linear" if act == "relu" else None)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(batch, c.population("x").size, generator=g)
    y = torch.rand(batch, c.population("y").size, generator=g)
    before = {s.name: s.weight.detach().clone() for s in c.feedforward}
    torch_c, ref, got = _learn_both(c, x, y, steps=150, dt=1e-4, lr=40.0)
    # the brian2 run leaves the circuit alone
    assert all(torch.equal(s.weight.detach(), before[s.name]) for s in c.feedforward)
    for s in torch_c.feedforward:
        moved = float((s.weight.detach() - before[s.name]).abs().max())
        assert moved > 1e-3, f"{s.name} did not learn: the test would be vacuous"
        assert rel_err(got.weights[s.name], s.weight.detach()) <= TOL, s.name
        if rule == "kp":
            assert rel_err(got.feedback[s.name], s.layer.feedback.B.detach()) <= TOL, s.name
    for name, b in got.biases.items():
        assert rel_err(b, torch_c.bias(name).detach()) <= TOL, name
    for name, trace in ref.rates.items():
        assert rel_err(got.trajectory.rates[name], trace) <= TOL, name


def test_online_learning_dale_projection_and_feedback_signs(f64):
    # large lr: many E weights are pushed through 0 and clamped by the projection
    c = ei_circuit(21, rule="kp", act="tanh", sign_out=True, feedback_sign="E")
    x = torch.rand(2, c.population("x").size) * 2
    y = -torch.rand(2, c.population("y").size)
    torch_c, _, got = _learn_both(c, x, y, steps=120, dt=1e-4, lr=400.0, learn_bias=False)
    clamped = sum(int((s.weight == 0).sum()) for s in torch_c.feedforward)
    assert clamped > 0
    for s in torch_c.feedforward:
        assert rel_err(got.weights[s.name], s.weight.detach()) <= TOL, s.name
    assert rel_err(got.feedback["E->y"], torch_c.synapse("E->y").layer.feedback.B.detach()) <= TOL
    for name, b in got.biases.items():
        assert torch.equal(b, c.bias(name).detach())


def test_load_into_writes_the_learned_state(f64):
    c = ei_circuit(3, rule="kp", act="tanh")
    x, y = torch.rand(2, c.population("x").size), torch.rand(2, c.population("y").size)
    torch_c, _, got = _learn_both(c, x, y, steps=40, dt=1e-4, lr=50.0)
    got.load_into(c)
    for s, t in zip(c.feedforward, torch_c.feedforward):
        assert rel_err(s.weight.detach(), t.weight.detach()) <= TOL
        assert rel_err(s.layer.feedback.B.detach(), t.layer.feedback.B.detach()) <= TOL


# -- structure and schedule --------------------------------------------------------------------
def test_network_objects_and_schedule(f64):
    c = ei_circuit(4, rule="fa")
    x, y = torch.rand(2, c.population("x").size), torch.rand(2, c.population("y").size)
    with b2.brian2_target("numpy"):
        model = b2.build_network(c, x, dt=1e-4, target=y, lr=1.0)
        # one NeuronGroup per population, batch copies inside it
        assert {n: len(g) for n, g in model.groups.items()} == {p.name: 2 * p.size for p in c.populations}
        # one Synapses object per feedforward and per feedback synapse object
        assert set(model.synapses) == {s.name for s in c.feedforward} | {f.name for f in c.feedback
                                                                          if f.target.name != "x"}
        for syn in model.synapses.values():
            assert isinstance(syn, brian2.Synapses)
        summary = str(model.network.scheduling_summary())
        rows = b2.schedule_table(model)
    assert all(when in ("groups", "end") for when, _, _ in rows)
    names = [name for _, _, name in rows]
    pos = lambda part: [k for k, n in enumerate(names) if part in n]  # noqa: E731
    ff_sums = [k for k, n in enumerate(names) if "_ff" in n and "summed_variable_I_ff" in n]
    err, deltas = pos("_err"), pos("_delta")
    updates, states = pos("_update"), pos("stateupdater")
    # currents < output error < hidden deltas (I before E: reverse topological) < W updates
    # < Euler state updates < bias updates
    assert max(ff_sums) < min(err) and max(err) < min(deltas)
    assert names[deltas[0]].endswith("p2_I_delta") and names[deltas[1]].endswith("p1_E_delta")
    w_updates = [k for k in updates if "_store_update" in names[k]]
    b_updates = [k for k in updates if "_bstore_update" in names[k]]
    assert max(deltas) < min(w_updates) and max(w_updates) < min(states) < max(states) < min(b_updates)
    # the feedback sums into a population run right before its delta
    for k in deltas:
        assert "summed_variable_fb" in names[k - 1]
    assert "stateupdater" in summary


def test_synapse_order_matches_weights(f64):
    c = ei_circuit(6)
    x = torch.rand(2, c.population("x").size)
    with b2.brian2_target("numpy"):
        model = b2.build_network(c, x, dt=1e-4)
        for s in c.feedforward:
            syn = model.synapses[s.name]
            n_pre, n_post = s.pre.size, s.post.size
            i, j, w = syn.i[:], syn.j[:], syn.w[:]
            assert len(w) == 2 * n_pre * n_post  # block diagonal: copies never connect
            assert (i // n_pre == j // n_post).all()
            expect = s.weight.detach().numpy()[j % n_post, i % n_pre]
            assert (w == expect).all()


# -- errors ------------------------------------------------------------------------------------
def test_norm_constraint_cannot_be_exported(f64):
    c = ei_circuit(0, norm="const")
    x, y = torch.rand(1, c.population("x").size), torch.rand(1, c.population("y").size)
    with pytest.raises(ConfigError, match="FeedforwardSynapses 'E->y'.*norm"):
        b2.learn_online(c, x, y, 0.001, 1e-4, 1.0)
    b2.simulate(c, x, 0.0002, 1e-4)  # the dynamics alone do not need it


@pytest.mark.filterwarnings("ignore::biofa.errors.DegenerateFeedbackWarning")  # uSF under Dale
@pytest.mark.parametrize("rule,why", [("brsf", "redraws"), ("wm", "noise"),
                                      ({"rule": "usf", "scale": "sn"}, "norm of W")])
def test_rules_brian2_cannot_express(f64, rule, why):
    c = ei_circuit(0, rule=rule)
    x, y = torch.rand(1, c.population("x").size), torch.rand(1, c.population("y").size)
    with pytest.raises(ConfigError, match=f"FeedbackSynapses 'E->I'.*{why}"):
        b2.build_network(c, x, dt=1e-4, target=y, lr=1.0)


def test_bad_arguments(f64):
    c = ei_circuit(0)
    n_in, n_out = c.population("x").size, c.population("y").size
    with pytest.raises(ConfigError, match="backend"):
        b2.simulate(c, torch.rand(1, n_in), 0.001, 1e-4, backend="gpu")
    with pytest.raises(ShapeError, match="input x of population 'x'"):
        b2.simulate(c, torch.rand(1, n_in + 1), 0.001, 1e-4)
    with pytest.raises(ShapeError, match="batch"):
        b2.learn_online(c, torch.rand(2, n_in), torch.rand(3, n_out), 0.001, 1e-4, 1.0)
    with pytest.raises(ConfigError, match="r0"):
        b2.simulate(c, torch.rand(1, n_in), 0.001, 1e-4, r0={"nope": torch.zeros(1)})
    with pytest.raises(ConfigError, match="lr"):
        b2.learn_online(c, torch.rand(1, n_in), torch.rand(1, n_out), 0.001, 1e-4, 0.0)


def test_import_biofa_does_not_import_brian2():
    code = "import sys, biofa, biofa.circuit, biofa.nn; assert 'brian2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- compiled targets ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cython", "cpp_standalone"])
def test_compiled_targets_match_torch_engine(f64, backend):
    c = ei_circuit(8, rule="kp", act="tanh", sign_out=True)
    x, y = torch.rand(2, c.population("x").size), torch.rand(2, c.population("y").size)
    ref = c.simulate(x, 0.003, 1e-4)
    got = b2.simulate(c, x, 0.003, 1e-4, backend=backend)
    for name, trace in ref.rates.items():
        assert rel_err(got.rates[name], trace) <= TOL
    torch_c = copy.deepcopy(c)
    torch_c.learn_online(x, y, 0.01, 1e-4, 50.0)
    learned = b2.learn_online(c, x, y, 0.01, 1e-4, 50.0, backend=backend)
    for s in torch_c.feedforward:
        assert rel_err(learned.weights[s.name], s.weight.detach()) <= TOL
        assert rel_err(learned.feedback[s.name], s.layer.feedback.B.detach()) <= TOL


@pytest.mark.parametrize("enforce", ["abs", "softplus"])
def test_reparameterised_dale_learns_like_the_projection(f64, enforce):
    # the torch engine writes W - dt*lr*g through the right inverse of S*phi(V), which ends in
    # S*max(S*W, 0): brian2's projection must agree
    g = torch.Generator().manual_seed(3)
    x, e, y = Population("x", 4), Population("E", 5, sign="E", bias=0.3), Population("y", 3, activation="linear")
    syn = [FeedforwardSynapses(x, e, generator=g),
           FeedforwardSynapses(e, y, sign={"rule": "E", "enforce": enforce}, generator=g)]
    c = Circuit([x, e, y], syn, input="x", output="y")
    xs, ys = torch.rand(2, 4, generator=g), -torch.rand(2, 3, generator=g)
    torch_c, _, got = _learn_both(c, xs, ys, steps=150, dt=1e-4, lr=2000.0)
    w = torch_c.synapse("E->y").weight.detach()
    assert int((w.abs() < 1e-100).sum()) > 0  # some synapses were clamped (softplus: to ~1e-154)
    for s in torch_c.feedforward:
        assert rel_err(got.weights[s.name], s.weight.detach()) <= TOL, s.name


# -- the torch engine's fused simulate loop against its own step functions ---------------------
def _stepwise(c, x, steps, dt):
    from biofa.circuit import dynamics

    rates = dynamics.initial_rates(c, x)
    w = dynamics.weights(c)
    out = {k: [v] for k, v in rates.items()}
    for _ in range(steps):
        rates = dynamics.euler_step(c, rates, dt, dynamics.currents(c, rates, w))
        for k, v in rates.items():
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_simulate_equals_the_step_functions(dtype, tol):
    # runs of populations with shared inputs, non-adjacent presynaptic populations (gathered),
    # mixed activations, duplicate pre->post synapse objects, a batch
    g = torch.Generator().manual_seed(0)
    x = Population("x", 3)
    a, b = Population("a", 4, activation="tanh", bias=0.1), Population("b", 2, tau=0.02)
    c_, d = Population("c", 3, activation="sigmoid"), Population("d", 2, activation="softplus")
    y = Population("y", 3, activation="linear", tau=0.005)
    kw = {"generator": g, "dtype": dtype}
    syn = [FeedforwardSynapses(x, a, **kw), FeedforwardSynapses(x, b, **kw), FeedforwardSynapses(a, c_, **kw),
           FeedforwardSynapses(x, c_, **kw), FeedforwardSynapses(a, d, **kw), FeedforwardSynapses(c_, d, **kw),
           FeedforwardSynapses(d, y, **kw), FeedforwardSynapses(b, y, **kw), FeedforwardSynapses(a, y, **kw),
           FeedforwardSynapses(a, y, name="a->y 2", **kw)]
    c = Circuit([x, a, b, c_, d, y], syn, input="x", output="y")
    xs = torch.rand(2, 3, generator=g, dtype=dtype)
    ref = _stepwise(c, xs, 40, 1e-3)
    got = c.simulate(xs, 0.04, 1e-3)
    for name, trace in ref.items():
        assert got.rates[name].dtype == dtype
        assert rel_err(got.rates[name], trace) <= tol, name
