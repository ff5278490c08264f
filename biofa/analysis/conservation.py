"""Conservation laws of feedback alignment. Robertson & Koyejo (2023) state in their abstract that
FA's learning dynamics obey conservation laws; the forms below are our derivation (the abstract is
all of the paper we could check).

Under gradient flow with fixed feedback, for a chain :math:`a_l = W_l h_{l-1} + b_l`,
:math:`h_l = f(a_l)` whose hidden errors travel back through :math:`B_{l+1}` (the feedback of
:math:`W_{l+1}`, same shape):

.. math:: C_l = W_l W_l^\\top + b_l b_l^\\top - B_{l+1}^\\top W_{l+1} - W_{l+1}^\\top B_{l+1}
          \\quad (f \\text{ linear})

.. math:: c_{l,i} = \\|W_l[i,:]\\|^2 + b_{l,i}^2 - 2\\langle W_{l+1}[:,i], B_{l+1}[:,i]\\rangle
          \\quad (f \\text{ positively homogeneous, e.g. ReLU})

are constant in time: :math:`\\tfrac{d}{dt}\\|W_l[i,:]\\|^2 + b_{l,i}^2 = -2\\sum_n \\delta_{l,i} a_{l,i}
= 2\\tfrac{d}{dt}\\langle W_{l+1}[:,i], B_{l+1}[:,i]\\rangle` since
:math:`\\delta_l = (\\delta_{l+1} B_{l+1}) \\circ f'(a_l)` and :math:`f'(a)\\,a = f(a)`. The ReLU
law is the diagonal of the linear one. Discrete steps drift by O(lr) over a fixed time; GD's own
law, the balancedness :math:`W_l W_l^\\top - W_{l+1}^\\top W_{l+1}`, is not conserved under FA.
See :ref:`Background, conservation laws <background-conservation>`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ._tensors import as64
from .alignment import feedback_layers


def feedback_chain(model: nn.Module) -> tuple[list, list, list]:
    """``(Ws, bs, Bs)`` of a model whose biofa layers form one chain of ``biofa.nn.Linear``.

    Layers are taken in module order and must chain (``W_{l+1}`` has ``W_l``'s output count as
    its input count). Returns float64 copies (detached clones, so later training does not change
    them): ``bs[l]`` is None for a layer without bias; ``Bs[l]`` is the B in use now.
    DFA and convolutional layers raise :class:`~biofa.errors.ConfigError`.
    """
    from ..nn import Linear

    layers = feedback_layers(model)
    if not layers:
        raise ConfigError(f"feedback_chain: {type(model).__name__} has no biofa layer")
    Ws, bs, Bs = [], [], []
    for name, layer in layers:
        if not isinstance(layer, Linear):
            raise ConfigError(f"feedback_chain: layer {name!r} is a {type(layer).__name__}; the "
                              "conservation laws are read from chains of biofa.nn.Linear only")
        if layer.feedback.direct:
            raise ConfigError(f"feedback_chain: layer {name!r} uses DFA, whose hidden errors skip "
                              "the layer above; the layer-wise conservation laws do not apply")
        if Ws and Ws[-1].shape[0] != layer.in_features:
            raise ShapeError(f"feedback_chain: layer {name!r} takes {layer.in_features} inputs but "
                             f"the layer before it has {Ws[-1].shape[0]} outputs; not a chain")
        Ws.append(as64(layer.weight).clone())
        bs.append(None if layer.bias is None else as64(layer.bias).clone())
        Bs.append(as64(layer.feedback.matrix()).clone())
    return Ws, bs, Bs


def _chain(Ws, bs, Bs, owner: str):
    """Validate and normalise a chain: float64 tensors; Bs aligned with Ws (Bs[0] unused)."""
    if isinstance(Ws, nn.Module):
        if bs is not None or Bs is not None:
            raise ConfigError(f"{owner}: pass either a model or lists (Ws, bs, Bs), not both")
        return feedback_chain(Ws)
    Ws = [as64(w, "W") for w in Ws]
    L = len(Ws)
    if L < 2:
        raise ConfigError(f"{owner}: a chain needs at least two weight matrices, got {L}")
    if Bs is None:
        raise ConfigError(f"{owner}: the feedback matrices Bs are required with a list of weights")
    Bs = list(Bs)
    if len(Bs) == L - 1:
        Bs = [None, *Bs]
    if len(Bs) != L:
        raise ConfigError(f"{owner}: expected {L} feedback matrices (B_1 may be None) or {L - 1} "
                          f"(B_2..B_L), got {len(Bs)}")
    Bs = [None if B is None else as64(B, "B") for B in Bs]
    bs = [None] * L if bs is None else [None if b is None else as64(b, "b") for b in bs]
    if len(bs) != L:
        raise ConfigError(f"{owner}: expected {L} biases (None for none), got {len(bs)}")
    for l, W in enumerate(Ws):
        if W.dim() != 2:
            raise ShapeError(f"{owner}: W_{l + 1} must be a matrix, got shape {tuple(W.shape)}")
        if l and W.shape[1] != Ws[l - 1].shape[0]:
            raise ShapeError(f"{owner}: W_{l + 1} has shape {tuple(W.shape)} but W_{l} has "
                             f"{Ws[l - 1].shape[0]} rows; not a chain")
        if l and (Bs[l] is None or Bs[l].shape != W.shape):
            got = None if Bs[l] is None else tuple(Bs[l].shape)
            raise ShapeError(f"{owner}: B_{l + 1} must have W_{l + 1}'s shape {tuple(W.shape)}, got {got}")
        if bs[l] is not None and bs[l].shape != (W.shape[0],):
            raise ShapeError(f"{owner}: b_{l + 1} must have shape ({W.shape[0]},), got {tuple(bs[l].shape)}")
    return Ws, bs, Bs


def linear_invariants(Ws, Bs=None, *, bs=None) -> list[torch.Tensor]:
    """The FA conservation law of linear networks, one matrix per hidden layer.

    .. math:: C_l = W_l W_l^\\top + b_l b_l^\\top - B_{l+1}^\\top W_{l+1} - W_{l+1}^\\top B_{l+1},
              \\qquad l = 1, \\dots, L-1

    ``Ws``: the weights W_1..W_L (shapes (n_l, n_{l-1})) or a model (:func:`feedback_chain`).
    ``Bs``: the feedback of each W, either L entries (B_1 is never used and may be None) or the
    L-1 matrices B_2..B_L. ``bs``: biases (optional; without them the law has no bias term; read
    from a model, the biases are included, which is the law of a linear network with biases).
    Returns float64 tensors of shape (n_l, n_l).
    """
    Ws, bs, Bs = _chain(Ws, bs, Bs, "linear_invariants")
    out = []
    for l in range(len(Ws) - 1):
        W, Wn, Bn = Ws[l], Ws[l + 1], Bs[l + 1]
        C = W @ W.T - Bn.T @ Wn - Wn.T @ Bn
        if bs[l] is not None:
            C = C + torch.outer(bs[l], bs[l])
        out.append(C)
    return out


def relu_invariants(Ws, bs=None, Bs=None) -> list[torch.Tensor]:
    """The FA conservation law of ReLU (positively homogeneous) networks, one vector per hidden layer.

    .. math:: c_{l,i} = \\|W_l[i,:]\\|^2 + b_{l,i}^2 - 2\\langle W_{l+1}[:,i], B_{l+1}[:,i]\\rangle

    ``Ws``, ``bs``, ``Bs`` as in :func:`linear_invariants` (``bs`` None or None entries: no bias),
    or a model as the only argument. Returns float64 tensors of shape (n_l,). Summed over a layer,
    :math:`2\\langle W_{l+1}, B_{l+1}\\rangle_F = \\|W_l\\|^2 + \\|b_l\\|^2 - \\sum_i c_{l,i}`.
    """
    Ws, bs, Bs = _chain(Ws, bs, Bs, "relu_invariants")
    out = []
    for l in range(len(Ws) - 1):
        W, Wn, Bn = Ws[l], Ws[l + 1], Bs[l + 1]
        c = (W * W).sum(1) - 2 * (Wn * Bn).sum(0)
        if bs[l] is not None:
            c = c + bs[l] ** 2
        out.append(c)
    return out


def balancedness(Ws, bs=None) -> list[torch.Tensor]:
    """Gradient descent's conservation law (not FA's): :math:`W_l W_l^\\top + b_l b_l^\\top - W_{l+1}^\\top W_{l+1}`.

    The FA law with B = W. ``Ws`` a list of weights or a model; ``bs`` optional biases.
    """
    if isinstance(Ws, nn.Module):
        Ws, bs, _ = feedback_chain(Ws)
    Ws = [as64(w, "W") for w in Ws]
    Bs = [None, *[w / 2 for w in Ws[1:]]]
    return linear_invariants(Ws, Bs, bs=bs)


def drift(initial, current, scale=None) -> float:
    """Relative change of a list of invariants (or of one tensor).

    .. math:: \\mathrm{drift} = \\frac{\\sqrt{\\sum_l \\|C_l(t) - C_l(0)\\|_F^2}}{s},
              \\qquad s = \\sqrt{\\sum_l \\|C_l(0)\\|_F^2} \\text{ by default}

    Pass ``scale`` (a positive number) when the invariants start near zero, e.g. the size of
    their terms :math:`\\|W_l W_l^\\top\\|_F`, so the ratio stays meaningful.
    """
    if torch.is_tensor(initial) or not isinstance(initial, (list, tuple)):
        initial, current = [initial], [current]
    if len(initial) != len(current):
        raise ShapeError(f"drift: {len(initial)} initial invariants but {len(current)} current ones")
    num = den = 0.0
    for l, (a, b) in enumerate(zip(initial, current)):
        a, b = as64(a), as64(b)
        if a.shape != b.shape:
            raise ShapeError(f"drift: invariant {l} has shape {tuple(a.shape)} initially and "
                             f"{tuple(b.shape)} now")
        num += float(((b - a) ** 2).sum())
        den += float((a**2).sum())
    if scale is None:
        if den == 0:
            raise ConfigError("drift: the initial invariants are all zero; pass scale= (e.g. the "
                              "norm of W_l W_l^T) to measure the change against")
        return num**0.5 / den**0.5
    if not scale > 0:
        raise ConfigError(f"drift: scale must be > 0, got {scale!r}")
    return num**0.5 / float(scale)
