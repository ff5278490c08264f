"""Residual networks (He et al. 2016), written once in plain torch.

- CIFAR ResNets (He et al. 2016, §4.2): a 3×3 conv with 16 maps, three stages of n basic blocks
  with 16, 32, 64 maps (stride 2 at the start of stages 2 and 3), global average pooling and a
  linear layer; depth 6n + 2 (ResNet-20/32/56: n = 3/5/9). Shortcuts are **option A** by default
  (identity; where the shape changes, subsample by 2 and zero-pad the new channels: no
  parameters, as in the paper's CIFAR experiments); ``shortcut="B"`` uses 1×1 projection
  convolutions + BatchNorm where the shape changes.
- ResNet-18 (ImageNet layout): 7×7/2 conv with 64 maps, 3×3/2 max pooling, four stages of two
  basic blocks with 64, 128, 256, 512 maps, option-B shortcuts, adaptive average pooling and a
  linear layer. The adaptive pooling accepts any input of at least 32×32 (CIFAR or 224×224);
  ``stem="cifar"`` swaps the stem for a 3×3/1 conv without max pooling for small images.

Every convolution is bias-free and followed by BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError, check_choice

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option-A shortcut: :math:`x[:, :, ::s, ::s]` zero-padded to ``out_channels`` channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """:math:`y = \\mathrm{relu}(\\mathrm{BN}(K_2 * \\mathrm{relu}(\\mathrm{BN}(K_1 * x))) + s(x))`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, stages of :class:`BasicBlock`, global average pooling and a linear read-out.

    .. math:: y = W \\, \\mathrm{avgpool}(\\mathrm{stages}(\\mathrm{stem}(x))) + b

    Parameters
    ----------
    input_shape : (C, H, W) of one image.
    n_outputs : number of classes.
    blocks : blocks per stage, e.g. (3, 3, 3) for ResNet-20, (2, 2, 2, 2) for ResNet-18.
    widths : feature maps per stage, e.g. (16, 32, 64) or (64, 128, 256, 512).
    stem : ``"cifar"`` (3×3/1 conv to ``widths[0]`` maps) or ``"imagenet"`` (7×7/2 conv and 3×3/2
        max pooling).
    shortcut : ``"A"`` (parameter-free identity / zero padding) or ``"B"`` (1×1 projections).
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int, blocks: Sequence[int],
                 widths: Sequence[int], stem: str = "cifar", shortcut: str = "A"):
        super().__init__()
        check_choice("ResNet", "stem", stem, ["cifar", "imagenet"])
        check_choice("ResNet", "shortcut", shortcut, list(SHORTCUTS))
        if len(input_shape) != 3:
            raise ShapeError(f"ResNet needs image inputs of shape (C, H, W), got input_shape={tuple(input_shape)}")
        if len(blocks) != len(widths):
            raise ShapeError(f"ResNet: blocks {tuple(blocks)} and widths {tuple(widths)} differ in length")
        channels = int(input_shape[0])
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages = []
        in_ch = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_ch, width, stride, shortcut)]
            stage += [BasicBlock(width, width, 1, shortcut) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, n_outputs)
        self.input_shape, self.n_outputs = tuple(input_shape), n_outputs
        self.blocks, self.widths, self.stem_kind, self.shortcut = tuple(blocks), tuple(widths), stem, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def cifar_resnet(depth: int, input_shape, n_outputs: int, shortcut: str = "A") -> ResNet:
    """ResNet-``depth`` for CIFAR (depth = 6n + 2: 20, 32, 44, 56, 110)."""
    if (depth - 2) % 6:
        raise ShapeError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return ResNet(input_shape, n_outputs, (n, n, n), (16, 32, 64), stem="cifar", shortcut=shortcut)


def resnet18(input_shape, n_outputs: int, stem: str = "imagenet") -> ResNet:
    """ResNet-18 in the ImageNet layout (option-B shortcuts); ``stem="cifar"`` for small images."""
    return ResNet(input_shape, n_outputs, (2, 2, 2, 2), (64, 128, 256, 512), stem=stem, shortcut="B")
