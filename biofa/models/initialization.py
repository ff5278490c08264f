"""Deterministic initialisation of a plain torch model before it is converted.

.. math:: W \\sim \\mathcal U[-a, a] \\; (a \\text{ from } \\texttt{init}), \\qquad b = 0, \\qquad
          \\gamma_\\mathrm{BN} = 1, \\; \\beta_\\mathrm{BN} = 0

Every ``nn.Linear``/``nn.Conv*`` weight is redrawn with :func:`biofa.init.init_weight` from the
given generator, in module order, so a model is a function of (architecture, init, generator
state). Xavier-uniform is the default, as in the BioTorch benchmark (:ref:`background-numbers`)
and biofa's own layers; the feedback B of FA-type rules is then drawn with the same scheme by
``convert``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..init import check_init, init_weight

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


@torch.no_grad()
def initialize(model: nn.Module, init="xavier", generator: torch.Generator | None = None) -> nn.Module:
    """Redraw every Linear/Conv weight of ``model`` from ``init``, zero their biases, reset
    normalisation layers; returns ``model``. ``init``: ``"xavier"``, ``"kaiming"`` or a bound a."""
    check_init("initialize", init)
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            init_weight(module.weight, init, generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, _NORMS):
            module.reset_parameters()
    return model
