"""Update alignment: the rule's hidden error against the true BP error, without disturbing training."""

import copy
import math

import pytest
import torch
from torch import nn

import biofa._hooks as hooks
import biofa.nn as bnn
from biofa.analysis import angle, update_alignment
from biofa.analysis.updates import _bookkeeping
from biofa.errors import ConfigError, ShapeError
from biofa.feedback import FA


def mse(out, y):
    return 0.5 * ((out - y) ** 2).sum(1).mean()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lillicrap_linear_task_angle_falls_below_45(f64, seed):
    """30-20-10 linear network learning T ~ U[-1, 1]; W ~ U[±0.01], B ~ U[±0.5] (Lillicrap 2016).

    At the start B_2 and W_2 are independent and zero-mean, so the cosine between the hidden errors
    e B_2 and e W_2 has mean 0 and std about 1/sqrt(10 * 20) (10 output directions of e times 20
    hidden units): |cos| < 6 / sqrt(200) = 0.42 holds but for a 1e-9 tail.

    How far the angle falls in a given number of steps is not a law (Lillicrap et al. report "below
    45 degrees" for their run; nothing bounds the rate), so what is asserted after training is the
    exact mechanism of their proof, for SGD steps of any size. With e = dL/d(out) of a batch x and
    D = -lr e^T x, FA changes W_1 by B_2^T D (the hidden error is e B_2), so from W = 0

        W_1 = B_2^T A,   A = sum_k D_k                         (W_1 lives in the span of B_2^T)
        W_2 = C B_2,     C = sum_k D_k A_k^T                   (dW_2 = -lr e^T x W_1^T = D A^T B_2)
        C + C^T = A A^T - sum_k D_k D_k^T                      (A_k: A before step k)

    so <W_2, B_2>_F = tr(C B_2 B_2^T) = (tr(A^T B_2 B_2^T A) - sum_k tr(D_k^T B_2 B_2^T D_k)) / 2: the
    alignment of W_2 with B_2 is built from the hidden layer's own learning. Under BP (B_2 replaced
    by W_2 in the backward) none of these holds. Float64 with 300 steps: rounding ~1e-13 relative."""
    g = torch.Generator().manual_seed(seed)
    T = torch.empty(10, 30).uniform_(-1, 1, generator=g)
    model = nn.Sequential(bnn.Linear(30, 20, bias=False, init=0.01, generator=g),
                          bnn.Linear(20, 10, bias=False, init=0.01, feedback=FA(init=0.5), generator=g))
    x_test = torch.randn(100, 30, generator=g)
    start = update_alignment(model, x_test, x_test @ T.T, mse)
    assert set(start) == {"0"}  # the output layer's error is the same under every rule
    assert abs(math.cos(math.radians(start["0"]))) < 6 / math.sqrt(200)
    with torch.no_grad():
        for layer in model:
            layer.weight.zero_()
    B2 = model[1].feedback.matrix().clone()
    lr, A, C, DD = 0.01, torch.zeros(10, 30), torch.zeros(10, 10), torch.zeros(10, 10)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(300):
        x = torch.randn(20, 30, generator=g)
        with torch.no_grad():
            e = (model(x) - x @ T.T) / x.shape[0]  # d mse / d out
        D = -lr * e.T @ x
        C, A, DD = C + D @ A.T, A + D, DD + D @ D.T
        opt.zero_grad()
        mse(model(x), x @ T.T).backward()
        opt.step()
        if step % 50 == 49 or step == 0:
            W1, W2 = model[0].weight.detach(), model[1].weight.detach()
            torch.testing.assert_close(W1, B2.T @ A, rtol=1e-10, atol=1e-12 * float(W1.norm()))
            torch.testing.assert_close(W2, C @ B2, rtol=1e-10, atol=1e-12 * float(W2.norm()))
    torch.testing.assert_close(C + C.T, A @ A.T - DD, rtol=1e-10, atol=1e-12 * float(C.norm()))
    S = B2 @ B2.T
    inner = float((W2 * B2).sum())
    assert inner == pytest.approx(0.5 * float(torch.trace(A.T @ S @ A) - torch.trace(DD @ S)), rel=1e-10)
    assert float(W2.norm()) > 0 and torch.equal(model[1].feedback.matrix(), B2)  # it learned; B is fixed
    # update_alignment measures exactly this network: FA's error e B_2 against BP's e W_2 = e C B_2
    with torch.no_grad():
        e = (model(x_test) - x_test @ T.T) / x_test.shape[0]
    end = update_alignment(model, x_test, x_test @ T.T, mse)
    assert end["0"] == pytest.approx(angle(e @ B2, e @ C @ B2), abs=1e-9)


