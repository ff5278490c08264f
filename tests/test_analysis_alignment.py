"""Weight alignment, norm ratio, sign agreement and layer_metrics against closed forms
(docs/background.rst, "Measuring alignment")."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import biofa.nn as bnn
from biofa.analysis import angle, layer_metrics, norm_ratio, sign_agreement, weight_alignment
from biofa.constraints import Dale
from biofa.errors import ConfigError, ShapeError
from biofa.feedback import FRSF, USF, functional

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@given(shapes, st.integers(0, 2**31 - 1), st.floats(0.01, 100.0))
def test_alignment_properties(shape, seed, c):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(shape, generator=g, dtype=torch.float64)
    B = torch.randn(shape, generator=g, dtype=torch.float64)
    theta = weight_alignment(W, B)
    assert 0.0 <= theta <= 180.0
    assert weight_alignment(W, W) == 0.0
    assert weight_alignment(W, -W) == 180.0
    assert weight_alignment(B, W) == pytest.approx(theta, abs=1e-9)          # symmetric
    assert weight_alignment(c * W, B) == pytest.approx(theta, abs=1e-6)      # scale-invariant
    assert weight_alignment(W, -B) == pytest.approx(180.0 - theta, abs=1e-6)
    cos = float((W * B).sum() / (W.norm() * B.norm()))
    assert theta == pytest.approx(math.degrees(math.acos(cos)), abs=1e-9)
    assert norm_ratio(W, c * W) == pytest.approx(c, rel=1e-12)
    assert sign_agreement(W, c * W) == 1.0 and sign_agreement(W, -W) == 0.0
    expected = float((np.sign(W.numpy()) == np.sign(B.numpy())).mean())
    assert sign_agreement(W, B) == expected


def test_alignment_exact_values_and_edge_cases():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert weight_alignment(e1, e2) == 90.0
    assert weight_alignment(e1, torch.tensor([1.0, 1.0])) == pytest.approx(45.0, abs=1e-12)
    assert angle(np.array([1.0, 0.0]), np.array([-3.0, 0.0])) == 180.0  # numpy works too
    assert math.isnan(weight_alignment(torch.zeros(3), torch.ones(3)))
    assert norm_ratio(torch.tensor([3.0, 4.0]), torch.ones(2, 3, 4)) == pytest.approx(math.sqrt(24) / 5)
    assert norm_ratio(torch.zeros(2), torch.ones(2)) == math.inf
    assert math.isnan(norm_ratio(torch.zeros(2), torch.zeros(2)))
    # zeros are a sign of their own: zero agrees with zero only
    W = torch.tensor([0.0, 0.0, 1.0, -2.0])
    B = torch.tensor([0.0, 1.0, 3.0, 2.0])
    assert sign_agreement(W, B) == 0.5
    with pytest.raises(ShapeError, match="same shape"):
        weight_alignment(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(ShapeError):
        sign_agreement(torch.ones(2), torch.ones(3))
    with pytest.raises(ConfigError, match="tensor or an array"):
        weight_alignment("W", torch.ones(1))


# -- closed-form baselines (no learning) ------------------------------------------------------
# A 400 x 400 layer: each cosine is an average over n = N^2 entries, so its sampling std is
# O(1/N); the delta method gives 0.05 deg (uSF), 0.07 deg (frSF) and, for independent W and B,
# std(cos) = 1/sqrt(n) = 1/N, i.e. degrees(1/N) = 0.14 deg around 90 (12 draws agree). Each
# tolerance below is at least 6 of those stds: a false failure is a < 1e-8 event.
N = 400


def _usf_closed_form(W):
    w = W.detach().double().reshape(-1)
    return math.degrees(math.acos(float(w.abs().mean() / w.pow(2).mean().sqrt())))


def test_usf_on_uniform_weights_is_30_degrees():
    layer = bnn.Linear(N, N, feedback="usf")  # Xavier-uniform W
    m = layer_metrics(nn.Sequential(layer))["0"]
    assert m["weight_alignment"] == pytest.approx(_usf_closed_form(layer.weight), abs=1e-9)
    assert m["weight_alignment"] == pytest.approx(30.0, abs=0.3)  # cos = (a/2)/(a/sqrt 3)
    assert m["sign_agreement"] == 1.0


def test_usf_on_gaussian_weights_is_37_degrees():
    layer = bnn.Linear(N, N, feedback=USF(scale="sn"))
    layer.load_forward_weights(torch.randn(N, N) * 0.05)
    m = layer_metrics(nn.Sequential(layer))["0"]
    assert m["weight_alignment"] == pytest.approx(_usf_closed_form(layer.weight), abs=1e-9)
    assert m["weight_alignment"] == pytest.approx(math.degrees(math.acos(math.sqrt(2 / math.pi))), abs=0.3)
    assert m["norm_ratio"] == pytest.approx(1.0, abs=1e-6)  # "sn": |B| = |W| exactly


def test_frsf_measures_the_effective_feedback():
    layer = bnn.Linear(N, N, feedback="frsf")
    W, R = layer.weight.detach().double(), layer.feedback.magnitude.double()
    theta = layer_metrics(nn.Sequential(layer))["0"]["weight_alignment"]
    exact = float((W.abs() * R.abs()).sum() / (W.norm() * R.norm()))
    assert theta == pytest.approx(math.degrees(math.acos(exact)), abs=1e-9)
    assert theta == pytest.approx(math.degrees(math.acos(0.75)), abs=0.4)  # 41.4°: uniform W and R
    # |R| alone (the bug docs/background.rst warns about) would read as nearly orthogonal
    assert weight_alignment(W, R.abs()) == pytest.approx(90.0, abs=3.0)


def test_frsf_on_gaussian_weights_is_50_degrees():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(N, N, generator=g, dtype=torch.float64)
    R = torch.randn(N, N, generator=g, dtype=torch.float64)
    B = functional.random_magnitude_sign_feedback(W, R)
    assert weight_alignment(W, B) == pytest.approx(math.degrees(math.acos(2 / math.pi)), abs=0.45)


def test_fa_bp_kp_baselines():
    fa = bnn.Linear(N, N)
    m = layer_metrics(nn.Sequential(fa))["0"]
    assert m["weight_alignment"] == pytest.approx(90.0, abs=6 * math.degrees(1 / N))
    assert m["norm_ratio"] == pytest.approx(1.0, abs=0.02)  # B drawn like W; std ~ 0.0014
    assert m["sign_agreement"] == pytest.approx(0.5, abs=0.01)  # std sqrt(1/4 / N^2) = 0.00125
    assert "dale_violations" not in m
    bp = layer_metrics(nn.Sequential(bnn.Linear(20, 10, feedback="bp")))["0"]
    assert bp["weight_alignment"] == 0.0
    assert bp["norm_ratio"] == 1.0 and bp["sign_agreement"] == 1.0
    kp = bnn.Linear(20, 10, feedback="kp")
    with torch.no_grad():
        kp.feedback.B.copy_(3 * kp.weight)
    m = layer_metrics(nn.Sequential(kp))["0"]
    assert m["weight_alignment"] == pytest.approx(0.0, abs=1e-5) and m["norm_ratio"] == pytest.approx(3.0)


def test_dale_layers_report_violations():
    model = nn.Sequential(bnn.Linear(30, 20, sign=Dale(), feedback=FRSF()), nn.ReLU(),
                          bnn.Linear(20, 5, sign="fixed"))
    metrics = layer_metrics(model)
    assert set(metrics) == {"0", "2"}
    assert metrics["0"]["dale_violations"] == 0 and isinstance(metrics["0"]["dale_violations"], int)
    assert metrics["2"]["dale_violations"] == 0
    assert metrics["0"]["sign_agreement"] == 1.0
    # a weight pushed across its sign by hand is counted (before the next forward projects it)
    layer = model[0]
    j = int(torch.nonzero(layer.sign.signs[0] > 0)[0])
    with torch.no_grad():
        layer.weight[:3, j] = -1.0
    assert layer_metrics(model)["0"]["dale_violations"] == 3


def test_dfa_layers():
    model = bnn.convert(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU(),
                                      nn.Linear(3, 3)), feedback="dfa")
    metrics = layer_metrics(model)
    for name in ("0", "2"):  # hidden DFA layers: B_l is (n_out, n_in), a projection of the output error
        assert math.isnan(metrics[name]["weight_alignment"]) and math.isnan(metrics[name]["sign_agreement"])
    W, B = model[2].weight, model[2].feedback.matrix()  # same shape (3, 8) here, still not comparable
    assert W.shape == B.shape
    assert metrics["2"]["norm_ratio"] == pytest.approx(norm_ratio(W, B))
    out = metrics["4"]  # the output layer's block stands in for W_L exactly like FA's B
    assert out["weight_alignment"] == pytest.approx(weight_alignment(model[4].weight, model[4].feedback.matrix()))


def test_conv_layers_and_errors():
    model = nn.Sequential(bnn.Conv2d(3, 4, 3, feedback="usf"), nn.Flatten(), bnn.Linear(4, 2))
    m = layer_metrics(model)["0"]
    assert m["weight_alignment"] == pytest.approx(_usf_closed_form(model[0].weight), abs=1e-9)
    with pytest.raises(ConfigError, match="no biofa layer"):
        layer_metrics(nn.Sequential(nn.Linear(2, 2)))
    bare = bnn.Linear(3, 2)
    assert set(layer_metrics(bare)) == {""}
