"""LeNet-5 (LeCun et al. 1998) for MNIST-like (1×28×28) and CIFAR-like (3×32×32) inputs.

One class: the MNIST variant pads the first convolution by 2 so that a 28×28 image is treated
like LeNet's 32×32 input; the CIFAR variant takes 3 input channels and no padding. Both end in
16×5×5 feature maps and the fully connected 400-120-84-n head of LeNet-5 (ReLU and max pooling
by default; tanh and average pooling as options).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import ShapeError, check_choice
from .activations import make_activation


def _conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class LeNet(nn.Module):
    """LeNet-5: conv(6, 5×5) – pool – conv(16, 5×5) – pool – fc 120 – fc 84 – fc n_outputs.

    .. math:: y = W_5 f(W_4 f(W_3 \\, \\mathrm{vec}(P(f(K_2 * P(f(K_1 * x)))))))

    Parameters
    ----------
    input_shape : (C, H, W); H = W = 28 selects the MNIST variant (padding 2), other sizes use
        padding 0 (CIFAR: 3×32×32).
    n_outputs : number of classes.
    activation : nonlinearity f (default ``"relu"``; LeCun's original used ``"tanh"``).
    pool : ``"max"`` (default) or ``"avg"``.
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int, activation: str = "relu", pool: str = "max"):
        super().__init__()
        if len(input_shape) != 3:
            raise ShapeError(f"LeNet needs image inputs of shape (C, H, W), got input_shape={tuple(input_shape)}")
        channels, height, width = (int(s) for s in input_shape)
        pad = 2 if (height, width) == (28, 28) else 0
        h, w = _conv_out(height, 5, pad) // 2, _conv_out(width, 5, pad) // 2
        h, w = _conv_out(h, 5) // 2, _conv_out(w, 5) // 2
        if h < 1 or w < 1:
            raise ShapeError(f"LeNet: input {tuple(input_shape)} is too small for two 5×5 conv + 2×2 pool stages")
        pool_cls = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
        check_choice("LeNet", "pool", pool, list(pool_cls))
        act = lambda: make_activation(activation, "LeNet")  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad), act(), pool_cls[pool](2),
            nn.Conv2d(6, 16, 5), act(), pool_cls[pool](2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * h * w, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, n_outputs),
        )
        self.input_shape, self.n_outputs = (channels, height, width), n_outputs

    def forward(self, x):
        return self.classifier(self.features(x))
