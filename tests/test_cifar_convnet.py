"""cifar_convnet: the TensorFlow CIFAR-10 tutorial network (shapes, SAME pooling, LRN, size)."""

import math

import pytest
import torch
import torch.nn.functional as F

import biofa.models as bm
import biofa.nn as bnn
from biofa.errors import ShapeError
from biofa.models.cifar_convnet import SameMaxPool2d, tf_lrn


def expected_count(c=3, h=24, w=24, ch=64, h1=384, h2=192, n=10):
    """5·5·C·ch + ch + 5·5·ch·ch + ch + (ch·⌈⌈H/2⌉/2⌉·⌈⌈W/2⌉/2⌉ + 1)·h1 + (h1 + 1)·h2 + (h2 + 1)·n."""
    fh, fw = math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2)
    return 25 * c * ch + ch + 25 * ch * ch + ch + (ch * fh * fw + 1) * h1 + (h1 + 1) * h2 + (h2 + 1) * n


@pytest.mark.parametrize("shape, options", [((3, 24, 24), {}), ((3, 32, 32), {}), ((1, 25, 19), {"lrn": False}),
                                            ((3, 24, 24), {"channels": 8, "hidden": (20, 12)})])
def test_shapes_and_parameter_count(shape, options):
    plain = bm.build_plain("cifar_convnet", input_shape=shape, n_outputs=10, **options)
    assert plain(torch.randn(2, *shape)).shape == (2, 10)
    kw = {"ch": options.get("channels", 64), **dict(zip(("h1", "h2"), options.get("hidden", (384, 192))))}
    count = expected_count(*shape, **kw)
    assert sum(p.numel() for p in plain.parameters()) == count
    model = bm.build("cifar_convnet", input_shape=shape, n_outputs=10, feedback="fa", **options)
    assert sum(p.numel() for p in model.parameters()) == count


def test_tutorial_size():
    plain = bm.build_plain("cifar_convnet", input_shape=(3, 24, 24), n_outputs=10)
    assert sum(p.numel() for p in plain.parameters()) == 1_068_298
    assert plain.classifier[1].in_features == 64 * 6 * 6


def reference_same_pool(x, k=3, s=2):
    """Per output pixel: the max over the window's in-image pixels, TensorFlow's SAME geometry."""
    n, c, h, w = x.shape
    oh, ow = math.ceil(h / s), math.ceil(w / s)
    ph = max((oh - 1) * s + k - h, 0) // 2
    pw = max((ow - 1) * s + k - w, 0) // 2
    out = torch.empty(n, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - ph, j * s - pw
            out[:, :, i, j] = x[:, :, max(r0, 0):r0 + k, max(c0, 0):c0 + k].amax(dim=(2, 3))
    return out


@pytest.mark.parametrize("hw", [(24, 24), (12, 12), (25, 19), (1, 2)])
def test_same_max_pool_matches_tensorflow_geometry(f64, hw):
    x = torch.randn(2, 3, *hw) - 5  # negative values: padding must never win
    assert torch.equal(SameMaxPool2d(3, 2)(x), reference_same_pool(x))


def test_lrn_is_tensorflows_formula(f64):
    x = torch.randn(2, 12, 3, 3)
    sq = x.square()
    sums = torch.stack([sq[:, max(d - 4, 0):d + 5].sum(1) for d in range(12)], 1)
    expected = x / (1.0 + 0.001 / 9 * sums) ** 0.75
    torch.testing.assert_close(tf_lrn()(x), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("feedback", ["bp", "fa", {"rule": "usf", "scale": "sn-spectral"}, "dfa"])
def test_trains_with_rules_constraints_and_a_free_readout(f64, feedback):
    model = bm.build("cifar_convnet", input_shape=(3, 24, 24), n_outputs=10, feedback=feedback, sign="fixed",
                     norm="const", free_norm=[-1], generator=torch.Generator().manual_seed(0),
                     channels=4, hidden=(8, 6))
    layers = [m for m in model.modules() if isinstance(m, bnn.FeedbackLayer)]
    assert len(layers) == 5 and layers[-1].norm is None and all(m.norm is not None for m in layers[:-1])
    held = [m.norm.target.clone() for m in layers[:-1]]  # the Frobenius norms recorded at init
    signs = [torch.sign(m.weight.detach()) for m in layers]
    free0 = float(layers[-1].weight.detach().norm())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(3, 3, 24, 24), torch.tensor([0, 1, 2])
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        assert all(torch.isfinite(m.weight.grad).all() for m in layers)
        opt.step()
    for m, target in zip(layers[:-1], held):  # const: each constrained W back on its initial norm
        assert float(m.weight.detach().norm()) == pytest.approx(float(target), rel=1e-12)
    for m, s0 in zip(layers, signs):  # fixed signs: no weight crossed to the other sign
        assert m.sign is not None and m.sign.violations(m.weight.detach()) == 0
        assert torch.all(torch.sign(m.weight.detach()) * s0 >= 0)
    # the free read-out is not rescaled: its norm moved (by far more than rounding)
    assert abs(float(layers[-1].weight.detach().norm()) - free0) > 1e-6 * free0


def test_bad_input_shape():
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        bm.build_plain("cifar_convnet", input_shape=(40,), n_outputs=10)
