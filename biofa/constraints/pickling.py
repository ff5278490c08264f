"""Whole-module pickling (``torch.save(model)``) for layers with a reparameterised sign.

``torch.nn.utils.parametrize`` moves W into ``module.parametrizations.weight.original`` (the raw V)
and swaps the module's class for a generated subclass (``ParametrizedLinear``) that holds the
``weight`` property and whose ``__getstate__`` refuses pickling. The generated class cannot be
imported by name either. A biofa layer therefore pickles as its own, importable class with its
plain ``__dict__`` (the parametrizations included, so V, the signs and every other tensor are
stored exactly and keep their identity with an optimizer pickled alongside), and
:func:`restore_parametrizations` re-derives the generated class when it is unpickled.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize


def _plain_class(module: nn.Module) -> type:
    cls = type(module)
    if parametrize.is_parametrized(module) and _has_properties(module):
        return cls.__bases__[0]  # parametrize derives its class from exactly one base
    return cls


def _has_properties(module: nn.Module) -> bool:
    return all(isinstance(getattr(type(module), name, None), property) for name in module.parametrizations)


def reduce_module(module: nn.Module):
    """``__reduce_ex__`` of a possibly parametrized module: its own class plus its state.

    Pickle memoises the new object before it restores the state, so the references from a rule
    back to its layer (``Feedback._owner``) round-trip like any cycle.
    """
    return _new_module, (_plain_class(module),), nn.Module.__getstate__(module)


def _new_module(cls: type) -> nn.Module:
    # pickle's own ``copyreg.__newobj__`` insists that cls is the object's (generated) class
    return cls.__new__(cls)


def restore_parametrizations(module: nn.Module) -> None:
    """After ``__setstate__``: give an unpickled module its parametrized class and properties back."""
    if not parametrize.is_parametrized(module) or _has_properties(module):
        return
    # torch has no public call that re-attaches existing parametrizations (register_parametrization
    # would recompute V through right_inverse, which is not exact for softplus); these two private
    # helpers are what register_parametrization itself uses.
    parametrize._inject_new_class(module)
    for name in module.parametrizations:
        parametrize._inject_property(module, name)
