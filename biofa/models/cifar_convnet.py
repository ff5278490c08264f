"""The CIFAR-10 network of the TensorFlow CIFAR-10 tutorial: our choice of a CIFAR-10 network for
Moskovitz et al. (2018)'s conditions, not a network the paper is known to use (its text could not
be checked; :doc:`/guide/moskovitz`).

conv 5×5 (64) – ReLU – max-pool 3×3/2 – LRN – conv 5×5 (64) – ReLU – LRN – max-pool 3×3/2 –
fc 384 – ReLU – fc 192 – ReLU – fc n_outputs, on 24×24 crops of the 32×32 images. Convolutions
and pools use TensorFlow's ``SAME`` padding: a 5×5 convolution pads 2 on every side; a 3×3
stride-2 pool gives ⌈H/2⌉ rows and pads :math:`\\max((\\lceil H/2\\rceil - 1)\\cdot 2 + 3 - H, 0)` rows,
the extra one at the bottom/right (with −∞, so that padding never wins the max). A 24×24 input
gives 12×12 then 6×6 maps: 64·6·6 = 2304 features into the first fully connected layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from .activations import make_activation


def same_out(size: int, stride: int) -> int:
    """Output length of a TensorFlow ``SAME`` window: :math:`\\lceil n / s \\rceil`."""
    return math.ceil(size / stride)


class SameMaxPool2d(nn.Module):
    """Max pooling with TensorFlow's ``SAME`` padding (asymmetric: the extra row/column at the end).

    .. math:: P = \\max((\\lceil n/s \\rceil - 1) s + k - n, 0), \\quad
              \\text{pad } \\lfloor P/2 \\rfloor \\text{ before}, \\lceil P/2 \\rceil \\text{ after, with } -\\infty
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
            total = max((same_out(n, self.stride) - 1) * self.stride + self.kernel_size - n, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=-math.inf), self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding='SAME'"


def tf_lrn() -> nn.LocalResponseNorm:
    """The tutorial's ``tf.nn.lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75)``.

    TensorFlow divides by :math:`(k + \\alpha_{tf} \\sum a^2)^\\beta` over 2r+1 = 9 channels, torch by
    :math:`(k + \\frac{\\alpha}{n} \\sum a^2)^\\beta` with n = 9: the same for :math:`\\alpha = 9\\alpha_{tf} = 0.001`.
    """
    return nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)


class CifarConvNet(nn.Module):
    """The TensorFlow CIFAR-10 tutorial network (our choice for Moskovitz et al. 2018's conditions).

    .. math:: y = W_5 f(W_4 f(W_3 \\, \\mathrm{vec}(P(N(f(K_2 * N(P(f(K_1 * x)))))))))

    with K: 5×5 convolutions (``SAME``), P: :class:`SameMaxPool2d` (3×3, stride 2), N: local
    response normalisation (``lrn=True``, the tutorial's; ``lrn=False`` leaves it out), f: ReLU.

    Parameters
    ----------
    input_shape : (C, H, W), (3, 24, 24) in the tutorial (random 24×24 crops for training, the
        central crop for evaluation: ``[data] augment = {size = 24, flip = true}``).
    n_outputs : number of classes.
    channels : feature maps of both convolutions (64).
    hidden : widths of the two hidden fully connected layers ((384, 192)).
    lrn : keep the tutorial's local response normalisation after each convolution stage.
    activation : nonlinearity f (default ``"relu"``).
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int, channels: int = 64,
                 hidden: Sequence[int] = (384, 192), lrn: bool = True, activation: str = "relu"):
        super().__init__()
        if len(input_shape) != 3:
            raise ShapeError(f"CifarConvNet needs image inputs of shape (C, H, W), got input_shape={tuple(input_shape)}")
        c, h, w = (int(s) for s in input_shape)
        if len(hidden) != 2:
            raise ShapeError(f"CifarConvNet: hidden must give the two fully connected widths, got {hidden!r}")
        act = lambda: make_activation(activation, "CifarConvNet")  # noqa: E731
        norm = tf_lrn if lrn else nn.Identity
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 5, padding=2), act(), SameMaxPool2d(3, 2), norm(),
            nn.Conv2d(channels, channels, 5, padding=2), act(), norm(), SameMaxPool2d(3, 2),
        )
        fh, fw = same_out(same_out(h, 2), 2), same_out(same_out(w, 2), 2)
        h1, h2 = (int(n) for n in hidden)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * fh * fw, h1), act(), nn.Linear(h1, h2), act(),
            nn.Linear(h2, n_outputs),
        )
        self.input_shape, self.n_outputs = (c, h, w), n_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
