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


#: Tensors of a feedback module that are drawn from the init distribution once: FA's (and KP's,
#: WM's initial) B, frSF's magnitudes, the DFA hub's matrices, and DenseFA's ``gain``, the factor
#: on a B it draws at the first forward.
_DRAWN_FEEDBACK = ("B", "magnitude", "matrix_all", "gain")


def _check_scale(name: str, value) -> float:
    from ..errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value == float("inf"):
        raise ConfigError(f"{name} must be a positive finite number (a factor on the init), got {value!r}")
    return float(value)


@torch.no_grad()
def scale_weights(model: nn.Module, init_scale=1.0) -> nn.Module:
    """Multiply every Linear/Conv weight of ``model`` by ``init_scale`` (biases stay 0).

    .. math:: W_0 = s\\,W_0^{\\mathrm{init}}

    Applied to the plain model before it is converted, so norm constraints keep the scaled norm.
    """
    s = _check_scale("init_scale", init_scale)
    if s != 1.0:
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                module.weight.mul_(s)
    return model


@torch.no_grad()
def scale_feedback(model: nn.Module, feedback_init_scale=1.0) -> nn.Module:
    """Multiply every drawn feedback tensor (FA/KP/WM's B, frSF's magnitudes, DFA's matrices) by
    ``feedback_init_scale``.

    .. math:: B_0 = s_B\\,B_0^{\\mathrm{init}}

    Rules whose B follows W (bp, usf, brsf) have nothing drawn to scale: a scale other than 1 on a
    model without any drawn feedback raises :class:`~biofa.errors.ConfigError`.
    """
    from ..errors import ConfigError
    from ..feedback.base import Feedback
    from ..feedback.direct import DirectFeedbackHub

    s = _check_scale("feedback_init_scale", feedback_init_scale)
    if s == 1.0:
        return model
    scaled = 0
    for module in model.modules():
        if isinstance(module, (Feedback, DirectFeedbackHub)):
            own = {**dict(module.named_buffers(recurse=False)), **dict(module.named_parameters(recurse=False))}
            for name in _DRAWN_FEEDBACK:
                if own.get(name) is not None:
                    own[name].mul_(s)
                    scaled += 1
    if not scaled:
        raise ConfigError(f"feedback_init_scale={feedback_init_scale!r}: this model has no drawn feedback "
                          "to scale (rules bp, usf and brsf compute B from W); use fa, densefa, dfa, frsf, kp or wm")
    return model
