"""One conformance suite over every registered feedback rule (STYLE habit 10).

``SAMPLES`` holds, for every name in :data:`biofa.feedback.RULES`, the rule specs to exercise.
Each generic check runs for every rule: the backward sends the rule's B (``g @ B``, the transposed
convolution with B, or for DFA the projected output error), ``state_dict`` round trips, ``.to()``
dtype moves, ``deepcopy`` and ``repr``. A rule registered without samples fails
:func:`test_every_rule_has_samples` and every generic check.
"""

import copy

import pytest
import torch
from torch import nn

import biofa.nn as bnn
from biofa.feedback import RULES, make_feedback

SAMPLES = {
    "bp": ["bp"],
    "fa": ["fa", {"rule": "fa", "init": 0.2}],
    "densefa": ["densefa", {"rule": "densefa", "init": "kaiming", "max_bytes": 10**6}],
    "usf": ["usf", {"rule": "usf", "scale": "sn"}],
    "frsf": ["frsf", {"rule": "frsf", "scale": "sn", "init": "kaiming"}],
    "brsf": ["brsf", {"rule": "brsf", "scale": "sn"}],
    "dfa": ["dfa", {"rule": "dfa", "init": 0.5}],
    "kp": ["kp"],
    "wm": ["wm", {"rule": "wm", "noise_std": 0.5, "samples": 8}],
}


def samples(name):
    if name not in SAMPLES:
        pytest.fail(f"feedback rule {name!r} is registered in biofa.feedback.RULES but has no entry in "
                    "the conformance suite's SAMPLES: add one")
    return SAMPLES[name]


CASES = [(name, i) for name in sorted(RULES) for i in range(len(SAMPLES.get(name, [None])))]


def build(spec, conv: bool):
    """A small network with every synapse layer under ``spec``; returns (model, input, probed layer)."""
    if conv:
        native = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3, stride=2),
                               nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
        x = torch.randn(2, 2, 6, 6)
        probe = 2
    else:
        native = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
        x = torch.randn(7, 5)
        probe = 2
    return bnn.convert(native, feedback=spec), x, probe


def backward_signal(model, x, e, probe):
    """(error reaching the input of layer ``probe``, error leaving it at its output)."""
    store = {}

    def hook(mod, inp, out):
        inp[0].retain_grad()
        out.retain_grad()
        store["in"], store["out"] = inp[0], out

    handle = model[probe].register_forward_hook(hook)
    model(x).backward(e)
    handle.remove()
    return store["in"].grad, store["out"].grad


def expected_signal(model, probe, e, g, x_shape):
    layer = model[probe]
    b = layer.feedback.matrix()
    if layer.feedback.direct:
        out = model[-1].feedback.hub.matrix_all
        offset, width = layer.feedback.slot
        block = (e @ out)[:, offset:offset + width]
        return block.reshape(block.shape[0], width, *([1] * (len(x_shape) - 2))).expand(x_shape)
    if isinstance(layer, bnn.Linear):
        return g @ b
    if layer.feedback.untied:  # one dense B from the whole output map to the whole input map
        return (g.flatten(1) @ b).reshape(x_shape)
    return torch.nn.grad.conv2d_input(x_shape, b, g, layer.stride, layer._padding_ints, layer.dilation, layer.groups)


def test_every_rule_has_samples():
    assert set(SAMPLES) == set(RULES), f"missing: {set(RULES) - set(SAMPLES)}, stale: {set(SAMPLES) - set(RULES)}"


@pytest.mark.parametrize("name, i", CASES)
@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_backward_sends_B(f64, name, i, conv):
    model, x, probe = build(samples(name)[i], conv)
    assert model[probe].feedback.name == name
    e = torch.randn(x.shape[0], 3)
    got, g = backward_signal(model, x, e, probe)
    assert torch.equal(got, expected_signal(model, probe, e, g, got.shape))


