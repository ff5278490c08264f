"""Weight-norm constraints: ``const``, our reading of the "Const." label of Moskovitz et al. (2018)
(:doc:`/guide/moskovitz`).

Background: :ref:`norm constraints and feedback scaling <background-norms>`.
"""

from __future__ import annotations

import torch
from torch import nn

from .._registry import build_from_table
from ..errors import check_choice
from . import functional as F


class ConstNorm(nn.Module):
    """``const``: after every optimizer step W is rescaled to its initial Frobenius norm.

    .. math:: W \\leftarrow W \\, \\nu_0 / \\|W\\|_F

    ``per="layer"`` (default) keeps one norm per layer; ``per="unit"`` one per output unit (row of
    W, output channel of a convolution). The target norms are a buffer recorded at bind time.
    """

    def __init__(self, per: str = "layer"):
        super().__init__()
        check_choice("ConstNorm", "per", per, ("layer", "unit"))
        self.per = per
        self.register_buffer("target", None)

    @property
    def per_unit(self) -> bool:
        return self.per == "unit"

    def bind(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.target = F.unit_norms(weight, self.per_unit).clone()

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        return F.rescale_norm(weight, self.target, self.per_unit)

    def hold(self, weight: torch.Tensor) -> torch.Tensor:
        """The rescaling inside a forward pass (:func:`~biofa.constraints.functional.hold_norm`)."""
        return F.hold_norm(weight, self.target, self.per_unit)

    def config(self) -> dict:
        return {"per": self.per}

    def clone(self) -> "ConstNorm":
        return ConstNorm(**self.config())

    def extra_repr(self) -> str:
        return f"per={self.per!r}"


NORMS = {"const": ConstNorm}


def make_norm(spec, owner: str = "layer") -> ConstNorm | None:
    """``None`` → none; ``"const"``; ``{"rule": "const", "per": "unit"}``; a :class:`ConstNorm` (cloned)."""
    if spec is None:
        return None
    if isinstance(spec, ConstNorm):
        return spec.clone()
    if isinstance(spec, dict):
        return build_from_table(spec, NORMS, owner, "norm")
    check_choice(owner, "norm", spec, [None, *sorted(NORMS)])
    return NORMS[spec]()
