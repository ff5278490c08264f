"""Sign constraints (Dale's law, fixed signs) and weight-norm constraints.

Constraints are properties of a layer (``sign=``, ``norm=``). They hold on the weights every forward
pass uses, with any torch optimizer: a global optimizer hook projects the layer after each step
that updates it, and the layer re-projects before a forward if its weight was changed by hand.
:func:`enforce` applies them on demand.
"""

from __future__ import annotations

from torch import nn

from . import functional
from .norm import NORMS, ConstNorm, make_norm
from .sign import ENFORCE, SIGNS, Dale, FixedSigns, SignConstraint, SignReparametrization, make_sign


def enforce(model: nn.Module) -> nn.Module:
    """Project every constrained biofa layer of ``model`` now; returns ``model``."""
    for module in model.modules():
        if hasattr(module, "enforce_constraints"):
            module.enforce_constraints()
    return model


def dale_violations(model: nn.Module) -> dict[str, int]:
    """Per sign-constrained layer, the number of weights that contradict their sign (must be 0)."""
    out = {}
    for name, module in model.named_modules():
        constraint = getattr(module, "sign", None)
        if isinstance(constraint, SignConstraint):
            out[name] = constraint.violations(module.weight.detach())
    return out


__all__ = [
    "functional", "enforce", "dale_violations",
    "SignConstraint", "Dale", "FixedSigns", "SignReparametrization", "make_sign", "SIGNS", "ENFORCE",
    "ConstNorm", "make_norm", "NORMS",
]
