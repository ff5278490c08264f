r"""Online learning in time: the circuit learns while its dynamics run (:func:`learn_online`).

``method="three_factor"`` (acyclic circuits, rate form). One step n, from the rates
:math:`r^n` and currents :math:`I^n`:

.. math::
    e &= r^n_\mathrm{out} - y^*, \qquad \delta_\mathrm{out} = f'_\mathrm{out}(I^n_\mathrm{out}) \odot e \\
    \delta_h &= f'_h(I^n_h) \odot \Big(\sum_{\text{paired } s:\,\mathrm{pre}(s)=h} \delta_{\mathrm{post}(s)} B_s
               + \sum_{\text{direct } d \to h} e\, B_d\Big) \quad\text{(reverse topological order)} \\
    W_s &\leftarrow W_s - \Delta t\,\eta\, \delta_{\mathrm{post}(s)}^\top r^n_{\mathrm{pre}(s)} / N, \qquad
    b_p \leftarrow b_p - \Delta t\,\eta\, \overline{\delta_p}

(N the batch size; a learned Kolen–Pollack B gets W's update; sign and norm constraints are
projected after each update), then the rates advance with the old weights:
:math:`r^{n+1} = r^n + \frac{\Delta t}{\tau}(-r^n + f(I^n))`. B is read before the update (for
uSF/frSF from the old W); every step counts as one training step (brSF redraws its magnitudes).

``method="rflo"`` / ``"eprop"`` (any circuit with an output, recurrent ones included; the traces
are in :mod:`biofa.circuit.traces`). The time convention of :mod:`biofa.circuit.dynamics`; the loss

.. math:: L = \frac{1}{2N} \sum_{n=0}^{T-1} \sum_{b} \big\| m^n_b \odot (r^{n+1}_{\mathrm{out},b} - y^{*n}_b) \big\|^2_{m}
          = \frac{1}{2N} \sum_{n,b,k} m^n_{bk} \big(r^{n+1}_{\mathrm{out},bk} - y^{*n}_{bk}\big)^2

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

import difflib
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch.nn.utils import parametrize

from .. import _hooks
from ..errors import ConfigError, DegenerateFeedbackWarning, DivergenceError, ShapeError, check_choice
from .dynamics import batched, currents, euler_step, initial_rates, initial_state, n_steps, time_input, weights
from .noise import draws, noisy, scale
from .traces import TRACES, Trace, exact_trace


@dataclass
class OnlineStep:
    """What one step computed: the new ``rates`` (step n + 1) and, at step n, ``currents``,
    ``error`` e, ``deltas`` (name → δ) and ``loss`` (½‖e‖² averaged over the batch)."""

    rates: dict
    currents: dict
    error: torch.Tensor
    deltas: dict
    loss: torch.Tensor


@dataclass
class OnlineTrace:
    """A run of :func:`learn_online`: ``t`` (recorded times), ``rates`` name → (n_rec, batch, size),
    ``weights`` synapse name → (n_rec, post, pre) when recorded, ``loss`` (n_steps,) at every
    step, ``final_rates`` the state after the last step; ``gradients`` (``update="sequence"`` of
    rflo/eprop) name → ∂L/∂W of the sequence with the weights held (biases as ``"bias:<population>"``):
    the update applied at the end was −lr times it, before the constraints' projection."""

    t: torch.Tensor
    rates: dict
    loss: torch.Tensor
    weights: dict = field(default_factory=dict)
    final_rates: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)


def _check(circuit, target):
    if circuit.recurrent:
        raise ConfigError(f"online learning: the synapses form a cycle {' -> '.join(circuit.cycle)}; the "
                          "three-factor rule (method='three_factor') needs an acyclic circuit. Learn a recurrent "
                          "circuit online with method='rflo' (rate form) or method='eprop' (current form), or "
                          "through time with circuit.unroll(...) and loss.backward()")
    current = [p.name for p in circuit.populations if p.name != circuit.input and circuit.dynamics_of(p.name) == "current"]
    if current:
        raise ConfigError(f"online learning: populations {current} use the current form; online learning "
                          "here integrates the rate form only")
    if circuit.output is None:
        raise ConfigError("online learning needs the circuit's output population; set output=")
    for fb in circuit.feedback:
        if fb.rule == "wm":
            raise ConfigError(f"online learning: synapses {fb.name!r} use weight mirror ('wm'), which learns B "
                              "from noise and has no online form here; use 'kp' or a fixed-B rule")
    size = circuit.population(circuit.output).size
    if target.shape[-1] != size:
        raise ShapeError(f"online learning: target must have shape (batch, {size}), got {tuple(target.shape)}")


