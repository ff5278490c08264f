"""Tensor helpers the analysis modules share (private: not part of :mod:`biofa.analysis`'s API)."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def as64(x, name: str = "tensor") -> torch.Tensor:
    """``x`` (tensor or array) detached, as float64 on its device (CPU for MPS, which has no f64)."""
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{name} must be a tensor or an array of numbers, got {type(x).__name__}") from err
    t = t.detach()
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)
