"""RFLO and e-prop through learn_online (float64): exact against unroll + autograd with the
recurrent dependence detached, both forms, Dale's law, B = W_out / random B / direct feedback;
step vs sequence updates, memory flat in T, errors and warnings."""

import subprocess
import sys
import textwrap

import pytest
import torch

from biofa.circuit import Circuit, FeedbackSynapses, FeedforwardSynapses, Population
from biofa.circuit.traces import TRACES, EpropTrace, RFLOTrace, exact_trace
from biofa.errors import ConfigError, DegenerateFeedbackWarning, DivergenceError, ShapeError

DT = 1e-3


def ei(dynamics="rate", readout_fb="bp", direct=False, from_i=True, seed=0, n_e=6, n_i=3, tau_out=DT):
    """x -> E, I; E <-> I, E -> E, I -> I (no autapses), all with feedback 'none'; E (and I) -> y
    with ``readout_fb``, linear y of tau = dt; optional direct feedback y => E, I."""
    g = torch.Generator().manual_seed(seed)
    x = Population("x", 3)
    e = Population("E", n_e, sign="E", activation="softplus", tau=0.005, bias=0.1)
    i = Population("I", n_i, sign="I", activation="tanh", tau=0.003, bias=-0.05)
    y = Population("y", 2, activation="linear", tau=tau_out, dynamics="rate")
    kw = {"generator": g, "feedback": "none"}
    syns = [FeedforwardSynapses(x, e, **kw), FeedforwardSynapses(x, i, **kw),
            FeedforwardSynapses(e, e, autapses=False, **kw), FeedforwardSynapses(i, e, **kw),
            FeedforwardSynapses(e, i, **kw), FeedforwardSynapses(i, i, autapses=False, **kw),
            FeedforwardSynapses(e, y, generator=g, feedback=readout_fb)]
    if from_i:
        syns.append(FeedforwardSynapses(i, y, generator=g, feedback=readout_fb))
    fbs = [FeedbackSynapses(y, e, generator=g), FeedbackSynapses(y, i, generator=g)] if direct else []
    c = Circuit([x, e, i, y], syns, input="x", output="y", feedback=fbs, dynamics=dynamics,
                recurrent_init={"rule": "gamma", "rho0": 0.5}, generator=g)
    for s in c.feedforward:  # stronger input so that the nonlinearities are exercised
        if s.pre.name == "x":
            s.write_weight(3 * s.weight.detach())
    return c