def _error_routes(circuit) -> list:
    """The circuit's feedback wiring, which no learning step changes: for every non-input
    population in reverse topological order, the paired synapses whose δ_post @ B it receives and
    the direct pathways whose e @ B it receives."""
    routes = []
    for p in reversed(circuit.populations):
        if p.name == circuit.input:
            continue
        paired = [s for s in circuit._outgoing[p.name] if s.has_feedback]
        direct = [fb for fb in circuit.direct if fb.target is p]
        routes.append((p, paired, direct))
    return routes


@torch.no_grad()
def online_step(circuit, rates: dict, target: torch.Tensor, dt: float, lr: float, *,
                learn_bias: bool = True) -> OnlineStep:
    """One Euler step with three-factor plasticity (see the module docstring). Updates the
    circuit's W (and b, learned B) in place; ``rates`` is the state at step n (as from
    :func:`biofa.circuit.dynamics.initial_rates`), ``target`` (batch, n_out)."""
    x = rates[circuit.input]
    target = torch.as_tensor(target, dtype=x.dtype, device=x.device)
    _check(circuit, target)
    return _step(circuit, _error_routes(circuit), rates, target, dt, lr, learn_bias)


def _step(circuit, routes, rates, target, dt, lr, learn_bias) -> OnlineStep:
    """:func:`online_step` for a checked circuit and target, with its wiring precomputed."""
    w = weights(circuit)
    current = currents(circuit, rates, w)
    err = rates[circuit.output] - target
    batch = err.shape[0]
    matrices = {id(fb): fb.matrix() for fb in circuit.feedback}
    deltas = {}
    for p, paired, direct in routes:
        g = err if p.name == circuit.output else None
        for s in paired:
            term = deltas[s.post.name] @ matrices[id(s.feedback_synapses)]
            g = term if g is None else g + term
        for fb in direct:
            term = err @ matrices[id(fb)]
            g = term if g is None else g + term
        deltas[p.name] = torch.zeros_like(current[p.name]) if g is None else p.act.prime(current[p.name]) * g
    grads = {s.name: deltas[s.post.name].T @ rates[s.pre.name] / batch for s in circuit.feedforward}
    for s in circuit.feedforward:
        layer = s.layer
        layer._set_weight(w[s.name] - dt * lr * grads[s.name])
        layer.enforce_constraints()
        if s.has_feedback and layer.feedback.learned:  # Kolen–Pollack: B gets W's update
            b = layer.feedback.B
            b.copy_(b - dt * lr * grads[s.name])
            s.feedback_synapses.enforce_constraints()
    if learn_bias:
        for p in circuit.populations:
            if p.name != circuit.input and p.learn_bias:
                bias = circuit.biases[p.name]
                bias.copy_(bias - dt * lr * deltas[p.name].mean(0))
    new = euler_step(circuit, rates, dt, current)
    _hooks.next_step()
    loss = 0.5 * (err ** 2).sum(-1).mean()
    return OnlineStep(rates=new, currents=current, error=err, deltas=deltas, loss=loss)


