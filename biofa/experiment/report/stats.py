"""Statistics over seeds: t confidence intervals, paired comparisons, Holm's adjustment.

Every function is pure (numbers in, numbers out) and computes in float64.

**Interval of a mean.** For values :math:`x_1..x_n` (one per seed),

.. math::

    \\bar x \\pm t_{1-\\alpha/2,\\,n-1} \\, s / \\sqrt{n}, \\qquad
    s^2 = \\frac{1}{n-1} \\sum_i (x_i - \\bar x)^2,

the two-sided Student t interval at level :math:`1 - \\alpha` (0.95 by default). With one value
there is no interval (``low`` and ``high`` are None).

**Paired comparison.** Runs of two conditions are paired by seed; with differences
:math:`d_i = b_i - a_i` over the :math:`n` complete pairs, the interval is the t interval of
:math:`\\bar d`, the test is the paired t test :math:`t = \\bar d / (s_d / \\sqrt n)` on
:math:`n - 1` degrees of freedom (two-sided, the p of :func:`scipy.stats.ttest_rel`), and the effect size
is Cohen's :math:`d_z = \\bar d / s_d` (standardised by the sd of the differences, without Hedges'
small-sample correction). Differences equal up to the rounding of :math:`b - a` (an sd below
8 machine epsilons of the largest value) count as constant: :math:`p = 0` if they are not zero,
undefined if they are, and :math:`d_z` undefined.

**Holm's step-down adjustment** of :math:`m` p-values sorted as :math:`p_{(1)} \\le \\dots \\le
p_{(m)}`: :math:`\\tilde p_{(k)} = \\min(1, \\max_{j \\le k} (m - j + 1)\\, p_{(j)})`; it controls
the family-wise error rate at any dependence between the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special  # the t distribution; scipy.stats would add 0.5 s to every study's start

#: Two-sided confidence level of every interval.
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its sample sd and t interval (``low``/``high`` None for n < 2)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None


def finite(values) -> list[float]:
    """The finite numbers among ``values`` (None, NaN and text dropped), as floats."""
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def t_interval(values, level: float = LEVEL) -> Interval | None:
    """The mean of the finite ``values`` and its two-sided Student t interval; None if none."""
    x = np.asarray(finite(values), dtype=np.float64)
    n = len(x)
    if n == 0:
        return None
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, None, None, None)
    sd = float(x.std(ddof=1))
    half = float(special.stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)  # t quantile
    return Interval(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    """A paired comparison b - a over ``n`` pairs: the mean difference and its interval, Cohen's
    d_z and the two-sided paired t-test p-value (None where undefined: n < 2, or p with zero sd
    and zero mean)."""

    n: int
    diff: Interval
    d_z: float | None
    p: float | None


def paired(a, b, level: float = LEVEL) -> Paired:
    """Compare paired samples: ``a[i]`` and ``b[i]`` come from the same seed.

    Raises ValueError if the lengths differ or a value is not finite (pair first, see
    :func:`pair_by_seed`).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired: a and b must be 1-d of the same length, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired: every value must be finite (drop incomplete pairs first)")
    d = b - a
    n = len(d)
    if n == 0:
        raise ValueError("paired: no pairs")
    interval = t_interval(d, level)
    if n < 2:
        return Paired(n, interval, None, None)
    sd = interval.sd
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    if sd <= 8 * np.finfo(np.float64).eps * scale:
        # every pair differs by the same amount up to the rounding of b - a: t is +-inf (p = 0),
        # or 0/0 (undefined) with no difference; d_z is undefined either way
        mean = interval.mean if abs(interval.mean) > 8 * np.finfo(np.float64).eps * scale else 0.0
        return Paired(n, Interval(n, mean, 0.0, mean, mean), None, 0.0 if mean != 0 else None)
    t = interval.mean / (sd / math.sqrt(n))
    p = float(2 * special.stdtr(n - 1, -abs(t)))  # two-sided: 2 P(T > |t|), T ~ Student t(n - 1)
    return Paired(n, interval, interval.mean / sd, p if math.isfinite(p) else None)


def holm(pvalues) -> list[float | None]:
    """Holm-adjusted p-values, in the order given; None entries stay None and do not count in m."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class Pairing:
    """Values of two conditions matched by seed: ``seeds`` with both runs ok, their values ``a``
    and ``b`` in seed order, and the seeds left out with why."""

    seeds: list
    a: list[float]
    b: list[float]
    excluded: list[tuple]  # (seed, reason)


def pair_by_seed(a: dict, b: dict) -> Pairing:
    """Pair two conditions' per-seed values (``{seed: value or None}``; None = failed run).

    A seed is used only when both conditions have a finite value for it; every other seed is
    listed in ``excluded`` with the reason (missing from a side, or failed on a side).
    """
    seeds, va, vb, excluded = [], [], [], []
    for seed in sorted(set(a) | set(b), key=_seed_order):
        reasons = []
        for side, values in (("a", a), ("b", b)):
            if seed not in values:
                reasons.append(f"no run in {side}")
            elif not finite([values[seed]]):
                reasons.append(f"failed in {side}")
        if reasons:
            excluded.append((seed, ", ".join(reasons)))
        else:
            seeds.append(seed)
            va.append(float(a[seed]))
            vb.append(float(b[seed]))
    return Pairing(seeds, va, vb, excluded)


def _seed_order(seed):
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))
