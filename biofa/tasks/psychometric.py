r"""Psychometric curves and their cumulative-Gaussian fit.

.. math:: P(\text{choice } 0 \mid x) = \Phi\!\left(\frac{x - \mu}{\sigma}\right)
          = \tfrac12\left[1 + \operatorname{erf}\!\left(\frac{x - \mu}{\sigma\sqrt2}\right)\right]

``x``: the stimulus level (signed coherence, frequency); ``μ``: the point of subjective equality;
``σ``: the threshold (the distance from 50 % to 84 % choices); the slope at the midpoint is
:math:`1 / (\sigma\sqrt{2\pi})`. The fit is :func:`scipy.optimize.curve_fit` on the per-level
fractions, each weighted by its trial count; degenerate data (fewer than two levels, all fractions
equal, a failed fit) give ``ok=False`` and NaN parameters instead of an exception.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch


def cumulative_gaussian(x, mu: float, sigma: float):
    r""":math:`\Phi((x - \mu)/\sigma)` for a NumPy array ``x``."""
    from scipy.special import erf
    return 0.5 * (1.0 + erf((np.asarray(x, dtype=np.float64) - mu) / (sigma * math.sqrt(2.0))))


def _failed() -> dict:
    return {"kind": "cumulative_gaussian", "mu": float("nan"), "sigma": float("nan"),
            "slope": float("nan"), "ok": False}


def fit_cumulative_gaussian(levels, fractions, counts=None) -> dict:
    """Fit :func:`cumulative_gaussian` to ``fractions`` (choice-0 fraction per level).

    Returns ``{"kind": "cumulative_gaussian", "mu", "sigma", "slope", "ok"}``; ``counts`` (trials
    per level) weight the levels (default equal weights).
    """
    from scipy.optimize import OptimizeWarning, curve_fit
    x = np.asarray(levels, dtype=np.float64)
    p = np.asarray(fractions, dtype=np.float64)
    n = np.ones_like(x) if counts is None else np.asarray(counts, dtype=np.float64)
    keep = np.isfinite(p) & (n > 0)
    x, p, n = x[keep], p[keep], n[keep]
    if len(x) < 2 or np.ptp(p) == 0 or np.ptp(x) == 0:
        return _failed()
    span = float(np.ptp(x))
    mu0 = float(x[np.argmin(np.abs(p - 0.5))])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            (mu, sigma), _ = curve_fit(cumulative_gaussian, x, p, p0=[mu0, span / 4],
                                       sigma=1.0 / np.sqrt(n),
                                       bounds=([x.min() - 10 * span, 1e-9 * span], [x.max() + 10 * span, 1e3 * span]))
    except (RuntimeError, ValueError):
        return _failed()
    mu, sigma = float(mu), float(sigma)
    ok = math.isfinite(mu) and math.isfinite(sigma) and sigma > 0
    if not ok:
        return _failed()
    return {"kind": "cumulative_gaussian", "mu": mu, "sigma": sigma,
            "slope": 1.0 / (sigma * math.sqrt(2.0 * math.pi)), "ok": True}


def psychometric(levels: torch.Tensor, chose: torch.Tensor) -> dict:
    """The psychometric curve of per-trial ``levels`` and ``chose`` (bool: chose output 0).

    Returns ``{"levels": [...], "fraction": [...], "n": [...], "fit": {...}}``: the distinct
    levels in increasing order, the fraction of trials at each that chose output 0, their counts,
    and :func:`fit_cumulative_gaussian` of the curve.
    """
    levels = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
    chose = torch.as_tensor(chose).reshape(-1).to(torch.float64)
    values, inverse = torch.unique(levels, return_inverse=True)
    counts = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(chose))
    hits = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, chose)
    fraction = hits / counts.clamp(min=1)
    return {"levels": values.tolist(), "fraction": fraction.tolist(), "n": counts.to(torch.int64).tolist(),
            "fit": fit_cumulative_gaussian(values.numpy(), fraction.numpy(), counts.numpy())}