@torch.no_grad()
def _learn_three_factor(circuit, x, target, duration, dt, lr, *, r0=None, record_every=1,
                        record_weights=False, learn_bias=True) -> OnlineTrace:
    """Run the circuit on clamped input ``x`` and target ``target`` for ``duration`` seconds,
    learning at every Euler step (:func:`online_step`).

    Parameters
    ----------
    x : (batch, n_in) or (n_in,); target : (batch, n_out) or (n_out,).
    duration, dt : seconds; lr : η (the update per step is dt·η·gradient).
    record_every : keep rates (and weights) every k steps, plus the last state.
    record_weights : also record every synapse's W.
    """
    steps = n_steps(duration, dt)
    if not isinstance(record_every, int) or isinstance(record_every, bool) or record_every < 1:
        raise ConfigError(f"learn_online: record_every must be an integer >= 1, got {record_every!r}")
    x = batched(circuit, x)
    target = torch.as_tensor(target, dtype=x.dtype, device=x.device)
    if target.dim() == 1:
        target = target.unsqueeze(0)
    if target.shape[0] != x.shape[0]:
        raise ShapeError(f"learn_online: x has batch {x.shape[0]} but target has {target.shape[0]}")
    _check(circuit, target)
    routes = _error_routes(circuit)  # the wiring is fixed for the whole run
    rates = initial_rates(circuit, x, r0)
    kept = list(range(0, steps + 1, record_every))
    if kept[-1] != steps:
        kept.append(steps)
    keep = set(kept)
    rec_rates = {k: [] for k in rates}
    rec_w = {s.name: [] for s in circuit.feedforward} if record_weights else {}
    losses = torch.empty(steps, dtype=x.dtype, device=x.device)

    def record():
        for k, v in rates.items():
            rec_rates[k].append(v.clone())
        for name, v in weights(circuit).items() if record_weights else ():
            rec_w[name].append(v.clone())

    for n in range(steps):
        if n in keep:
            record()
        result = _step(circuit, routes, rates, target, dt, lr, learn_bias)
        losses[n] = result.loss
        rates = result.rates
    record()
    t = torch.tensor(kept, dtype=x.dtype, device=x.device) * dt
    return OnlineTrace(t=t, rates={k: torch.stack(v) for k, v in rec_rates.items()}, loss=losses,
                       weights={k: torch.stack(v) for k, v in rec_w.items()}, final_rates=rates)


# -- learning through time: RFLO and e-prop ---------------------------------------------------------
#: ``update`` values of :func:`learn_online`
UPDATES = ("step", "sequence")


def methods() -> tuple:
    """The ``method`` names of :func:`learn_online`: the three-factor rule, then every registered trace."""
    return ("three_factor",) + tuple(TRACES)


def _check_method(method) -> None:
    if method in methods():
        return
    hint = ""
    if isinstance(method, str):
        close = difflib.get_close_matches(method, methods(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"The 'method' parameter of learn_online must be one of {{{', '.join(map(repr, methods()))}}}. "
                      f"Got {method!r} instead{hint}. (Feedback rules such as 'fa' or 'bp' are set on the "
                      "synapses with feedback=..., not here.)")


def _check_lr(lr) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"learn_online: lr must be a finite number > 0 (the learning rate), got {lr!r}")


def _rows(value, name: str, steps: int, batch: int, width: int | None, like: torch.Tensor) -> torch.Tensor:
    """``value`` as (T, batch, width) (a view when broadcast: no copy per step). ``target`` may be
    (T, batch, n_out), (batch, n_out) or (n_out,); ``mask`` (T, batch, n_out) or (T, batch)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    want = f"(T, batch, {width}) = ({steps}, {batch}, {width})"
    if name == "mask":
        if value.dim() == 2 and value.shape == (steps, batch):
            return value.unsqueeze(-1)
        if value.shape == (steps, batch, width):
            return value
        raise ShapeError(f"learn_online: mask must have shape {want} or (T, batch) = ({steps}, {batch}), "
                         f"got {tuple(value.shape)}")
    if value.dim() in (1, 2) and value.shape[-1] == width and (value.dim() == 1 or value.shape[0] == batch):
        return value.expand(steps, batch, width)
    if value.shape != (steps, batch, width):
        raise ShapeError(f"learn_online: target must have shape {want} (one row per step; target[n] scores the "
                         f"output after step n), ({batch}, {width}) or ({width},), got {tuple(value.shape)}")
    return value


@dataclass
class _Learner:
    """One traced weight: a synapse object (``synapse``) or a population's bias (``synapse`` None,
    presynaptic rate 1), its post population and its trace."""

    post: str
    pre: str | None
    synapse: object
    trace: Trace
    key: str


def _learners(circuit, method: str, batch: int, dt: float, learn_bias: bool, factory: dict) -> list:
    """A trace for every synapse into a non-input population and every learned bias; the output's
    is the exact trace of its own form (it has no recurrence), the others use ``method``'s."""
    out = []
    for p in circuit.populations:
        if p.name == circuit.input:
            continue
        cls = exact_trace(circuit.dynamics_of(p.name)) if p.name == circuit.output else TRACES[method]
        alpha = dt / p.tau
        for s in circuit._incoming[p.name]:
            out.append(_Learner(p.name, s.pre.name, s, cls(alpha, batch, p.size, s.pre.size, **factory), s.name))
        if learn_bias and p.learn_bias:
            out.append(_Learner(p.name, None, None, cls(alpha, batch, p.size, 1, **factory), f"bias:{p.name}"))
    return out


