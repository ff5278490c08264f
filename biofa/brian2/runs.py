"""The user-facing brian2 runs: rate dynamics (:func:`simulate`) and online learning.

:func:`simulate` and :func:`learn_online` take the arguments of ``Circuit.simulate`` and
:func:`biofa.circuit.learn_online`, build the network inside :func:`~biofa.brian2.brian2_target`,
run it and return torch tensors: a :class:`biofa.circuit.Trajectory`, or a
:class:`Brian2Learning` whose :meth:`~Brian2Learning.load_into` writes the learned W, B and b
back into the circuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, check_choice
from .network import Brian2Circuit, build_network
from .rflo import learn_rflo
from .targets import brian2_target

__all__ = ["Brian2Learning", "learn_online", "simulate"]


def _seconds(value, name: str, owner: str):
    """A time in seconds from a brian2 Quantity with dimensions of time (``20*ms``) or a plain
    number (already seconds); any other dimensions are a ConfigError naming ``name``."""
    import brian2 as b2

    if isinstance(value, b2.Quantity) and not isinstance(value, (int, float)):
        if value.ndim != 0:
            raise ConfigError(f"{owner}: {name} must be one time, e.g. 20*ms, got {value!r}")
        if not b2.have_same_dimensions(value, b2.second):
            raise ConfigError(f"{owner}: {name} must be a time, e.g. 20*ms (or a number of seconds), "
                              f"got {value!r} with dimensions {b2.get_unit(value.dim)!s}")
        return float(value / b2.second)
    return value


def _trajectory(model: Brian2Circuit, x, n_steps: int, dt: float, dtype, initial=None):
    from ..circuit.dynamics import Trajectory

    recorded = model.rates(initial)
    rates = {}
    for p in model.plan.pops:
        if p.role == "input" and p.name not in recorded:
            xs = torch.as_tensor(model.inputs[p.name], dtype=dtype)
            rates[p.name] = xs.expand(n_steps + 1, *xs.shape).clone()
        else:
            rates[p.name] = torch.as_tensor(recorded[p.name], dtype=dtype)
    states = {k: torch.as_tensor(v, dtype=dtype) for k, v in model.states().items()}
    return Trajectory(t=torch.arange(n_steps + 1, dtype=dtype) * dt, rates=rates, states=states)


def simulate(circuit, x, duration=None, dt=None, r0=None, *, generator=None, noise=None,
             backend: str = "numpy", directory: str | None = None):
    """Integrate the circuit's dynamics in brian2, returning what ``circuit.simulate`` returns.

    .. math:: s_p^{n+1} = s_p^n + \\frac{\\Delta t}{\\tau_p}\\left(-s_p^n + d_p^n + \\sigma_p\\sqrt{2\\tau_p/\\Delta t}\\,\\xi_p^n\\right)

    (rate form s = r, d = f(I); current form s = v, d = I, r = f(v); the time convention of
    :mod:`biofa.circuit.dynamics`). Recurrent circuits (cycles, self-connections) included.

    Parameters
    ----------
    x : (T, batch, n_in), one input row per step (a ``TimedArray`` in the network), or
        (batch, n_in) / (n_in,) held constant: the batch runs as ``batch`` copies of every
        population in one network (block-diagonal synapses).
    duration, dt : times: brian2 quantities (``20*ms``, ``0.1*ms``) or numbers of seconds;
        duration is required for a constant x (n_steps = round(duration / dt)) and optional for
        x in time (T dt).
    r0 : optional initial state, name → array broadcastable to (batch, size) (x in the current
        form); default 0, or the circuit's learned initial state.
    generator, noise : the noise draws ξ, as in ``circuit.simulate`` (the same generator gives
        the same draws); brian2 reads them from ``TimedArray`` objects.
    backend : brian2 code-generation target, ``"numpy"``, ``"cython"`` or ``"cpp_standalone"``.

    Returns
    -------
    :class:`biofa.circuit.Trajectory`: ``t`` (n_steps + 1,), ``rates`` name → (n_steps + 1,
    batch, size) for every population, ``states`` for current-form ones, in x's dtype when x is
    a float tensor (brian2 computes in float64).
    """
    from ..circuit.dynamics import check_dt, initial_state
    from ..circuit.dynamics import n_steps as _n_steps
    from ..circuit.noise import draws

    owner = "biofa.brian2.simulate"
    duration = None if duration is None else _seconds(duration, "duration", owner)
    if dt is None:
        raise ConfigError(f"{owner}: dt is missing; give the time step, e.g. dt=0.1*ms or 1e-4 (seconds)")
    dt = _seconds(dt, "dt", owner)
    check_dt(circuit, dt, owner)
    xa = x if torch.is_tensor(x) else torch.as_tensor(x)
    if xa.dim() == 3:
        steps = xa.shape[0]
        if duration is not None and _n_steps(duration, dt) != steps:
            raise ConfigError(f"{owner}: duration is {_n_steps(duration, dt)} steps of dt={dt}, but x has T = {steps} rows")
    else:
        if duration is None:
            raise ConfigError(f"{owner}: duration is missing; a constant x needs a duration, or give x of shape "
                              "(T, batch, n_in)")
        steps = _n_steps(duration, dt)
    batch = 1 if xa.dim() == 1 else xa.shape[-2]
    xi = draws(circuit, steps, batch, generator, noise, dtype=torch.float64)
    start = initial_state(circuit, batch, r0, dtype=torch.float64, learned=False)
    first = {}  # the rates at t = 0: r0, or f(x0) in the current form
    for name, v in start.items():
        p = circuit.population(name)
        first[name] = (p.act.f(v) if circuit.dynamics_of(name) == "current" else v).numpy()
    with brian2_target(backend, directory):
        model = build_network(circuit, x, dt=dt, r0={k: v.numpy() for k, v in start.items()}, noise=xi)
        model.run(steps)
        trajectory = _trajectory(model, x, steps, dt, _dtype(x), first)
    return trajectory


def _dtype(x):
    return x.dtype if torch.is_tensor(x) and x.is_floating_point() else torch.float64


@dataclass
class Brian2Learning:
    """A brian2 online-learning run: ``weights`` {synapse name: W (post, pre)}, ``feedback``
    {synapse name: learned Kolen–Pollack B}, ``biases`` {population: b}, ``trajectory`` (a
    :class:`biofa.circuit.Trajectory`, when recorded) — all torch tensors."""

    weights: dict
    feedback: dict
    biases: dict
    trajectory: object = None

    @torch.no_grad()
    def load_into(self, circuit) -> None:
        """Write the learned W, B and b into ``circuit`` (constraints follow W as usual)."""
        for s in circuit.feedforward:
            s.layer._set_weight(self.weights[s.name].to(s.weight.dtype))
            if s.name in self.feedback:
                s.layer.feedback.B.copy_(self.feedback[s.name])
        for name, b in self.biases.items():
            circuit.bias(name).copy_(b)


def learn_online(circuit, x, target, duration: float | None = None, dt: float | None = None,
                 lr: float | None = None, *, method: str = "three_factor", mask=None, update: str = "step",
                 r0=None, learn_bias: bool = True, record: bool = False, backend: str = "numpy",
                 directory: str | None = None) -> Brian2Learning:
    """Online three-factor learning in brian2, with input ``x`` and target ``y*`` clamped.

    .. math:: W \\leftarrow W - \\Delta t\\,\\eta\\,\\delta_\\mathrm{post}^\\top r_\\mathrm{pre} / N

    at every step, in the order of :func:`biofa.circuit.learn_online` (same arguments; ``duration``
    and ``dt`` may also be brian2 times such as ``20*ms``); the
    circuit is not modified (:meth:`Brian2Learning.load_into` writes the result back).
    ``record=True`` also returns the rate trajectory.

    ``method="rflo"``: RFLO with its traces as synapse variables (:mod:`biofa.brian2.rflo`), the
    arguments of :func:`biofa.circuit.online.learn_online` (x (T, batch, n_in), target
    (T, batch, n_out), ``mask``, ``update``; ``duration`` optional); no recording.
    """
    from ..circuit.dynamics import n_steps as _n_steps
    import math

    from ..circuit.online import UPDATES

    if method == "rflo":
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"biofa.brian2.learn_online: lr must be a finite number > 0 (the learning rate), "
                              f"got {lr!r}")
        check_choice("biofa.brian2.learn_online", "update", update, UPDATES)
        dt = _seconds(dt, "dt", "biofa.brian2.learn_online")
        if record:
            raise ConfigError("biofa.brian2.learn_online(method='rflo') records nothing; leave record out")
        with brian2_target(backend, directory):
            weights, biases = learn_rflo(circuit, x, target, dt=dt, lr=lr, mask=mask, update=update, r0=r0,
                                         learn_bias=learn_bias)
        dtype = _dtype(x)
        cast = lambda d: {k: torch.as_tensor(v, dtype=dtype) for k, v in d.items()}
        return Brian2Learning(weights=cast(weights), feedback={}, biases=cast(biases))
    check_choice("biofa.brian2.learn_online", "method", method, ("three_factor", "rflo"))
    if mask is not None or update != "step":
        raise ConfigError("biofa.brian2.learn_online(method='three_factor') takes no mask or update")

    duration = _seconds(duration, "duration", "biofa.brian2.learn_online")
    dt = _seconds(dt, "dt", "biofa.brian2.learn_online")
    steps = _n_steps(duration, dt)
    if not lr > 0:
        raise ConfigError(f"biofa.brian2.learn_online: lr must be > 0, got {lr!r}")
    dtype = _dtype(x)
    with brian2_target(backend, directory):
        model = build_network(circuit, x, dt=dt, target=target, lr=lr, r0=r0, learn_bias=learn_bias,
                              record=record)
        model.run(steps)
        cast = lambda d: {k: torch.as_tensor(v, dtype=dtype) for k, v in d.items()}
        weights = model.weights()
        result = Brian2Learning(
            weights=cast({k: v for k, v in weights.items() if not k.endswith(".B")}),
            feedback=cast({k[:-2]: v for k, v in weights.items() if k.endswith(".B")}),
            biases=cast(model.biases()),
            trajectory=_trajectory(model, x, steps, dt, dtype) if record else None)
    return result
