"""Every layer-wise feedback rule against its mathematics (docs/background.rst), in float64.

The input gradient of a layer must be ``g @ B`` (Linear) or the transposed convolution of g with
B (Conv); BP must reproduce torch's own autograd bit for bit; the sign-concordant rules, Kolen–Pollack
and weight mirror must follow their update equations.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.autograd.gradcheck import GradcheckError

import biofa.nn as bnn
from biofa import feedback as fb
from biofa.init import init_std

FIXED = ["bp", "fa", "usf", "frsf", "brsf", "kp", "wm"]  # every rule whose B stands in for W


def input_grad(layer, x, g):
    """(dL/dx, B in use) for L = <layer(x), g>."""
    x = x.clone().requires_grad_(True)
    layer(x).backward(g)
    return x.grad, layer.feedback.matrix()


# -- BP is autograd ---------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


def small_resnet():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Block(4, 4, 1),
                         Block(4, 8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def mlp():
    return nn.Sequential(nn.Linear(7, 9), nn.Tanh(), nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 4))


@pytest.mark.parametrize("build, shape", [(mlp, (11, 7)), (small_resnet, (3, 3, 8, 8))])
def test_bp_equals_native_autograd(f64, build, shape):
    native = build()
    converted = bnn.convert(native, feedback="bp")
    assert sum(isinstance(m, bnn.FeedbackLayer) for m in converted.modules()) >= 3
    x = torch.randn(shape)
    target = torch.randint(0, 4, (shape[0],))
    grads = []
    for model in (native, converted):
        xx = x.clone().requires_grad_(True)
        out = model(xx)
        F.cross_entropy(out, target).backward()
        grads.append((out.detach(), xx.grad, {n: p.grad for n, p in model.named_parameters()}))
    (o1, gx1, p1), (o2, gx2, p2) = grads
    assert torch.equal(o1, o2)
    assert torch.equal(gx1, gx2)
    assert p1.keys() == p2.keys()
    for name in p1:
        assert torch.equal(p1[name], p2[name]), name


def test_exact_gradients_context_is_bp(f64):
    model = bnn.convert(mlp(), feedback="fa")
    ref = bnn.convert(mlp(), feedback="bp")
    ref.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(5, 7, requires_grad=True)
    with bnn.exact_gradients():
        model(x).square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ref(x2).square().sum().backward()
    assert torch.equal(x.grad, x2.grad)


# -- fixed-B rules: Linear and convolutions ---------------------------------------------------
@pytest.mark.parametrize("rule", FIXED)
def test_linear_input_grad_is_g_at_B(f64, rule):
    layer = bnn.Linear(6, 4, feedback=rule)
    x, g = torch.randn(5, 6), torch.randn(5, 4)
    gx, b = input_grad(layer, x, g)
    assert torch.equal(gx, g @ b)
    if rule != "bp":
        assert not torch.allclose(b, layer.weight)
    # the weight gradient is always the local one
    assert torch.equal(layer.weight.grad, g.T @ x)
    assert torch.equal(layer.bias.grad, g.sum(0))


CONV_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"),
    dict(stride=2, padding=1, dilation=1, groups=1, padding_mode="zeros"),
    dict(stride=1, padding=2, dilation=2, groups=1, padding_mode="zeros"),
    dict(stride=2, padding=1, dilation=1, groups=2, padding_mode="zeros"),
    dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="reflect"),
    dict(stride=2, padding=2, dilation=1, groups=2, padding_mode="circular"),
    dict(stride=1, padding=1, dilation=2, groups=1, padding_mode="replicate"),
]


def reference_conv_input_grad(layer, x, b, g):
    """d<conv(pad(x), B), g>/dx by torch's own autograd, with B as the kernel."""
    xx = x.clone().requires_grad_(True)
    nd = x.dim() - 2
    if layer.padding_mode != "zeros":
        pads = [p for p in reversed(layer._padding_ints) for _ in range(2)]
        y = (F.conv1d if nd == 1 else F.conv2d)(F.pad(xx, pads, mode=layer.padding_mode), b, None,
                                                 layer.stride, 0, layer.dilation, layer.groups)
    else:
        y = (F.conv1d if nd == 1 else F.conv2d)(xx, b, None, layer.stride, layer._padding_ints,
                                                 layer.dilation, layer.groups)
    y.backward(g)
    return xx.grad


