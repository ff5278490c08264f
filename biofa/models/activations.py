"""Activation functions the model builders accept by name."""

from __future__ import annotations

from torch import nn

from ..errors import check_choice

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "linear": nn.Identity}


def make_activation(name: str, owner: str) -> nn.Module:
    """A new activation module for ``name`` (``"linear"`` is the identity)."""
    check_choice(owner, "activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]()
