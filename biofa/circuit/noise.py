r"""Noise in time: private noise of each population and input noise, scaled as in pycog.

With :math:`\xi^n \sim \mathcal N(0, I)` drawn independently at every step n, unit and trial:

.. math::
    \text{current form:}\quad x^{n+1} &= x^n + \frac{\Delta t}{\tau}\Big(-x^n + I^n
        + \sigma\sqrt{2\tau/\Delta t}\;\xi^n\Big) \\
    \text{rate form:}\quad r^{n+1} &= r^n + \frac{\Delta t}{\tau}\Big(-r^n + f(I^n)
        + \sigma\sqrt{2\tau/\Delta t}\;\xi^n\Big) \\
    \text{input:}\quad u^n &= x^n + b_\mathrm{in} + \sigma_\mathrm{in}\sqrt{2\tau_\mathrm{in}/\Delta t}\;\xi_\mathrm{in}^n
        \quad (\text{then } [u^n]_+ \text{ when the input population has } \texttt{rectify})

so the noise added per step has standard deviation :math:`\sigma\sqrt{2\Delta t/\tau}` (an
Ornstein–Uhlenbeck process of stationary standard deviation σ for the leaky integrator alone,
independent of Δt). In the rate form the noise enters the rate's drive outside f (rates can leave
f's range); in the current form it enters the current inside the bracket, as in Song, Yang &
Wang (2016). σ is each population's ``noise`` (input population: σ_in, with its ``tau`` as τ_in).

:func:`draws` makes the standard normals ξ: from the ``generator`` passed (torch's global one
when None), population by population in the circuit's order (the input first), each of shape
(T, batch, size); or it checks a pre-drawn ``noise`` dict name → ξ (the same shapes), which
lets two engines be compared with noise on. The engines scale ξ themselves.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, ShapeError


def scale(sigma: float, tau: float, dt: float) -> float:
    """:math:`\\sigma\\sqrt{2\\tau/\\Delta t}`: the factor of ξ inside the bracket (or added to the input)."""
    return sigma * math.sqrt(2.0 * tau / dt)


def noisy(circuit) -> list:
    """The populations with a noise level > 0, in the circuit's order (input first)."""
    return [p for p in circuit.populations if p.sigma > 0]


def draws(circuit, steps: int, batch: int, generator=None, noise=None, *, dtype=None, device=None) -> dict:
    """ξ of every noisy population, name → (steps, batch, size): drawn from ``generator`` or read
    from the pre-drawn ``noise`` (validated: names, shapes, dtype)."""
    wanted = noisy(circuit)
    if noise is None:
        out = {}
        for p in wanted:
            gen_device = generator.device if generator is not None else "cpu"
            xi = torch.randn(steps, batch, p.size, generator=generator, dtype=dtype, device=gen_device)
            out[p.name] = xi.to(device)
        return out
    if not isinstance(noise, dict):
        raise ConfigError(f"noise must be a dict population name -> standard normal draws of shape (T, batch, size), "
                          f"got {type(noise).__name__}")
    names = {p.name for p in wanted}
    extra = sorted(set(noise) - names)
    if extra:
        raise ConfigError(f"noise: populations {extra} have no noise level (their 'noise' is unset or 0), so "
                          f"noise[...] for them would be ignored; noisy populations: {sorted(names)}")
    missing = [p.name for p in wanted if p.name not in noise]
    if missing:
        raise ConfigError(f"noise: missing draws for the noisy populations {missing}; give noise[name] of shape "
                          "(T, batch, size) for every population with noise > 0")
    out = {}
    for p in wanted:
        xi = torch.as_tensor(noise[p.name])
        if xi.shape != (steps, batch, p.size):
            raise ShapeError(f"noise[{p.name!r}]: expected shape (T, batch, size) = {(steps, batch, p.size)}, "
                             f"got {tuple(xi.shape)}")
        if not xi.is_floating_point():
            raise ConfigError(f"noise[{p.name!r}]: expected floating-point draws, got dtype {xi.dtype}")
        out[p.name] = xi.to(dtype=dtype, device=device)
    return out