@pytest.mark.parametrize("rule", FIXED)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("nd", [1, 2])
def test_conv_input_grad_is_transposed_conv_with_B(f64, rule, case, nd):
    kw = CONV_CASES[case]
    cls = bnn.Conv1d if nd == 1 else bnn.Conv2d
    layer = cls(4, 6, 3, feedback=rule, **kw)
    x = torch.randn(2, 4, *([9] * nd))
    g = torch.randn_like(layer(x))
    gx, b = input_grad(layer, x, g)
    assert b.shape == layer.weight.shape
    expected = reference_conv_input_grad(layer, x, b, g)
    torch.testing.assert_close(gx, expected, rtol=1e-13, atol=1e-13)
    if kw["padding_mode"] == "zeros":  # the transposed convolution itself, exactly
        fn = torch.nn.grad.conv1d_input if nd == 1 else torch.nn.grad.conv2d_input
        assert torch.equal(gx, fn(x.shape, b, g, layer.stride, layer._padding_ints, layer.dilation, layer.groups))
    native = (nn.Conv1d if nd == 1 else nn.Conv2d)(4, 6, 3, **kw)
    with torch.no_grad():
        native.weight.copy_(layer.weight)
        native.bias.copy_(layer.bias)
    assert torch.equal(native(x), layer(x))


@given(batch=st.integers(1, 4), n_in=st.integers(1, 7), n_out=st.integers(1, 7),
       rule=st.sampled_from(FIXED))
def test_property_linear_shapes(batch, n_in, n_out, rule):
    with torch.random.fork_rng():
        torch.manual_seed(batch * 100 + n_in * 10 + n_out)
        layer = bnn.Linear(n_in, n_out, feedback=rule, dtype=torch.float64)
        x = torch.randn(batch, n_in, dtype=torch.float64)
        g = torch.randn(batch, n_out, dtype=torch.float64)
        gx, b = input_grad(layer, x, g)
    assert b.shape == (n_out, n_in)
    assert torch.equal(gx, g @ b)
    assert torch.equal(layer.weight.grad, g.T @ x)


@given(batch=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4), kh=st.integers(1, 3),
       kw=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2), size=st.integers(4, 7),
       rule=st.sampled_from(FIXED))
def test_property_conv2d_shapes(batch, c_in, c_out, kh, kw, stride, padding, size, rule):
    with torch.random.fork_rng():
        torch.manual_seed(batch + 7 * c_in + 31 * c_out)
        layer = bnn.Conv2d(c_in, c_out, (kh, kw), stride, padding, feedback=rule, dtype=torch.float64)
        x = torch.randn(batch, c_in, size, size + 1, dtype=torch.float64)
        g = torch.randn_like(layer(x))
        gx, b = input_grad(layer, x, g)
    assert torch.equal(gx, torch.nn.grad.conv2d_input(x.shape, b, g, layer.stride, layer._padding_ints))
    assert torch.equal(layer.weight.grad, torch.nn.grad.conv2d_weight(x, b.shape, g, layer.stride, layer._padding_ints))


# -- gradcheck on the autograd functions --------------------------------------------------------
def test_gradcheck_bp_full_jacobian(f64):
    lin = bnn.Linear(4, 3, feedback="bp")
    x = torch.randn(5, 4, requires_grad=True)
    w = lin.weight.detach().clone().requires_grad_(True)
    b = lin.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w, b: bnn.FeedbackLinearFunction.apply(x, w, b, None, lin, None), (x, w, b))
    conv = bnn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=1, feedback="bp")
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    w = conv.weight.detach().clone().requires_grad_(True)
    b = torch.randn(6, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: bnn.FeedbackConvFunction.apply(x, w, b, None, conv, None), (x, w, b))


@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "brsf", "kp", "wm"])
def test_gradcheck_weight_and_bias_path(f64, rule):
    lin = bnn.Linear(4, 3, feedback=rule)
    x = torch.randn(5, 4)
    w = lin.weight.detach().clone().requires_grad_(True)
    b = lin.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w, b: bnn.FeedbackLinearFunction.apply(x, w, b, None, lin, None), (w, b))
    conv = bnn.Conv1d(2, 4, 3, stride=2, padding=1, feedback=rule)
    x = torch.randn(2, 2, 7)
    w = conv.weight.detach().clone().requires_grad_(True)
    b = torch.randn(4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: bnn.FeedbackConvFunction.apply(x, w, b, None, conv, None), (w, b))