def _signal_routes(circuit) -> dict:
    """hidden population → (paired read-out synapses whose B carries δ_out, direct pathways
    carrying e); warns (:class:`~biofa.errors.DegenerateFeedbackWarning`) about populations that
    no error reaches, whose incoming synapses will not learn."""
    routes, deaf = {}, []
    for p in circuit.populations:
        if p.name in (circuit.input, circuit.output):
            continue
        paired = [s for s in circuit._outgoing[p.name] if s.post.name == circuit.output and s.has_feedback]
        direct = [fb for fb in circuit.direct if fb.target is p]
        routes[p.name] = (paired, direct)
        if not paired and not direct:
            deaf.append(p.name)
    if deaf:
        warnings.warn(f"learn_online: no error reaches populations {deaf} (they feed the output through no "
                      "synapse with a feedback pathway and receive no direct feedback), so their incoming "
                      "synapses and biases will not learn; read the output from them (readout) or add "
                      "FeedbackSynapses(source=<output>, target=...) to them", DegenerateFeedbackWarning, stacklevel=4)
    return routes


def _check_traced(circuit, method) -> None:
    if circuit.output is None:
        raise ConfigError(f"learn_online(method={method!r}) needs the circuit's output population; set output=")
    for fb in circuit.feedback:
        if fb.rule == "wm":
            raise ConfigError(f"learn_online: synapses {fb.name!r} use weight mirror ('wm'), which learns B "
                              "from noise and has no online form here; use 'kp' or a fixed-B rule")


def _apply(circuit, learners, grads: dict, lr: float, batch: int) -> None:
    """:math:`W \\leftarrow W - \\eta\\, G / N` for every traced weight, then its constraints
    (sign and norm projected after every update; a learned Kolen–Pollack B gets W's update).
    Raises :class:`~biofa.errors.DivergenceError` naming the first weight that is no longer finite."""
    scale = lr / batch
    total = None  # one host sync per update: a sum is finite iff every term is
    for ln in learners:
        g = grads[ln.key]
        s = ln.synapse
        if s is None:
            circuit.biases[ln.post].sub_(g[:, 0], alpha=scale)
        else:
            layer = s.layer
            if s.mask is not None:
                g = g * s.mask.to(g.dtype)
            if parametrize.is_parametrized(layer, "weight"):
                layer._set_weight(s.weight.detach() - scale * g)
            else:
                layer.weight.sub_(g, alpha=scale)
            layer.enforce_constraints()
            if s.has_feedback and layer.feedback.learned:
                layer.feedback.B.sub_(g, alpha=scale)
                s.feedback_synapses.enforce_constraints()
        part = g.sum()
        total = part if total is None else total + part
    if total is not None and not math.isfinite(float(total)):
        for ln in learners:
            value = circuit.biases[ln.post] if ln.synapse is None else ln.synapse.weight
            if not bool(torch.isfinite(value).all()) or not bool(torch.isfinite(grads[ln.key]).all()):
                what = (f"the bias of population {ln.post!r}" if ln.synapse is None
                        else f"the weights of synapses {ln.synapse.name!r}")
                raise DivergenceError(f"learn_online: {what} became non-finite (NaN or inf) after an update; "
                                      f"the learning rate lr={lr} is probably too large for this circuit, dt and error")
    _hooks.next_step()


