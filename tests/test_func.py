"""torch.func: grad, vmap and functional_call through every rule, in float64 against eager autograd."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import biofa.feedback as fb
import biofa.nn as bnn

RULES = ["bp", "fa", "densefa", "usf", "frsf", "brsf", "dfa", "kp", "wm"]


def model_for(rule, conv: bool, generator):
    if conv:
        native = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                               nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 3))
        x = torch.randn(6, 2, 4, 4, generator=generator)
    else:
        native = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))
        x = torch.randn(6, 5, generator=generator)
    y = torch.randint(0, 3, (6,), generator=generator)
    return bnn.convert(native, feedback=rule, generator=generator), x, y


def eager_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def reset_noise(model):
    for m in model.modules():
        if isinstance(m, bnn.FeedbackLayer) and isinstance(m.feedback, fb.WeightMirror):
            m.feedback.draws.zero_()


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
@pytest.mark.parametrize("rule", RULES)
def test_func_grad_equals_eager(f64, rule, conv):
    model, x, y = model_for(rule, conv, torch.Generator().manual_seed(1))
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p):
        return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y)

    reset_noise(model)
    fb.next_step()  # a step not drawn yet: brSF draws inside the transform
    got = grad(loss)(params)
    reset_noise(model)
    ref = eager_grads(model, x, y)
    assert got.keys() == ref.keys()
    for n in ref:
        assert torch.equal(got[n], ref[n]), n


@pytest.mark.parametrize("rule", RULES)
def test_vmap_per_sample_gradients_equal_a_loop(f64, rule):
    model, x, y = model_for(rule, False, torch.Generator().manual_seed(2))
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    # weight mirror draws noise in backward: every sample sees the same draw under "same"
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0), randomness="same")(params, x, y)
    for i in range(len(x)):
        reset_noise(model)
        ref = eager_grads(model, x[i:i + 1], y[i:i + 1])
        for n in ref:
            if rule == "wm" and n.endswith("feedback.B"):
                continue  # one noise draw per batched backward vs one per sample
            torch.testing.assert_close(per_sample[n][i], ref[n], rtol=1e-12, atol=1e-14, msg=n)


@pytest.mark.parametrize("rule", ["fa", "frsf", "kp", "wm"])
def test_functional_call_uses_the_substituted_feedback(f64, rule):
    """|x.grad − g @ B_sub| = 0: the B of a backward is the tensor substituted for the forward."""
    layer = bnn.Linear(5, 4, feedback=rule)
    name = "feedback.magnitude" if rule == "frsf" else "feedback.B"
    sub = torch.rand(4, 5) + 0.5  # positive: frSF's magnitudes
    x, g = torch.randn(3, 5, requires_grad=True), torch.randn(3, 4)
    functional_call(layer, {name: sub}, (x,)).backward(g)
    expected = g @ (sub * torch.sign(layer.weight.detach()) if rule == "frsf" else sub)
    assert float((x.grad - expected).abs().max()) == 0.0
    # and the module's own B is what a plain call uses
    x.grad = None
    layer(x).backward(g)
    assert torch.equal(x.grad, g @ layer.feedback.matrix())


def test_functional_call_substitutes_the_dfa_matrix(f64):
    model = bnn.convert(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), feedback="dfa")
    hub_name = "2.feedback.hub.matrix_all"
    sub = torch.randn(3, 12)
    h = torch.randn(4, 7, requires_grad=True)
    e = torch.randn(4, 3)
    out = functional_call(model, {hub_name: sub}, (torch.randn(4, 5),))
    functional_call(model[2], {"feedback.hub.matrix_all": sub}, (h,)).backward(e)
    offset, width = model[2].feedback.slot
    assert float((h.grad - (e @ sub)[:, offset:offset + width]).abs().max()) == 0.0  # the one matmul, sliced
    assert out.shape == (4, 3)


def test_functional_call_does_not_write_into_the_callers_weight(f64):
    layer = bnn.Linear(6, 4, feedback="fa", sign="dale")
    bad = torch.randn(4, 6)  # violates Dale's law
    kept = bad.clone()
    version = bad._version
    x = torch.randn(3, 6)
    out = functional_call(layer, {"weight": bad}, (x,))
    assert torch.equal(bad, kept) and bad._version == version
    projected = layer.sign.project(kept)
    torch.testing.assert_close(out, x @ projected.T + layer.bias, rtol=1e-15, atol=1e-15)
    # gradients pass straight through the projection, as for the module's own weight
    w = layer.weight.detach()

    def loss(weight):
        return functional_call(layer, {"weight": weight}, (x,)).sum()

    ref = torch.autograd.grad(layer(x).sum(), layer.weight)[0]
    assert torch.equal(grad(loss)(w), ref)


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_eager_calls_skip_torchs_argument_binding(f64, rule, monkeypatch):
    # torch binds apply()'s arguments with inspect.signature once setup_context is defined
    # (~0.1 ms a call); biofa's functions take positional arguments only and skip it in eager
    # mode, and still take torch's path (which binds) under a transform.
    bound = []
    signature = inspect.signature

    def counting(fn, *args, **kwargs):
        bound.append(fn)
        return signature(fn, *args, **kwargs)

    model, x, y = model_for(rule, False, torch.Generator().manual_seed(3))
    ref = eager_grads(model, x, y)
    monkeypatch.setattr(inspect, "signature", counting)
    got = eager_grads(model, x, y)
    assert bound == []
    for n in ref:
        assert torch.equal(got[n], ref[n]), n
    params = {n: p.detach() for n, p in model.named_parameters()}
    grad(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))(params)
    assert bound  # the transform went through torch.autograd.Function.apply
