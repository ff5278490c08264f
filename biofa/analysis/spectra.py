"""Spectra of weight matrices: singular values, normalised SVD entropy (NSE), eigenvalues.

Li et al. (NeurIPS 2023, "Learning better with Dale's Law: a spectral perspective") find that how
well an E/I network learns follows the spread of its weight matrices' singular values rather than
the sign constraint itself; NSE measures that spread (1: all singular values equal, 0: rank one).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ShapeError
from ._tensors import as64


def as_matrix(weight) -> torch.Tensor:
    """The matrix whose spectrum is meant, in float64.

    A tensor of shape (m, n) as it is; a convolution kernel (out, in, *k) as (out, in·k); a biofa
    layer its ``weight``; a DANN layer (:data:`biofa.nn.DANN_LAYERS`) its effective
    :math:`W_{EE} - W_{EI} W_{IE}`.
    """
    if isinstance(weight, nn.Module):
        weight = weight.effective_weight() if hasattr(weight, "effective_weight") else weight.weight
    w = as64(weight, "weight")
    if w.dim() < 2:
        raise ShapeError(f"a spectrum needs a matrix or a convolution kernel, got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0], -1)


def singular_values(weight) -> torch.Tensor:
    """:math:`\\sigma_1 \\ge \\dots \\ge \\sigma_N`, N = min(m, n), of :func:`as_matrix` (float64)."""
    return torch.linalg.svdvals(as_matrix(weight))


def nse(weight) -> float:
    """Normalised SVD entropy.

    .. math:: H = -\\frac{1}{\\log N} \\sum_i \\bar\\sigma_i \\log \\bar\\sigma_i, \\qquad
              \\bar\\sigma_i = \\sigma_i / \\textstyle\\sum_j \\sigma_j, \\quad N = \\min(m, n)

    1 when all singular values are equal (identity, orthogonal), 0 for rank one (:math:`0 \\log 0
    = 0`). A 1 × n or m × 1 matrix (N = 1) has NSE 1 by convention; an all-zero matrix raises.
    """
    s = singular_values(weight)
    if s.numel() == 1:
        return 1.0
    total = s.sum()
    if total == 0:
        raise ShapeError("nse: the matrix is zero, so its singular values have no distribution")
    p = s / total
    terms = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    return float(-terms.sum() / math.log(s.numel()))


def layer_nse(model) -> dict[str, float]:
    """:func:`nse` of every layer of ``model``, by module name: a DANN layer (linear or
    convolutional) by its effective :math:`W_{EE} - W_{EI} W_{IE}`, every other biofa layer by its W (a DANN's
    sub-layers are not listed apart)."""
    from ..nn import DANN_LAYERS, FeedbackLayer

    out, inside = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, DANN_LAYERS):
            out[name] = nse(module)
            inside.update(id(m) for m in module.modules())
        elif isinstance(module, FeedbackLayer) and id(module) not in inside:
            out[name] = nse(module)
    return out


def eigenvalues(weight) -> torch.Tensor:
    """Complex eigenvalues of a square (recurrent) matrix, float64 → complex128."""
    w = as_matrix(weight)
    if w.shape[0] != w.shape[1]:
        raise ShapeError(f"eigenvalues need a square (recurrent) matrix, got shape {tuple(w.shape)}")
    return torch.linalg.eigvals(w)


def plot_spectrum(weight, ax=None, label: str | None = None):
    """Figure of a matrix's spectrum: singular values (sorted, with NSE in the legend) and, for a
    square matrix, its eigenvalues in the complex plane. Returns the matplotlib figure."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    w = as_matrix(weight)
    square = w.shape[0] == w.shape[1]
    if ax is None:
        fig, axes = plt.subplots(1, 2 if square else 1, figsize=(8 if square else 4, 3.2), squeeze=False)
        axes = list(axes[0])
    else:
        axes = [ax] if not isinstance(ax, (list, tuple)) else list(ax)
        fig = axes[0].figure
    s = singular_values(w).numpy()
    name = f"{label}: " if label else ""
    axes[0].plot(range(1, len(s) + 1), s, label=f"{name}NSE {nse(w):.3f}")
    axes[0].set_xlabel("index i")
    axes[0].set_ylabel("singular value $\\sigma_i$")
    axes[0].legend(frameon=False)
    if square and len(axes) > 1:
        lam = eigenvalues(w).numpy()
        axes[1].scatter(lam.real, lam.imag, s=6, label=label)
        axes[1].set_xlabel("Re $\\lambda$")
        axes[1].set_ylabel("Im $\\lambda$")
        axes[1].set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig
