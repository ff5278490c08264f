"""Distance to the minimum-norm solution of over-parameterised linear regression.

.. math:: W^\\star = Y X^+ = \\arg\\min \\{\\|W\\|_F : W X = Y\\} \\quad (d > N,\\ X \\text{ of full column rank})

With samples as **columns**, X has shape (d, N) and Y shape (k, N), so :math:`W^\\star` has shape
(k, d) like the effective weight :math:`W_L \\cdots W_1` of a linear network. Two-layer linear
networks trained with FA from a small initialisation converge to :math:`W^\\star` (every update of
W_1 lies in the row space of X); from a large one they end at another interpolating solution
(:ref:`Background, minimum-norm solutions <background-min-norm>`).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, ShapeError
from ._tensors import as64


def min_norm_solution(X, Y):
    """The minimum-norm least-squares solution :math:`W^\\star = Y X^+`.

    ``X``: (d, N) inputs as columns; ``Y``: (k, N) targets as columns (a 1-D Y is one output
    row). Computed in float64 with ``torch.linalg.pinv``; returns a torch tensor if ``X`` is one,
    else a numpy array, of shape (k, d).
    """
    Xt, Yt = as64(X, "X"), as64(Y, "Y")
    if Yt.dim() == 1:
        Yt = Yt.unsqueeze(0)
    if Xt.dim() != 2 or Yt.dim() != 2 or Xt.shape[1] != Yt.shape[1]:
        raise ShapeError(f"min_norm_solution: expected X of shape (d, N) and Y of shape (k, N) "
                         f"(samples as columns), got {tuple(Xt.shape)} and {tuple(Yt.shape)}")
    W = Yt @ torch.linalg.pinv(Xt)
    return W if torch.is_tensor(X) else W.cpu().numpy()


def effective_weight(Ws):
    """The end-to-end map of a linear chain, :math:`W_L \\cdots W_2 W_1` (float64 torch tensor).

    ``Ws``: the weights W_1..W_L in forward order, or a model (biases are ignored; the chain is
    read with :func:`biofa.analysis.feedback_chain`).
    """
    from torch import nn

    from .conservation import feedback_chain

    if isinstance(Ws, nn.Module):
        Ws = feedback_chain(Ws)[0]
    Ws = [as64(w, "W") for w in Ws]
    if not Ws:
        raise ConfigError("effective_weight: no weights given")
    out = Ws[0]
    for W in Ws[1:]:
        if W.shape[1] != out.shape[0]:
            raise ShapeError(f"effective_weight: a weight of shape {tuple(W.shape)} cannot follow "
                             f"one with {out.shape[0]} outputs")
        out = W @ out
    return out


def distance_to_min_norm(W_eff, X, Y) -> float:
    """Relative Frobenius distance of ``W_eff`` from the minimum-norm solution.

    .. math:: \\frac{\\|W_\\mathrm{eff} - Y X^+\\|_F}{\\|Y X^+\\|_F}
    """
    target = as64(min_norm_solution(as64(X, "X"), Y))
    W = as64(W_eff, "W_eff")
    if W.dim() == 1:
        W = W.unsqueeze(0)
    if W.shape != target.shape:
        raise ShapeError(f"distance_to_min_norm: W_eff has shape {tuple(W.shape)} but Y X^+ has "
                         f"{tuple(target.shape)}")
    den = float(torch.linalg.vector_norm(target.to(W.device)))
    if den == 0:
        raise ConfigError("distance_to_min_norm: the minimum-norm solution is zero (Y = 0)")
    return float(torch.linalg.vector_norm(W - target.to(W.device))) / den


__all__ = ["min_norm_solution", "effective_weight", "distance_to_min_norm"]
