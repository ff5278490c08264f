"""learn_sequence: the update of learn_online(update="sequence") evaluated backwards in time.
The same update (float64, 1e-10) for both rules on both forms, Dale's law, B = W_out, random B and
direct feedback, noise from the same generator; the adjoint filter against its definition."""

import pytest
import torch

from biofa.circuit.traces import TRACES, reverse_filter
from biofa.errors import ConfigError, DegenerateFeedbackWarning, DivergenceError, ShapeError
from test_online_traces import DT, assert_close, data, ei, reference

WIRINGS = [dict(readout_fb="bp"), dict(readout_fb="fa"), dict(readout_fb="none", direct=True),
           dict(readout_fb="fa", direct=True), dict(readout_fb="bp", from_i=False)]


def test_reverse_filter_is_the_adjoint_sum(f64):
    """Λ^k = Σ_{m ≥ k} β^{m-k} z^m, written out."""
    z = torch.randn(9, 2, 3)
    beta = 0.7
    want = torch.stack([sum(beta ** (m - k) * z[m] for m in range(k, 9)) for k in range(9)])
    assert torch.allclose(reverse_filter(z, beta), want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("method", sorted(TRACES))
@pytest.mark.parametrize("dynamics", ["rate", "current"])
@pytest.mark.parametrize("wiring", WIRINGS)
def test_same_update_as_the_online_loop(f64, method, dynamics, wiring):
    """Every rule on every form (exact or not for it), with the populations' noise on: the same
    gradients, losses, final state and weights after the update (Dale's projection included)."""
    x, target, mask = data()
    runs = []
    for learn in ("learn_online", "learn_sequence"):
        c = ei(dynamics, **wiring)
        for p in c.populations:
            if p.name in ("E", "I"):
                p.noise = 0.05
        kw = dict(dt=DT, lr=0.3, method=method, mask=mask, generator=torch.Generator().manual_seed(3))
        if learn == "learn_online":
            kw.update(update="sequence", record_every=None)
        if wiring.get("from_i", True):
            tr = getattr(c, learn)(x, target, **kw)
        else:  # no error reaches I: both say so
            with pytest.warns(DegenerateFeedbackWarning, match="populations \\['I'\\]"):
                tr = getattr(c, learn)(x, target, **kw)
        runs.append((c, tr))
    (c1, online), (c2, seq) = runs
    deaf = {k for k, g in online.gradients.items() if not g.any()}  # the inputs of I without a route
    assert deaf == (set() if wiring.get("from_i", True) else {"x->I", "E->I", "I->I", "bias:I"})
    assert all(not seq.gradients[k].any() for k in deaf)
    assert_close(seq.gradients, {k: g for k, g in online.gradients.items() if k not in deaf})
    assert torch.allclose(seq.loss, online.loss, rtol=1e-12, atol=0)
    for name, v in online.final_rates.items():
        assert torch.allclose(seq.final_rates[name], v, rtol=1e-12, atol=1e-15), name
    for s1, s2 in zip(c1.feedforward, c2.feedforward):
        assert torch.allclose(s1.weight, s2.weight, rtol=1e-12, atol=1e-15), s1.name
    assert seq.rates["E"].shape == (x.shape[0] + 1, x.shape[1], 6)


@pytest.mark.parametrize("method", sorted(TRACES))
def test_exact_gradient_on_its_own_form(f64, method):
    """On the form a rule is exact for, the gradient of the detached dynamics (through unroll)."""
    c = ei(TRACES[method].exact_form, readout_fb="fa", direct=True)
    x, target, mask = data()
    want = reference(c, x, target, mask)
    assert_close(c.learn_sequence(x, target, dt=DT, lr=1e-6, method=method, mask=mask).gradients, want)


def test_errors(f64):
    c = ei()
    x, target, mask = data()
    with pytest.raises(ConfigError, match="did you mean 'rflo'"):
        c.learn_sequence(x, target, dt=DT, lr=0.1, method="rfl0")
    with pytest.raises(ConfigError, match="three-factor"):
        c.learn_sequence(x, target, dt=DT, lr=0.1, method="three_factor")
    with pytest.raises(ConfigError, match="lr must be"):
        c.learn_sequence(x, target, dt=DT, lr=float("nan"), method="rflo")
    with pytest.raises(ShapeError, match="target"):
        c.learn_sequence(x, target[:4], dt=DT, lr=0.1, method="rflo")
    with pytest.raises(DivergenceError, match="non-finite"):
        c.learn_sequence(x, target * float("inf"), dt=DT, lr=0.1, method="rflo")
