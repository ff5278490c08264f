"""biofa.brian2 on recurrent circuits with inputs in time, both dynamics forms and noise, against
the torch engine's simulate (float64, the same noise draws): agreement to 1e-10."""

import pytest
import torch

from biofa.circuit import Circuit, FeedforwardSynapses, Population
from biofa.errors import ConfigError

brian2 = pytest.importorskip("brian2")
b2 = pytest.importorskip("biofa.brian2")

pytestmark = pytest.mark.brian2
TOL = 1e-10
DT = 1e-3


def recurrent_ei(dynamics, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = Population("x", 3, noise=0.05, bias=0.2, rectify=True, tau=0.01)
    e = Population("E", 8, sign="E", noise=0.15, tau=0.01, bias=0.1)
    i = Population("I", 3, sign="I", tau=0.005, activation="tanh", noise=0.1)
    y = Population("y", 2, activation="linear", tau=DT, dynamics="rate")
    syns = [FeedforwardSynapses(x, e, generator=g), FeedforwardSynapses(x, i, generator=g),
            FeedforwardSynapses(e, e, autapses=False, p_connect=0.6, generator=g),
            FeedforwardSynapses(i, e, generator=g), FeedforwardSynapses(e, i, generator=g),
            FeedforwardSynapses(i, i, autapses=False, generator=g), FeedforwardSynapses(e, y, generator=g)]
    return Circuit([x, e, i, y], syns, input="x", output="y", readout="E", dynamics=dynamics,
                   recurrent_init={"rule": "gamma", "rho0": 0.9}, generator=g)


def check(c, x, backend="numpy", **kw):
    """Both engines on the same circuit and input; the noise from equal generators (or ``noise=``)."""
    ref = c.simulate(x, dt=DT, generator=torch.Generator().manual_seed(0), **kw)
    got = b2.simulate(c, x, dt=DT, backend=backend, generator=torch.Generator().manual_seed(0), **kw)
    assert set(got.rates) == set(ref.rates) and set(got.states) == set(ref.states)
    for name, trace in ref.rates.items():
        assert (got.rates[name] - trace).abs().max() <= TOL, name
    for name, trace in ref.states.items():
        assert (got.states[name] - trace).abs().max() <= TOL, name
    return ref


@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_recurrent_circuit_with_input_in_time_and_noise_matches_torch(f64, dynamics):
    c = recurrent_ei(dynamics)
    x = torch.randn(40, 2, 3)
    ref = check(c, x, r0={"E": 0.2})
    assert ref.rates["E"].abs().max() > 0.01  # the run did something


def test_pre_drawn_noise_and_a_constant_input(f64):
    c = recurrent_ei("current", seed=1)
    steps, batch = 25, 3
    noise = {n: torch.randn(steps, batch, c.population(n).size) for n in ("x", "E", "I")}
    check(c, torch.randn(steps, batch, 3), noise=noise)
    quiet = recurrent_ei("rate", seed=2)
    for p in quiet.populations:
        p.noise = None
    x = torch.rand(batch, 3)
    ref = quiet.simulate(x, 0.02, DT)
    got = b2.simulate(quiet, x, 0.02, DT)  # the old positional call
    for name, trace in ref.rates.items():
        assert (got.rates[name] - trace).abs().max() <= TOL


def test_bad_time_input(f64):
    c = recurrent_ei("rate")
    with pytest.raises(ConfigError, match="duration is missing"):
        b2.simulate(c, torch.rand(2, 3), dt=DT)
    with pytest.raises(ConfigError, match="dt = 0.1 is larger than"):
        b2.simulate(c, torch.rand(5, 2, 3), dt=0.1)
    with pytest.raises(ConfigError, match="acyclic"):
        b2.learn_online(c, torch.rand(2, 3), torch.rand(2, 2), 0.01, DT, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("dynamics", ["rate", "current"])
def test_cython_target_matches_torch(f64, dynamics):
    check(recurrent_ei(dynamics), torch.randn(30, 2, 3), backend="cython")
