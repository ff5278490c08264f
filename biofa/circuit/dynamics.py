r"""Rate dynamics of a circuit, integrated by synchronous forward Euler.

.. math:: \tau_p \frac{dr_p}{dt} = -r_p + f_p(I_p), \qquad
          I_p = \sum_{s:\,\mathrm{post}(s)=p} W_s r_{\mathrm{pre}(s)} + b_p, \qquad r_\mathrm{in} = x

One step (the order every engine follows, CIRCUIT_CONTRACT): from the rates :math:`r^n` compute
every current :math:`I^n_p`, then every :math:`r_p^{n+1} = r_p^n + \frac{\Delta t}{\tau_p}
(-r_p^n + f_p(I_p^n))`. The input stays clamped; other rates start at 0 unless ``r0`` is given.
For a directed acyclic graph the fixed point is the feed-forward pass ``circuit(x)``; Euler's
error against the exact trajectory is O(Δt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ShapeError


@dataclass
class Trajectory:
    """Rates over time: ``t`` has shape (n_steps + 1,), ``rates[name]`` (n_steps + 1, batch, size);
    index 0 is the initial state."""

    t: torch.Tensor
    rates: dict

    def final(self) -> dict:
        """The last state, name → (batch, size)."""
        return {k: v[-1] for k, v in self.rates.items()}


def n_steps(duration: float, dt: float) -> int:
    """round(duration / dt), validated (both > 0, at least one step)."""
    if not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
        raise ConfigError(f"simulate: dt must be a number > 0 (seconds), got {dt!r}")
    if not (isinstance(duration, (int, float)) and duration > 0 and math.isfinite(duration)):
        raise ConfigError(f"simulate: duration must be a number > 0 (seconds), got {duration!r}")
    steps = round(duration / dt)
    if steps < 1:
        raise ConfigError(f"simulate: duration {duration} is shorter than one step dt={dt}")
    return steps


def batched(circuit, x: torch.Tensor) -> torch.Tensor:
    """x as (batch, n_in): a 1-d x is a batch of one."""
    x = circuit._check_input(x)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ShapeError(f"simulate: x must have shape (batch, {x.shape[-1]}) or ({x.shape[-1]},), got {tuple(x.shape)}")
    return x


def initial_rates(circuit, x: torch.Tensor, r0=None) -> dict:
    """The state at t = 0: the input clamped to x, the others 0 or ``r0[name]`` (broadcast to the batch)."""
    r0 = dict(r0 or {})
    unknown = sorted(set(r0) - {p.name for p in circuit.populations} | ({circuit.input} & set(r0)))
    if unknown:
        raise ConfigError(f"simulate: r0 names {unknown} are not non-input populations of the circuit")
    rates = {circuit.input: x}
    for p in circuit.populations:
        if p.name == circuit.input:
            continue
        value = torch.zeros(x.shape[0], p.size, dtype=x.dtype, device=x.device)
        if p.name in r0:
            value = value + torch.as_tensor(r0[p.name], dtype=x.dtype, device=x.device)
        rates[p.name] = value
    return rates


def weights(circuit) -> dict:
    """Effective W of every synapse now (detached), name → (post, pre)."""
    return {s.name: s.weight.detach() for s in circuit.feedforward}


def currents(circuit, rates: dict, w: dict | None = None) -> dict:
    """:math:`I_p = \\sum_s W_s r_{\\mathrm{pre}(s)} + b_p` for every non-input population, summed in
    circuit synapse order, then the bias."""
    w = weights(circuit) if w is None else w
    out = {}
    for p in circuit.populations:
        if p.name == circuit.input:
            continue
        total = None
        for s in circuit._incoming[p.name]:
            term = rates[s.pre.name] @ w[s.name].T
            total = term if total is None else total + term
        out[p.name] = total + circuit.biases[p.name].detach()
    return out


def euler_step(circuit, rates: dict, dt: float, current: dict) -> dict:
    """:math:`r^{n+1} = r^n + \\frac{\\Delta t}{\\tau}(-r^n + f(I^n))`; the input stays clamped."""
    new = {circuit.input: rates[circuit.input]}
    for p in circuit.populations:
        if p.name == circuit.input:
            continue
        r = rates[p.name]
        new[p.name] = r + (dt / p.tau) * (-r + p.act.f(current[p.name]))
    return new


@torch.no_grad()
def simulate(circuit, x: torch.Tensor, duration: float, dt: float, r0=None) -> Trajectory:
    """Integrate the rate dynamics of ``circuit`` for input ``x`` (clamped) over ``duration`` seconds.

    Parameters
    ----------
    x : (batch, n_in) or (n_in,) — a batch of independent copies of the circuit.
    duration, dt : seconds; n_steps = round(duration / dt).
    r0 : optional initial rates, name → tensor broadcastable to (batch, size); default 0.

    Returns
    -------
    Trajectory with ``t`` (n_steps + 1,) and ``rates`` name → (n_steps + 1, batch, size).
    """
    steps = n_steps(duration, dt)
    x = batched(circuit, x)
    rates = initial_rates(circuit, x, r0)
    w = weights(circuit)
    trace = {k: torch.empty(steps + 1, *v.shape, dtype=v.dtype, device=v.device) for k, v in rates.items()}
    for k, v in rates.items():
        trace[k][0] = v
    for n in range(steps):
        rates = euler_step(circuit, rates, dt, currents(circuit, rates, w))
        for k, v in rates.items():
            trace[k][n + 1] = v
    t = torch.arange(steps + 1, dtype=x.dtype, device=x.device) * dt
    return Trajectory(t=t, rates=trace)