@torch.no_grad()
def _learn_traced(circuit, x, target, duration, dt, lr, *, method, mask, update, r0, record_every,
                  record_weights, learn_bias, generator) -> OnlineTrace:
    """RFLO / e-prop: the loop of :func:`learn_online` for ``method`` in :data:`~biofa.circuit.traces.TRACES`."""
    _check_lr(lr)
    check_choice("learn_online", "update", update, UPDATES)
    _check_traced(circuit, method)
    xs, steps, _ = time_input(circuit, x, duration, dt, "learn_online")
    batch = xs.shape[1]
    out = circuit.output
    n_out = circuit.population(out).size
    target = _rows(target, "target", steps, batch, n_out, xs)
    mask = None if mask is None else _rows(mask, "mask", steps, batch, n_out, xs)
    factory = {"dtype": xs.dtype, "device": xs.device}
    learners = _learners(circuit, method, batch, dt, learn_bias, factory)
    routes = _signal_routes(circuit)
    pops = [p for p in circuit.populations if p.name != circuit.input]
    form = {p.name: circuit.dynamics_of(p.name) for p in pops}
    inp = circuit.population(circuit.input)
    noisy_pops = [p for p in noisy(circuit)]
    one = torch.ones(batch, 1, **factory)  # the presynaptic "rate" of a bias

    state = initial_state(circuit, batch, r0, learned=False, **factory)  # s^n: r (rate form) or x (current form)
    rates = {p.name: state[p.name] if form[p.name] == "rate" else p.act.f(state[p.name]) for p in pops}
    grads = {ln.key: torch.zeros(ln.trace.shape[1], ln.trace.shape[2], **factory) for ln in learners}
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
    for n in range(steps):
        xi = draws(circuit, 1, batch, generator, **factory) if noisy_pops else {}
        u = xs[n] if inp.name not in xi else xs[n] + scale(inp.sigma, inp.tau, dt) * xi[inp.name][0]
        rates[circuit.input] = circuit.input_rates(u)
        if n in keep:
            record(rates)
        w = weights(circuit)
        current = currents(circuit, rates, w)  # I^n from r^n
        d_prime = {p.name: p.act.prime(current[p.name]) for p in pops}  # f'(I^n)
        # the pseudo-derivative at step n: f'(x^n) in the current form, f'(I^n) in the rate form
        v_prime = {p.name: d_prime[p.name] if form[p.name] == "rate" else p.act.prime(state[p.name]) for p in pops}
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
        losses[n] = 0.5 * (err * diff).sum() / batch
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
        step_grads = grads if update == "sequence" else {k: torch.zeros_like(v) for k, v in grads.items()}
        for ln in learners:  # hidden: L^n against p^n, before the trace advances
            if ln.post != out and signal[ln.post] is not None:
                step_grads[ln.key].add_(ln.trace.gradient(signal[ln.post], v_prime[ln.post]))
        for ln in learners:  # p^n -> p^{n+1} from r^n_pre and f'(I^n_post)
            ln.trace.advance(one if ln.pre is None else rates[ln.pre], d_prime[ln.post])
        if form[out] == "current":
            v_out = circuit.population(out).act.prime(new_state[out])
        else:
            v_out = None
        for ln in learners:  # read-out: e^{n+1} against p^{n+1}
            if ln.post == out:
                step_grads[ln.key].add_(ln.trace.gradient(err, v_out))
        if update == "step":
            _apply(circuit, learners, step_grads, lr, batch)
        state, rates = new_state, {circuit.input: rates[circuit.input], **new_rates}
    if update == "sequence":
        _apply(circuit, learners, grads, lr, batch)
    rates[circuit.input] = circuit.input_rates(xs[-1])
    if kept:
        record(rates)
    t = torch.tensor(kept, **factory) * dt
    trace = OnlineTrace(t=t, rates={k: torch.stack(v) for k, v in rec_rates.items()}, loss=losses,
                        weights={k: torch.stack(v) for k, v in rec_w.items()}, final_rates=rates)
    if update == "sequence":
        for ln in learners:
            g = grads[ln.key] / batch
            mask_s = None if ln.synapse is None else ln.synapse.mask
            trace.gradients[ln.key] = g if mask_s is None else g * mask_s.to(g.dtype)
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
        return _learn_three_factor(circuit, x, target, duration, dt, lr, r0=r0, record_every=record_every,
                                   record_weights=record_weights, learn_bias=learn_bias)
    if record_every is not None and (not isinstance(record_every, int) or isinstance(record_every, bool)
                                     or record_every < 1):
        raise ConfigError(f"learn_online: record_every must be an integer >= 1 or None, got {record_every!r}")
    return _learn_traced(circuit, x, target, duration, dt, lr, method=method, mask=mask, update=update, r0=r0,
                         record_every=record_every, record_weights=record_weights, learn_bias=learn_bias,
                         generator=generator)
