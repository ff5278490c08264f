r"""Fixed random connectivity: which synapses of a synapse object exist.

.. math:: W_\mathrm{eff} = M \circ W, \qquad B_\mathrm{eff} = M \circ B, \qquad
          M_{ij} \sim \mathrm{Bernoulli}(p_\mathrm{connect}), \qquad M_{ii} = 0 \text{ without autapses}

The mask M (shape (post, pre), values 0/1) is drawn once, at construction, from the synapse
object's generator, and kept as a buffer (saved by ``state_dict``). It is applied wherever the
synapses act: the forward current, every feedback matrix (so no error travels through an absent
synapse), the weight gradient (zero where M = 0) and the brian2 export.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import ConfigError


def check_mask_options(owner: str, p_connect, autapses, self_connection: bool) -> None:
    """Validate ``p_connect`` (None or a number in (0, 1]) and ``autapses`` (None or a bool)."""
    if p_connect is not None:
        ok = isinstance(p_connect, numbers.Real) and not isinstance(p_connect, bool) and 0 < p_connect <= 1
        if not ok:
            raise ConfigError(f"{owner}: p_connect must be a number in (0, 1] (the probability that a "
                              f"synapse exists), got {p_connect!r}")
    if autapses is not None:
        if not isinstance(autapses, bool):
            raise ConfigError(f"{owner}: autapses must be true or false, got {autapses!r}")
        if not self_connection and autapses is False:
            raise ConfigError(f"{owner}: autapses = false removes a neuron's synapse onto itself, which only a "
                              "self-connection (pre == post) has; remove the key")


def draw_mask(shape, p_connect, autapses, generator=None, device=None, dtype=None) -> torch.Tensor | None:
    """M of ``shape`` (post, pre): Bernoulli(p_connect) draws (one uniform per synapse, row-major,
    from ``generator``), the diagonal zeroed when ``autapses`` is False; None when every synapse
    exists (p_connect None or 1 and autapses not False)."""
    full = p_connect is None or p_connect == 1
    if full and autapses is not False:
        return None
    mask = torch.ones(shape, device=device, dtype=dtype)
    if not full:
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        mask = (u < p_connect).to(device=device, dtype=dtype)
    if autapses is False:
        mask.fill_diagonal_(0.0)
    return mask
