r"""Regularisers of training through time.

:func:`vanishing_gradient` is the regulariser Ω of Pascanu, Mikolov & Bengio (2013, "On the
difficulty of training recurrent neural networks"), in the form Song, Yang & Wang (2016) train
their E/I networks with (pycog). With :math:`a^{n} = \partial L/\partial s^{n}` the total gradient
of the loss with respect to a recurrent block's state, and
:math:`J^n = \partial s^{n+1}/\partial s^n` one step's Jacobian,

.. math::
    a^{n+1} J^n = (1-k)\,a^{n+1} + \rho'(s^n) \odot \big((k\,a^{n+1} \odot d'(I^n))\,W\big), \qquad
    \Omega_{n,b} = \Big(\frac{\lVert a_b^{n+1} J^n_b\rVert^2}{\lVert a_b^{n+1}\rVert^2} - 1\Big)^2,

    \Omega = \frac{\sum_n \frac1B \sum_b \Omega_{n,b}\,[\lVert a_b^{n+1}\rVert^2 \ge \epsilon]}
                  {\sum_n \frac1B \sum_b [\lVert a_b^{n+1}\rVert^2 \ge \epsilon]}

(k = Δt/τ, d the drive and ρ the rate of the dynamics form, :mod:`biofa.circuit.dynamics`;
steps whose state gradient is below ε = ``bound`` count neither in the sum nor in the count).
As in Pascanu et al. and pycog, :math:`a^{n+1}`, :math:`s^n` and :math:`I^n` are constants: Ω's
gradient is its *immediate* derivative with respect to the recurrent weights W only. It keeps
the error from shrinking (or growing) as it travels back one step, which lets a network learn
dependencies over the long delays of working-memory tasks. Two deviations from pycog, both
forced by biofa's circuits: Ω is summed over the recurrent blocks of a circuit (pycog has one),
and its gradient reaches every synapse of the block through the assembled W (pycog's ``Wrec``).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def vanishing_gradient(trajectory, *, bound: float = 1e-20) -> torch.Tensor:
    r"""Ω of a trajectory from ``unroll(..., probe=True)`` after ``loss.backward()``.

    Call it after the loss's backward with ``retain_graph=True`` (which fills each block's probe
    gradient, i.e. :math:`k\,a^{n+1}`, and keeps the graph from the synapses' weights to the
    assembled W) and back-propagate ``lam * omega`` to add :math:`\lambda\,\partial\Omega/\partial W`
    to the weights' gradients (``lam`` = 2 in Song et al.). Returns a scalar, differentiable with
    respect to the recurrent weights. Raises :class:`~biofa.errors.ConfigError` when the trajectory
    has no recurrent blocks (a circuit without a cycle, or unrolled without ``probe=True``) or the
    probes have no gradient yet (the runner checks ``trajectory.blocks`` before calling it).
    """
    if not trajectory.blocks:
        raise ConfigError("vanishing_gradient: the trajectory has no recurrent blocks to regularise; unroll "
                          "with probe=True a circuit whose synapses form a cycle")
    total = None
    for block in trajectory.blocks:
        g = block.probe.grad
        if g is None:
            raise ConfigError("vanishing_gradient: the probes have no gradient yet; call loss.backward() on the "
                              "trajectory's loss first (and unroll with probe=True)")
        k, ops, s = block.k, block.ops, block.states
        a = g / k  # a^{n+1} for n = 0..T-1
        w = block.weight
        with torch.no_grad():
            currents = block.external + ops["rate"](s) @ w.detach().T  # I^n, as the forward computed it
            d_prime = ops["drive_prime"](currents)
            r_prime = ops["rate_prime"](s)
        v = k * a if d_prime is None else k * a * d_prime
        carried = v @ w
        if r_prime is not None:
            carried = carried * r_prime
        num = ((1 - k) * a + carried).pow(2).sum(-1)
        den = a.pow(2).sum(-1)
        kept = den >= bound
        ratio = torch.where(kept, num / torch.where(kept, den, torch.ones_like(den)), torch.ones_like(num))
        count = kept.to(num.dtype).mean(1).sum()
        omega = (ratio - 1).pow(2).mean(1).sum() / count.clamp_min(1e-300)
        total = omega if total is None else total + omega
    return total
