r"""Online learning in time: the circuit learns while its dynamics run (:func:`learn_online`).

``method="three_factor"``: acyclic circuits in the rate form, the error propagated through every
feedback pathway at each step (:mod:`biofa.circuit.three_factor`).

``method="rflo"`` / ``"eprop"`` (any circuit with an output, recurrent ones included; the traces
are in :mod:`biofa.circuit.traces`). The time convention of :mod:`biofa.circuit.dynamics`; the loss

.. math:: L = \frac{1}{2N} \sum_{n=0}^{T-1} \sum_{b,k} m^n_{bk} \big(r^{n+1}_{\mathrm{out},bk} - y^{*n}_{bk}\big)^2

(not divided by T: Murray's code divides by T, so its η is T times the η here). With
:math:`e^{n+1} = m^n \odot (r^{n+1}_\mathrm{out} - y^{*n})`, the error reaching a hidden
population h at step n (on :math:`r^n_h`, the rates the output read) is

.. math:: L^n_h = \sum_{\text{paired } s:\, h \to \mathrm{out}} \delta^n_\mathrm{out} B_s
                  + \sum_{\text{direct } d \to h} e^{n+1} B_d, \qquad
          \delta^n_\mathrm{out} = \frac{\partial r^{n+1}_\mathrm{out}}{\partial I^n_\mathrm{out}} \odot e^{n+1}

(:math:`\alpha_\mathrm{out} f'(I^n_\mathrm{out})` in the rate form; B = W_out under ``bp``; only the
read-out's feedback and direct feedback carry error: the recurrent synapses' feedback pathways
are unused) and every synapse s into h moves by

.. math:: \Delta W_s = -\frac{\eta}{N} \sum_n \sum_b L^n_{h,b} \circ p^n_{s,b}

with its trace :math:`p^n` (RFLO or e-prop for every non-output population; the read-out's own
synapses use the exact trace of the output's form, which with :math:`\tau_\mathrm{out} = \Delta t`
and a rate-form output is the delta rule :math:`e^{n+1} f'(I^n_\mathrm{out}) r^{n\top}`, scored
against :math:`p^{n+1}_\mathrm{out}`). Biases are traced as synapses from a rate held at 1 (or
frozen, ``learn_bias=False``). ``update="step"`` applies each step's term at once, the state
advancing with the weights of step n; ``update="sequence"`` sums and applies after the last step.

When it is exact: with a read-out of :math:`\tau_\mathrm{out} = \Delta t` and ``update="sequence"``,
RFLO in the rate form and e-prop in the current form give exactly ∂L/∂W of the unrolled dynamics in
which every population's input from the non-input hidden populations is detached (its own leak and
the read-out kept), with W_out or the random B in the read-out's place. Otherwise (a leaky read-out,
a rule applied to the other form, weights that move within the sequence) they approximate it."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, DivergenceError, check_choice
from ._traced import (_apply, _check_finite, _check_lr, _check_method, _check_traced, _learners, _per_weight,
                      _sequence_rows, _signal_routes, methods)  # noqa: F401 (methods: re-exported)
from .dynamics import currents, initial_state, weights
from .noise import draws, noisy, scale
from .three_factor import OnlineStep, OnlineTrace, learn_three_factor, online_step  # noqa: F401 (re-exported)

# -- learning through time: RFLO and e-prop ---------------------------------------------------------
#: ``update`` values of :func:`learn_online`
UPDATES = ("step", "sequence")


@torch.no_grad()
def _learn_traced(circuit, x, target, duration, dt, lr, *, method, mask, update, r0, record_every,
                  record_weights, learn_bias, generator) -> OnlineTrace:
    """RFLO / e-prop: the loop of :func:`learn_online` for ``method`` in :data:`~biofa.circuit.traces.TRACES`."""
    _check_lr(lr)
    check_choice("learn_online", "update", update, UPDATES)
    _check_traced(circuit, method)
    xs, steps, batch, target, mask, factory = _sequence_rows(circuit, x, target, mask, duration, dt, "learn_online")
    out = circuit.output
    traced, learners = _learners(circuit, method, batch, dt, learn_bias, factory)
    routes = _signal_routes(circuit)
    pops = [p for p in circuit.populations if p.name != circuit.input]
    form = {p.name: circuit.dynamics_of(p.name) for p in pops}
    inp = circuit.population(circuit.input)
    noisy_pops = noisy(circuit)
    one = torch.ones(batch, 1, **factory)  # the presynaptic "rate" of a bias

    state = initial_state(circuit, batch, r0, learned=False, **factory)  # s^n: r (rate form) or x (current form)
    rates = {p.name: state[p.name] if form[p.name] == "rate" else p.act.f(state[p.name]) for p in pops}
    grads = {tr.post: torch.zeros(tr.trace.shape[1], tr.trace.shape[2], **factory) for tr in traced}
    losses = torch.empty(steps, **factory)
    kept = [] if record_every is None else list(range(0, steps + 1, record_every))
    if kept and kept[-1] != steps:
        kept.append(steps)
    keep = set(kept)
    rec_rates = {name: [] for name in [circuit.input] + [p.name for p in pops]} if kept else {}
    rec_w = {s.name: [] for s in circuit.feedforward} if record_weights and kept else {}

    def record(rates_n):
        for name, v in rates_n.items():
            rec_rates[name].append(v.clone())
        for name, v in weights(circuit).items() if rec_w else ():
            rec_w[name].append(v.clone())

    alpha_out = dt / circuit.population(out).tau
    act = {p.name: p.act for p in pops}
    hidden = [tr for tr in traced if tr.hidden]
    readout = [tr for tr in traced if not tr.hidden]

    def presynaptic(tr, rates_n):  # the concatenated presynaptic rates of a trace at step n
        parts = [one if name is None else rates_n[name] for name in tr.pres]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    w = weights(circuit)  # re-read after every update under update="step"; held under "sequence"
    for n in range(steps):
        xi = draws(circuit, 1, batch, generator, **factory) if noisy_pops else {}
        u = xs[n] if inp.name not in xi else xs[n] + scale(inp.sigma, inp.tau, dt) * xi[inp.name][0]
        rates[circuit.input] = circuit.input_rates(u)
        if n in keep:
            record(rates)
        current = currents(circuit, rates, w)  # I^n from r^n
        d_prime = {k: act[k].prime(v) for k, v in current.items()}  # f'(I^n)
        # the pseudo-derivative at step n: f'(x^n) in the current form, f'(I^n) in the rate form
        v_prime = {k: d_prime[k] if form[k] == "rate" else act[k].prime(state[k]) for k in current}
        new_state, new_rates = {}, {}
        for p in pops:  # s^{n+1} = s^n + (dt/tau)(-s^n + d^n + noise)
            d = p.act.f(current[p.name]) if form[p.name] == "rate" else current[p.name]
            if p.name in xi:
                d = d + scale(p.sigma, p.tau, dt) * xi[p.name][0]
            s_new = torch.lerp(state[p.name], d, dt / p.tau)
            new_state[p.name] = s_new
            new_rates[p.name] = s_new if form[p.name] == "rate" else p.act.f(s_new)
        # e^{n+1}: the error that target[n] scores, masked
        diff = new_rates[out] - target[n]
        err = diff if mask is None else mask[n] * diff
        loss = 0.5 * (err * diff).sum() / batch
        losses[n] = loss
        if not math.isfinite(float(loss)):  # a weight went non-finite at the last update: name it
            _check_finite(circuit, learners, lr)
            raise DivergenceError(f"learn_online: the output rates became non-finite at step {n} (the weights are "
                                  f"finite: the dynamics diverged); try a smaller lr (now {lr}) or dt")
        # δ_out = ∂r^{n+1}_out/∂I^n_out ⊙ e: α f'(I^n) (rate form) or α f'(x^{n+1}) (current form)
        out_prime = d_prime[out] if form[out] == "rate" else circuit.population(out).act.prime(new_state[out])
        delta_out = alpha_out * out_prime * err
        signal = {}
        for h, (paired, direct) in routes.items():  # the error reaching r^n_h
            g = None
            for s in paired:
                term = delta_out @ s.feedback_synapses.matrix()
                g = term if g is None else g + term
            for fb in direct:
                term = err @ fb.matrix()
                g = term if g is None else g + term
            signal[h] = g
        for tr in hidden:  # hidden: L^n against p^n, before the trace advances
            if signal[tr.post] is not None:
                grads[tr.post].add_(tr.trace.gradient(signal[tr.post], v_prime[tr.post]))
        for tr in traced:  # p^n -> p^{n+1} from r^n_pre and f'(I^n_post)
            tr.trace.advance(presynaptic(tr, rates), d_prime[tr.post])
        v_out = act[out].prime(new_state[out]) if form[out] == "current" else None
        for tr in readout:  # read-out: e^{n+1} against p^{n+1}
            grads[tr.post].add_(tr.trace.gradient(err, v_out))
        if update == "step":
            _apply(circuit, learners, grads, lr, batch)
            for g in grads.values():
                g.zero_()
            w = weights(circuit)
        state, rates = new_state, {circuit.input: rates[circuit.input], **new_rates}
    if update == "sequence":
        _apply(circuit, learners, grads, lr, batch)
    _check_finite(circuit, learners, lr)
    rates[circuit.input] = circuit.input_rates(xs[-1])
    if kept:
        record(rates)
    t = torch.tensor(kept, **factory) * dt
    trace = OnlineTrace(t=t, rates={k: torch.stack(v) for k, v in rec_rates.items()}, loss=losses,
                        weights={k: torch.stack(v) for k, v in rec_w.items()}, final_rates=rates)
    if update == "sequence":
        trace.gradients = _per_weight(learners, grads, batch)
    return trace


def learn_online(circuit, x: torch.Tensor, target: torch.Tensor, duration: float | None = None,
                 dt: float | None = None, lr: float | None = None, *, method: str = "three_factor", mask=None,
                 update: str = "step", r0=None, record_every: int | None = 1, record_weights: bool = False,
                 learn_bias: bool = True, generator: torch.Generator | None = None) -> OnlineTrace:
    r"""Learn while the dynamics run: the three-factor rule, RFLO or e-prop (module docstring).

    Parameters
    ----------
    x : ``three_factor``: (batch, n_in) or (n_in,), clamped for ``duration``. ``rflo``/``eprop``:
        (T, batch, n_in), one row per step, or a constant x with ``duration``.
    target : ``three_factor``: (batch, n_out) or (n_out,). ``rflo``/``eprop``: (T, batch, n_out)
        (``target[n]`` scores the output after step n), or one row for every step.
    duration, dt : seconds (duration optional for an x of T rows).
    lr : η > 0. ``three_factor``: each step moves W by dt·η·gradient. ``rflo``/``eprop``: by
        η·gradient of the loss below (not divided by T nor scaled by dt: η is per step).
    method : ``"three_factor"`` (acyclic circuits, rate form), ``"rflo"`` or ``"eprop"``
        (:data:`biofa.circuit.traces.TRACES`; any circuit with an output).
    mask : rflo/eprop: (T, batch, n_out) or (T, batch); the weight of each scored row (default 1).
    update : rflo/eprop: ``"step"`` applies each step's update at once (weights change within the
        sequence); ``"sequence"`` holds the weights and applies the summed update after step T-1.
    r0 : initial state (rates; x in the current form), name → tensor broadcastable to (batch, size).
    record_every : keep rates (and weights) every k steps plus the last state; None: keep nothing
        (memory does not grow with T).
    record_weights : also record every synapse's W.
    learn_bias : learn the biases (traced like synapses from a rate held at 1) or freeze them.
    generator : torch.Generator for the populations' noise (rflo/eprop), drawn step by step.

    Returns
    -------
    OnlineTrace; ``loss[n]`` = :math:`\tfrac12 \sum_{b,k} m^n_{bk}(r^{n+1}_{\mathrm{out},bk} - y^{*n}_{bk})^2 / N`,
    with ``gradients`` filled under ``update="sequence"``.
    """
    _check_method(method)
    if method == "three_factor":
        if mask is not None or update != "step" or generator is not None:
            raise ConfigError("learn_online(method='three_factor') takes no mask, update or generator; "
                              "those belong to method='rflo' or 'eprop'")
        if duration is None:
            raise ConfigError("learn_online(method='three_factor'): duration is missing (seconds)")
        return learn_three_factor(circuit, x, target, duration, dt, lr, r0=r0, record_every=record_every,
                                  record_weights=record_weights, learn_bias=learn_bias)
    if record_every is not None and (not isinstance(record_every, int) or isinstance(record_every, bool)
                                     or record_every < 1):
        raise ConfigError(f"learn_online: record_every must be an integer >= 1 or None, got {record_every!r}")
    return _learn_traced(circuit, x, target, duration, dt, lr, method=method, mask=mask, update=update, r0=r0,
                         record_every=record_every, record_weights=record_weights, learn_bias=learn_bias,
                         generator=generator)