def _relu_net(feedback, g):
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    return bnn.convert(model, feedback=feedback, generator=g)


@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "brsf", "kp", "wm", "dfa"])
def test_closed_form_hidden_errors(f64, rule):
    g = torch.Generator().manual_seed(4)
    model = _relu_net(rule, g)
    x, y = torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)
    W = [model[i].weight.detach() for i in (0, 2, 4)]
    B = [model[i].feedback.matrix() for i in (0, 2, 4)]
    with torch.no_grad():
        a1 = model[0](x)
        a2 = model[2](torch.relu(a1))
        e = (model[4](torch.relu(a2)) - y) / x.shape[0]  # d mse / d output
    # BP: delta_l = (delta_{l+1} W_{l+1}) * f'(a_l)
    bp2 = (e @ W[2]) * (a2 > 0)
    bp1 = (bp2 @ W[1]) * (a1 > 0)
    if rule == "dfa":  # every hidden layer hears e through the block of the layer above it
        r2 = (e @ B[2]) * (a2 > 0)
        r1 = (e @ B[1]) * (a1 > 0)
    else:
        r2 = (e @ B[2]) * (a2 > 0)
        r1 = (r2 @ B[1]) * (a1 > 0)
    got = update_alignment(model, x, y, mse)
    assert set(got) == {"0", "2"}
    assert got["2"] == pytest.approx(angle(r2, bp2), abs=1e-6)
    assert got["0"] == pytest.approx(angle(r1, bp1), abs=1e-6)
    assert 1.0 < got["0"] < 179.0


def test_bp_is_aligned_and_dead_errors_are_nan(f64):
    g = torch.Generator().manual_seed(0)
    model = _relu_net("bp", g)
    x, y = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
    assert all(v == 0.0 for v in update_alignment(model, x, y, mse).values())  # bitwise the same error
    with torch.no_grad():
        model[2].bias.fill_(-100.0)  # every unit of layer 2 dead: no error reaches it or below
    assert all(math.isnan(v) for v in update_alignment(model, x, y, mse).values())


def _disturbing_model(g):
    """FA, weight mirror and brSF, with BatchNorm and dropout: everything that could be disturbed."""
    return nn.Sequential(
        bnn.Linear(6, 10, generator=g), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.3),
        bnn.Linear(10, 8, feedback="wm", generator=g), nn.ReLU(),
        bnn.Linear(8, 4, feedback="brsf", generator=g),
    )


def _dfa_model(g):
    return bnn.convert(nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.3),
                                     nn.Linear(10, 4)), feedback="dfa", generator=g)


@pytest.mark.parametrize("build", [_disturbing_model, _dfa_model], ids=["fa-wm-brsf-bn", "dfa-bn"])
def test_training_is_not_disturbed(f64, build):
    g = torch.Generator().manual_seed(7)
    model = build(g)
    twin = copy.deepcopy(model)
    data = [(torch.randn(12, 6, generator=g), torch.randn(12, 4, generator=g)) for _ in range(4)]

    def train(net, probe):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        torch.manual_seed(123)  # dropout masks
        for x, y in data:
            if probe:
                before = torch.get_rng_state()
                grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
                angles = update_alignment(net, x, y, mse)
                assert angles and all(0.0 <= v <= 180.0 for v in angles.values())
                assert torch.equal(before, torch.get_rng_state())
                for p, old in zip(net.parameters(), grads):  # last step's .grad untouched
                    assert (p.grad is None and old is None) or torch.equal(p.grad, old)
            opt.zero_grad()
            mse(net(x), y).backward()
            opt.step()
        return opt

    step0 = hooks.training_step()
    train(twin, probe=False)
    step1 = hooks.training_step()
    hooks._step = step0  # replay the same training steps (brSF's R_t is a function of the step)
    try:
        train(model, probe=True)
    finally:
        hooks._step = max(step1, hooks.training_step())
    for (n, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), n
    hubs = [(m.feedback.hub, t.feedback.hub) for m, t in zip(model.modules(), twin.modules())
            if isinstance(m, bnn.FeedbackLayer) and m.feedback.direct and m.feedback.hub is not None]
    for hub, twin_hub in hubs:  # DFA pass bookkeeping as if no analysis pass had run
        book, twin_book = _bookkeeping(hub), _bookkeeping(twin_hub)
        assert book.keys() == twin_book.keys() and book["_pending"] == twin_book["_pending"] == []
        for key, value in book.items():
            if isinstance(value, dict):
                assert value.keys() == twin_book[key].keys(), key


