"""Sign and norm constraints (docs/background.rst): compliance is exactly zero violations, the
optimizer keeps training the same Parameter, norms are kept, and uSF under Dale is degenerate."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofa.nn as bnn
from biofa import constraints as bc
from biofa.errors import ConfigError, DegenerateFeedbackWarning, ShapeError

ENFORCE = ["project", "abs", "relu", "softplus"]


def constrained_net(sign, norm=None, feedback="fa"):
    return nn.Sequential(
        bnn.Conv2d(3, 4, 3, padding=1, feedback=feedback, sign=sign, norm=norm), nn.ReLU(),
        bnn.Conv2d(4, 4, 3, groups=2, feedback=feedback, sign=sign, norm=norm), nn.ReLU(), nn.Flatten(),
        bnn.Linear(4 * 3 * 3, 6, feedback=feedback, sign=sign, norm=norm), nn.ReLU(),
        bnn.Linear(6, 3, feedback=feedback, sign=sign, norm=norm))


def expected_signs(layer):
    return layer.sign.signs.expand_as(layer.weight)


@pytest.mark.parametrize("enforce", ENFORCE)
@pytest.mark.parametrize("rule", ["dale", "fixed"])
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_sign_compliance_under_large_steps(f64, enforce, rule, optim):
    model = constrained_net({"rule": rule, "enforce": enforce})
    raw = [m._raw_weight() for m in model if isinstance(m, bnn.FeedbackLayer)]
    opt = (torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9) if optim == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.3))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in raw)
    start = [m.weight.detach().clone() for m in model if isinstance(m, bnn.FeedbackLayer)]
    x, y = torch.randn(8, 3, 5, 5), torch.randint(0, 3, (8,))
    for _ in range(15):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        assert all(v == 0 for v in bc.dale_violations(model).values())
    layers = [m for m in model if isinstance(m, bnn.FeedbackLayer)]
    for layer, p, w0 in zip(layers, raw, start):
        assert layer._raw_weight() is p  # still the Parameter the optimizer holds
        assert not torch.equal(layer.weight.detach(), w0)  # and it did learn
        w = layer.weight.detach()
        assert bool((w * expected_signs(layer) >= 0).all())
        assert bc.functional.violations(w, layer.sign.signs) == 0
    if enforce == "project":  # projection clamps violators to exactly zero
        assert any(bool((layer.weight == 0).any()) for layer in layers)


def test_dale_signs_are_per_presynaptic_unit(f64):
    lin = bnn.Linear(10, 4, sign="dale")
    s = lin.sign.signs
    assert s.shape == (1, 10) and int((s > 0).sum()) == 8
    assert bool((lin.weight[:, :8] >= 0).all()) and bool((lin.weight[:, 8:] <= 0).all())
    conv = bnn.Conv2d(4, 6, 3, groups=2, sign={"rule": "dale", "types": ["E", "I", "I", "E"]})
    per_out = conv.sign.signs[:, :, 0, 0]
    assert per_out.tolist() == [[1, -1]] * 3 + [[-1, 1]] * 3  # channels (0,1) for group 0, (2,3) for group 1
    fixed = bnn.Linear(30, 20, sign={"rule": "fixed", "p_positive": 0.5})
    assert fixed.sign.signs.shape == (20, 30)
    assert torch.linalg.matrix_rank(fixed.sign.signs) > 1  # full rank, not Dale


def test_projection_and_reparameterisation_math(f64):
    w = torch.tensor([[0.5, -0.2], [-0.3, 0.1]])
    s = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    assert torch.equal(bc.functional.project_signs(w, s), torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    m = torch.tensor([0.0, 1e-3, 0.7, 25.0])
    for phi in ("abs", "relu", "softplus"):
        v = bc.functional.phi_inverse(phi, m)
        torch.testing.assert_close(bc.functional.PHI[phi](v), m, rtol=1e-12, atol=1e-150)


def test_weights_changed_by_hand_are_projected_before_use(f64):
    lin = bnn.Linear(5, 3, sign="dale", norm="const")
    with torch.no_grad():
        lin.weight.add_(torch.randn(3, 5)).mul_(3.0)
    assert bc.dale_violations(nn.Sequential(lin))["0"] > 0
    x = torch.randn(2, 5)
    w = lin.norm.project(lin.sign.project(lin.weight.detach()))  # what the forward uses
    assert torch.equal(lin(x), F.linear(x, w, lin.bias))
    assert bc.functional.violations(w, lin.sign.signs) == 0
    torch.testing.assert_close(w.norm(), lin.norm.target, rtol=1e-14, atol=0)
    bc.enforce(lin)  # the stored weight: by the next optimizer step, or now on demand
    assert bc.dale_violations(nn.Sequential(lin)) == {"0": 0}


@pytest.mark.parametrize("per", ["layer", "unit"])
@pytest.mark.parametrize("sign", [None, "dale", {"rule": "fixed", "enforce": "softplus"}])
def test_const_norm_keeps_the_norm(f64, per, sign):
    model = constrained_net(sign, norm={"rule": "const", "per": per})
    layers = [m for m in model if isinstance(m, bnn.FeedbackLayer)]
    targets = [bc.functional.unit_norms(m.weight.detach(), per == "unit") for m in layers]
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    x, y = torch.randn(8, 3, 5, 5), torch.randint(0, 3, (8,))
    start = [m.weight.detach().clone() for m in layers]
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for m, t in zip(layers, targets):
            torch.testing.assert_close(bc.functional.unit_norms(m.weight.detach(), per == "unit"), t,
                                       rtol=1e-13, atol=0)
    assert all(not torch.equal(m.weight.detach(), w0) for m, w0 in zip(layers, start))
    for m, t in zip(layers, targets):  # the target is the initial norm (up to φ(φ⁻¹(w)) rounding)
        torch.testing.assert_close(m.norm.target, t, rtol=1e-14, atol=0)


def test_copies_and_dtype_moves_keep_constraints(f64):
    model = constrained_net({"rule": "fixed", "enforce": "project"}, norm="const")
    other = constrained_net({"rule": "fixed", "enforce": "project"}, norm="const")
    other.load_state_dict(model.state_dict())
    for a, b in zip(model, other):
        if isinstance(a, bnn.FeedbackLayer):
            assert torch.equal(a.sign.signs, b.sign.signs) and torch.equal(a.norm.target, b.norm.target)
    clone = copy.deepcopy(model)
    opt = torch.optim.SGD(clone.parameters(), lr=5.0)
    clone(torch.randn(4, 3, 5, 5)).sum().backward()
    opt.step()  # the copy is projected by the optimizer hook too
    assert all(v == 0 for v in bc.dale_violations(clone).values())
    model.to(torch.float32)
    assert all(m.sign.signs.dtype == torch.float32 for m in model if isinstance(m, bnn.FeedbackLayer))
    reparam = bnn.Linear(4, 3, sign={"rule": "dale", "enforce": "abs"}, norm="const")
    rclone = copy.deepcopy(reparam)
    opt = torch.optim.SGD(rclone.parameters(), lr=5.0)
    rclone(torch.randn(2, 4)).square().sum().backward()
    opt.step()
    torch.testing.assert_close(rclone.weight.norm(), rclone.norm.target, rtol=1e-13, atol=0)


def test_usf_under_dale_is_degenerate(f64):
    with pytest.warns(DegenerateFeedbackWarning, match="rank one"):
        net = nn.Sequential(bnn.Linear(6, 8, feedback="usf"), nn.ReLU(), bnn.Linear(8, 4, feedback="usf", sign="dale"))
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    h = net[1](net[0](x)).detach().requires_grad_(True)
    out = net[2](h)
    F.cross_entropy(out, y).backward()
    e_scale = (out.detach().softmax(1) - F.one_hot(y, 4)).abs().max() / 16
    assert float(h.grad.abs().max()) <= 1e-15 * float(e_scale)  # zero up to rounding of sum_k e_k
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = bnn.Linear(8, 4, feedback="usf", sign="fixed")
    h = h.detach().requires_grad_(True)
    F.cross_entropy(fixed(h), y).backward()
    assert float(h.grad.abs().max()) > 1e-4
    with pytest.warns(DegenerateFeedbackWarning):
        bnn.convert(nn.Sequential(nn.Linear(3, 2)), feedback="usf", sign="dale")


def test_bad_constraint_specs():
    with pytest.raises(ConfigError, match=r"The 'sign' parameter of Linear must be one of \{None, 'free', 'dale', 'fixed'\}. Got 'dal' instead."):
        bnn.Linear(3, 2, sign="dal")
    with pytest.raises(ConfigError, match="The 'enforce' parameter of Dale must be one of"):
        bnn.Linear(3, 2, sign={"rule": "dale", "enforce": "clip"})
    with pytest.raises(ConfigError, match="e_fraction"):
        bc.Dale(e_fraction=1.5)
    with pytest.raises(ShapeError, match="2 unit types for 3"):
        bnn.Linear(3, 2, sign={"rule": "dale", "types": ["E", "I"]})
    with pytest.raises(ShapeError, match="mask must be"):
        bnn.Linear(3, 2, sign={"rule": "fixed", "mask": torch.ones(3, 2)})
    with pytest.raises(ConfigError, match="The 'per' parameter of ConstNorm must be one of"):
        bnn.Linear(3, 2, norm={"rule": "const", "per": "row"})
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) \['p_positive'\] for sign rule 'dale' of Linear; expected some of \['e_fraction', 'types', 'enforce'\]"):
        bnn.Linear(3, 2, sign={"rule": "dale", "p_positive": 0.5})
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) \['by'\] for norm rule 'const'"):
        bnn.Linear(3, 2, norm={"rule": "const", "by": "unit"})
    spec = bc.Dale(e_fraction=0.5)
    lin = bnn.Linear(4, 3, sign=spec)
    assert spec.signs is None and lin.sign is not spec and lin.sign.config() == spec.config()


def test_optimizer_hook_counts_steps_and_projects_only_its_layers(f64):
    from biofa import feedback as fb

    a = bnn.Linear(4, 3, sign="dale")
    b = bnn.Linear(4, 3, sign="dale")
    opt = torch.optim.SGD(a.parameters(), lr=10.0)
    start = fb.training_step()
    a(torch.randn(5, 4)).sum().backward()
    with torch.no_grad():
        b.weight.add_(torch.randn(3, 4) * 10)  # b breaks Dale by hand, outside any optimizer
    v_before = b._raw_weight()._version
    opt.step()
    assert fb.training_step() == start + 1
    assert bc.dale_violations(nn.Sequential(a)) == {"0": 0}
    assert b._raw_weight()._version == v_before  # not a's optimizer's business
    assert bc.dale_violations(nn.Sequential(b))["0"] > 0
    bc.enforce(b)
    assert bc.dale_violations(nn.Sequential(b)) == {"0": 0}
    assert fb.next_step() == start + 2
