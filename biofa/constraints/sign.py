"""Sign constraints: Dale's law, fixed per-synapse signs, free signs.

Background: :ref:`sign constraints <background-signs>`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from .._registry import build_from_table
from ..errors import ConfigError, ShapeError, check_choice
from . import functional as F

ENFORCE = ("project", "abs", "relu", "softplus")


class SignConstraint(nn.Module, metaclass=abc.ABCMeta):
    """A sign pattern S (±1, broadcastable to W) and how it is enforced.

    ``enforce="project"`` keeps W itself as the Parameter and clamps violators to 0 after every
    optimizer step (violators can recover when the gradient turns). ``"abs"``, ``"relu"`` and
    ``"softplus"`` reparameterise :math:`W = S \\circ \\varphi(V)` with one raw Parameter V that the
    optimizer keeps updating (relu kills a synapse for good, abs reflects it at 0).

    Projection interacts with optimizer state: momentum and Adam's moments keep pushing a clamped
    weight past 0, so it may stay clamped for a while after the gradient turns.
    """

    def __init__(self, enforce: str = "project"):
        super().__init__()
        check_choice(type(self).__name__, "enforce", enforce, ENFORCE)
        self.enforce = enforce
        self.register_buffer("signs", None)

    def bind(self, weight: torch.Tensor, groups: int = 1, generator=None) -> None:
        """Draw or build the sign pattern for a weight like ``weight``."""
        with torch.no_grad():
            self.signs = self.make_signs(weight, groups, generator).to(weight.dtype)

    @abc.abstractmethod
    def make_signs(self, weight: torch.Tensor, groups: int, generator) -> torch.Tensor:
        """±1 tensor broadcastable to ``weight``."""

    @property
    def reparameterised(self) -> bool:
        return self.enforce != "project"

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        return F.project_signs(weight, self.signs)

    def hold(self, weight: torch.Tensor) -> torch.Tensor:
        """The projection inside a forward pass (:func:`~biofa.constraints.functional.hold_signs`)."""
        return F.hold_signs(weight, self.signs)

    def comply(self, weight: torch.Tensor) -> torch.Tensor:
        """An initial weight that obeys the signs with W's magnitudes: :math:`S \\circ |W|`."""
        return weight.abs() * self.signs

    def violations(self, weight: torch.Tensor) -> int:
        return int(F.violations(weight, self.signs))

    def config(self) -> dict:
        import inspect

        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def clone(self) -> "SignConstraint":
        return type(self)(**self.config())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


def _unit_types(types, n: int, owner: str) -> torch.Tensor:
    values = []
    for t in types:
        if t in ("E", "e", 1, 1.0, True):
            values.append(1.0)
        elif t in ("I", "i", -1, -1.0):
            values.append(-1.0)
        else:
            raise ConfigError(f"{owner}: unit types must be 'E'/'I' or +1/-1, got {t!r}")
    if len(values) != n:
        raise ShapeError(f"{owner}: got {len(values)} unit types for {n} presynaptic units")
    return torch.tensor(values)