def data(steps=40, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(steps, batch, 3, generator=g)
    target = torch.randn(steps, batch, 2, generator=g)
    mask = (torch.rand(steps, batch, 2, generator=g) > 0.3).double()
    return x, target, mask


def reference(c, x, target, mask):
    """∂L/∂W from unroll + autograd, L = ½ Σ m (r_out^{n+1} - y*^n)² / batch."""
    c.zero_grad()
    traj = c.unroll(x, dt=DT)
    out = traj.rates["y"][1:]
    loss = 0.5 * (mask * (out - target) ** 2).sum() / x.shape[1]
    loss.backward()
    grads = {s.name: s.layer.weight.grad.clone() for s in c.feedforward}
    grads.update({f"bias:{p}": b.grad.clone() for p, b in c.biases.items() if b.grad is not None})
    return grads


def assert_close(got, want, tol=1e-10):
    assert set(want) <= set(got), (set(want), set(got))
    for k, w in want.items():
        g = got[k].reshape(w.shape)
        err = (g - w).norm() / w.norm().clamp_min(1e-300)
        assert err <= tol, (k, float(err))
        assert w.norm() > 0, k


@pytest.mark.parametrize("method", sorted(TRACES))  # every registered rule, on the form it is exact for
@pytest.mark.parametrize("wiring", [dict(readout_fb="bp"), dict(readout_fb="fa"),
                                    dict(readout_fb="none", direct=True), dict(readout_fb="fa", direct=True)])
def test_exact_gradient_of_the_detached_dynamics(f64, method, wiring):
    dynamics = TRACES[method].exact_form
    c = ei(dynamics, **wiring)
    x, target, mask = data()
    want = reference(c, x, target, mask)
    before = {s.name: s.weight.detach().clone() for s in c.feedforward}
    tr = c.learn_online(x, target, dt=DT, lr=1e-6, method=method, mask=mask, update="sequence", record_every=None)
    assert_close(tr.gradients, want)
    for s in c.feedforward:  # the sequence update moved W (and only at the end)
        assert not torch.equal(before[s.name], s.weight.detach())
    # the loss reported is the reference loss
    c2 = ei(dynamics, **wiring)
    out = c2.simulate(x, dt=DT).rates["y"][1:]
    assert torch.allclose(tr.loss.sum(), 0.5 * (mask * (out - target) ** 2).sum() / 3, rtol=1e-12)


def test_rules_coincide_for_linear_units_and_differ_otherwise(f64):
    """RFLO and e-prop are the same rule for a constant f' (here: on the output alone they use the
    exact trace) and differ on the other form for a nonlinear f."""
    x, target, _ = data(steps=20)
    grads = {}
    for method in ("rflo", "eprop"):
        c = ei("rate")
        grads[method] = c.learn_online(x, target, dt=DT, lr=1e-6, method=method, update="sequence",
                                       record_every=None).gradients
    assert torch.allclose(grads["rflo"]["E->y"], grads["eprop"]["E->y"], rtol=1e-12)  # the read-out
    assert not torch.allclose(grads["rflo"]["E->E"], grads["eprop"]["E->E"], rtol=1e-6)


def test_trace_registry():
    assert set(TRACES) == {"rflo", "eprop"}
    assert exact_trace("rate") is RFLOTrace and exact_trace("current") is EpropTrace
    assert "alpha=0.5" in repr(RFLOTrace(0.5, 2, 3, 4))


def test_step_equals_sequence_for_one_step(f64):
    x, target, mask = data(steps=1)
    ws = []
    for update in ("step", "sequence"):
        c = ei("rate")
        c.learn_online(x, target, dt=DT, lr=0.5, method="rflo", mask=mask, update=update)
        ws.append({s.name: s.weight.detach().clone() for s in c.feedforward})
    for k in ws[0]:
        assert torch.equal(ws[0][k], ws[1][k]), k


def test_step_and_sequence_differ_only_by_the_moving_weights(f64):
    """Over T steps the relative difference shrinks like lr (the same update to first order) on
    the weights away from Dale's boundary, where the projection after every step would differ."""
    x, target, mask = data(steps=30)
    diffs = []
    for lr in (1e-5, 1e-6):
        ws = []
        for update in ("step", "sequence"):
            c = ei("current")
            w0 = c.synapse("E->E").weight.detach().clone()
            c.learn_online(x, target, dt=DT, lr=lr, method="eprop", mask=mask, update=update)
            ws.append((c.synapse("E->E").weight.detach() - w0)[w0.abs() > 1e-2])
        diffs.append(float((ws[0] - ws[1]).norm() / ws[1].norm()))
    assert diffs[0] > 0 and diffs[1] < diffs[0] / 5


def test_learning_reduces_the_loss(f64):
    x, target, _ = data(steps=50, batch=4)
    target = 0.2 * target
    c = ei("rate")
    first = c.learn_online(x, target, dt=DT, lr=1e-4, method="rflo", record_every=None).loss.sum()
    for _ in range(10):
        last = c.learn_online(x, target, dt=DT, lr=1e-4, method="rflo", record_every=None).loss.sum()
    assert last < 0.3 * first
    for s in c.feedforward:  # Dale's law holds after every projected update
        assert s.layer.sign is None or int(s.layer.sign.violations(s.weight.detach())) == 0


def test_recording(f64):
    x, target, _ = data(steps=10)
    c = ei("rate")
    tr = c.learn_online(x, target, dt=DT, lr=0.01, method="rflo", record_every=4, record_weights=True)
    assert tr.t.tolist() == pytest.approx([0, 4e-3, 8e-3, 10e-3])
    assert tr.rates["E"].shape == (4, 3, 6) and tr.weights["E->E"].shape == (4, 6, 6)
    assert torch.equal(tr.rates["x"][0], x[0]) and torch.equal(tr.rates["x"][-1], x[-1])
    off = ei("rate").learn_online(x, target, dt=DT, lr=0.01, method="rflo", record_every=None)
    assert off.rates == {} and off.t.numel() == 0 and off.loss.shape == (10,)


def test_errors(f64):
    c = ei("rate")
    x, target, mask = data(steps=5)
    with pytest.raises(ConfigError, match="did you mean 'rflo'"):
        c.learn_online(x, target, dt=DT, lr=0.1, method="rfl0")
    with pytest.raises(ConfigError, match="three_factor.*rflo"):
        c.learn_online(x[0], target[0], 0.005, DT, 0.1)  # positional call, three-factor on a cycle
    for lr in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="lr must be"):
            c.learn_online(x, target, dt=DT, lr=lr, method="rflo")
    with pytest.raises(ShapeError, match="target"):
        c.learn_online(x, target[:4], dt=DT, lr=0.1, method="rflo")
    with pytest.raises(ShapeError, match="mask"):
        c.learn_online(x, target, dt=DT, lr=0.1, method="rflo", mask=mask[:, :2])
    with pytest.raises(ConfigError, match="'update'"):
        c.learn_online(x, target, dt=DT, lr=0.1, method="rflo", update="epoch")
    with pytest.raises(DivergenceError, match="non-finite"):
        c.learn_online(x, 1e200 * target, dt=DT, lr=1e200, method="rflo")


def test_warns_when_no_error_reaches_the_inhibitory_population(f64):
    c = ei("rate", from_i=False)
    x, target, _ = data(steps=5)
    with pytest.warns(DegenerateFeedbackWarning, match=r"\['I'\]"):
        c.learn_online(x, target, dt=DT, lr=0.1, method="rflo")


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    sys.path.insert(0, {root!r})
    from tests.test_online_traces import ei
    torch.set_num_threads(1)
    steps = int(sys.argv[1])
    c = ei("rate", n_e=48, n_i=16)
    x = torch.rand(16, 3)
    target = torch.zeros(16, 2)
    c.learn_online(x[:1].expand(2, 16, 3), target, dt=1e-3, lr=1e-3, method="rflo", record_every=None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c.learn_online(x, target, steps * 1e-3, 1e-3, 1e-3, method="rflo", record_every=None)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


def test_memory_flat_in_T():
    """Peak RSS growth (ru_maxrss, KiB) of a fresh process: 4 000 steps keep no per-step tensor
    (one per step would be 16 x 64 x 8 bytes = 8 KiB, 32 MB in all)."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = MEMORY_SCRIPT.format(root=root)
    grown = []
    for steps in (100, 4000):
        res = subprocess.run([sys.executable, "-c", script, str(steps)], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
        grown.append(int(res.stdout.split()[-1]))
    assert grown[1] - grown[0] < 10_000, grown
