"""E/I architectures (projection, ColEI, DANN), input exemption and on/off inputs, corrected updates."""

import math

import pytest
import torch
from torch import nn

import biofa.models as bm
import biofa.nn as bnn
from biofa.constraints import dale_violations
from biofa.errors import ConfigError, SpecError
from biofa.experiment import spec as es
from biofa.experiment.runner import make_optimizer


def _mlp(**kw):
    return bm.build("mlp", input_shape=(6,), n_outputs=3, hidden=[20], generator=torch.Generator().manual_seed(0), **kw)


def _train(model, shape, steps=5, lr=0.1):
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(shape, generator=gen)).square().mean().backward()
        opt.step()


# -- DANN -------------------------------------------------------------------------------------
def test_dann_forward_is_the_subtractive_equation(f64):
    layer = bnn.DANNLinear(7, 20, feedback="bp", generator=torch.Generator().manual_seed(0))
    layer.bias.data.normal_()
    x = torch.randn(5, 7)
    w = layer.ee.weight - layer.ei.weight @ layer.ie.weight
    torch.testing.assert_close(layer(x), x @ w.T + layer.bias, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.effective_weight(), w.detach())
    assert layer.n_inhibitory == 2 and layer.ie.weight.shape == (2, 7) and layer.ei.weight.shape == (20, 2)


def test_dann_shunting_is_cornfords_divisive_form(f64):
    layer = bnn.DANNLinear(7, 20, feedback="bp", shunting=True)
    with torch.no_grad():
        layer.alpha.normal_(), layer.gain.uniform_(0.5, 2), layer.bias.normal_()
    x = torch.rand(5, 7)
    z_i = x @ layer.ie.weight.T
    z_hat = x @ layer.ee.weight.T - z_i @ layer.ei.weight.T
    gamma = z_i @ (layer.alpha.exp() * layer.ei.weight).T + layer.epsilon
    torch.testing.assert_close(layer(x), layer.gain * z_hat / gamma + layer.bias)


@pytest.mark.parametrize("shunting", [False, True])
@pytest.mark.parametrize("nd", [1, 2])
def test_dann_conv_is_the_equation_at_every_position(f64, nd, shunting):
    """h = conv(x; W_EE) - W_EI conv(x; W_IE) (+ b), W_EI a 1 x 1 convolution; shunting divides
    by W_EI (e^alpha conv(x; W_IE)) + eps and multiplies by g, per channel (Cornford's EiConvLayer)."""
    cls, conv = (bnn.DANNConv1d, torch.nn.functional.conv1d) if nd == 1 else (bnn.DANNConv2d, torch.nn.functional.conv2d)
    layer = cls(3, 12, 3, stride=1, padding=1, feedback="fa", shunting=shunting, generator=torch.Generator().manual_seed(0))
    unit = (-1,) + (1,) * nd
    with torch.no_grad():
        layer.bias.normal_()
        if shunting:
            layer.alpha.normal_(), layer.gain.uniform_(0.5, 2)
    x = torch.rand((4, 3) + (9,) * nd)
    e_map, i_map = conv(x, layer.ee.weight, padding=1), conv(x, layer.ie.weight, padding=1)
    w_ei = layer.ei.weight.reshape(12, layer.n_inhibitory)
    inhibit = lambda m: torch.einsum("ei,ni...->ne...", w_ei, m)  # noqa: E731
    h = e_map - inhibit(i_map)
    if shunting:
        h = layer.gain.view(unit) * h / (inhibit(layer.alpha.exp().view(unit) * i_map) + layer.epsilon)
    torch.testing.assert_close(layer(x), h + layer.bias.view(unit), rtol=1e-12, atol=1e-12)
    assert layer.n_inhibitory == 1 and layer.fan_in == 3 * 3 ** nd  # 10 % of 12 channels, rounded
    w = layer.effective_weight()  # (out, in * kernel): W_EE - W_EI W_IE, the kernels side by side
    torch.testing.assert_close(w, (layer.ee.weight.reshape(12, -1) - w_ei @ layer.ie.weight.reshape(1, -1)).detach())


def test_dann_conv_init_and_corrections_use_the_fan_in(f64):
    gen = torch.Generator().manual_seed(0)
    layer = bnn.DANNConv2d(16, 40, 5, corrected=True, shunting=True, generator=gen)
    d = 16 * 25
    sigma = math.sqrt(2 * math.pi / (d * (2 * math.pi - 1)))
    for w in (layer.ee.weight, layer.ie.weight):
        assert (w >= 0).all() and abs(w.mean() / sigma - 1) < 0.05
    assert torch.equal(layer.ei.weight, torch.full((40, 4, 1, 1), 1 / 4))
    mult = layer.lr_multipliers()
    assert mult[layer.ie.weight] == pytest.approx(1 / math.sqrt(40)) and mult[layer.ei.weight] == pytest.approx(1 / d)
    assert mult[layer.alpha] == pytest.approx(1 / (math.sqrt(40) * d))
    with pytest.raises(ConfigError, match="'groups' parameter of DANNConv2d must be 1"):
        bnn.DANNConv2d(4, 8, 3, groups=2)


