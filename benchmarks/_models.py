"""Plain torch reference models for the benchmarks (no biofa inside): an MLP, a CIFAR ResNet-20
(He et al. 2016, §4.2: 3 stages of 3 basic blocks, 16/32/64 channels, option-B 1x1 projection
shortcuts) and an ImageNet ResNet-18 (torchvision's layout, written out so torchvision is not
needed). They are built once here and converted by :func:`biofa.nn.convert` in the benchmarks."""

from __future__ import annotations

from torch import nn


def mlp(sizes=(784, 1000, 1000, 10)) -> nn.Sequential:
    """Fully connected ReLU network with the given layer widths."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of basic blocks: ``stem`` then one stage per entry of ``stages`` (channels, blocks,
    stride), global average pooling and a linear classifier."""

    def __init__(self, stem: nn.Module, c_stem: int, stages, n_classes: int):
        super().__init__()
        self.stem = stem
        blocks = []
        c_in = c_stem
        for c_out, n_blocks, stride in stages:
            for b in range(n_blocks):
                blocks.append(BasicBlock(c_in, c_out, stride if b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def resnet20(n_classes: int = 10) -> ResNet:
    """CIFAR ResNet-20: 3x3 stem with 16 channels, 3 stages of 3 blocks (16, 32, 64)."""
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    return ResNet(stem, 16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)], n_classes)


def resnet18(n_classes: int = 1000) -> ResNet:
    """ImageNet ResNet-18: 7x7/2 stem with 64 channels and 3x3/2 max pooling, 4 stages of 2 blocks
    (64, 128, 256, 512)."""
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1))
    return ResNet(stem, 64, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)], n_classes)
