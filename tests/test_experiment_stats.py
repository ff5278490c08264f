"""biofa.experiment.stats and .comparisons against the formulas and scipy, in float64: the t
interval, its coverage over simulated seed sets (binomial bounds), the paired test, Cohen's d_z,
Holm's adjustment (against the step-down procedure), pairing by seed, and [compare] expansion."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from biofa.experiment.report import comparisons, stats


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_t_interval_is_the_formula_and_scipys(n, seed):
    x = np.random.default_rng(seed).normal(60.0, 3.0, n)
    iv = stats.t_interval(list(x))
    mean, sd = x.sum() / n, math.sqrt(((x - x.mean()) ** 2).sum() / (n - 1))
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert iv.n == n
    assert iv.mean == pytest.approx(mean, rel=1e-15)
    assert iv.sd == pytest.approx(sd, rel=1e-13)
    assert (iv.low, iv.high) == pytest.approx((mean - half, mean + half), rel=1e-13)
    low, high = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert (iv.low, iv.high) == pytest.approx((low, high), rel=1e-13)


def test_t_interval_edge_cases():
    assert stats.t_interval([]) is None
    assert stats.t_interval([None, float("nan"), "x"]) is None
    one = stats.t_interval([0.7, None, float("inf")])
    assert (one.n, one.mean, one.sd, one.low, one.high) == (1, 0.7, None, None, None)
    same = stats.t_interval([2.0, 2.0, 2.0])
    assert (same.low, same.mean, same.high) == (2.0, 2.0, 2.0)


def _binomial_bounds(trials, p, alpha=1e-6):
    """Counts outside which a Binomial(trials, p) falls with probability below ``alpha``."""
    return sps.binom.ppf(alpha / 2, trials, p), sps.binom.isf(alpha / 2, trials, p)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_t_interval_covers_the_true_mean_at_the_nominal_rate(n, level):
    # intervals over independent simulated seed sets cover the mean Binomial(trials, level) times
    trials, mu = 2000, 0.6
    rng = np.random.default_rng(1000 * n + int(100 * level))
    data = rng.normal(mu, 0.05, size=(trials, n))
    covered = 0
    for x in data:
        iv = stats.t_interval(list(x), level=level)
        covered += iv.low <= mu <= iv.high
    low, high = _binomial_bounds(trials, level)
    assert low <= covered <= high, (covered, low, high)
    # the same bound rejects a normal-quantile interval, which undercovers at small n
    z = sps.norm.ppf(0.5 + level / 2)
    naive = sum(abs(x.mean() - mu) <= z * x.std(ddof=1) / math.sqrt(n) for x in data)
    if n <= 3:
        assert naive < low


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_paired_equals_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    n = 3 + seed
    a = rng.normal(0.7, 0.02, n)
    b = a + rng.normal(-0.03, 0.02, n)
    res = stats.paired(list(a), list(b))
    ref = sps.ttest_rel(b, a)
    d = b - a
    assert res.n == n
    assert res.p == pytest.approx(float(ref.pvalue), rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (res.diff.low, res.diff.high) == pytest.approx((float(ci.low), float(ci.high)), rel=1e-12)
    assert res.diff.mean == pytest.approx(d.mean(), rel=1e-14)
    assert res.d_z == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    # t = d_z * sqrt(n): the effect size and the test statistic are one number apart
    assert res.d_z * math.sqrt(n) == pytest.approx(float(ref.statistic), rel=1e-12)


def test_paired_degenerate_cases():
    one = stats.paired([0.5], [0.6])
    assert (one.n, one.d_z, one.p) == (1, None, None) and one.diff.mean == pytest.approx(0.1)
    shift = stats.paired([0.5, 0.6, 0.7], [0.75, 0.85, 0.95])  # same difference each seed
    assert shift.p == 0.0 and shift.d_z is None and shift.diff.low == shift.diff.high == shift.diff.mean
    equal = stats.paired([0.5, 0.6], [0.5, 0.6])
    assert equal.p is None and equal.d_z is None and equal.diff.mean == 0.0
    with pytest.raises(ValueError, match="same length"):
        stats.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        stats.paired([1.0, float("nan")], [1.0, 2.0])


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-15)
    got = stats.holm([None, 0.02, 0.5])  # None does not count in m = 2
    assert got[0] is None and got[1:] == pytest.approx([0.04, 0.5])
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    assert stats.holm([]) == []


@pytest.mark.parametrize("seed", range(5))
def test_holm_rejects_what_the_step_down_procedure_rejects(seed):
    rng = np.random.default_rng(seed)
    p = list(rng.uniform(0, 0.2, size=7) ** 2)
    adjusted = stats.holm(p)
    assert all(a >= q for a, q in zip(adjusted, p)) and max(adjusted) <= 1.0
    order = np.argsort(p)
    assert all(np.diff(np.array(adjusted)[order]) >= 0)  # monotone in the raw order
    m = len(p)
    for alpha in (0.01, 0.05, 0.1):
        rejected = set()
        for k, i in enumerate(order):  # Holm 1979: stop at the first p_(k) > alpha / (m - k)
            if p[i] > alpha / (m - k):
                break
            rejected.add(int(i))
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == rejected


def test_pair_by_seed_uses_complete_pairs_and_says_what_it_left_out():
    a = {"0": 0.7, "1": 0.71, "2": None, "10": 0.69, "3": 0.72}
    b = {"0": 0.6, "1": None, "2": 0.65, "10": 0.62, "4": 0.6}
    pairing = stats.pair_by_seed(a, b)
    assert pairing.seeds == ["0", "10"]
    assert pairing.a == [0.7, 0.69] and pairing.b == [0.6, 0.62]
    assert pairing.excluded == [("1", "failed in b"), ("2", "failed in a"), ("3", "no run in b"),
                                ("4", "no run in a")]


def _conditions(rng, rules=("bp", "fa", "dfa"), signs=("free", "dale"), seeds=("0", "1", "2", "3")):
    return {(r, s): {seed: float(rng.normal(70, 2)) for seed in seeds} for r in rules for s in signs}


def test_compare_expands_pairs_and_wildcards():
    per = _conditions(np.random.default_rng(0))
    keys = ["feedback", "sign"]
    out = comparisons.compare(per, keys, {"sign": ("free", "dale"), "feedback": ("bp", "*")})
    got = [(c.key, c.a, c.b, c.context) for c in out]
    assert got == [("sign", "free", "dale", {"feedback": r}) for r in ("bp", "fa", "dfa")] + \
        [("feedback", "bp", r, {"sign": s}) for s in ("free", "dale") for r in ("fa", "dfa")]
    first = out[0]  # dale - free for bp, seed by seed
    ref = sps.ttest_rel([per[("bp", "dale")][s] for s in "0123"], [per[("bp", "free")][s] for s in "0123"])
    assert first.result.p == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert [c.p_holm for c in out] == pytest.approx(stats.holm([c.result.p for c in out]))
    # "*" first: each other value minus... the named one second (b - a stays second minus first)
    rev = comparisons.compare(per, keys, {"feedback": ("*", "bp")})
    assert [(c.a, c.b) for c in rev] == [("fa", "bp"), ("dfa", "bp")] * 2
    # a value not run (a narrowed grid) gives no comparison rather than an error
    assert comparisons.compare(per, keys, {"feedback": ("bp", "kp")}) == []
    assert comparisons.compare(per, keys, {"norm": ("none", "const")}) == []


def test_compare_pairs_only_complete_seeds():
    per = _conditions(np.random.default_rng(1), rules=("bp",))
    per[("bp", "dale")]["2"] = None  # failed run
    del per[("bp", "free")]["3"]     # not finished
    (c,) = comparisons.compare(per, ["feedback", "sign"], {"sign": ("free", "dale")})
    assert c.pairing.seeds == ["0", "1"] and c.result.n == 2
    assert c.pairing.excluded == [("2", "failed in b"), ("3", "no run in a")]
    assert c.result.diff.mean == pytest.approx(np.mean([per[("bp", "dale")][s] - per[("bp", "free")][s]
                                                        for s in "01"]))
