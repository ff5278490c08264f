r"""The three-factor rule online (:func:`biofa.circuit.online.learn_online`, ``method="three_factor"``).

Acyclic circuits, rate form. One step n, from the rates
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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import _hooks
from ..errors import ConfigError, ShapeError
from .dynamics import batched, currents, euler_step, initial_rates, n_steps, weights
from .synapses import check_updatable_in_place



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
    check_updatable_in_place(circuit, "the three-factor rule")
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
def learn_three_factor(circuit, x, target, duration, dt, lr, *, r0=None, record_every=1,
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
