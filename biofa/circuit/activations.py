r"""Rate activations f and their derivatives f' for circuit populations.

.. math:: r = f(I), \qquad \delta = f'(I) \odot g

=============  ==============================  ===============================
name           f(I)                            f'(I)
=============  ==============================  ===============================
``relu``       max(I, 0)                       1 if I > 0 else 0
``tanh``       tanh(I)                         1 - tanh(I)^2
``sigmoid``    1 / (1 + exp(-I))               σ(I) (1 - σ(I))
``softplus``   log(1 + exp(I))                 σ(I)
``linear``     I                               1
=============  ==============================  ===============================

All functions take and return torch tensors of any shape; softplus is computed as
``logaddexp(I, 0)`` (exact, no threshold), relu's derivative at 0 is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def relu(i: torch.Tensor) -> torch.Tensor:
    return torch.relu(i)


def relu_prime(i: torch.Tensor) -> torch.Tensor:
    return (i > 0).to(i.dtype)


def tanh(i: torch.Tensor) -> torch.Tensor:
    return torch.tanh(i)


def tanh_prime(i: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.tanh(i) ** 2


def sigmoid(i: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(i)


def sigmoid_prime(i: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(i)
    return s * (1.0 - s)


def softplus(i: torch.Tensor) -> torch.Tensor:
    return torch.logaddexp(i, torch.zeros_like(i))


def softplus_prime(i: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(i)


def linear(i: torch.Tensor) -> torch.Tensor:
    return i


def linear_prime(i: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(i)


@dataclass(frozen=True)
class Activation:
    """A named rate function with its derivative: ``f(I)`` and ``prime(I)``."""

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    prime: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, i: torch.Tensor) -> torch.Tensor:
        return self.f(i)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", relu, relu_prime),
    "tanh": Activation("tanh", tanh, tanh_prime),
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_prime),
    "softplus": Activation("softplus", softplus, softplus_prime),
    "linear": Activation("linear", linear, linear_prime),
}


def get_activation(name: str, owner: str = "Population") -> Activation:
    """The :class:`Activation` called ``name`` (one of :data:`ACTIVATIONS`); ``owner`` names the
    object in the error message."""
    from ..errors import check_choice

    check_choice(owner, "activation", name, sorted(ACTIVATIONS))
    return ACTIVATIONS[name]
