"""Populations: groups of rate neurons with one activation, time constant and (optional) type.

.. math:: \\tau \\, \\frac{dr}{dt} = -r + f(I + b)

A population is a plain description (no tensors): the :class:`~biofa.circuit.Circuit` that holds
it owns the learnable bias b, initialised from ``bias``.
"""

from __future__ import annotations

import numbers

from ..errors import ConfigError
from .activations import get_activation

SIGN_TYPES = (None, "E", "I")
#: the dynamics forms: ``"rate"`` (tau dr/dt = -r + f(I)) and ``"current"`` (tau dx/dt = -x + I, r = f(x))
DYNAMICS = ("rate", "current")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Population:
    """A population of ``size`` rate neurons.

    .. math:: \\tau \\, \\dot r = -r + f\\Big(\\sum_s W_s r_{\\mathrm{pre}(s)} + b\\Big)

    Parameters
    ----------
    name : str
        Unique within a circuit; no ``"."`` (it keys the circuit's parameters).
    size : int > 0
        Number of neurons.
    sign : None, ``"E"`` or ``"I"``
        Dale type: every outgoing synapse of an ``"E"`` population is excitatory (W ≥ 0), of an
        ``"I"`` population inhibitory (W ≤ 0). ``None``: free signs.
    activation : ``"relu"`` (default), ``"tanh"``, ``"sigmoid"``, ``"softplus"``, ``"linear"``.
    tau : float > 0
        Time constant in seconds (default 0.01); only the rate dynamics use it.
    bias : float or sequence of ``size`` floats
        Initial value of the per-neuron bias b (default 0).
    learn_bias : bool
        Whether b is a learned parameter (default True); ``False`` keeps b fixed at ``bias``.
    dynamics : None, ``"rate"`` or ``"current"``
        The form of the dynamics (:mod:`biofa.circuit.dynamics`); None follows the circuit's.
    noise : float >= 0 or None
        Private noise level sigma (None: no noise). For the input population: the input noise
        sigma_in, added to x and the baseline (``bias``), with ``tau`` as tau_in.
    rectify : bool or None
        Input population only: rectify the input after baseline and noise, r_in = [x + b + noise]_+.

    For the input population ``bias`` is a fixed baseline added to x (pycog's ``baseline_in``)
    and ``activation`` is not used.
    """

    def __init__(self, name: str, size: int, sign: str | None = None, activation: str = "relu",
                 tau: float = 0.01, bias=0.0, learn_bias: bool = True, dynamics: str | None = None,
                 noise: float | None = None, rectify: bool | None = None):
        if not isinstance(name, str) or not name or "." in name or name != name.strip():
            raise ConfigError(f"Population: name must be a non-empty string without '.' or surrounding "
                              f"spaces, got {name!r}")
        owner = f"Population {name!r}"
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size <= 0:
            raise ConfigError(f"{owner}: size must be a positive integer, got {size!r}")
        if sign not in SIGN_TYPES:
            raise ConfigError(f"The 'sign' parameter of {owner} must be one of {{None, 'E', 'I'}}. "
                              f"Got {sign!r} instead.")
        get_activation(activation, owner)
        if not _is_real(tau) or not tau > 0:
            raise ConfigError(f"{owner}: tau must be a number > 0 (seconds), got {tau!r}")
        if _is_real(bias):
            pass
        elif isinstance(bias, (list, tuple)) and len(bias) == size and all(_is_real(v) for v in bias):
            pass
        else:
            raise ConfigError(f"{owner}: bias must be a number or a list of {size} numbers, got {bias!r}")
        if not isinstance(learn_bias, bool):
            raise ConfigError(f"{owner}: learn_bias must be true or false, got {learn_bias!r}")
        if dynamics is not None and dynamics not in DYNAMICS:
            raise ConfigError(f"The 'dynamics' parameter of {owner} must be one of {{'rate', 'current'}}. "
                              f"Got {dynamics!r} instead.")
        if noise is not None and not (_is_real(noise) and noise >= 0 and noise < float("inf")):
            raise ConfigError(f"{owner}: noise must be a number >= 0 (the noise level sigma), got {noise!r}")
        if rectify is not None and not isinstance(rectify, bool):
            raise ConfigError(f"{owner}: rectify must be true or false, got {rectify!r}")
        self.name = name
        self.size = size
        self.sign = sign
        self.activation = activation
        self.tau = tau
        self.bias = bias
        self.learn_bias = learn_bias
        self.dynamics = dynamics
        self.noise = noise
        self.rectify = rectify

    @property
    def sigma(self) -> float:
        """The noise level sigma (0 when ``noise`` is None)."""
        return 0.0 if self.noise is None else float(self.noise)

    @property
    def act(self):
        """The :class:`~biofa.circuit.activations.Activation` object (f and f')."""
        return get_activation(self.activation)

    def to_spec(self) -> dict:
        """The constructor arguments except ``name`` (the key of the spec table); None omitted."""
        spec = {"size": self.size}
        if self.sign is not None:
            spec["sign"] = self.sign
        spec.update(activation=self.activation, tau=self.tau,
                    bias=list(self.bias) if isinstance(self.bias, (list, tuple)) else self.bias,
                    learn_bias=self.learn_bias)
        for key in ("dynamics", "noise", "rectify"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.to_spec().items() if k != "size")
        return f"Population({self.name!r}, {self.size}{extra})"

