"""A multilayer perceptron, written once in plain torch (the rule is applied by ``convert``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from torch import nn

from ..errors import ConfigError
from .activations import make_activation


class MLP(nn.Sequential):
    """Fully connected network on the flattened input.

    .. math:: h_0 = \\mathrm{vec}(x), \\quad h_l = f(W_l h_{l-1} + b_l), \\quad y = W_L h_{L-1} + b_L

    Parameters
    ----------
    input_shape : shape of one sample (flattened to its product).
    n_outputs : width of the output layer (logits or regression targets).
    hidden : widths of the hidden layers; ``()`` gives a linear (logistic-regression) model.
    activation : ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"gelu"`` or ``"linear"``.
    bias : whether the layers have biases.
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int, hidden: Sequence[int] = (100, 100),
                 activation: str = "relu", bias: bool = True):
        if (isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence)
                or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) for h in hidden)):
            raise ConfigError(f"hidden must be a list of layer widths (positive integers), e.g. "
                              f"[{hidden if isinstance(hidden, int) else 100}] for one hidden layer, "
                              f"got {hidden!r}")
        widths = [int(math.prod(input_shape)), *[int(h) for h in hidden], int(n_outputs)]
        if any(w < 1 for w in widths):
            raise ConfigError(f"MLP: every layer width must be >= 1, got input {widths[0]}, hidden "
                              f"{list(hidden)}, n_outputs {n_outputs}")
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(n_in, n_out, bias=bias))
            if i < len(widths) - 2:
                layers.append(make_activation(activation, "MLP"))
        super().__init__(*layers)
        self.input_shape, self.n_outputs = tuple(input_shape), n_outputs
        self.hidden, self.activation = tuple(hidden), activation
