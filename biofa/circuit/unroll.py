r"""Training through time: the dynamics as a differentiable trajectory whose backward uses B.

:func:`unroll` computes the step of :mod:`biofa.circuit.dynamics` (same time convention, same
arithmetic as :func:`~biofa.circuit.dynamics.simulate` up to the order of summation inside a
matmul) with autograd on. A loss on ``trajectory.rates[out][n + 1]`` at masked steps and
``.backward()`` is backpropagation through time in which every synapse object's backward uses its
own feedback matrix at every step:

.. math:: \frac{\partial L}{\partial r^n_\mathrm{pre}} \mathrel{+}=
          \Big(\frac{\partial L}{\partial I^n_\mathrm{post}}\Big) B_s, \qquad
          \frac{\partial L}{\partial W_s} = \sum_n \Big(\frac{\partial L}{\partial I^n_\mathrm{post}}\Big)^\top r^n_\mathrm{pre}

With ``bp`` (B = W) on every synapse this is exact BPTT; with ``fa``, ``usf``, ``frsf``,
``brsf`` or ``kp`` it is feedback alignment through time (B is read once per call, so brSF draws
once per sequence, i.e. once per optimizer step; a Kolen–Pollack B receives the summed
:math:`\sum_n \delta^{n\top} r^n`, W's own gradient). A synapse without a pathway
(``feedback="none"``) passes no error; direct (DFA) feedback sends the output error of step n,
:math:`e^{n+1} = \partial L/\partial r^{n+1}_\mathrm{out}`, to its target's rates :math:`r^n_h`
(the rates that drove that output). Weight mirror (``wm``) learns B from noise at each backward
and has no through-time form here.

How it is computed: the circuit's strongly connected components in order
(:func:`biofa.circuit.graph.components`). A component without a cycle is computed for all T steps
at once (one matmul over T·batch rows from its presynaptic trajectories, then the elementwise
leaky recursion); a recurrent block steps: the currents from outside the block are computed
for all steps at once, and each step does one matmul with the block's assembled W (its backward
one with the assembled B) plus the elementwise update.

Truncation ``truncate=k``: steps n = k, 2k, ... read the state :math:`r^n` detached (every
population's, for every synapse), so within one backward the gradient flows inside each window
of k steps and is cut at window boundaries; a loss on ``rates[p][n]`` still reaches back into
the window that produced it. The forward values are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..nn.functional import exact_gradients_active
from ._direct import DirectFeedback
from .dynamics import Trajectory, setup
from .graph import is_recurrent
from .noise import scale


@dataclass
class RecurrentBlock:
    r"""One recurrent block of an ``unroll(..., probe=True)``: its populations ``names``, the
    assembled ``weight`` W (differentiable to the synapses' weights), the rate ``k`` = Δt/τ (a
    number or a per-unit tensor), the detached ``external`` currents c^n (from outside the block,
    bias included) and ``states`` s^0..s^{T-1}, the block's ``ops`` (drive, rate and their
    derivatives), and ``probe``: a zero tensor (T, batch, width) added to the noise, whose
    ``.grad`` after ``loss.backward()`` is :math:`k\,\partial L/\partial s^{n+1}`."""

    names: list
    weight: torch.Tensor
    k: object
    external: torch.Tensor
    states: torch.Tensor
    ops: dict
    probe: torch.Tensor


class BlockLinear(torch.autograd.Function):
    """:math:`y = c + x W^\\top` whose backward sends :math:`g B` to x (B given, not W) and
    :math:`g^\\top x` to W and, when B itself requires grad (a Kolen–Pollack B), to B too."""

    @staticmethod
    def forward(ctx, x, weight, feedback, c):
        ctx.save_for_backward(x, feedback)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = torch.addmm(c.reshape(-1, weight.shape[0]), x2, weight.T) if c is not None else x2 @ weight.T
        return y.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b, need_c = ctx.needs_input_grad
        grad_x = g @ feedback if need_x else None
        grad_w = None
        if need_w or need_b:
            g2 = g.reshape(-1, g.shape[-1])
            grad_w = g2.T @ x.reshape(-1, x.shape[-1])
        return grad_x, grad_w if need_w else None, grad_w if need_b else None, g if need_c else None


class Recurrence(torch.autograd.Function):
    r"""A recurrent block stepped for all T steps, with its backward (BPTT) written out.

    Forward, for n = 0..T-1 (``ops`` gives drive, rate and their derivatives per unit):

    .. math:: I^n = c^n + r^n W^\top, \quad s^{n+1} = s^n + k\,(d(I^n) + \eta^n - s^n), \quad r^{n+1} = \rho(s^{n+1})

    with d = f, ρ = id (rate form) or d = id, ρ = f (current form) and η the scaled noise.
    Backward, with :math:`a^{n+1} = \partial L/\partial s^{n+1}` (total):
    :math:`\delta^n = k\,a^{n+1} \odot d'(I^n)` goes to :math:`c^n`,
    :math:`a^n = g_s^n + (1-k)\,a^{n+1} + \rho'(s^n) \odot (\delta^n B)` — B, the block's
    assembled feedback matrix, in place of W at every step — and
    :math:`\partial L/\partial W = \sum_n \delta^{n\top} r^n` (to B as well when B is learned,
    Kolen–Pollack). Under truncation k_T the carried terms are dropped at n = k_T, 2k_T, ...
    The noise η^n receives :math:`\partial L/\partial \eta^n = k\,a^{n+1}` when it requires grad
    (how ``unroll(..., probe=True)`` reads the total state gradients).
    Returns the states :math:`s^0..s^T` (T + 1, batch, width); one autograd node for the whole
    loop, so the per-step cost is that of the matmuls. No double backward.
    """

    @staticmethod
    def forward(ctx, ext, weight, feedback, s0, noise, k, ops, truncate):
        steps = ext.shape[0]
        states = ext.new_empty(steps + 1, *s0.shape)
        rates = states if ops["rate_is_state"] else ext.new_empty(steps + 1, *s0.shape)
        currents = ext.new_empty(steps, *s0.shape)
        states[0] = s0
        if rates is not states:
            rates[0] = ops["rate"](s0)
        wt = weight.T
        for n in range(steps):
            torch.addmm(ext[n], rates[n], wt, out=currents[n])
            d = ops["drive"](currents[n])
            if noise is not None:
                d = d + noise[n]
            torch.lerp(states[n], d, k, out=states[n + 1]) if not torch.is_tensor(k) else \
                states[n + 1].copy_(states[n] + k * (d - states[n]))
            if rates is not states:
                rates[n + 1] = ops["rate"](states[n + 1])
        ctx.save_for_backward(feedback, states, rates if rates is not states else None, currents,
                              k if torch.is_tensor(k) else None)
        ctx.k, ctx.ops, ctx.truncate = (None if torch.is_tensor(k) else k), ops, truncate
        return states

    @staticmethod
    def backward(ctx, g_states):
        feedback, states, rates, currents, k_tensor = ctx.saved_tensors
        rates = states if rates is None else rates
        k = ctx.k if k_tensor is None else k_tensor
        ops, truncate = ctx.ops, ctx.truncate
        need_ext, need_w, need_b, need_s0, need_noise = ctx.needs_input_grad[:5]
        steps = currents.shape[0]
        deltas = torch.empty_like(currents)
        grad_noise = torch.empty_like(currents) if need_noise else None
        fb = feedback.detach()
        # the derivatives of every step at once (one vectorised op each, not one per step)
        d_prime = ops["drive_prime"](currents)
        r_prime = ops["rate_prime"](states[:steps])
        scalar_k = not torch.is_tensor(k)
        a = g_states[steps]
        for n in range(steps - 1, -1, -1):
            delta = deltas[n]
            torch.mul(a, k, out=delta)
            if grad_noise is not None:
                grad_noise[n] = delta
            if d_prime is not None:
                delta.mul_(d_prime[n])
            if truncate is not None and n and n % truncate == 0:
                a = g_states[n]  # the window starts here: nothing is carried across
                continue
            carried = delta @ fb
            if r_prime is not None:
                carried.mul_(r_prime[n])
            if scalar_k:
                carried.add_(a, alpha=1 - k)
            else:
                carried.addcmul_(a, 1 - k)
            a = carried.add_(g_states[n])
        grad_w = None
        if need_w or need_b:
            width = currents.shape[-1]
            grad_w = deltas.reshape(-1, width).T @ rates[:steps].reshape(-1, width)
        return (deltas if need_ext else None, grad_w if need_w else None, grad_w if need_b else None,
                a if need_s0 else None, grad_noise, None, None, None)


def _feedback_piece(s, w, fb_input, exact: bool):
    """The B one synapse object's backward uses in this unroll: W itself (``bp`` or exact
    gradients), the rule's B (fixed, detached), a Kolen–Pollack B (a tensor that receives W's
    gradient), or zeros (no pathway)."""
    if exact:
        return w.detach()
    if not s.has_feedback:
        return torch.zeros_like(w).detach()
    rule = s.layer.feedback
    if rule.name == "wm":
        raise ConfigError(f"unroll: synapses {s.name!r} use weight mirror ('wm'), which learns B from noise at "
                          "every backward and has no through-time form here; use 'kp' or a fixed-B rule")
    if rule.learned:
        return fb_input  # masked Kolen–Pollack B: BlockLinear hands it W's gradient
    with torch.no_grad():
        return rule.matrix_from(w.detach(), fb_input).detach()


def _assemble(circuit, posts, pres, tensors, pieces):
    """Block matrices (Σ posts × Σ pres) of W and B from the synapses between ``pres`` and ``posts``
    (zeros where no synapse; duplicates summed), differentiable."""
    w_rows, b_rows = [], []
    for q in posts:
        w_cols, b_cols = [], []
        for p in pres:
            syns = [s for s in circuit._incoming[q] if s.pre.name == p]
            if syns:
                w = sum(tensors[s.name] for s in syns)
                b = sum(pieces[s.name] for s in syns)
            else:
                ref = next(iter(tensors.values()))
                shape = (circuit.population(q).size, circuit.population(p).size)
                w = b = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
            w_cols.append(w)
            b_cols.append(b)
        w_rows.append(torch.cat(w_cols, 1) if len(w_cols) > 1 else w_cols[0])
        b_rows.append(torch.cat(b_cols, 1) if len(b_cols) > 1 else b_cols[0])
    w = torch.cat(w_rows, 0) if len(w_rows) > 1 else w_rows[0]
    b = torch.cat(b_rows, 0) if len(b_rows) > 1 else b_rows[0]
    return w, b


def _cut(rows, truncate):
    """Trajectory rows 0..T-1 as the steps read them: under truncation the rows that start a
    window (n = k, 2k, ...) are detached (the stored trajectory keeps its graph)."""
    if truncate is None or rows.shape[0] <= truncate:
        return rows
    rows = rows.clone()
    starts = torch.arange(truncate, rows.shape[0], truncate, device=rows.device)
    rows[starts] = rows[starts].detach()
    return rows


def _cat(tensors, dim=-1):
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim)


def _per_population(circuit, names, fn, v):
    """Apply ``fn(population, slice)`` over the populations ``names`` laid side by side in ``v``."""
    pops = [circuit.population(n) for n in names]
    if len({p.activation for p in pops}) == 1:
        return fn(pops[0], v)
    out, start = [], 0
    for p in pops:
        out.append(fn(p, v[..., start:start + p.size]))
        start += p.size
    return torch.cat(out, -1)


def _block_ops(circuit, comp, form, current_rows) -> dict:
    """drive d(I), rate rho(s) and their derivatives for the units of component ``comp``."""
    only_current = form == {"current"}

    def drive(i):  # d from I: f(I) in the rate form, I in the current form
        if only_current:
            return i
        d = _per_population(circuit, comp, lambda p, v: p.act.f(v), i)
        return d if current_rows is None else torch.where(current_rows > 0, i, d)

    def rate(s_):  # r from the state: s in the rate form, f(s) in the current form
        if form == {"rate"}:
            return s_
        r = _per_population(circuit, comp, lambda p, v: p.act.f(v), s_)
        return r if current_rows is None else torch.where(current_rows > 0, r, s_)

    return {"drive": drive, "rate": rate, "rate_is_state": form == {"rate"},
            "drive_prime": lambda i: _drive_prime(circuit, comp, i, current_rows, only_current),
            "rate_prime": lambda s_: _rate_prime(circuit, comp, s_, current_rows, form)}


def _drive_prime(circuit, comp, i, current_rows, only_current):
    """d'(I): f'(I) in the rate form, 1 (None) in the current form."""
    if only_current:
        return None
    d = _per_population(circuit, comp, lambda p, v: p.act.prime(v), i)
    return d if current_rows is None else torch.where(current_rows > 0, torch.ones_like(d), d)


def _rate_prime(circuit, comp, s_, current_rows, form):
    """rho'(s): None (1) in the rate form, f'(s) in the current form."""
    if form == {"rate"}:
        return None
    r = _per_population(circuit, comp, lambda p, v: p.act.prime(v), s_)
    return r if current_rows is None else torch.where(current_rows > 0, r, torch.ones_like(r))


def unroll(circuit, x, duration=None, dt=None, r0=None, *, generator=None, noise=None,
           truncate: int | None = None, probe: bool = False) -> Trajectory:
    """The dynamics of ``circuit`` for input ``x`` as a differentiable :class:`Trajectory`.

    Arguments as :func:`biofa.circuit.dynamics.simulate` (x of shape (T, batch, n_in) or a
    constant x with ``duration``; ``dt`` required; ``r0``, ``generator``, ``noise``), plus
    ``truncate``: an integer k >= 1 cutting the gradient every k steps (module docstring). The
    learned initial state (``learn_initial_state``) receives its gradient when ``r0`` is None.
    ``probe=True`` keeps every recurrent block in ``trajectory.blocks``
    (:class:`RecurrentBlock`), with a probe whose gradient is the total state gradient, for
    :func:`biofa.circuit.regularizers.vanishing_gradient`.
    """
    if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 1):
        raise ConfigError(f"unroll: truncate must be an integer >= 1 (steps per gradient window) or None, "
                          f"got {truncate!r}")
    run = setup(circuit, x, duration, dt, r0, generator, noise, "unroll")
    steps, u = run.steps, run.u
    exact = exact_gradients_active()
    tensors, pieces = {}, {}
    for s in circuit.feedforward:
        w, fb_input = s.forward_tensors()
        tensors[s.name] = w
        pieces[s.name] = _feedback_piece(s, w, fb_input, exact)
    edges = [(s.pre.name, s.post.name) for s in circuit.feedforward]
    traj = {circuit.input: torch.cat([u, u[-1:]], 0)}  # (T + 1, batch, n_in)
    states, blocks = {}, []
    for comp in circuit.components:
        if comp == [circuit.input]:
            continue
        inside = set(comp)
        pres = list(dict.fromkeys(s.pre.name for q in comp for s in circuit._incoming[q] if s.pre.name not in inside))
        pops = [circuit.population(q) for q in comp]
        bias = _cat([circuit.biases[q] for q in comp])
        # currents from outside the block, all steps at once: (T, batch, width) including the bias
        if pres:
            w_ext, b_ext = _assemble(circuit, comp, pres, tensors, pieces)
            x_ext = _cat([_cut(traj[p][:steps], truncate) for p in pres])
            c = bias.expand(*x_ext.shape[:-1], bias.shape[0])
            ext = BlockLinear.apply(x_ext, w_ext, b_ext, c)
        else:
            ext = bias.expand(steps, run.batch, bias.shape[0])
        if any(q in run.xi for q in comp):
            ext_noise = _cat([scale(p.sigma, p.tau, dt) * run.xi[p.name] if p.name in run.xi
                              else torch.zeros(steps, run.batch, p.size, dtype=u.dtype, device=u.device)
                              for p in pops])
        else:
            ext_noise = None
        form = {circuit.dynamics_of(q) for q in comp}
        taus = [p.tau for p in pops]
        if len(set(taus)) == 1:
            k = dt / taus[0]
        else:
            k = _cat([torch.full((p.size,), dt / p.tau, dtype=u.dtype, device=u.device) for p in pops])
        current_rows = None
        if len(form) > 1:  # mixed forms inside one block: a 0/1 mask of the current-form units
            current_rows = _cat([torch.full((p.size,), float(circuit.dynamics_of(p.name) == "current"),
                                            dtype=u.dtype, device=u.device) for p in pops])

        # bound in their own scope: Recurrence's backward runs after this loop has moved on
        ops = _block_ops(circuit, comp, form, current_rows)
        drive_of, rate_of = ops["drive"], ops["rate"]
        s0 = _cat([run.state0[q] for q in comp])
        if is_recurrent(comp, edges):
            w_in, b_in = _assemble(circuit, comp, comp, tensors, pieces)
            noise_all = None if ext_noise is None else ext_noise.detach()
            if probe:
                zero = torch.zeros_like(ext, requires_grad=True)
                noise_all = zero if noise_all is None else noise_all + zero
            s_all = Recurrence.apply(ext, w_in, b_in, s0, noise_all, k, ops, truncate)
            if probe:
                blocks.append(RecurrentBlock(list(comp), w_in, k, ext.detach(), s_all[:steps].detach(), ops, zero))
            r_all = rate_of(s_all)
        else:
            d_all = drive_of(ext)
            if ext_noise is not None:
                d_all = d_all + ext_noise
            s_, s_list = s0, [s0]
            d_steps = d_all.unbind(0) if not (isinstance(k, float) and k == 1.0) else ()
            for n in range(steps if d_steps else 0):
                if truncate is not None and n and n % truncate == 0:
                    s_ = s_.detach()
                s_ = s_ + k * (d_steps[n] - s_)
                s_list.append(s_)
            # k = 1 (tau = dt): s^{n+1} = d^n, no recursion (equal to s + 1 (d - s) up to rounding)
            s_all = torch.stack(s_list) if d_steps else torch.cat([s0[None], d_all], 0)
            r_all = rate_of(s_all)
        start = 0
        for p in pops:
            traj[p.name] = r_all[..., start:start + p.size]
            if circuit.dynamics_of(p.name) == "current":
                states[p.name] = s_all[..., start:start + p.size]
            start += p.size
    if len(circuit.direct) and not exact and torch.is_grad_enabled():
        out = traj[circuit.output]
        targets = [_cut(traj[fb.target.name][:steps], truncate) for fb in circuit.direct]
        moved = DirectFeedback.apply(out[1:], [fb.B.detach() for fb in circuit.direct], *targets)
        traj[circuit.output] = torch.cat([out[:1], moved], 0)
    t = torch.arange(steps + 1, dtype=u.dtype, device=u.device) * dt
    return Trajectory(t=t, rates=traj, states=states, blocks=blocks)