def test_non_bp_input_grad_is_not_the_jacobian(f64):
    lin = bnn.Linear(4, 3, feedback="fa")
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda x: bnn.FeedbackLinearFunction.apply(x, lin.weight, lin.bias, None, lin, None), (x,))


# -- sign-concordant rules -------------------------------------------------------------------
def test_usf_init_scale_is_init_std(f64):
    for init in ("xavier", "kaiming", 0.3):
        layer = bnn.Linear(20, 7, feedback="usf", init=init)
        assert torch.equal(layer.feedback.matrix(), torch.sign(layer.weight) * init_std((7, 20), init))
    conv = bnn.Conv2d(3, 5, 3, feedback="usf")
    assert torch.equal(conv.feedback.matrix(), torch.sign(conv.weight) * init_std(conv.weight.shape))


@pytest.mark.parametrize("rule", ["usf", "frsf", "brsf"])
def test_sn_scaling_matches_norm_every_step(f64, rule):
    layer = bnn.Linear(12, 9, feedback={"rule": rule, "scale": "sn"}, sign="fixed")
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(8, 12)).square().sum().backward()
        opt.step()
        w, b = layer.weight.detach(), layer.feedback.matrix()
        torch.testing.assert_close(b.norm(), w.norm(), rtol=1e-15, atol=0)
        assert torch.equal(torch.sign(b), torch.sign(w))
    assert (layer.weight == 0).any()  # projection made exact zeros: the norm still matches


def test_frsf_magnitudes_fixed_signs_follow(f64):
    layer = bnn.Linear(10, 8, feedback="frsf")
    mag0 = layer.feedback.matrix().abs()
    assert torch.equal(mag0, layer.feedback.magnitude)
    opt = torch.optim.SGD(layer.parameters(), lr=2.0)
    flipped = 0
    for _ in range(5):
        s0 = torch.sign(layer.weight.detach())
        opt.zero_grad()
        layer(torch.randn(16, 10)).square().sum().backward()
        opt.step()
        b = layer.feedback.matrix()
        assert torch.equal(b, torch.sign(layer.weight.detach()) * mag0)
        flipped += int((torch.sign(layer.weight.detach()) != s0).sum())
    assert flipped > 0


def test_brsf_redrawn_once_per_step_not_in_eval(f64):
    layer = bnn.Linear(10, 8, feedback="brsf")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    mags = []
    for _ in range(3):
        used = []
        for _ in range(2):  # two forwards in one step see the same B
            x, g = torch.randn(4, 10), torch.randn(4, 8)
            gx, b = input_grad(layer, x, g)
            assert torch.equal(gx, g @ b)
            used.append(b.abs())
        assert torch.equal(used[0], used[1])
        layer.eval()
        with torch.no_grad():
            layer(torch.randn(4, 10))
        assert torch.equal(layer.feedback.matrix().abs(), used[0])  # eval does not redraw
        layer.train()
        assert torch.equal(torch.sign(layer.feedback.matrix()), torch.sign(layer.weight.detach()))
        mags.append(used[0])
        opt.step()
        opt.zero_grad()
    assert not torch.equal(mags[0], mags[1]) and not torch.equal(mags[1], mags[2])
    # R_t is a function of (seed, step): reproducible
    step = fb.training_step()
    r = layer.feedback.magnitudes(layer.weight.detach(), step - 1)
    layer.feedback._cache = None
    assert torch.equal(layer.feedback.magnitudes(layer.weight.detach(), step - 1), r)


def test_next_step_redraws_brsf(f64):
    layer = bnn.Linear(5, 4, feedback="brsf")
    m0 = layer.feedback.matrix()
    fb.next_step()
    assert not torch.equal(m0.abs(), layer.feedback.matrix().abs())


# -- learned feedback -----------------------------------------------------------------------
def test_kolen_pollack_difference_decays_exactly(f64):
    layer = bnn.Linear(8, 5, feedback="kp")
    lr, lam = 0.05, 0.3
    opt = torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=lam)
    assert any(p is layer.feedback.B for p in layer.parameters())
    d0 = (layer.weight - layer.feedback.B).detach().norm()
    for t in range(1, 31):
        opt.zero_grad()
        layer(torch.randn(6, 8)).square().sum().backward()
        assert torch.equal(layer.feedback.B.grad, layer.weight.grad)
        opt.step()
        d = (layer.weight - layer.feedback.B).detach().norm()
        torch.testing.assert_close(d, d0 * (1 - lr * lam) ** t, rtol=1e-12, atol=0)


