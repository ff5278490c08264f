"""Input populations: on/off channels that make signed data non-negative rates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import check_choice

INPUTS = ("signed", "on_off")


def on_off_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one sample after :class:`OnOff`: ``(L,)`` → ``(2, L)``, ``(C, ...)`` → ``(2C, ...)``."""
    shape = tuple(input_shape)
    return (2, *shape) if len(shape) == 1 else (2 * shape[0], *shape[1:])


class OnOff(nn.Module):
    """On and off channels of a signed input, like retinal ON/OFF cells.

    .. math:: x \\mapsto [\\,\\max(x, 0),\\; \\max(-x, 0)\\,]

    Both halves are non-negative, so the populations that read the data can be excitatory (Dale's
    law with every input unit E) and still see the sign of x. A one-dimensional sample ``(L,)``
    becomes two channels ``(2, L)``; a sample with channels ``(C, ...)`` gets ``2C`` channels (on
    channels first). No parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on, off = torch.relu(x), torch.relu(-x)
        if x.dim() == 2:  # (N, L): a new channel axis
            return torch.stack([on, off], dim=1)
        return torch.cat([on, off], dim=1)


def check_inputs(value, owner: str = "build") -> None:
    check_choice(owner, "inputs", value, INPUTS)
