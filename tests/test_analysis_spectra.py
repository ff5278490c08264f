"""Spectra against closed forms, in float64."""

import math

import numpy as np
import pytest
import torch

import biofa.nn as bnn
from biofa.analysis import eigenvalues, nse, plot_spectrum, singular_values
from biofa.errors import ShapeError


def test_nse_closed_forms(f64):
    assert nse(torch.eye(7)) == pytest.approx(1.0, abs=1e-14)
    q, _ = torch.linalg.qr(torch.randn(9, 9))
    assert nse(q) == pytest.approx(1.0, abs=1e-12)
    assert nse(torch.outer(torch.randn(6), torch.randn(4))) == pytest.approx(0.0, abs=1e-7)
    d = torch.tensor([4.0, 3.0, 2.0, 1.0])
    p = d / d.sum()
    expected = float(-(p * p.log()).sum() / math.log(4))
    u, _ = torch.linalg.qr(torch.randn(6, 6))
    v, _ = torch.linalg.qr(torch.randn(4, 4))
    w = u[:, :4] @ torch.diag(d) @ v.T  # a known spectrum behind rotations
    assert nse(w) == pytest.approx(expected, abs=1e-13)
    torch.testing.assert_close(singular_values(w), d)
    assert nse(torch.randn(1, 5)) == 1.0
    with pytest.raises(ShapeError):
        nse(torch.zeros(3, 3))


def test_conv_and_dann_matrices(f64):
    k = torch.randn(4, 3, 5)
    torch.testing.assert_close(singular_values(k), torch.linalg.svdvals(k.reshape(4, 15)))
    layer = bnn.DANNLinear(6, 10)
    w = layer.ee.weight - layer.ei.weight @ layer.ie.weight
    torch.testing.assert_close(singular_values(layer), torch.linalg.svdvals(w.detach()))


def test_eigenvalues_and_figure(f64):
    theta = 0.3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    lam = eigenvalues(rot)
    np.testing.assert_allclose(sorted(lam.imag.tolist()), [-math.sin(theta), math.sin(theta)], atol=1e-14)
    with pytest.raises(ShapeError):
        eigenvalues(torch.randn(3, 4))
    fig = plot_spectrum(torch.randn(8, 8), label="W")
    assert len(fig.axes) == 2
    import matplotlib.pyplot as plt
    plt.close(fig)