@pytest.mark.parametrize("name, i", CASES)
def test_state_dict_round_trip(f64, name, i):
    a, x, probe = build(samples(name)[i], conv=True)
    torch.manual_seed(123)
    b, _, _ = build(samples(name)[i], conv=True)
    with torch.no_grad():  # a forward first: DenseFA draws its B there
        a(x), b(x)
    for la in a:  # B in use before loading (fills any per-step cache)
        if isinstance(la, bnn.FeedbackLayer):
            la.feedback.matrix()
    a.load_state_dict(b.state_dict())
    for la, lb in zip(a, b):
        if isinstance(la, bnn.FeedbackLayer):
            assert torch.equal(la.feedback.matrix(), lb.feedback.matrix())
            assert torch.equal(la.weight, lb.weight)
    e = torch.randn(x.shape[0], 3)
    ga = backward_signal(a, x, e, probe)[0]
    gb = backward_signal(b, x, e, probe)[0]
    assert torch.equal(ga, gb)
    keys = set(a.state_dict())
    if name in ("fa", "densefa", "frsf", "brsf", "kp", "wm", "dfa"):  # its B (or the state that makes it) is saved
        assert any(".feedback." in k for k in keys)


@pytest.mark.parametrize("name, i", CASES)
def test_dtype_moves(f64, name, i):
    model, x, probe = build(samples(name)[i], conv=False)
    before = [m.feedback.matrix() for m in model if isinstance(m, bnn.FeedbackLayer)]
    model.to(torch.float32)
    after = [m.feedback.matrix() for m in model if isinstance(m, bnn.FeedbackLayer)]
    for b0, b1 in zip(before, after):
        assert b1.dtype == torch.float32
        torch.testing.assert_close(b1, b0.float())
    e = torch.randn(x.shape[0], 3)
    got, g = backward_signal(model, x.float(), e.float(), probe)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected_signal(model, probe, e.float(), g, got.shape))
    model.to(torch.float64)  # and back: B is the float32 one, widened
    for b1, m in zip(after, [m for m in model if isinstance(m, bnn.FeedbackLayer)]):
        b2 = m.feedback.matrix()
        assert b2.dtype == torch.float64
        torch.testing.assert_close(b2, b1.double(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, i", CASES)
def test_deepcopy(f64, name, i):
    model, x, probe = build(samples(name)[i], conv=False)
    clone = copy.deepcopy(model)
    for a, b in zip(model, clone):
        if isinstance(a, bnn.FeedbackLayer):
            assert b.feedback._owner is b
            assert torch.equal(a.feedback.matrix(), b.feedback.matrix())
            for ta, tb in zip(a.feedback.state_dict().values(), b.feedback.state_dict().values()):
                assert ta.data_ptr() != tb.data_ptr()
    e = torch.randn(x.shape[0], 3)
    assert torch.equal(backward_signal(model, x, e, probe)[0], backward_signal(clone, x, e, probe)[0])


@pytest.mark.parametrize("name, i", CASES)
def test_repr_and_config(name, i):
    spec = samples(name)[i]
    layer = bnn.Linear(4, 3, feedback=spec)
    rule = layer.feedback
    assert f"feedback={name!r}" in repr(layer)
    assert type(rule).__name__ in repr(layer)
    for key, value in rule.config().items():
        assert f"{key}={value!r}" in repr(rule)
    same = make_feedback(spec)
    assert type(same) is type(rule) and same.config() == rule.config()
    assert rule.clone().config() == rule.config()
    if isinstance(spec, dict):
        assert {k: v for k, v in spec.items() if k != "rule"}.items() <= rule.config().items()


# -- E/I architectures (biofa.nn.EI): every rule on every weight matrix ------------------------
ARCHITECTURES = {"free": "free", "projection": "projection", "colei": "colei", "dann": "dann",
                 "dann_shunting": {"rule": "dann", "shunting": True}}


def test_every_architecture_is_covered():
    names = {a if isinstance(a, str) else a["rule"] for a in ARCHITECTURES.values()}
    assert names == set(bnn.EI), f"add {set(bnn.EI) - names} to ARCHITECTURES"


def build_ei(spec, ei, net="mlp"):
    """An MLP, or a small 1-d CNN (two convolutions and a linear read-out), converted under ``ei``;
    ReLU between layers and inputs in [0, 1]: a DANN's inputs are rates (non-negative), which keeps
    the shunting form's denominator positive."""
    if net == "mlp":
        native = nn.Sequential(nn.Linear(5, 20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3))
        shape = (7, 5)
    else:
        native = nn.Sequential(nn.Conv1d(2, 10, 3, padding=1), nn.ReLU(), nn.Conv1d(10, 4, 3), nn.ReLU(),
                               nn.Flatten(), nn.Linear(4 * 6, 3))
        shape = (7, 2, 8)
    import warnings

    from biofa.errors import DegenerateFeedbackWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateFeedbackWarning)  # uSF under Dale: marked, still runs
        return bnn.convert(native, feedback=spec, sign="dale", ei=ei), torch.rand(shape)


def _through_B(layer, inp, grad_out):
    """The input gradient a layer's B gives: g B (Linear), the transposed convolution of g with B."""
    B = layer.feedback.matrix()
    if isinstance(layer, bnn.Linear):
        return grad_out @ B
    fn = torch.nn.grad.conv1d_input if isinstance(layer, bnn.Conv1d) else torch.nn.grad.conv2d_input
    return fn(inp.shape, B, grad_out, layer.stride, layer._pad_in_conv, layer.dilation, layer.groups)


def _matrices(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, bnn.FeedbackLayer)]


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("name, i", CASES)
def test_ei_backward_sends_B_for_every_matrix(f64, name, i, arch, net):
    model, x = build_ei(samples(name)[i], ARCHITECTURES[arch], net)
    calls = {}

    def own_input(mod, args):  # each call gets its own input node, so its .grad is this layer's alone
        inp = args[0].clone()
        inp.retain_grad()
        calls.setdefault(mod, []).append(inp)
        return (inp,)

    def keep_output(mod, args, out):
        out.retain_grad()
        calls[mod][-1] = (calls[mod][-1], out)

    layers = _matrices(model)
    handles = [h for _, m in layers for h in (m.register_forward_pre_hook(own_input), m.register_forward_hook(keep_output))]
    e = torch.randn(x.shape[0], 3)
    model(x.requires_grad_(True)).backward(e)
    for h in handles:
        h.remove()
    assert len(layers) == (9 if arch.startswith("dann") else 3)
    for _, layer in layers:
        assert layer.feedback.name == name
        if layer.feedback.direct or name == "densefa":
            continue  # DFA's signal comes from the output, DenseFA's B is dense (test_backward_sends_B)
        for inp, out in calls[layer]:  # the shunting DANN uses W_EI twice: both errors go through B
            torch.testing.assert_close(inp.grad, _through_B(layer, inp, out.grad), rtol=0, atol=1e-12)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("name, i", CASES)
def test_ei_trains_dale_compliant_and_round_trips(name, i, arch, net):
    from biofa.constraints import dale_violations
    model, x = build_ei(samples(name)[i], ARCHITECTURES[arch], net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    target = torch.randint(0, 3, (7,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    violations = dale_violations(model)
    if arch == "free":  # no sign constraint on any layer, whatever sign says
        assert all(layer.sign is None for _, layer in _matrices(model)) and not any(violations.values())
    else:
        assert len(violations) == len(_matrices(model)) and not any(violations.values())
    torch.manual_seed(5)
    other, _ = build_ei(samples(name)[i], ARCHITECTURES[arch], net)
    with torch.no_grad():
        model(x), other(x)  # DenseFA draws its B at the first input
    other.load_state_dict(model.state_dict())
    for (_, a), (_, b) in zip(_matrices(model), _matrices(other)):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.feedback.matrix(), b.feedback.matrix())
    assert torch.equal(model(x), other(x))
