"""Weight alignment, norm ratio and sign agreement between W and its feedback B.

.. math:: \\angle(W, B) = \\arccos \\frac{\\langle W, B \\rangle_F}{\\|W\\|_F \\, \\|B\\|_F}

Baselines with no learning, all closed forms of the init distributions: random FA 90°; uSF
:math:`B = c\\,\\mathrm{sign}(W)` has :math:`\\cos = E|w| / \\sqrt{E w^2}`, 30° on uniform W and
:math:`\\arccos\\sqrt{2/\\pi} \\approx 37°` on Gaussian W; frSF :math:`B = \\mathrm{sign}(W)\\circ|R|`
has :math:`\\cos = E|w|\\,E|r| / \\sqrt{E w^2 \\, E r^2}`, 41.4° for uniform W and R (biofa's
default, Xavier-uniform) and :math:`\\arccos(2/\\pi) \\approx 50.5°` for Gaussian ones. Only
alignment *below* these baselines is learned (derivations:
:ref:`Background, measuring alignment <background-alignment>`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ._tensors import as64


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what}: the two tensors must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def angle(a, b) -> float:
    """Angle in degrees between two tensors of the same shape, each read as one flat vector.

    .. math:: \\theta = \\arccos \\frac{\\langle a, b\\rangle}{\\|a\\|\\,\\|b\\|}
              = 2 \\arctan \\frac{\\|\\hat a - \\hat b\\|}{\\|\\hat a + \\hat b\\|},
              \\qquad \\hat a = a / \\|a\\|

    Computed in float64 with the second (Kahan's) form, which is accurate near 0° and 180° where
    arccos loses half the digits: identical directions give exactly 0. Returns NaN when either
    tensor is all zeros (no direction).
    """
    a, b = as64(a, "a"), as64(b, "b")
    _same_shape(a, b, "angle")
    a, b = a.reshape(-1), b.reshape(-1)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if na == 0 or nb == 0:
        return math.nan
    ua, ub = a / na, b / nb
    diff, total = float(torch.linalg.vector_norm(ua - ub)), float(torch.linalg.vector_norm(ua + ub))
    return math.degrees(2.0 * math.atan2(diff, total))


def weight_alignment(W, B) -> float:
    """Angle in degrees between forward weight W and feedback B of the same shape.

    .. math:: \\angle(W, B) = \\arccos \\frac{\\langle W, B \\rangle_F}{\\|W\\|_F \\, \\|B\\|_F}

    0° for backprop (B = W), about 90° for random FA at init, 180° for B = -W. Any shapes, as long
    as they are equal (a conv kernel is read as one vector). NaN when W or B is all zeros.
    For frSF pass the *effective* :math:`B = \\mathrm{sign}(W)\\circ|R|`
    (``layer.feedback.matrix()``), never :math:`|R|` alone.
    """
    W, B = as64(W, "W"), as64(B, "B")
    _same_shape(W, B, "weight_alignment")
    return angle(W, B)


def norm_ratio(W, B) -> float:
    """Ratio of Frobenius norms :math:`\\|B\\|_F / \\|W\\|_F` (shapes may differ, e.g. DFA).

    1 under "sn" scaling; inf when W is zero and B is not; NaN when both are zero.
    """
    nw = float(torch.linalg.vector_norm(as64(W, "W")))
    nb = float(torch.linalg.vector_norm(as64(B, "B")))
    if nw == 0:
        return math.nan if nb == 0 else math.inf
    return nb / nw


def sign_agreement(W, B) -> float:
    """Fraction of entries where W and B have the same sign.

    .. math:: \\frac{1}{n} \\sum_i [\\mathrm{sign}\\, w_i = \\mathrm{sign}\\, b_i]

    Zeros count as a sign of their own (sign 0): a zero weight agrees only with a zero feedback
    entry. So uSF/frSF, whose B is 0 exactly where W is 0 (e.g. synapses clamped by a Dale
    projection), score exactly 1, and random FA scores about 1/2.
    """
    W, B = as64(W, "W"), as64(B, "B")
    _same_shape(W, B, "sign_agreement")
    if W.numel() == 0:
        return math.nan
    return float((torch.sign(W) == torch.sign(B)).to(torch.float64).mean())


def feedback_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every biofa layer (:class:`biofa.nn.FeedbackLayer`) of ``model``,
    in module order; a bare layer is returned under the name ``""``."""
    from ..nn import FeedbackLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, FeedbackLayer)]


def layer_metrics(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per biofa layer of ``model``, by module name: how its feedback B relates to its weight W.

    Keys of each layer's dict:

    - ``weight_alignment``: :func:`weight_alignment` of W and the B in use now
      (``layer.feedback.matrix()``: the effective B, brSF's at the current training step).
    - ``norm_ratio``: :func:`norm_ratio` :math:`\\|B\\|_F / \\|W\\|_F`.
    - ``sign_agreement``: :func:`sign_agreement`.
    - ``dale_violations``: only for sign-constrained layers (Dale or fixed signs): the number of
      weights whose sign contradicts their constraint, as an int (0 expected).

    DFA: the output layer's block B_L has W_L's shape and stands in for it, so it gets every
    metric. A hidden DFA layer's B_l has shape (n_out, n_in) and projects the *output* error, not
    the error of the layer above; its ``weight_alignment`` and ``sign_agreement`` are NaN and its
    ``norm_ratio`` compares the two norms anyway (a scale, not a direction). A DFA layer that is
    not connected yet raises :class:`~biofa.errors.ConfigError`.
    """
    layers = feedback_layers(model)
    if not layers:
        raise ConfigError(f"layer_metrics: {type(model).__name__} has no biofa layer "
                          "(biofa.nn.Linear/Conv1d/Conv2d); convert it with biofa.nn.convert first.")
    out = {}
    for name, layer in layers:
        W = layer.weight.detach()
        B = layer.feedback.matrix()
        row = {"norm_ratio": norm_ratio(W, B)}
        hidden_dfa = layer.feedback.direct and layer.feedback.hub is None
        if not hidden_dfa and B.shape == W.shape:
            row["weight_alignment"] = weight_alignment(W, B)
            row["sign_agreement"] = sign_agreement(W, B)
        else:
            row["weight_alignment"] = math.nan
            row["sign_agreement"] = math.nan
        if layer.sign is not None:
            row["dale_violations"] = int(layer.sign.violations(W))
        out[name] = row
    return out
