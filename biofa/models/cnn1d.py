"""The small 1-D CNN of the MNIST-1D paper (Greydanus 2020, ``ConvBase``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import ShapeError
from .activations import make_activation


class CNN1d(nn.Module):
    """Three strided 1-D convolutions and a linear read-out.

    .. math:: h_1 = f(K_1 * x), \\; h_2 = f(K_2 * h_1), \\; h_3 = f(K_3 * h_2), \\;
              y = W \\, \\mathrm{vec}(h_3) + b

    K_1: 5 taps, K_2 and K_3: 3 taps, all stride 2 and padding 1, ``channels`` maps each
    (25 by default: a 40-sample input gives 25×5 = 125 features, as in the paper).

    Parameters
    ----------
    input_shape : ``(L,)`` (one channel, reshaped to (1, L)) or ``(C, L)``.
    n_outputs : number of classes.
    channels : feature maps per convolution.
    activation : nonlinearity f (default ``"relu"``).
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int, channels: int = 25, activation: str = "relu"):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 1:
            shape = (1, *shape)
        if len(shape) != 2:
            raise ShapeError(f"CNN1d needs inputs of shape (L,) or (C, L), got input_shape={tuple(input_shape)}")
        in_ch, length = shape
        for kernel in (5, 3, 3):
            length = (length + 2 - kernel) // 2 + 1
        if length < 1:
            raise ShapeError(f"CNN1d: input length {shape[1]} is too short for three stride-2 convolutions")
        act = lambda: make_activation(activation, "CNN1d")  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv1d(in_ch, channels, 5, stride=2, padding=1), act(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), act(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), act(),
        )
        self.linear = nn.Linear(channels * length, n_outputs)
        self.input_shape, self.n_outputs, self._in = tuple(input_shape), n_outputs, shape

    def forward(self, x):
        h = self.features(x.reshape(x.shape[0], *self._in))
        return self.linear(h.flatten(1))
