"""The three measurements of the conservation-laws study, each a function of its settings and seed.

(a) :func:`drift_curve` / :func:`flow_drift_curve`: relative drift of FA's invariants
    (:func:`~biofa.analysis.linear_invariants` for linear networks,
    :func:`~biofa.analysis.relu_invariants` for ReLU ones) and of gradient descent's balancedness
    against the training time :math:`t = \\eta k`, for full-batch SGD at step size :math:`\\eta`
    and for gradient flow integrated by ``scipy.integrate.solve_ivp``.
(b) :func:`alignment_curve`: :math:`\\langle W_{l+1}, B_{l+1}\\rangle_F`, the angle
    :math:`\\angle(W_{l+1}, B_{l+1})` and :math:`\\|W_l\\|^2 + \\|b_l\\|^2` from a small
    initialisation with :math:`\\sum_i c_{l,i} \\le 0`, where the law gives
    :math:`2\\langle W_{l+1}, B_{l+1}\\rangle_F = \\|W_l\\|^2 + \\|b_l\\|^2 - \\sum_i c_{l,i} \\ge 0`.
(c) :func:`min_norm_point`: a two-layer linear network trained to interpolate over-parameterised
    regression; relative distance of :math:`W_2 W_1` from :math:`Y X^+` and :math:`\\angle(W_2, B_2)`.

Every model is built by :func:`biofa.models.build` (``"mlp"``) in float64 from
``torch.Generator().manual_seed(seed)``; the data come from a second generator seeded with
``seed + 10_000``. The loss is :math:`\\mathcal L = \\frac{1}{2N}\\sum_n \\|f(x_n) - y_n\\|^2`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ... import analysis, models
from ...errors import ConfigError

#: Offset between a run's model seed and its data seed (the two generators never share a stream).
DATA_SEED_OFFSET = 10_000


def _build(widths, activation, rule, seed, *, bias=True, init_scale=1.0):
    with _float64():
        return models.build("mlp", input_shape=(widths[0],), n_outputs=widths[-1], hidden=list(widths[1:-1]),
                            activation=activation, bias=bias, feedback=rule, init_scale=init_scale,
                            generator=torch.Generator().manual_seed(seed))


class _float64:
    """Build in float64 (torch's default dtype restored on exit)."""

    def __enter__(self):
        self.before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.before)


