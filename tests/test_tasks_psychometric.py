"""The cumulative-Gaussian fit recovers a known psychometric function, and fails softly."""

import math

import pytest
import torch

from biofa.tasks import cumulative_gaussian, fit_cumulative_gaussian, psychometric


def test_fit_recovers_mu_and_sigma(f64):
    mu, sigma = 0.7, 1.5
    levels = torch.linspace(-3, 4, 15)
    per_level = 4000
    g = torch.Generator().manual_seed(0)
    x = levels.repeat_interleave(per_level)
    p = torch.as_tensor(cumulative_gaussian(x.numpy(), mu, sigma))
    chose = torch.rand(len(x), generator=g) < p
    fit = psychometric(x, chose)["fit"]
    assert fit["ok"]
    # Fisher information of the probit model per parameter: sum n phi(z)^2 (dz/dtheta)^2 / (p (1 - p)),
    # z = (x - mu) / sigma, dz/dmu = -1/sigma, dz/dsigma = -z/sigma; 5 standard errors (a weighted
    # least-squares fit is slightly less efficient than maximum likelihood, well inside that margin).
    z = (levels - mu) / sigma
    pl = torch.as_tensor(cumulative_gaussian(levels.numpy(), mu, sigma))
    w = per_level * torch.exp(-z ** 2) / (2 * math.pi) / (pl * (1 - pl))
    se_mu = 1 / math.sqrt(float((w / sigma ** 2).sum()))
    se_sigma = 1 / math.sqrt(float((w * z ** 2 / sigma ** 2).sum()))
    assert abs(fit["mu"] - mu) < 5 * se_mu
    assert abs(fit["sigma"] - sigma) < 5 * se_sigma
    assert fit["slope"] == pytest.approx(1 / (fit["sigma"] * math.sqrt(2 * math.pi)))


@pytest.mark.parametrize("levels,fractions", [([1.0], [0.5]), ([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]),
                                              ([1.0, 2.0], [float("nan"), 0.3]), ([], [])])
def test_degenerate_data_give_ok_false(levels, fractions):
    fit = fit_cumulative_gaussian(levels, fractions)
    assert fit["ok"] is False and math.isnan(fit["mu"]) and fit["kind"] == "cumulative_gaussian"


def test_curve_counts_and_fractions():
    out = psychometric(torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]), torch.tensor([False, True, True, True, False]))
    assert out["levels"] == [-1.0, 1.0] and out["n"] == [2, 3]
    assert out["fraction"] == pytest.approx([0.5, 2 / 3])
