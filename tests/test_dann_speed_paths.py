"""The shortcuts that keep a DANN layer's training step cheap compute what the plain path computes.

The forward skips the sign clamp of a compliant weight after one ``amin`` check
(:func:`biofa.constraints.functional._complies`); the optimizer hook projects W in place without
writing it back onto itself. Both must be invisible: the same outputs and gradients, bit for bit,
as the clamp that always runs, and a weight made negative between two steps, by any write, must
still be clamped by the next forward."""

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import biofa.nn as bnn
from biofa.constraints import functional as cf

DTYPES = [torch.float32, torch.float64]


def trained_dann(dtype, feedback="bp", steps=3):
    """A DANN layer after a few SGD steps: the hook has projected, some weights sit at exactly 0."""
    torch.manual_seed(0)
    layer = bnn.DANNLinear(30, 20, feedback=feedback, n_inhibitory=4, dtype=dtype)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(16, 30, dtype=dtype)
    for _ in range(steps):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    return layer


def step_grads(layer, x):
    """Output and the gradients of the input and every parameter for the loss sum(h^2)."""
    x = x.clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    h = layer(x)
    h.square().sum().backward()
    return [h.detach(), x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("feedback", ["bp", "fa"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_skipping_the_clamp_is_bit_equal_to_the_clamp(monkeypatch, dtype, feedback):
    layer = trained_dann(dtype, feedback)
    sub_layers = (layer.ee, layer.ie, layer.ei)
    assert any(bool((m.weight == 0).any()) for m in sub_layers)  # the projection has clamped some
    for m in sub_layers:  # the check finds W compliant: the forward uses W itself
        assert m._weight_for_forward() is m.weight
    x = torch.randn(8, 30, dtype=dtype)
    fast = step_grads(layer, x)
    monkeypatch.setattr(cf, "_complies", lambda weight, signs: False)  # the clamp at every forward
    for m in sub_layers:
        assert m._weight_for_forward() is not m.weight
    clamped = step_grads(layer, x)
    assert len(fast) == len(clamped) == 6
    for a, b in zip(fast, clamped):
        assert a.dtype == dtype and torch.equal(a, b)


def write_negative(path, w):
    """Make W[0, 0] = -1 through ``path``, behind the optimizer hook's back."""
    if path == "data item":
        w.data[0, 0] = -1.0
    elif path == "data -=":
        delta = torch.zeros_like(w)
        delta[0, 0] = w.detach()[0, 0] + 1.0
        w.data -= delta
    elif path == "numpy":
        w.detach().numpy()[0, 0] = -1.0
    elif path == "vector_to_parameters":
        vec = parameters_to_vector([w])
        vec[0] = -1.0
        vector_to_parameters(vec, [w])
    elif path == "no_grad in place":
        with torch.no_grad():
            w[0, 0] = -1.0
    else:
        raise AssertionError(path)


@pytest.mark.parametrize("path", ["data item", "data -=", "numpy", "vector_to_parameters", "no_grad in place"])
@pytest.mark.parametrize("sub", ["ee", "ie", "ei"])
def test_a_weight_made_negative_after_a_step_is_clamped_by_the_next_forward(f64, sub, path):
    layer = trained_dann(torch.float64)
    x = torch.randn(8, 30)
    layer(x)  # a forward of the projected W: a cache keyed on W's version would now hold "complies"
    w = getattr(layer, sub).weight
    version = w._version
    write_negative(path, w)
    assert float(w.detach()[0, 0]) < 0
    if path in ("data item", "data -=", "numpy"):
        # these writes leave the version counter alone: why the forward checks W itself
        # rather than trusting "unchanged since the hook projected it"
        assert w._version == version
    layer.zero_grad(set_to_none=True)
    projected = {name: getattr(layer, name).weight.detach().clamp(min=0) for name in ("ee", "ie", "ei")}
    expected = (x @ projected["ee"].T - (x @ projected["ie"].T) @ projected["ei"].T) + layer.bias.detach()
    h = layer(x)
    assert torch.equal(h, expected)
    h.square().sum().backward()
    assert float(w.grad[0, 0]) == 0.0  # the clamp's gradient: nothing flows to a clamped synapse


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_the_check_decides_as_min_did(dtype):
    """``amin`` against the former ``min()``: the same decision on signed zeros, infinities,
    denormals and NaN at every position (the vectorised body and the tail of the reduction)."""
    tiny = torch.finfo(dtype).tiny
    specials = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), -tiny / 4, tiny / 4, -1.0]
    for n in (1, 7, 33, 1000):
        for pos in {0, n // 2, n - 1}:
            for value in specials:
                w = torch.rand(n, dtype=dtype)
                w[pos] = value
                old = bool(w.min() >= 0)
                assert cf._complies(w, None) == old, (n, pos, value)
                signs = torch.where(torch.rand(n) < 0.5, 1.0, -1.0).to(dtype)
                ws = w * signs
                assert cf._complies(ws, signs) == bool((ws * signs).min() >= 0), (n, pos, value)
                held = cf.hold_nonnegative(w)
                if old:
                    assert held is w
                else:
                    torch.testing.assert_close(held, w.clamp(min=0), rtol=0, atol=0, equal_nan=True)


def test_a_nan_weight_takes_the_clamp(f64):
    """NaN fails the check (the clamp runs, as before the check existed): NaN passes through the
    clamp and its gradient there is 0."""
    w = torch.rand(4, 5)
    w[1, 2] = float("nan")
    w.requires_grad_()
    held = cf.hold_nonnegative(w)
    assert held is not w and torch.equal(held.isnan(), w.isnan())
    held.sum().backward()
    assert float(w.grad[1, 2]) == 0.0 and float(w.grad[0, 0]) == 1.0


@pytest.mark.parametrize("options", [{"sign": {"rule": "dale", "e_fraction": 1.0}}, {"sign": "dale"},
                                     {"sign": "fixed"}, {"sign": {"rule": "dale", "enforce": "abs"}, "norm": "const"},
                                     {"sign": "dale", "norm": "const"}])
def test_the_hook_leaves_a_compliant_stored_weight(f64, options):
    """Projected in place (Dale, every unit excitatory) or written back (mixed signs, norms, a
    reparameterised sign): after every step the stored W complies and the forward uses it as is."""
    layer = bnn.Linear(12, 9, **options)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    x = torch.randn(5, 12)
    for _ in range(3):
        opt.zero_grad()
        layer(x).square().sum().backward()
        opt.step()
        w = layer.weight.detach()
        if layer.sign is not None:
            assert cf.violations(w, layer.sign.signs) == 0
        if layer.norm is not None:
            torch.testing.assert_close(w.norm(), layer.norm.target, rtol=1e-14, atol=0)
        assert torch.equal(layer._weight_for_forward().detach(), w)