def test_convert_builds_conv_danns_and_measures_them():
    from biofa.analysis import layer_nse

    model = bm.build("cnn1d", input_shape=(1, 40), n_outputs=10, sign="dale", ei="dann", free_sign=[0],
                     generator=torch.Generator().manual_seed(0))
    danns = {n: m for n, m in model.named_modules() if isinstance(m, bnn.DANN_LAYERS)}
    assert any(isinstance(m, bnn.DANNConv1d) for m in danns.values())
    assert any(isinstance(m, bnn.DANNLinear) for m in danns.values())
    assert not isinstance(model.features[0], bnn.DANN_LAYERS)  # free_sign = [0]: the first layer reads signed data
    nse = layer_nse(model)  # one value per DANN (its effective W), one for the free first layer
    assert set(nse) == set(danns) | {"features.0"} and all(0 < v <= 1 for v in nse.values())
    _train(model, (8, 1, 40))
    assert not any(dale_violations(model).values())


def test_dann_init_follows_cornford(f64):
    gen = torch.Generator().manual_seed(0)
    layer = bnn.DANNLinear(400, 500, generator=gen)
    sigma = math.sqrt(2 * math.pi / (400 * (2 * math.pi - 1)))
    for w in (layer.ee.weight, layer.ie.weight):  # exponential: mean = std = sigma
        assert (w >= 0).all()
        assert abs(w.mean() / sigma - 1) < 0.02 and abs(w.std() / sigma - 1) < 0.03
    assert torch.equal(layer.ei.weight, torch.full((500, 50), 1 / 50))
    first = bnn.DANNLinear(400, 10, relu_input=False, shunting=True, generator=gen)
    assert first.n_inhibitory == 1
    torch.testing.assert_close(first.ie.weight, first.ee.weight.mean(0, keepdim=True))
    assert abs(first.ee.weight.mean() / math.sqrt(1 / 800) - 1) < 0.05
    torch.testing.assert_close(first.alpha.exp(), torch.full((1,), math.sqrt((2 * math.pi - 1) / 400)))


@pytest.mark.parametrize("shunting", [False, True])
def test_dann_stays_non_negative_and_round_trips(shunting):
    # the divisive form needs non-negative inputs (its denominator is W_EI e^alpha W_IE x)
    options = {"feedback": "fa", "sign": "dale", "ei": "dann", "shunting": shunting,
               "inputs": "on_off" if shunting else "signed"}
    model = _mlp(**options)
    _train(model, (8, 6), lr=0.05)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(v == 0 for v in dale_violations(model).values()) and len(dale_violations(model)) == 6
    if shunting:
        assert all((m.gain >= 0).all() for m in model.modules() if isinstance(m, bnn.DANNLinear))
    clone = _mlp(**options)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(4, 6)
    assert torch.equal(clone(x), model(x))


def test_dann_rejects_bad_input():
    with pytest.raises(ConfigError, match="n_inhibitory"):
        bnn.DANNLinear(5, 10, n_inhibitory=0)
    for f in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="inhibitory_fraction"):
            bnn.DANNLinear(5, 10, inhibitory_fraction=f)
        with pytest.raises(ConfigError, match="inhibitory_fraction"):
            _mlp(sign="dale", ei="dann", inhibitory_fraction=f)
    with pytest.raises(ConfigError, match="did you mean 'dann'"):
        _mlp(sign="dale", ei="dan")
    for sign in (None, "fixed"):
        with pytest.raises(ConfigError, match="sign='dale'"):
            _mlp(sign=sign, ei="colei")
    with pytest.raises(ConfigError, match="corrected"):
        _mlp(sign="dale", ei="colei", corrected=True)


def test_usf_under_dann_is_marked_degenerate():
    from biofa.errors import DegenerateFeedbackWarning
    with pytest.warns(DegenerateFeedbackWarning, match="usf"):
        _mlp(feedback="usf", sign="dale", ei="dann")