def test_weight_mirror_aligns_B_with_W(f64):
    """With decay lam = 1, SGD at lr makes B_{t+1} - W = (1 - lr)(B_t - W) + lr W (C_t - I), C_t the
    noise's sample covariance over n samples. The first part shrinks as 0.9^t; the second is an
    AR(1) noise with per-step size lr |W (C_t - I)|_F ~ lr |W|_F sqrt((m + 1) / n) (m inputs) and
    stationary RMS that over sqrt(1 - 0.9^2). So |B_t - W| <= 0.9^t |B_0 - W| + 6 RMS but for a
    1e-9 tail, and sin(angle) <= |B_t - W| / |W|."""
    n, lr, steps = 4096, 0.1, 80
    layer = bnn.Linear(12, 6, feedback={"rule": "wm", "samples": n})
    opt = torch.optim.SGD([layer.feedback.B], lr=lr)
    w = layer.weight.detach().clone()

    def angle():
        b = layer.feedback.matrix()
        return torch.rad2deg(torch.arccos((b * w).sum() / (b.norm() * w.norm())))

    # B_0 and W are independent draws of 72 entries: |cos| has std 1/sqrt(72); 6 stds is 0.71
    assert abs(math.cos(math.radians(float(angle())))) < 6 / math.sqrt(72)
    d0 = float((layer.feedback.matrix() - w).norm())
    for _ in range(steps):
        opt.zero_grad()
        layer(torch.randn(4, 12)).sum().backward()
        opt.step()
    assert torch.equal(layer.weight.detach(), w)
    rms = lr * float(w.norm()) * math.sqrt((12 + 1) / n) / math.sqrt(1 - (1 - lr) ** 2)
    bound = ((1 - lr) ** steps * d0 + 6 * rms) / float(w.norm())
    assert math.sin(math.radians(float(angle()))) <= bound < math.sin(math.radians(10))


def test_batch_manhattan_gives_sign_gradients(f64):
    for rule in ("fa", "kp"):
        layer = bnn.Linear(6, 4, feedback=rule, batch_manhattan=True)
        x, g = torch.randn(5, 6), torch.randn(5, 4)
        gx, b = input_grad(layer, x, g)
        assert torch.equal(layer.weight.grad, g.T @ x)  # signed when the optimizer steps
        torch.optim.SGD(layer.parameters(), lr=0.0).step()
        assert torch.equal(layer.weight.grad, torch.sign(g.T @ x))
        assert torch.equal(layer.bias.grad, torch.sign(g.sum(0)))
        assert torch.equal(gx, g @ b)  # the error sent back is not signed
        if rule == "kp":  # B gets the same update as W
            assert torch.equal(layer.feedback.B.grad, layer.weight.grad)
    conv = bnn.Conv2d(2, 3, 3, feedback="fa", batch_manhattan=True)
    x = torch.randn(2, 2, 5, 5)
    g = torch.randn(2, 3, 3, 3)
    conv(x).backward(g)
    torch.optim.SGD(conv.parameters(), lr=0.0).step()
    assert torch.equal(conv.weight.grad, torch.sign(torch.nn.grad.conv2d_weight(x, conv.weight.shape, g)))


def test_rule_objects_are_cloned_not_bound(f64):
    rule = fb.USF(scale="sn")
    a, b = bnn.Linear(3, 2, feedback=rule), bnn.Linear(3, 2, feedback=rule)
    assert a.feedback is not rule and b.feedback is not rule and rule._owner is None
    assert a.feedback.config() == {"scale": "sn", "init": None}
    with pytest.raises(ValueError, match="already bound"):
        a.feedback.bind(b)
    assert copy.deepcopy(a).feedback._owner is not a


