"""Weight initialisation shared by forward weights W and feedback weights B.

FA draws B with W's init distribution and scale (:ref:`background-feedback-rules`), so both go
through :func:`init_weight`. Every initialiser takes an explicit ``generator``; ``None`` means
torch's default generator, so ``torch.manual_seed`` works as users expect.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import check_choice

INIT_SCHEMES = ("xavier", "kaiming")


def check_init(owner: str, init) -> None:
    """Validate an ``init`` argument: a scheme name or a positive bound a for U[-a, a]."""
    if isinstance(init, bool) or not (init in INIT_SCHEMES or (isinstance(init, (int, float)) and init > 0)):
        from .errors import ConfigError

        raise ConfigError(
            f"The 'init' parameter of {owner} must be one of {set(INIT_SCHEMES)} or a positive "
            f"number a (uniform U[-a, a]). Got {init!r} instead."
        )


def fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape`` ``(out, in, *kernel)``, as torch computes them."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_bound(shape, scheme="xavier") -> float:
    """Half-width a of the uniform distribution U[-a, a] that ``scheme`` draws from.

    .. math:: a_{\\mathrm{xavier}} = \\sqrt{6 / (n_\\mathrm{in} + n_\\mathrm{out})}, \\qquad
              a_{\\mathrm{kaiming}} = \\sqrt{6 / n_\\mathrm{in}}  \\; (\\text{ReLU gain } \\sqrt{2})
    """
    if not isinstance(scheme, str):
        check_init("init_bound", scheme)
        return float(scheme)
    check_choice("init", "scheme", scheme, INIT_SCHEMES)
    fan_in, fan_out = fans(shape)
    if scheme == "xavier":
        return math.sqrt(6.0 / (fan_in + fan_out))
    return math.sqrt(6.0 / fan_in)


def init_std(shape, scheme="xavier") -> float:
    """Standard deviation of the init distribution: a / sqrt(3) for U[-a, a]."""
    return init_bound(shape, scheme) / math.sqrt(3.0)


@torch.no_grad()
def init_weight(tensor: torch.Tensor, scheme="xavier", generator: torch.Generator | None = None):
    """Fill ``tensor`` in place from U[-a, a] with a = :func:`init_bound` and return it."""
    if not isinstance(scheme, str):
        check_init("init_weight", scheme)
        return tensor.uniform_(-float(scheme), float(scheme), generator=generator)
    check_choice("init", "scheme", scheme, INIT_SCHEMES)
    if scheme == "xavier":
        return nn.init.xavier_uniform_(tensor, generator=generator)
    return nn.init.kaiming_uniform_(tensor, a=0.0, nonlinearity="relu", generator=generator)