class Dale(SignConstraint):
    """Dale's law: every presynaptic unit j is excitatory or inhibitory, :math:`s_j W_{:,j} \\ge 0`.

    The unit is the input feature of a Linear layer and the input channel of a convolution.
    ``e_fraction`` (default 0.8) makes the first round(e_fraction·n) units E and the rest I;
    ``types`` gives them explicitly ("E"/"I" or ±1 per unit) and overrides ``e_fraction``.
    Under Dale's law sign(W) is rank one, so uniform sign-concordant feedback (uSF) sends
    :math:`s_j \\sum_k e_k` to unit j, which is exactly 0 under softmax cross-entropy.
    """

    def __init__(self, e_fraction: float = 0.8, types: Sequence | None = None, enforce: str = "project"):
        super().__init__(enforce)
        if not 0.0 <= e_fraction <= 1.0:
            raise ConfigError(f"The 'e_fraction' parameter of Dale must be in [0, 1]. Got {e_fraction!r} instead.")
        self.e_fraction = e_fraction
        self.types = None if types is None else list(types)

    def unit_signs(self, n: int) -> torch.Tensor:
        """±1 per presynaptic unit."""
        if self.types is not None:
            return _unit_types(self.types, n, "Dale")
        n_e = int(round(self.e_fraction * n))
        return torch.cat([torch.ones(n_e), -torch.ones(n - n_e)])

    @property
    def _all_excitatory(self) -> bool:
        return self.types is None and self.e_fraction == 1.0

    def project(self, weight):
        # all units E (a DANN's matrices): S = 1, one clamp instead of two products and a clamp
        return weight.clamp_(min=0) if self._all_excitatory else super().project(weight)

    def hold(self, weight):
        # the same function as hold_signs with S = 1 (value and gradient), without building bounds
        return F.hold_nonnegative(weight) if self._all_excitatory else super().hold(weight)

    def make_signs(self, weight, groups, generator):
        out_ch, in_per_group = weight.shape[0], weight.shape[1]
        unit = self.unit_signs(in_per_group * groups)
        trailing = [1] * (weight.dim() - 2)
        if groups == 1:
            return unit.reshape(1, -1, *trailing).to(weight.device)
        # grouped conv: output channel o sees input channels of its group only
        group_of = torch.arange(out_ch) // (out_ch // groups)
        index = group_of[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
        return unit[index].reshape(out_ch, in_per_group, *trailing).to(weight.device)


class FixedSigns(SignConstraint):
    """Fixed per-synapse signs: a mask S drawn once (P(+1) = ``p_positive``), :math:`S \\circ W \\ge 0`.

    Not Dale's law: the mask is full rank, so sign-concordant feedback is not degenerate.
    ``signs`` can give the mask explicitly (a ±1 tensor of W's shape).
    """

    def __init__(self, p_positive: float = 0.5, enforce: str = "project", mask=None):
        super().__init__(enforce)
        if not 0.0 <= p_positive <= 1.0:
            raise ConfigError(f"The 'p_positive' parameter of FixedSigns must be in [0, 1]. Got {p_positive!r}.")
        self.p_positive = p_positive
        self.mask = mask

    def make_signs(self, weight, groups, generator):
        if self.mask is not None:
            mask = torch.as_tensor(self.mask, dtype=weight.dtype)
            if mask.shape != weight.shape or not bool(((mask == 1) | (mask == -1)).all()):
                raise ShapeError(f"FixedSigns: mask must be ±1 of shape {tuple(weight.shape)}, got {tuple(mask.shape)}")
            return mask.to(weight.device)
        u = torch.rand(weight.shape, generator=generator, device=weight.device)
        return torch.where(u < self.p_positive, 1.0, -1.0)


SIGNS = {"dale": Dale, "fixed": FixedSigns}


def make_sign(spec, owner: str = "layer") -> SignConstraint | None:
    """``None``/``"free"`` → no constraint; ``"dale"``/``"fixed"``; a table ``{"rule": "dale", ...}``;
    a :class:`SignConstraint` object (cloned: the caller's object is never bound)."""
    if spec is None or spec == "free":
        return None
    if isinstance(spec, SignConstraint):
        return spec.clone()
    if isinstance(spec, dict):
        return build_from_table(spec, SIGNS, owner, "sign")
    check_choice(owner, "sign", spec, [None, "free", *sorted(SIGNS)])
    return SIGNS[spec]()


class SignReparametrization(nn.Module):
    """:math:`W = S \\circ \\varphi(V)` for ``torch.nn.utils.parametrize``."""

    def __init__(self, constraint: SignConstraint):
        super().__init__()
        self.phi = constraint.enforce
        self.register_buffer("signs", constraint.signs)

    def forward(self, raw):
        return F.PHI[self.phi](raw) * self.signs

    def right_inverse(self, weight):
        return F.phi_inverse(self.phi, (weight * self.signs).clamp(min=0))
