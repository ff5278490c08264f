"""biofa.brian2.learn_online(method="rflo") against the torch engine's online RFLO (float64, numpy
target, noise off): the same weights and biases after 200 steps of a small recurrent E/I circuit."""

import pytest
import torch

brian2 = pytest.importorskip("brian2")
b2 = pytest.importorskip("biofa.brian2")

from biofa.errors import ConfigError  # noqa: E402
from tests.test_online_traces import DT, data, ei  # noqa: E402

pytestmark = pytest.mark.brian2


@pytest.mark.parametrize("update", ["step", "sequence"])
@pytest.mark.parametrize("wiring", [dict(readout_fb="fa"), dict(readout_fb="bp"),
                                    dict(readout_fb="none", direct=True)])
def test_rflo_weights_match_torch(f64, update, wiring):
    x, target, mask = data(steps=200, batch=3)
    c_torch, c_b2 = ei("rate", **wiring), ei("rate", **wiring)
    w0 = {s.name: s.weight.detach().clone() for s in c_torch.feedforward}
    b0 = {p: b.detach().clone() for p, b in c_torch.biases.items()}
    c_torch.learn_online(x, target, dt=DT, lr=1e-5, method="rflo", mask=mask, update=update, record_every=None)
    got = b2.learn_online(c_b2, x, target, dt=DT, lr=1e-5, method="rflo", mask=mask, update=update)
    for s in c_torch.feedforward:
        want = s.weight.detach()
        assert not torch.equal(want, w0[s.name])  # learning moved every synapse object
        assert (got.weights[s.name] - want).abs().max() <= 1e-9 * want.abs().max(), s.name
    for p, b in c_torch.biases.items():
        assert not torch.equal(b.detach(), b0[p])
        assert (got.biases[p] - b.detach()).abs().max() <= 1e-9 * b.detach().abs().max(), p
    got.load_into(c_b2)
    assert torch.allclose(c_b2.synapse("E->E").weight, c_torch.synapse("E->E").weight, rtol=0, atol=1e-12)


def test_rflo_errors(f64):
    x, target, _ = data(steps=5, batch=2)
    with pytest.raises(ConfigError, match="lr must be"):
        b2.learn_online(ei("rate"), x, target, dt=DT, lr=0.0, method="rflo")
    with pytest.raises(ConfigError, match="rate form"):
        b2.learn_online(ei("current"), x, target, dt=DT, lr=0.1, method="rflo")
    with pytest.raises(ConfigError, match="'method'"):
        b2.learn_online(ei("rate"), x, target, dt=DT, lr=0.1, method="eprop")
