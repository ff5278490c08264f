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


def _fused_runs(circuit, w: dict, x: torch.Tensor, dt: float):
    """The circuit as matmul blocks on a flat state ``[input, p1, p2, ...]`` (topological order).

    Consecutive populations with the same presynaptic populations and activation form a run that
    takes one ``addmm`` per step: :math:`I_\\mathrm{run} = b + r_\\mathrm{pres} W_\\mathrm{run}^\\top`
    (W of every synapse into the run placed side by side, duplicates summed). Returns the
    population offsets, the state width and the runs.
    """
    pops = {p.name: p for p in circuit.populations}
    names = [circuit.input] + [p.name for p in circuit.populations if p.name != circuit.input]
    offset, width = {}, 0
    for n in names:
        offset[n], width = width, width + pops[n].size
    runs = []
    for n in names[1:]:
        pres = tuple(dict.fromkeys(s.pre.name for s in circuit._incoming[n]))
        if runs and runs[-1]["pres"] == pres and pops[runs[-1]["posts"][0]].activation == pops[n].activation:
            runs[-1]["posts"].append(n)
        else:
            runs.append({"pres": pres, "posts": [n]})
    factory = {"dtype": x.dtype, "device": x.device}
    for run in runs:
        pres, posts = run["pres"], run["posts"]
        col = {}
        for p in pres:
            col[p] = sum(pops[q].size for q in pres[:pres.index(p)])
        n_cols, n_rows = sum(pops[p].size for p in pres), sum(pops[q].size for q in posts)
        wt = torch.zeros(n_cols, n_rows, **factory)
        row = 0
        for q in posts:
            for s in circuit._incoming[q]:
                wt[col[s.pre.name]:col[s.pre.name] + s.pre.size, row:row + pops[q].size] += w[s.name].T
            row += pops[q].size
        index = torch.cat([torch.arange(offset[p], offset[p] + pops[p].size, device=x.device) for p in pres])
        contiguous = all(offset[b] == offset[a] + pops[a].size for a, b in zip(pres, pres[1:]))
        start = offset[posts[0]]
        run.update(
            src=slice(offset[pres[0]], offset[pres[0]] + n_cols) if contiguous else index,
            dst=slice(start, start + n_rows), wt=wt,
            bias=torch.cat([circuit.biases[q].detach() for q in posts]),
            k=torch.cat([torch.full((pops[q].size,), dt / pops[q].tau, **factory) for q in posts]),
            f=pops[posts[0]].act.f, activation=pops[posts[0]].activation, clamped=pres == (circuit.input,))
    return offset, width, runs


def _activate_in_place(name: str, v: torch.Tensor) -> None:
    """f(v) written into v, the same arithmetic as :mod:`biofa.circuit.activations`."""
    if name == "relu":
        torch.relu_(v)
    elif name == "tanh":
        v.tanh_()
    elif name == "sigmoid":
        v.sigmoid_()
    elif name == "softplus":
        torch.logaddexp(v, v.new_zeros(()), out=v)
    elif name != "linear":
        raise ConfigError(f"simulate: no in-place form of activation {name!r}")


@torch.no_grad()
def simulate(circuit, x: torch.Tensor, duration: float, dt: float, r0=None) -> Trajectory:
    """Integrate the rate dynamics of ``circuit`` for input ``x`` (clamped) over ``duration`` seconds.

    The step is :func:`currents` then :func:`euler_step`, computed on a flat state laid out
    (unit, batch): each run of populations that share their inputs (:func:`_fused_runs`) writes
    :math:`f(I)` into its contiguous rows of one drive buffer with one ``addmm`` and one in-place
    activation, and a single update :math:`r + k(f(I) - r)` with :math:`k = \\Delta t/\\tau` per
    unit (0 for the clamped input) advances every population, straight into the trace. The current
    of a run fed by the clamped input alone is computed once. Same arithmetic as the step-by-step
    functions up to the order of summation inside a matmul (float rounding).

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
    offset, width, runs = _fused_runs(circuit, weights(circuit), x, dt)
    factory = {"dtype": x.dtype, "device": x.device}
    flat = torch.empty(steps + 1, width, x.shape[0], **factory)  # the whole trace, (unit, batch)
    for k, v in rates.items():
        flat[0, offset[k]:offset[k] + v.shape[1]] = v.T
    drive = torch.empty(width, x.shape[0], **factory)  # f(I) of every unit at the current step
    rate = torch.zeros(width, 1, **factory)  # dt / tau per unit; 0 keeps the input clamped
    n_in = rates[circuit.input].shape[1]
    drive[offset[circuit.input]:offset[circuit.input] + n_in] = x.T  # so that f(I) - r = 0 there
    varying = []
    for run in runs:
        rows = drive[run["dst"]]
        rate[run["dst"], 0] = run["k"]
        w, bias = run["wt"].T.contiguous(), run["bias"][:, None]
        if run["clamped"]:  # input clamped, W fixed: f(I) is the same at every step
            torch.addmm(bias, w, flat[0][run["src"]], out=rows)
            _activate_in_place(run["activation"], rows)
        else:
            varying.append((run["src"], w, bias, rows, run["activation"]))
    for n in range(steps):
        old, new = flat[n], flat[n + 1]
        for src, w, bias, rows, activation in varying:
            pre = old[src] if isinstance(src, slice) else old.index_select(0, src)
            torch.addmm(bias, w, pre, out=rows)
            _activate_in_place(activation, rows)
        torch.sub(drive, old, out=new)
        new.mul_(rate).add_(old)  # r + dt/tau * (-r + f(I))
    trace = {k: flat[:, offset[k]:offset[k] + v.shape[1]].transpose(1, 2).contiguous() for k, v in rates.items()}
    t = torch.arange(steps + 1, **factory) * dt
    return Trajectory(t=t, rates=trace)
