"""biofa.models: every architecture with every rule and sign constraint; BP equals autograd."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofa.models as bm
import biofa.nn as bnn
from biofa.constraints import dale_violations
from biofa.errors import ConfigError, DegenerateFeedbackWarning, FeedbackMemoryError, ShapeError
from biofa.feedback import RULES

# (registry name, input shape, options) of the cheap models, tested with every rule × sign
SMALL = {
    "mlp": ((40,), {}),
    "lenet-mnist": ((1, 28, 28), {}),
    "lenet-cifar": ((3, 32, 32), {}),
    "cnn1d": ((40,), {}),
    "resnet20": ((3, 32, 32), {}),
    "cifar_convnet": ((3, 24, 24), {}),
}
SIGNS = [None, "dale", "fixed"]


def _name(key):
    return key.split("-")[0]


def _build(key, **kw):
    shape, options = SMALL[key]
    return bm.build(_name(key), input_shape=shape, n_outputs=10, **options, **kw)


def _expect_warning(feedback, sign):
    if feedback == "usf" and sign == "dale":
        return pytest.warns(DegenerateFeedbackWarning, match="degenerate")
    return contextlib.nullcontext()


def _layers(model):
    return [m for m in model.modules() if isinstance(m, bnn.FeedbackLayer)]


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("feedback", sorted(RULES))
@pytest.mark.parametrize("key", list(SMALL))
def test_every_rule_and_sign_trains(key, feedback, sign):
    gen = torch.Generator().manual_seed(0)
    with _expect_warning(feedback, sign):
        model = _build(key, feedback=feedback, sign=sign, generator=gen)
    layers = _layers(model)
    assert all(m.feedback.name == feedback for m in layers)
    assert isinstance(layers[-1], bnn.Linear)
    if feedback == "dfa":  # the last Linear is the output layer and holds the hub
        assert layers[-1].feedback.hub is not None and all(m.feedback.connected for m in layers)
    shape = SMALL[key][0]
    x, y = torch.randn(3, *shape), torch.tensor([1, 4, 7])
    if feedback == "densefa" and key == "resnet20":  # B of a 16x32x32 map: 1 GiB, over the limit
        with pytest.raises(FeedbackMemoryError, match="'stages.0.0.conv1'"):
            model(x)
        return
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [m.weight.detach().clone() for m in layers]
    out = model(x)
    assert out.shape == (3, 10)
    loss = F.cross_entropy(out, y)
    loss.backward()
    first_grad = layers[0]._raw_weight().grad
    assert first_grad is not None and torch.isfinite(first_grad).all()
    if not (feedback == "usf" and sign == "dale"):  # the error reaches the first layer
        assert first_grad.abs().max() > 0
    opt.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before[-1], layers[-1].weight)  # the output layer learned
    if sign is not None:
        assert sum(dale_violations(model).values()) == 0
    for p in bnn.feedback_parameters(model):  # kp, wm: B received its own gradient
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert torch.isfinite(model(x)).all()


def test_usf_under_dale_sends_exactly_no_error(f64):
    """Sign(W) is rank one under Dale: the hidden error s_j Σ_k e_k vanishes with cross-entropy."""
    with pytest.warns(DegenerateFeedbackWarning):
        model = bm.build("mlp", input_shape=(20,), n_outputs=5, hidden=(16,), feedback="usf", sign="dale",
                         generator=torch.Generator().manual_seed(1))
    out = model(torch.randn(8, 20))
    F.cross_entropy(out, torch.arange(8) % 5).backward()
    hidden, output = _layers(model)
    assert hidden.weight.grad.abs().max() <= 1e-15 * output.weight.grad.abs().max()


@pytest.mark.parametrize("key, batch", [("mlp", 4), ("lenet-mnist", 3), ("lenet-cifar", 3), ("cnn1d", 4),
                                        ("cifar_convnet", 2), ("resnet20", 3), ("resnet20-B", 3), ("resnet18-cifar", 2)])
def test_bp_gradients_equal_autograd(f64, key, batch):
    """The converted BP model and the plain torch model give the same gradients (float64)."""
    name, shape, options = {
        "resnet20-B": ("resnet20", (3, 32, 32), {"shortcut": "B"}),
        "resnet18-cifar": ("resnet18", (3, 32, 32), {}),
    }.get(key, (_name(key), *SMALL.get(key, ((), {}))))
    plain = bm.build_plain(name, input_shape=shape, n_outputs=10, generator=torch.Generator().manual_seed(2), **options)
    model = bnn.convert(plain, feedback="bp")
    assert len(_layers(model)) == sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in plain.modules())
    x0, y = torch.randn(batch, *shape), torch.arange(batch) % 10
    grads = []
    for net in (plain, model):
        x = x0.clone().requires_grad_()
        out = net(x)
        F.cross_entropy(out, y).backward()
        grads.append({"input": x.grad, "output": out.detach(), **{k: p.grad for k, p in net.named_parameters()}})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=0, atol=1e-12, msg=k)


@pytest.mark.parametrize("name, count", [("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018)])
def test_cifar_resnet_parameter_counts(name, count):
    """He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M parameters (option-A shortcuts)."""
    plain = bm.build_plain(name, input_shape=(3, 32, 32), n_outputs=10)
    assert sum(p.numel() for p in plain.parameters()) == count
    model = bm.build(name, input_shape=(3, 32, 32), n_outputs=10, feedback="fa")
    assert sum(p.numel() for p in model.parameters()) == count  # fixed B is a buffer, not a parameter
    b = bm.build_plain(name, input_shape=(3, 32, 32), n_outputs=10, shortcut="B")
    assert sum(p.numel() for p in b.parameters()) > count


def test_resnet18_and_lenet_parameter_counts():
    r18 = bm.build_plain("resnet18", input_shape=(3, 224, 224), n_outputs=1000)
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512  # torchvision's resnet18
    lenet = bm.build_plain("lenet", input_shape=(1, 28, 28), n_outputs=10)
    assert sum(p.numel() for p in lenet.parameters()) == 61_706  # LeNet-5 with a 400-120-84-10 head
    cnn = bm.build_plain("cnn1d", input_shape=(40,), n_outputs=10)
    assert cnn.linear.in_features == 125  # Greydanus 2020: 25 channels × 5 positions


@pytest.mark.parametrize("name, shape, n_out", [("resnet32", (3, 32, 32), 10), ("resnet56", (3, 32, 32), 10),
                                                ("resnet18", (3, 32, 32), 100)])
def test_large_models_build_with_every_rule(name, shape, n_out):
    x, y = torch.randn(2, *shape), torch.tensor([0, 1])
    for feedback in sorted(RULES):
        model = bm.build(name, input_shape=shape, n_outputs=n_out, feedback=feedback)
        assert all(m.feedback.name == feedback for m in _layers(model))
        if feedback in ("bp", "dfa"):
            out = model(x)
            assert out.shape == (2, n_out)
            F.cross_entropy(out, y).backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            assert model.fc.weight.grad.abs().max() > 0 and _layers(model)[0].weight.grad.abs().max() > 0


def test_resnet18_imagenet_input_and_signs():
    model = bm.build("resnet18", input_shape=(3, 224, 224), n_outputs=1000, sign="fixed").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    with pytest.warns(DegenerateFeedbackWarning):
        bm.build("resnet18", input_shape=(3, 32, 32), n_outputs=10, feedback="usf", sign="dale")


@pytest.mark.parametrize("feedback, sign", [("fa", None), ("brsf", None), ("dfa", "fixed"), ("kp", "dale")])
def test_build_is_deterministic_given_generator(feedback, sign):
    def state(seed):
        gen = torch.Generator().manual_seed(seed)
        return _build("lenet-cifar", feedback=feedback, sign=sign, generator=gen).state_dict()

    a, b, c = state(3), state(3), state(4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    torch.manual_seed(5)
    d = _build("mlp", feedback=feedback, sign=sign).state_dict()
    torch.manual_seed(5)
    e = _build("mlp", feedback=feedback, sign=sign).state_dict()
    assert all(torch.equal(d[k], e[k]) for k in d)


def test_build_is_convert_of_build_plain():
    plain = bm.build_plain("cnn1d", input_shape=(40,), n_outputs=10, generator=torch.Generator().manual_seed(6))
    model = bm.build("cnn1d", input_shape=(40,), n_outputs=10, generator=torch.Generator().manual_seed(6))
    for p, m in zip([m for m in plain.modules() if isinstance(m, (nn.Linear, nn.Conv1d))], _layers(model)):
        assert torch.equal(p.weight, m.weight) and torch.equal(p.bias, m.bias)
        bound = (6.0 / (p.weight[0].numel() + p.weight.shape[0] * p.weight[0, 0].numel())) ** 0.5
        assert p.weight.abs().max() <= bound and not p.bias.any()  # Xavier-uniform, zero bias
    dale = bm.build("cnn1d", input_shape=(40,), n_outputs=10, sign="dale", generator=torch.Generator().manual_seed(6))
    for p, m in zip([m for m in plain.modules() if isinstance(m, (nn.Linear, nn.Conv1d))], _layers(dale)):
        assert torch.equal(m.weight, m.sign.signs * p.weight.abs())  # W = S∘|W_plain|


def test_model_options_and_errors():
    logistic = bm.build_plain("mlp", input_shape=(1, 8, 8), n_outputs=3, hidden=())
    assert [type(m) for m in logistic] == [nn.Flatten, nn.Linear] and logistic[1].in_features == 64
    tanh = bm.build_plain("mlp", input_shape=(30,), n_outputs=10, hidden=(20,), activation="linear")
    assert isinstance(tanh[2], nn.Identity)
    assert bm.build_plain("lenet", input_shape=(3, 32, 32), n_outputs=10, pool="avg", activation="tanh")
    assert bm.build("resnet18", input_shape=(3, 32, 32), n_outputs=10, stem="cifar")(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert bm.available() == sorted(["mlp", "lenet", "cnn1d", "cifar_convnet", "resnet20", "resnet32", "resnet56", "resnet18"])
    assert bm.MODELS["mlp"].options()["hidden"] == (100, 100)
    with pytest.raises(ConfigError, match="The 'name' parameter of build must be one of"):
        bm.build("vgg", input_shape=(3, 32, 32), n_outputs=10)
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) \['hiden'\] for model 'mlp'"):
        bm.build("mlp", input_shape=(40,), n_outputs=10, hiden=(5,))
    with pytest.raises(ConfigError, match="activation"):
        bm.build("mlp", input_shape=(40,), n_outputs=10, activation="swish")
    with pytest.raises(ShapeError, match="LeNet needs image inputs"):
        bm.build("lenet", input_shape=(40,), n_outputs=10)
    with pytest.raises(ShapeError, match="CNN1d needs inputs"):
        bm.build("cnn1d", input_shape=(1, 28, 28), n_outputs=10)
    with pytest.raises(ConfigError, match="shortcut"):
        bm.build("resnet20", input_shape=(3, 32, 32), n_outputs=10, shortcut="C")
    with pytest.raises(ConfigError, match="n_outputs"):
        bm.build("mlp", input_shape=(40,), n_outputs=0)
    with pytest.raises(ConfigError, match="input_shape"):
        bm.build("mlp", input_shape=(40.0,), n_outputs=2)
    with pytest.raises(ConfigError, match="feedback"):
        bm.build("mlp", input_shape=(40,), n_outputs=2, feedback="bogus")
    with pytest.raises(ShapeError, match="6n \\+ 2"):
        bm.cifar_resnet(21, (3, 32, 32), 10)


@pytest.mark.parametrize("key", ["mlp", "resnet20"])
def test_norm_and_batch_manhattan_pass_through(key):
    model = _build(key, feedback="frsf", sign="fixed", norm="const", batch_manhattan=True,
                   generator=torch.Generator().manual_seed(9))
    layers = _layers(model)
    assert all(m.norm is not None and m.batch_manhattan for m in layers)
    norms = [m.weight.detach().norm() for m in layers]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.randn(2, *SMALL[key][0])), torch.tensor([0, 1])).backward()
    seen = []  # biofa's global pre-step hook takes the sign before the optimizer's own hooks run
    opt.register_step_pre_hook(lambda *_: seen.append(layers[-1].weight.grad.unique().tolist()))
    opt.step()
    assert set(seen[0]) <= {-1.0, 0.0, 1.0}  # the optimizer stepped along the sign of the batch gradient
    for m, n in zip(layers, norms):
        torch.testing.assert_close(m.weight.detach().norm(), n, rtol=1e-5, atol=0)
    assert sum(dale_violations(model).values()) == 0


def test_dfa_mlp_gradients_match_the_math(f64):
    """Nøkland 2016 in a built model: δa_l = f'(a_l) ∘ (e B_{l+1}), B_{l+1} the block of the layer above."""
    model = bm.build("mlp", input_shape=(12,), n_outputs=4, hidden=(9, 7), feedback="dfa",
                     generator=torch.Generator().manual_seed(3))
    l1, l2, l3 = _layers(model)
    x, y = torch.randn(5, 12), torch.tensor([0, 1, 2, 3, 0])
    out = model(x)
    F.cross_entropy(out, y, reduction="sum").backward()
    with torch.no_grad():
        a1 = x @ l1.weight.T + l1.bias
        h1 = a1.relu()
        a2 = h1 @ l2.weight.T + l2.bias
        h2 = a2.relu()
        e = out.softmax(1) - F.one_hot(y, 4)
        d2 = (a2 > 0) * (e @ l3.feedback.matrix())  # B_3: (4, 7), the error sent to h2
        d1 = (a1 > 0) * (e @ l2.feedback.matrix())  # B_2: (4, 9), the error sent to h1
    assert l3.feedback.matrix().shape == (4, 7) and l2.feedback.matrix().shape == (4, 9)
    torch.testing.assert_close(l3.weight.grad, e.T @ h2, rtol=0, atol=1e-12)
    torch.testing.assert_close(l2.weight.grad, d2.T @ h1, rtol=0, atol=1e-12)
    torch.testing.assert_close(l1.weight.grad, d1.T @ x, rtol=0, atol=1e-12)
    torch.testing.assert_close(l1.bias.grad, d1.sum(0), rtol=0, atol=1e-12)
