"""Constraints hold on the weight every forward uses, whatever wrote the parameter: an optimizer,
``p.data -= g``, ``p.data = ...``, ``vector_to_parameters``, ``load_state_dict``. The forward-time
projection is the identity, bit for bit and gradient included, on a compliant weight."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import biofa.nn as bnn
from biofa import constraints as bc
from biofa.constraints import functional as cf

CONSTRAINTS = {"dale": {"sign": "dale"}, "const": {"norm": "const"},
               "dale+const-unit": {"sign": "dale", "norm": {"rule": "const", "per": "unit"}}}


def layer_of(kind, options):
    if kind == "linear":
        return bnn.Linear(6, 4, **options)
    return bnn.Conv2d(3, 4, 3, **options)


def input_for(layer):
    return torch.randn(5, 6) if isinstance(layer, bnn.Linear) else torch.randn(2, 3, 5, 5)


def native(layer, x, w):
    if isinstance(layer, bnn.Linear):
        return F.linear(x, w, layer.bias)
    return F.conv2d(x, w, layer.bias)


def projected(layer, w):
    """What the optimizer hook would write: sign projection, then the norm."""
    if layer.sign is not None:
        w = layer.sign.project(w)
    if layer.norm is not None:
        w = layer.norm.project(w)
    return w


def write(path, layer, bad):
    """Write ``bad`` into W through ``path``; returns the value written (``p.data -= g`` rounds)."""
    p = layer.weight
    if path == "data -=":
        p.data -= p.data - bad
    elif path == "data =":
        p.data = bad.clone()
    elif path == "vector_to_parameters":
        vec = parameters_to_vector(layer.parameters())
        vec[: p.numel()] = bad.reshape(-1)
        vector_to_parameters(vec, layer.parameters())
    elif path == "load_state_dict":
        layer.load_state_dict({**layer.state_dict(), "weight": bad.clone()})
        return bad  # the stored weight is projected at load time already
    elif path == "no_grad in place":
        with torch.no_grad():
            p.copy_(bad)
    else:
        raise AssertionError(path)
    return p.detach().clone()


PATHS = ["data -=", "data =", "vector_to_parameters", "load_state_dict", "no_grad in place"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_every_write_path_is_projected_before_use(f64, kind, constraint, path):
    for seed in range(3):
        torch.manual_seed(seed)
        layer = layer_of(kind, CONSTRAINTS[constraint])
        w0 = layer.weight.detach().clone()
        # breaks Dale's law (flipped entries) and the norm (x2.5); each unit keeps one synapse
        # (a unit with all synapses clamped to 0 has no norm to restore)
        flip = torch.rand_like(w0) < 0.3
        flip.view(len(w0), -1)[:, 0] = False
        bad = torch.where(flip, -w0, w0) * 2.5
        if layer.sign is not None:
            assert cf.violations(bad, layer.sign.signs) > 0
        written = write(path, layer, bad)
        expected = projected(layer, written)
        x = input_for(layer)
        y = layer(x)
        assert torch.equal(y, native(layer, x, expected))
        if layer.sign is not None:
            assert cf.violations(expected, layer.sign.signs) == 0
        if layer.norm is not None:
            torch.testing.assert_close(cf.unit_norms(expected, layer.norm.per_unit), layer.norm.target,
                                       rtol=1e-14, atol=0)
        # the next optimizer step leaves a compliant stored weight
        opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        y.square().sum().backward()
        opt.step()
        check_stored(layer)
        if path == "load_state_dict":  # projected at load time already, not only at use
            layer.load_state_dict({**layer.state_dict(), "weight": bad})
            assert torch.equal(layer.weight.detach(), expected)


def check_stored(layer):
    """The stored W complies, and the forward then uses W itself."""
    w = layer.weight.detach()
    if layer.sign is not None:
        assert cf.violations(w, layer.sign.signs) == 0
    if layer.norm is not None:
        torch.testing.assert_close(cf.unit_norms(w, layer.norm.per_unit), layer.norm.target, rtol=1e-14, atol=0)
    assert torch.equal(layer._weight_for_forward().detach(), w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per", ["layer", "unit"])
def test_forward_projection_is_the_identity_on_compliant_weights(dtype, per):
    """After the hook's projection the forward's check finds the norm at its target (derived
    tolerance, see norm_tolerance), so the forward and its gradients are W's own, bit for bit."""
    for seed, (n_out, n_in) in enumerate([(1000, 784), (10, 1000), (64, 27), (3, 5)]):
        torch.manual_seed(seed)
        layer = bnn.Linear(n_in, n_out, sign="dale", norm={"rule": "const", "per": per}, dtype=dtype)
        opt = torch.optim.Adam(layer.parameters(), lr=0.05)
        x = torch.randn(16, n_in, dtype=dtype)
        for _ in range(4):
            opt.zero_grad()
            layer(x).square().mean().backward()
            opt.step()
            w = layer.weight.detach()
            wa, wb = w.clone().requires_grad_(), w.clone().requires_grad_()
            ya = F.linear(x, wa)
            yb = F.linear(x, layer.norm.hold(layer.sign.hold(wb)))  # what the forward does
            ya.square().sum().backward()
            yb.square().sum().backward()
            assert torch.equal(ya, yb) and torch.equal(wa.grad, wb.grad), (seed, n_out, n_in)


def test_norm_tolerance_accepts_rounding_only():
    w = torch.randn(100, 50, dtype=torch.float64)
    target = w.norm()
    tol = cf.norm_tolerance(w, per_unit=False)
    assert torch.equal(cf.hold_norm(w, target, False), w)
    scaled = w * (1 + 10 * tol)  # a write that moves the norm by more than rounding can
    torch.testing.assert_close(cf.hold_norm(scaled, target, False).norm(), target, rtol=1e-15, atol=0)
    zero = torch.zeros(4, 3)
    assert torch.equal(cf.hold_norm(zero, torch.ones(4), True), zero)


def test_forward_projection_compiles_without_graph_breaks():
    signs = torch.tensor([1.0, 1.0, -1.0])
    target = torch.tensor([1.0, 2.0])

    def forward_weight(w):
        return cf.hold_norm(cf.hold_signs(w, signs), target, True)

    compiled = torch.compile(forward_weight, backend="eager", fullgraph=True)  # fullgraph: no break
    w = torch.randn(2, 3)
    assert torch.equal(compiled(w), forward_weight(w))
