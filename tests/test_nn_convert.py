"""biofa.nn.convert, the layers' construction and their errors, biofa.init."""

import copy
import math

import pytest
import torch
from torch import nn

import biofa.nn as bnn
from biofa import feedback as fb
from biofa.constraints import Dale
from biofa.errors import ConfigError, DegenerateFeedbackWarning, ShapeError
from biofa.init import check_init, init_bound, init_std, init_weight


def native_net():
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                         nn.Conv1d(4, 4, 3, stride=2, groups=2, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 2, 5), nn.ReLU(), nn.Linear(5, 3))


def test_convert_bp_keeps_outputs_and_caller_objects(f64):
    native = native_net()
    before = copy.deepcopy(native.state_dict())
    rule, sign = fb.USF(scale="sn"), Dale(e_fraction=0.5)
    for spec in ("bp", fb.BP()):
        model = bnn.convert(native, feedback=spec)
        x = torch.randn(3, 2, 6)
        assert torch.equal(model(x), native(x))
        assert all(isinstance(model[i], bnn.FeedbackLayer) for i in (0, 2, 5, 7))
        assert model[0].padding_mode == "circular" and model[2].groups == 2 and model[2].bias is None
    with pytest.warns(DegenerateFeedbackWarning):
        converted = bnn.convert(native, feedback=rule, sign=sign, norm="const")
    assert rule._owner is None and sign.signs is None  # the caller's objects are untouched
    assert rule.config() == {"scale": "sn", "init": None} and sign.config()["e_fraction"] == 0.5
    assert all(isinstance(m, nn.Module) and not isinstance(m, bnn.FeedbackLayer) for m in native)
    assert all(torch.equal(v, native.state_dict()[k]) for k, v in before.items())
    feedbacks = [m.feedback for m in converted.modules() if isinstance(m, bnn.FeedbackLayer)]
    assert len({id(f) for f in feedbacks}) == 4
    lin = converted[5]  # under a sign constraint W becomes S∘|W|
    assert torch.equal(lin.weight, native[5].weight.abs() * lin.sign.signs)


def test_convert_options(f64):
    native = native_net()
    model = bnn.convert(native, feedback="kp", exclude=["7"])
    assert isinstance(model[7], nn.Linear) and not isinstance(model[7], bnn.FeedbackLayer)
    learned = bnn.feedback_parameters(model)
    assert len(learned) == 3 and all(p.shape == m.weight.shape for p, m in zip(learned, (model[0], model[2], model[5])))
    assert len(bnn.forward_parameters(model)) + len(learned) == len(list(model.parameters()))
    same = bnn.convert(native, feedback="fa", inplace=True)
    assert same is native and isinstance(native[0], bnn.Conv1d)
    dfa = bnn.convert(native_net(), feedback="dfa", output="5")
    assert dfa[5].feedback.hub is not None and dfa[7].feedback.hub is None
    with pytest.raises(ConfigError, match="exclude names"):
        bnn.convert(native_net(), exclude=["nope"])
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        bnn.convert(lambda x: x)
    with pytest.raises(ConfigError, match="not the layer itself"):
        bnn.convert(nn.Linear(2, 2))


def test_unknown_rule_message():
    names = ", ".join(repr(n) for n in sorted(fb.RULES))
    msg = f"The 'feedback' parameter of Linear must be one of {{{names}}}. Got 'usf2' instead."
    with pytest.raises(ConfigError) as err:
        bnn.Linear(3, 2, feedback="usf2")
    assert str(err.value) == msg
    with pytest.raises(ConfigError, match=r"The 'feedback' parameter of Conv2d must be one of"):
        bnn.Conv2d(3, 2, 3, feedback="dfa2")
    with pytest.raises(ConfigError, match=r"The 'feedback.rule' parameter of Linear must be one of"):
        bnn.Linear(3, 2, feedback={"rule": "nope"})
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) \['scal'\] for feedback rule 'usf'"):
        bnn.Linear(3, 2, feedback={"rule": "usf", "scal": "sn"})
    with pytest.raises(ConfigError, match="The 'scale' parameter of USF must be one of"):
        fb.USF(scale="rms")
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        bnn.convert(nn.Sequential(nn.Linear(2, 2)), feedback="nope")