# -- ColEI ------------------------------------------------------------------------------------
def test_colei_init_balances_e_and_i(f64):
    model = bm.build("mlp", input_shape=(500,), n_outputs=3, hidden=[400], sign="dale", ei="colei",
                     generator=torch.Generator().manual_seed(0))
    w = model[1].weight  # 400 E columns, 100 I columns
    n_e, n_i = 400, 100
    sigma_e = math.sqrt(1 / ((2 * math.pi - 1) / (2 * math.pi) * (n_e + n_e**2 / n_i)))
    assert abs(w[:, :n_e].mean() / sigma_e - 1) < 0.02
    assert abs(-w[:, n_e:].mean() / (4 * sigma_e) - 1) < 0.02
    assert abs(w.sum(1).mean()) < 0.1 * w.abs().sum(1).mean()  # E and I cancel on average
    projection = bm.build("mlp", input_shape=(500,), n_outputs=3, hidden=[400], sign="dale",
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.sign(projection[1].weight), torch.sign(w))  # same column signs


def test_colei_conv_counts_kernel_taps(f64):
    model = bm.build("cnn1d", input_shape=(5, 40), n_outputs=3, sign="dale", ei="colei")
    w = model.features[0].weight  # 4 E and 1 I input channels, 5 taps
    assert (w[:, :4] >= 0).all() and (w[:, 4:] <= 0).all()
    assert abs(w[:, :4].sum(dim=(1, 2)).mean() + w[:, 4:].sum(dim=(1, 2)).mean()) < 0.5 * w.abs().sum((1, 2)).mean()


# -- free_sign and on/off inputs --------------------------------------------------------------
def test_free_sign_exempts_only_the_chosen_layers():
    model = _mlp(feedback="fa", sign="dale", free_sign=[0])
    assert model[1].sign is None and model[3].sign is not None
    model = _mlp(feedback="fa", sign="dale", ei="dann", free_sign=[0])
    assert isinstance(model[1], bnn.Linear) and isinstance(model[3], bnn.DANNLinear)


def test_on_off_inputs_are_non_negative_and_excitatory():
    x = torch.tensor([[1.5, -2.0, 0.0]])
    torch.testing.assert_close(bm.OnOff()(x), torch.tensor([[[1.5, 0.0, 0.0], [0.0, 2.0, 0.0]]]))
    assert bm.on_off_shape((3,)) == (2, 3) and bm.on_off_shape((3, 8, 8)) == (6, 8, 8)
    model = _mlp(feedback="fa", sign="dale", inputs="on_off")
    assert isinstance(model[0], bm.OnOff) and model[1][1].in_features == 12
    assert (model[1][1].sign.signs > 0).all() and (model[1][3].sign.signs < 0).any()
    assert model(torch.randn(4, 6)).shape == (4, 3)
    conv = bm.build("cnn1d", input_shape=(40,), n_outputs=3, sign="dale", inputs="on_off")
    assert conv[1].features[0].in_channels == 2 and (conv[1].features[0].weight >= 0).all()


# -- corrected updates ------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_corrected_multipliers_reach_the_param_groups(optimizer):
    model = _mlp(feedback="bp", sign="dale", ei="dann", shunting=True, corrected=True)
    opt = make_optimizer(bnn.parameter_groups(model), {"name": optimizer, "lr": 0.1, "weight_decay": 0.0,
                                                       "momentum": 0.0, "nesterov": False})
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert opt.param_groups[0]["lr"] == 0.1
    for layer in (model[1], model[3]):
        root_e, n_in = math.sqrt(layer.out_features), layer.in_features
        assert lr[id(layer.ie.weight)] == pytest.approx(0.1 / root_e)
        assert lr[id(layer.ei.weight)] == pytest.approx(0.1 / n_in)
        assert lr[id(layer.alpha)] == pytest.approx(0.1 / (root_e * n_in))
        assert lr[id(layer.ee.weight)] == lr[id(layer.bias)] == lr[id(layer.gain)] == 0.1
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    plain = _mlp(feedback="bp", sign="dale", ei="dann")
    assert len(bnn.parameter_groups(plain)) == 1


# -- specs ------------------------------------------------------------------------------------
def test_spec_keys_are_checked():
    base = {"model": {"name": "mlp", "sign": "dale"}}
    ok = es.from_dict({"model": {**base["model"], "ei": "dann", "inhibitory_fraction": 0.2, "corrected": True,
                                 "free_sign": [0], "inputs": "on_off", "shunting": True}}, source="x.toml")
    assert ok.base["model"]["ei"] == "dann"
    bad = [("ei", "dan", "did you mean 'dann'"), ("inhibitory_fraction", 0.0, r"\(0, 1\)"),
           ("inhibitory_fraction", 1, r"\(0, 1\)"), ("inputs", "onoff", "on_off"), ("corrected", 1, "true or false"),
           ("free_sign", 0, "list of layer")]
    for key, value, message in bad:
        with pytest.raises(SpecError, match=rf"\[model\] {key} must be .*{message}"):
            es.from_dict({"model": {**base["model"], key: value}}, source="x.toml")
