"""A run that diverged: its training loss or weights became NaN or infinite (recorded as failed)."""

from __future__ import annotations

import torch


class Diverged(ArithmeticError):
    """The training loss or the weights became NaN or infinite."""


def check_weights(model, epoch: int) -> None:
    """Raise :class:`Diverged` when a weight of ``model`` is not finite after ``epoch``."""
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        raise Diverged(f"non-finite weights after epoch {epoch}")