def test_layer_argument_errors():
    with pytest.raises(ConfigError, match="The 'init' parameter of Linear"):
        bnn.Linear(3, 2, init="he")
    with pytest.raises(ConfigError, match="in_features and out_features must be > 0"):
        bnn.Linear(0, 2)
    with pytest.raises(ConfigError, match="divisible by groups"):
        bnn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ConfigError, match="The 'padding_mode' parameter of Conv2d"):
        bnn.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(ShapeError, match=r"Conv2d: expected input of shape \(N, 2, L, L\), got \(1, 3, 5, 5\)"):
        bnn.Conv2d(2, 2, 3)(torch.randn(1, 3, 5, 5))
    with pytest.raises(ShapeError, match=r"Linear: expected input of shape \(\.\.\., 3\), got \(2, 4\)"):
        bnn.Linear(3, 2)(torch.randn(2, 4))
    with pytest.raises(ConfigError, match="needs stride 1"):
        bnn.Conv2d(2, 2, 3, stride=2, padding="same")
    same = bnn.Conv2d(2, 2, 3, padding="same", feedback="bp")
    assert same(torch.randn(1, 2, 5, 5)).shape == (1, 2, 5, 5)


def test_layer_repr_and_factory_kwargs():
    lin = bnn.Linear(3, 2, feedback="frsf", init="kaiming", batch_manhattan=True, dtype=torch.float64)
    text = repr(lin)
    assert "feedback='frsf'" in text and "init='kaiming'" in text and "batch_manhattan=True" in text
    assert lin.weight.dtype == lin.feedback.matrix().dtype == torch.float64
    gen = torch.Generator().manual_seed(3)
    a = bnn.Linear(5, 4, feedback="fa", generator=gen)
    b = bnn.Linear(5, 4, feedback="fa", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.feedback.B, b.feedback.B)


def test_init_bounds_and_draws(f64):
    assert init_bound((20, 10)) == pytest.approx(math.sqrt(6 / 30))
    assert init_bound((8, 4, 3, 3), "kaiming") == pytest.approx(math.sqrt(6 / 36))
    assert init_bound((8, 4), 0.25) == 0.25
    assert init_std((20, 10)) == pytest.approx(math.sqrt(2 / 30))
    w = init_weight(torch.empty(200, 300), "xavier", torch.Generator().manual_seed(0))
    a = init_bound(w.shape)
    # n = 60000 draws of U[-a, a]: max|w| < 0.99 a with probability 0.99^n = e^-603; the sample
    # std's relative std is 0.5 sqrt(0.8 / n) = 0.0018, the tolerance 11 of those
    assert float(w.abs().max()) <= a and float(w.abs().max()) > 0.99 * a
    assert float(w.std()) == pytest.approx(init_std(w.shape), rel=0.02)
    w1 = init_weight(torch.empty(5, 5), 0.1, torch.Generator().manual_seed(1))
    w2 = init_weight(torch.empty(5, 5), 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(w1, w2) and float(w1.abs().max()) <= 0.1
    for bad in (True, -1.0, 0, "he"):
        with pytest.raises(ConfigError, match="'init' parameter of X"):
            check_init("X", bad)


def test_convert_init_match_draws_feedback_at_the_copied_weights_scale(f64):
    """init="match": FA's B has the RMS of the copied W (see docs/background.rst), whatever the
    torch init."""
    from biofa.analysis import norm_ratio

    native = torch.nn.Sequential(torch.nn.Linear(200, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10))
    matched = bnn.convert(native, feedback="fa", init="match")
    xavier = bnn.convert(native, feedback="fa")
    for i in (0, 2):
        w = native[i].weight.detach()
        assert matched[i].init == pytest.approx(3**0.5 * float(w.pow(2).mean().sqrt()))
        # |B| / |W| with W fixed: B's n entries of U[-a, a] give |B|^2 a relative std of
        # sqrt(0.8 / n), |B| half of it: 0.0082 for the 10 x 300 layer; 6 stds is 0.05
        assert norm_ratio(w, matched[i].feedback.matrix()) == pytest.approx(1.0, abs=0.05)
        # torch's default draws U[+-1/sqrt(fan_in)], Xavier U[+-sqrt(6/(fan_in+fan_out))]: the ratio
        # of the two RMS is sqrt(6 fan_in / (fan_in + fan_out)) (1.55 and 2.41 here); both norms
        # are sampled, relative std <= sqrt(2) 0.0082 = 0.0116, 6 of them is 0.07
        fan_out, fan_in = w.shape
        expect = math.sqrt(6 * fan_in / (fan_in + fan_out))
        assert norm_ratio(w, xavier[i].feedback.matrix()) == pytest.approx(expect, rel=0.07)
