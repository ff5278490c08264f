"""Why Dale's law collapses the Moskovitz study's 1-D CNN to a constant prediction
(docs/guide/moskovitz.rst, "Dale's law in the 1-D CNN: the collapse"): the mechanism as properties.

1. One input channel makes the first convolution one-signed.
2. A silent excitatory population is an absorbing state: the next layer then receives inhibition
   only, its units fall silent too, the logits become the read-out bias for every input (a
   constant prediction) and no gradient reaches any weight but that bias, so no step leaves it.
3. uSF's hidden error is zero only while no read-out weight is exactly zero; the sign projection
   clamps weights to 0, sign(0) = 0 breaks the rank-one sign pattern, and errors reach the hidden
   layers after all.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

from biofa.errors import DegenerateFeedbackWarning
from biofa.models import build

N_E = 20  # cnn1d's 25 channels under Dale (e_fraction 0.8): channels 0..19 E, 20..24 I


def cnn(feedback="bp", seed=0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateFeedbackWarning)
        return build("cnn1d", input_shape=(40,), n_outputs=10, feedback=feedback, sign="dale",
                     generator=torch.Generator().manual_seed(seed), **kw)


def activity(model, x):
    """Post-ReLU activity of the three convolutions."""
    out = []
    hooks = [m.register_forward_hook(lambda mod, i, o: out.append(o)) for m in model.features
             if isinstance(m, torch.nn.ReLU)]
    logits = model(x)
    for h in hooks:
        h.remove()
    return out, logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_input_channel_makes_every_first_layer_kernel_one_sign(seed):
    w = cnn(seed=seed).features[0].weight.detach()
    assert w.shape[1] == 1
    assert bool((w >= 0).all()) or bool((w <= 0).all())
    # free_sign=[0] lifts it: both signs among the first layer's kernels
    w = cnn(seed=seed, free_sign=[0]).features[0].weight.detach()
    assert bool((w > 0).any()) and bool((w < 0).any())


def test_a_silent_excitatory_population_is_absorbing():
    model = cnn()
    conv2, conv3, readout = model.features[2], model.features[4], model.linear
    with torch.no_grad():  # silence the E channels of the second convolution
        conv2.weight[:N_E] = 0
        conv2.bias[:N_E] = -1
        conv3.bias.clamp_(max=0)
    x = torch.randn(256, 40)
    (h1, h2, h3), logits = activity(model, x)
    assert bool((h2[:, :N_E] == 0).all())
    # with only inhibitory (non-positive) weights on non-negative inputs, no unit of the third
    # convolution gets above its bias: all silent
    assert bool((h3 == 0).all())
    assert torch.equal(logits, readout.bias.detach().expand_as(logits))  # one prediction for all x
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.randint(0, 10, (256,))).backward()
        opt.step()
    for name, p in model.named_parameters():
        if name != "linear.bias":  # hidden weights and biases, the read-out weights: never move
            assert torch.equal(p.detach(), before[name]), name
    assert not torch.equal(readout.bias.detach(), before["linear.bias"])
    (_, _, h3), logits = activity(model, x)
    assert bool((h3 == 0).all()) and bool((logits == logits[0]).all())


def test_usf_hidden_error_vanishes_until_the_projection_zeroes_a_readout_weight(f64):
    model = cnn({"rule": "usf", "scale": "init"}).double()
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))

    def hidden_grad():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return max(float(m.weight.grad.abs().max()) for m in model.features if hasattr(m, "weight"))

    assert bool((model.linear.weight != 0).all())
    exact = hidden_grad()
    with torch.no_grad():  # what the projection does to a read-out weight pushed across zero
        model.linear.weight[3, 7] = 0.0
    broken = hidden_grad()
    assert exact < 1e-12 * broken
