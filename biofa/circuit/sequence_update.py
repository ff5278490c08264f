r"""RFLO and e-prop with the weights held for a sequence, the summed update computed backwards in time.

:func:`learn_sequence` applies exactly the update of
``learn_online(..., method=..., update="sequence")`` (:mod:`biofa.circuit.online`), evaluated in
another order. With the weights held, the trajectory does not depend on the traces, so it is
integrated first (:func:`biofa.circuit.dynamics.simulate`, one fused step per time step, no
trace arithmetic), and every trace sum :math:`\sum_m L^m \circ p^m` is rewritten through the
adjoint of the trace filter (:meth:`biofa.circuit.traces.Trace.summed`); for RFLO

.. math:: \sum_{m} L^m \circ p^m = \alpha \sum_k \big(f'(I^k)\odot\Lambda^k\big)^\top r^k_\mathrm{pre},
          \qquad \Lambda^k = L^{k+1} + (1-\alpha)\,\Lambda^{k+1},

one reverse recursion on (batch × post) rows and one matrix product per population instead of a
(batch × post × pre) trace update every step. Same arithmetic up to the order of summation
(the tests hold the two to 1e-10 in float64), the same noise draws from the same generator, a
fraction of the time; the price is memory: the trajectory, O(T · batch · units), which the
online loop never stores (use it for sequences of trials, ``learn_online`` for unbounded ones).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, DivergenceError
from .dynamics import currents, simulate, weights
from .noise import draws, noisy
from ._traced import (_apply, _check_finite, _check_lr, _check_method, _check_traced, _learners, _per_weight,
                      _sequence_rows, _signal_routes)
from .three_factor import OnlineTrace

__all__ = ["learn_sequence", "gradient_targets"]


def gradient_targets(circuit) -> dict:
    """The tensor each key of ``OnlineTrace.gradients`` is the gradient of: synapse name → its W
    (``synapses.weight``, through any parametrisation, so ``torch.autograd.backward`` carries the
    gradient to the parameters), ``"bias:<population>"`` → the bias."""
    out = {s.name: s.weight for s in circuit.feedforward}
    out.update({f"bias:{name}": b for name, b in circuit.biases.items()})
    return out


def _noise_like_online(circuit, steps: int, batch: int, generator, factory: dict) -> dict | None:
    """The standard normals ``learn_online`` draws, one step at a time, stacked to (T, batch, size)."""
    if not noisy(circuit):
        return None
    per_step = [draws(circuit, 1, batch, generator, **factory) for _ in range(steps)]
    return {name: torch.cat([d[name] for d in per_step]) for name in per_step[0]}


@torch.no_grad()
def learn_sequence(circuit, x, target, duration: float | None = None, dt: float | None = None,
                   lr: float | None = None, *, method: str = "rflo", mask=None, r0=None, learn_bias: bool = True,
                   generator: torch.Generator | None = None, apply: bool = True) -> OnlineTrace:
    r"""One sequence of RFLO or e-prop with the weights held, then the summed update (module docstring).

    The arguments and the update are those of :func:`biofa.circuit.online.learn_online` with
    ``update="sequence"`` (``method`` ``"rflo"`` or ``"eprop"``); the returned
    :class:`~biofa.circuit.three_factor.OnlineTrace` has the loss at every step, the whole
    trajectory (``rates`` every step, T + 1 rows) and the ``gradients`` the update used.
    ``apply=False`` leaves the weights alone (``lr`` is then not used): the gradients are the rule's
    estimate of ∂L/∂W, for an optimizer to step on (:func:`gradient_targets` names the tensors).
    """
    if method == "three_factor":
        raise ConfigError("learn_sequence: method must be 'rflo' or 'eprop' (the three-factor rule changes the "
                          "weights every step; use learn_online)")
    _check_method(method)
    if apply:
        _check_lr(lr)
    _check_traced(circuit, method)
    xs, steps, batch, target, mask, factory = _sequence_rows(circuit, x, target, mask, duration, dt, "learn_sequence")
    out = circuit.output
    traced, learners = _learners(circuit, method, 1, dt, learn_bias, factory)
    routes = _signal_routes(circuit)

    noise = _noise_like_online(circuit, steps, batch, generator, factory)
    traj = simulate(circuit, xs, dt=dt, r0=r0, noise=noise, generator=generator)
    rates = traj.rates  # name -> (T + 1, batch, size); rates[input][n] = u^n
    before = {name: v[:steps] for name, v in rates.items()}  # r^k, k = 0..T-1
    w = weights(circuit)
    current = currents(circuit, before, w)  # I^k
    act = {name: circuit.population(name).act for name in current}
    form = {name: circuit.dynamics_of(name) for name in current}
    d_prime = {k: act[k].prime(v) for k, v in current.items()}  # f'(I^k)

    diff = rates[out][1:] - target  # e^{k+1} scored by target[k]
    err = diff if mask is None else mask * diff
    losses = 0.5 * (err * diff).sum((1, 2)) / batch
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        raise DivergenceError(f"learn_sequence: the output rates became non-finite at step {int(bad[0])} (the "
                              f"weights are finite: the dynamics diverged); try a smaller lr (now {lr}) or dt")
    alpha_out = dt / circuit.population(out).tau
    out_prime = d_prime[out] if form[out] == "rate" else act[out].prime(traj.states[out][1:])
    delta_out = alpha_out * out_prime * err  # δ_out^k = ∂r^{k+1}_out/∂I^k_out ⊙ e^{k+1}

    zero_row = torch.zeros(1, batch, 1, **factory)
    grads = {}
    for tr in traced:
        size = circuit.population(tr.post).size
        if tr.post == out:  # the read-out: e^{k+1} meets p^{k+1}
            signal = torch.cat([zero_row.expand(1, batch, size), err])
            v_prime = None if form[out] == "rate" else act[out].prime(traj.states[out])
        else:  # a hidden population: L^k (the error reaching r^k) meets p^k
            paired, direct = routes[tr.post]
            terms = [delta_out @ s.feedback_synapses.matrix() for s in paired] + [err @ fb.matrix() for fb in direct]
            if not terms:
                grads[tr.post] = torch.zeros(size, tr.trace.shape[2], **factory)
                continue
            signal = torch.cat([sum(terms[1:], terms[0]), zero_row.expand(1, batch, size)])
            v_prime = d_prime[tr.post] if form[tr.post] == "rate" else act[tr.post].prime(traj.states[tr.post][:steps])
            v_prime = torch.cat([v_prime, zero_row.expand(1, batch, size)])
        pres = [torch.ones(steps, batch, 1, **factory) if name is None else before[name] for name in tr.pres]
        r_pre = pres[0] if len(pres) == 1 else torch.cat(pres, 2)
        grads[tr.post] = type(tr.trace).summed(tr.trace.alpha, signal, d_prime[tr.post], v_prime, r_pre)
    if apply:
        _apply(circuit, learners, grads, lr, batch)
        _check_finite(circuit, learners, lr)

    final = {name: v[-1] for name, v in rates.items()}
    final[circuit.input] = circuit.input_rates(xs[-1])
    return OnlineTrace(t=traj.t, rates=rates, loss=losses, final_rates=final,
                       gradients=_per_weight(learners, grads, batch))