def test_leaves_no_trace(f64):
    g = torch.Generator().manual_seed(3)
    model = _disturbing_model(g)
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model: per-module flags are restored
    model[4].weight.requires_grad_(False)  # a frozen layer stays frozen
    x, y = torch.randn(12, 6, generator=g), torch.randn(12, 4, generator=g)
    state = copy.deepcopy(model.state_dict())
    draws = int(model[4].feedback.draws)
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    for mode in ("train", "eval", "current"):
        update_alignment(model, x, y, mse, mode=mode)
    assert all(m.training == t for m, t in flags)
    assert all(p.requires_grad == r for p, r in grads)
    assert all(p.grad is None for p in model.parameters())
    assert int(model[4].feedback.draws) == draws  # the weight-mirror noise stream did not advance
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_modes_and_errors(f64):
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(bnn.Linear(4, 6, generator=g), nn.BatchNorm1d(6), nn.ReLU(),
                          bnn.Linear(6, 2, generator=g))
    x, y = torch.randn(10, 4, generator=g), torch.randn(10, 2, generator=g)
    model.eval()
    assert update_alignment(model, x, y, mse, mode="eval") == update_alignment(model, x, y, mse, mode="current")
    model.train()
    assert update_alignment(model, x, y, mse) == update_alignment(model, x, y, mse, mode="current")
    with pytest.raises(ConfigError, match="'mode' parameter of update_alignment"):
        update_alignment(model, x, y, mse, mode="test")
    with pytest.raises(ShapeError, match="scalar"):
        update_alignment(model, x, y, lambda out, t: (out - t) ** 2)
    with pytest.raises(ConfigError, match="no biofa layer"):
        update_alignment(nn.Linear(4, 2), x, y, mse)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # restored after errors
    assert all(m.training for m in model.modules())


def test_shared_layer_is_compared_over_all_calls(f64):
    g = torch.Generator().manual_seed(6)
    shared = bnn.Linear(4, 4, generator=g)
    head = bnn.Linear(4, 2, generator=g)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared, self.head = shared, head

        def forward(self, x):
            return self.head(torch.relu(self.shared(torch.relu(self.shared(x)))))

    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
    got = update_alignment(Twice(), x, y, mse)
    assert set(got) == {"shared"}
    # by hand: a1 = shared(x), a2 = shared(relu(a1)), out = head(relu(a2)); e = d mse / d out
    W, B = shared.weight.detach(), shared.feedback.matrix()
    Wh, Bh = head.weight.detach(), head.feedback.matrix()
    with torch.no_grad():
        a1 = shared(x)
        a2 = shared(torch.relu(a1))
        e = (head(torch.relu(a2)) - y) / x.shape[0]
    bp2 = (e @ Wh) * (a2 > 0)  # the second call's output error, then the first call's through W
    bp1 = (bp2 @ W) * (a1 > 0)
    fa2 = (e @ Bh) * (a2 > 0)  # the same through the feedback matrices
    fa1 = (fa2 @ B) * (a1 > 0)
    both = angle(torch.cat([fa1.reshape(-1), fa2.reshape(-1)]), torch.cat([bp1.reshape(-1), bp2.reshape(-1)]))
    assert got["shared"] == pytest.approx(both, abs=1e-9)
    # and not the angle of either call alone (the layer is compared over all its calls at once)
    assert abs(both - angle(fa1, bp1)) > 1e-3 and abs(both - angle(fa2, bp2)) > 1e-3


def test_model_that_skips_its_layers(f64):
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = bnn.Linear(3, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.scale

    with pytest.raises(ConfigError, match="called none of its biofa layers"):
        update_alignment(Skip(), torch.randn(4, 3), torch.randn(4, 3), mse)
