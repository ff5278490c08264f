"""torch.compile: forward and backward trace without graph breaks, a compiled training step does
not recompile after warm-up, and compiled gradients equal eager ones (float64, exact)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

import biofa.feedback as fb
import biofa.nn as bnn

NO_BREAK = ["fa", "usf", "frsf", "brsf", "dfa", "kp"]

# torch's own deprecation warnings, raised by dynamo's internals while it traces autograd functions
# and the optimizer
pytestmark = [pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def tiny(rule, generator):
    native = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    return bnn.convert(native, feedback=rule, generator=generator)


def tiny_conv(rule, generator):
    native = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    return bnn.convert(native, feedback=rule, generator=generator)


def data(step, conv=False):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(4, 2, 4, 4, generator=g) if conv else torch.randn(4, 5, generator=g)
    return x, torch.randint(0, 3, (4,), generator=g)


@pytest.mark.parametrize("conv", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["mlp", "conv"])
@pytest.mark.parametrize("rule", NO_BREAK)
def test_forward_and_backward_trace_as_one_graph(f64, rule, conv):
    """fullgraph=True raises on any graph break, in the forward or in the autograd functions'
    backward, which dynamo traces when it meets them; gradients equal eager ones bit for bit."""
    for build in (tiny_conv if conv else tiny,):
        model = build(rule, torch.Generator().manual_seed(0))
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        x, y = data(0, conv)
        fb.reset_step(5)
        F.cross_entropy(compiled(x), y).backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for a, b in zip(got, (p.grad for p in model.parameters())):
            assert torch.equal(a, b)
    assert sum(counters["graph_break"].values()) == 0


def train(model, steps, compiled: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    run = torch.compile(step, backend="aot_eager") if compiled else step
    graphs = []
    fb.reset_step(0)
    for i in range(steps):
        run(*data(i))
        graphs.append(counters["stats"]["unique_graphs"])
    return graphs


def check_step(rule, steps=5):
    model = tiny(rule, torch.Generator().manual_seed(0))
    twin = copy.deepcopy(model)
    graphs = train(model, steps, compiled=True)
    breaks = sum(counters["graph_break"].values())
    train(twin, steps, compiled=False)
    for (n, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), n
    assert graphs[1] == graphs[-1], f"recompiled after warm-up: unique graphs {graphs}"
    return breaks


def native_breaks(steps=5):
    """Graph breaks of the same step for a plain torch model (zero_grad, backward, the
    optimizer's own breaks): the baseline every rule must match."""
    counters.clear()
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    train(model, steps, compiled=True)
    n = sum(counters["graph_break"].values())
    torch._dynamo.reset()
    counters.clear()
    return n


@pytest.mark.parametrize("rule", ["brsf", "dfa"])
def test_compiled_training_step_no_recompiles_equals_eager(f64, rule):
    baseline = native_breaks()
    assert check_step(rule) == baseline


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["bp", "fa", "usf", "frsf", "kp", "wm"])
def test_compiled_training_step_every_rule(f64, rule):
    baseline = native_breaks()
    breaks = check_step(rule)
    if rule != "wm":  # weight mirror draws its noise from a torch.Generator: eager backward
        assert breaks == baseline


def test_brsf_compiled_draw_equals_eager_draw():
    """The step is read from a tensor inside the graph: the same B as eager, every step, one graph."""
    layer = bnn.Linear(9, 7, feedback="brsf")
    w = layer.weight.detach()
    draw = torch.compile(lambda weight: layer.feedback.magnitudes(weight), fullgraph=True, backend="aot_eager")
    for step in (0, 1, 2, 2**33 + 5):
        fb.reset_step(step)
        layer.feedback._cache = None
        assert torch.equal(draw(w), layer.feedback.magnitudes(w))
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["brsf", "dfa"])
def test_inductor_gradients_match_eager(rule):
    """With inductor (generated C++ kernels; float32, fused) gradients agree to rounding."""
    model = tiny_conv(rule, torch.Generator().manual_seed(0))
    compiled = torch.compile(model)
    x, y = data(0, conv=True)
    fb.reset_step(3)
    F.cross_entropy(compiled(x), y).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    for a, b in zip(got, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