def test_random_magnitudes_follow_the_init_distribution(f64):
    a = init_std((300, 200)) * 3**0.5  # Xavier bound
    frsf = bnn.Linear(200, 300, feedback="frsf")
    brsf = bnn.Linear(200, 300, feedback="brsf")
    # n = 60000 draws of U[0, a]: the sample mean has relative std (1/sqrt 12)/(1/2)/sqrt(n) =
    # 0.0024, the sample variance sqrt((mu4/sigma^4 - 1)/n) = sqrt(0.8/n) = 0.0037 (kurtosis of a
    # uniform 1.8); the tolerances are 6 of those stds
    for mags in (frsf.feedback.magnitude, brsf.feedback.magnitudes(brsf.weight.detach())):
        assert float(mags.min()) >= 0 and float(mags.max()) <= a
        assert float(mags.mean()) == pytest.approx(a / 2, rel=0.015)
        assert float(mags.var()) == pytest.approx(a * a / 12, rel=0.022)
    draw = lambda step: fb.functional.uniform_magnitudes((7, 5), 2.0, torch.tensor(11), torch.tensor(step))  # noqa: E731
    r = draw(3)
    assert r.dtype == torch.float32 and r.shape == (7, 5)
    k = r / (2.0 / 2**16) - 0.5  # 16-bit levels (k + 1/2) a / 2^16
    assert torch.equal(k, k.round()) and float(k.min()) >= 0 and float(k.max()) <= 2**16 - 1
    assert torch.equal(r, draw(3))
    assert not torch.equal(r, draw(4))


def test_fa_B_is_fixed_and_drawn_like_W(f64):
    layer = bnn.Linear(300, 200, feedback="fa")
    b0 = layer.feedback.matrix().clone()
    assert b0.data_ptr() != layer.weight.data_ptr() and torch.equal(b0, layer.feedback.B)
    a = init_std((200, 300)) * 3**0.5
    assert float(b0.abs().max()) <= a and float(b0.std()) == pytest.approx(init_std((200, 300)), rel=0.02)
    # independent draws: the sample correlation of n = 60000 pairs has std 1/sqrt(n) = 0.0041; the
    # sample std's relative std is 0.5 sqrt(0.8/n) = 0.0018 (tolerances >= 6 stds)
    assert abs(float(torch.corrcoef(torch.stack([b0.flatten(), layer.weight.detach().flatten()]))[0, 1])) < 0.025
    opt = torch.optim.SGD(layer.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    assert all(p is not layer.feedback.B for p in layer.parameters())  # a buffer, not an optimizer's parameter
    w0 = layer.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(8, 300)).square().sum().backward()
        opt.step()
    assert not torch.equal(layer.weight.detach(), w0) and torch.equal(layer.feedback.matrix(), b0)
    wide = bnn.Linear(300, 200, feedback={"rule": "fa", "init": "kaiming"})
    # max of n = 60000 draws of U[-a, a] falls below (1 - 1e-3) a with probability (1 - 1e-3)^n = e^-60
    assert float(wide.feedback.B.abs().max()) == pytest.approx(init_std((200, 300), "kaiming") * 3**0.5, rel=1e-3)


def test_reset_step_sets_the_counter_that_brsf_draws_from(f64):
    """brSF's B is a function of (seed, step): resetting the counter reproduces it exactly."""
    layer = bnn.Linear(6, 4, feedback="brsf")
    fb.reset_step(0)
    first = layer.feedback.matrix().clone()
    fb.next_step()
    assert not torch.equal(layer.feedback.matrix(), first)
    fb.reset_step(0)
    assert fb.training_step() == 0
    assert torch.equal(layer.feedback.matrix(), first)
    with pytest.raises(ValueError, match="non-negative int"):
        fb.reset_step(-1)


def test_rule_name_and_check_value_read_every_form_of_a_feedback_value():
    """One reading of a feedback value for every caller (circuit synapses, experiment specs)."""
    assert fb.rule_name("fa") == "fa" and fb.rule_name({"rule": "usf", "scale": "sn"}) == "usf"
    assert fb.rule_name(fb.KolenPollack()) == "kp"
    assert fb.rule_name(None) is None and fb.rule_name("none") is None and fb.rule_name({}) is None
    assert fb.check_value("fa") is None and fb.check_value({"rule": "brsf", "scale": "sn"}) is None
    expected = "a feedback rule, one of " + ", ".join(sorted(fb.RULES)) + " (or a table {rule = ..., ...})"
    for bad in ("fa2", None, "none", {"scale": "sn"}, {"rule": "nope"}, 3):
        assert fb.check_value(bad) == expected