def regression_data(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: n samples of standard normal inputs (n, d) and targets (n, k), float64."""
    g = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, k, generator=g, dtype=torch.float64))


def loss(model, x, y) -> torch.Tensor:
    """:math:`\\frac{1}{2N}\\sum_n \\|f(x_n) - y_n\\|^2`."""
    return 0.5 * ((model(x) - y) ** 2).sum(1).mean()


def fa_law(model, relu: bool) -> list[torch.Tensor]:
    """FA's conserved quantities of ``model``: per-neuron :math:`c_{l,i}` (ReLU) or :math:`C_l` (linear)."""
    Ws, bs, Bs = analysis.feedback_chain(model)
    return analysis.relu_invariants(Ws, bs, Bs) if relu else analysis.linear_invariants(Ws, Bs, bs=bs)


def gd_law(model, relu: bool) -> list[torch.Tensor]:
    """Gradient descent's balancedness (its diagonal for ReLU networks, which is what GD conserves there)."""
    bal = analysis.balancedness(model)
    return [torch.diagonal(C).clone() for C in bal] if relu else bal


def _laws(model, rule, relu):
    """``{quantity: invariants}`` measured for a rule: FA's law only means something for fixed B."""
    out = {"balancedness": gd_law(model, relu)}
    if rule != "bp":
        out["fa_law"] = fa_law(model, relu)
    return out


def record_steps(n_steps: int, points: int) -> list[int]:
    """About ``points`` evenly spaced step indices in [0, n_steps], both ends included."""
    return sorted({round(j * n_steps / points) for j in range(points + 1)})


def drift_curve(widths, activation: str, rule: str, lr: float, time: float, seed: int, samples: int,
                points: int = 20) -> list[dict]:
    """Drift of the laws under full-batch SGD (``round(time / lr)`` steps of size ``lr``).

    .. math:: \\mathrm{drift}(t) = \\frac{\\|C(t) - C(0)\\|_F}{\\|C(0)\\|_F}, \\qquad t = \\eta k

    Returns rows ``{step, time, quantity, value}`` (``quantity``: ``fa_law``, ``balancedness``)
    and a final row per quantity with the training loss (``quantity = "loss"``).
    """
    model = _build(widths, activation, rule, seed)
    x, y = regression_data(samples, widths[0], widths[-1], seed)
    relu = activation == "relu"
    start = _laws(model, rule, relu)
    n_steps = max(1, round(time / lr))
    marks = set(record_steps(n_steps, points))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rows = []
    for step in range(n_steps + 1):
        if step in marks:
            now = _laws(model, rule, relu)
            rows += [{"step": step, "time": step * lr, "quantity": q, "value": analysis.drift(start[q], now[q])}
                     for q in start]
        if step == n_steps:
            break
        opt.zero_grad()
        value = loss(model, x, y)
        value.backward()
        opt.step()
    rows.append({"step": n_steps, "time": n_steps * lr, "quantity": "loss", "value": float(loss(model, x, y).detach())})
    return rows


class GradientFlow:
    """:math:`\\dot\\theta = -\\nabla^{\\mathrm{rule}}_\\theta \\mathcal L` of a biofa model as the
    right-hand side of ``solve_ivp`` (the rule's pseudo-gradients computed by biofa's backward)."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.params = list(model.parameters())
        self.splits = np.cumsum([p.numel() for p in self.params])[:-1]

    def state(self) -> np.ndarray:
        return np.concatenate([p.detach().reshape(-1).numpy() for p in self.params])

    def set_state(self, z) -> None:
        with torch.no_grad():
            for p, chunk in zip(self.params, np.split(z, self.splits)):
                p.copy_(torch.from_numpy(np.ascontiguousarray(chunk)).reshape(p.shape))

    def __call__(self, t, z) -> np.ndarray:
        self.set_state(z)
        for p in self.params:
            p.grad = None
        loss(self.model, self.x, self.y).backward()
        return -np.concatenate([p.grad.reshape(-1).numpy() for p in self.params])


def flow_drift_bound(z_path: np.ndarray, n_steps: int, rtol: float, atol: float, c0_norm: float) -> float:
    """An upper estimate of the drift that integration error alone can produce.

    Each accepted step keeps its local error below :math:`\\epsilon_j = \\mathrm{atol} +
    \\mathrm{rtol}\\,|z_j|` per coordinate, so after ``n_steps`` steps
    :math:`\\|\\delta z\\| \\le n \\max_t \\|\\epsilon(t)\\|` (errors added, none cancelling). The
    invariants are quadratic forms of :math:`\\theta` with coefficient 1 or 2, so
    :math:`\\|\\delta C\\|_F \\le 2 \\cdot 2 \\max_t\\|z(t)\\|\\,\\|\\delta z\\| + (2\\|\\delta z\\|)^2`.
    Divided by :math:`\\|C(0)\\|_F`, like the drift.
    """
    z_max = float(np.max(np.linalg.norm(z_path, axis=0)))
    eps = n_steps * (atol * math.sqrt(z_path.shape[0]) + rtol * z_max)
    return (4 * z_max * eps + 4 * eps**2) / c0_norm


def flow_drift_curve(widths, activation: str, rule: str, time: float, seed: int, samples: int,
                     points: int = 20, rtol: float = 1e-10, atol: float = 1e-12) -> list[dict]:
    """Drift of the laws under gradient flow (``solve_ivp``, DOP853), the zero-drift reference.

    Rows as :func:`drift_curve` with ``step`` empty, plus ``quantity = "<law>_bound"`` rows holding
    :func:`flow_drift_bound` at the end time.
    """
    from scipy.integrate import solve_ivp

    model = _build(widths, activation, rule, seed)
    x, y = regression_data(samples, widths[0], widths[-1], seed)
    relu = activation == "relu"
    start = _laws(model, rule, relu)
    flow = GradientFlow(model, x, y)
    times = np.linspace(0.0, time, points + 1)
    sol = solve_ivp(flow, (0.0, time), flow.state(), method="DOP853", t_eval=times, rtol=rtol, atol=atol)
    if sol.status != 0:
        raise ConfigError(f"gradient flow of the {activation} network (seed {seed}) stopped: {sol.message}")
    rows = []
    for j, t in enumerate(sol.t):
        flow.set_state(sol.y[:, j])
        now = _laws(model, rule, relu)
        rows += [{"step": None, "time": float(t), "quantity": q, "value": analysis.drift(start[q], now[q])}
                 for q in start]
    n_steps = max(1, sol.nfev // 12)  # DOP853 evaluates 12 stages per step: accepted + rejected ones
    for q, c0 in start.items():
        norm0 = math.sqrt(sum(float((c**2).sum()) for c in c0))
        rows.append({"step": n_steps, "time": time, "quantity": f"{q}_bound",
                     "value": flow_drift_bound(sol.y, n_steps, rtol, atol, norm0)})
    rows.append({"step": None, "time": time, "quantity": "loss", "value": float(loss(model, x, y).detach())})
    return rows


def _small_init_with_nonpositive_sums(model) -> None:
    """Flip the sign of column i of W_{l+1} where it makes :math:`c_{l,i}` smaller: from a small
    W, :math:`c_{l,i} = \\|W_l[i,:]\\|^2 + b_{l,i}^2 - 2\\langle W_{l+1}[:,i], B_{l+1}[:,i]\\rangle` is
    dominated by the O(scale) inner product, whose sign the flip reverses; the layer above keeps
    its own invariants (they see W_{l+1} only through the squares of its rows). Raises
    :class:`~biofa.errors.ConfigError` if a layer's sum stays positive (init too large)."""
    layers = [layer for _, layer in analysis.feedback_layers(model)]
    for l in range(len(layers) - 1):
        Ws, _, Bs = analysis.feedback_chain(model)
        inner = (Ws[l + 1] * Bs[l + 1]).sum(0)
        with torch.no_grad():
            flip = (inner < 0).to(layers[l + 1].weight.dtype)
            layers[l + 1].weight.mul_(1 - 2 * flip)
        total = float(fa_law(model, True)[l].sum())
        if total > 0:
            raise ConfigError(f"alignment: sum_i c_(l,i) = {total:.3g} > 0 for hidden layer {l + 1} even with "
                              "the signs of the layer above flipped; use a smaller alignment.init_scale")


def alignment_curve(widths, init_scale: float, lr: float, steps: int, seed: int, samples: int,
                    points: int = 30) -> list[dict]:
    """Layer-wise alignment from a small W (B at its Xavier scale) under full-batch SGD with FA.

    Rows ``{step, time, layer, quantity, value}`` for each layer :math:`l+1 \\ge 2`:
    ``inner`` :math:`\\langle W_{l+1}, B_{l+1}\\rangle_F`, ``angle`` (degrees,
    :func:`~biofa.analysis.angle`), ``cosine``, ``norm_below`` :math:`\\|W_l\\|^2 + \\|b_l\\|^2`
    and ``invariant_sum`` :math:`\\sum_i c_{l,i}`.
    """
    model = _build(widths, "relu", "fa", seed, init_scale=init_scale)
    _small_init_with_nonpositive_sums(model)
    x, y = regression_data(samples, widths[0], widths[-1], seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    marks = set(record_steps(steps, points))
    rows = []
    for step in range(steps + 1):
        if step in marks:
            Ws, bs, Bs = analysis.feedback_chain(model)
            sums = analysis.relu_invariants(Ws, bs, Bs)
            for l in range(len(Ws) - 1):
                W, B = Ws[l + 1], Bs[l + 1]
                theta = analysis.angle(W, B)
                below = float((Ws[l] ** 2).sum()) + (0.0 if bs[l] is None else float((bs[l] ** 2).sum()))
                for quantity, value in (("inner", float((W * B).sum())), ("angle", theta),
                                        ("cosine", math.cos(math.radians(theta))), ("norm_below", below),
                                        ("invariant_sum", float(sums[l].sum()))):
                    rows.append({"step": step, "time": step * lr, "layer": l + 2, "quantity": quantity,
                                 "value": value})
        if step == steps:
            break
        opt.zero_grad()
        loss(model, x, y).backward()
        opt.step()
    rows.append({"step": steps, "time": steps * lr, "quantity": "loss", "value": float(loss(model, x, y).detach())})
    return rows


def min_norm_problem(d: int, samples: int, outputs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)`` with samples as columns: X (d, N) standard normal divided by :math:`\\sqrt d`, Y (k, N)."""
    x, y = regression_data(samples, d, outputs, seed)
    return x.T / math.sqrt(d), y.T


def min_norm_point(d: int, samples: int, hidden: int, outputs: int, rule: str, init_scale: float, lr: float,
                   steps: int, seed: int) -> dict:
    """Train :math:`W_2 W_1` (no biases, W scaled by ``init_scale``, B at its Xavier scale) by
    full-batch GD on :math:`\\frac12\\|W_2 W_1 X - Y\\|_F^2`; returns ``distance``
    (:func:`~biofa.analysis.distance_to_min_norm`), ``angle`` :math:`\\angle(W_2, B_2)` in degrees
    (NaN for bp, whose B is W), ``loss`` and ``relative_loss`` (loss / :math:`\\frac12\\|Y\\|^2`)."""
    model = _build((d, hidden, outputs), "linear", rule, seed, bias=False, init_scale=init_scale)
    X, Y = min_norm_problem(d, samples, outputs, seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def objective():
        return 0.5 * ((model(X.T) - Y.T) ** 2).sum()

    for _ in range(steps):
        opt.zero_grad()
        objective().backward()
        opt.step()
    Ws, _, Bs = analysis.feedback_chain(model)
    final = float(objective().detach())
    return {"distance": analysis.distance_to_min_norm(analysis.effective_weight(Ws), X, Y),
            "angle": math.nan if rule == "bp" else analysis.angle(Ws[1], Bs[1]),
            "loss": final, "relative_loss": final / (0.5 * float((Y**2).sum()))}
