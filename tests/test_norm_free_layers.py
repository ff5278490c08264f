"""``free_norm``: chosen layers keep a free norm while the others are held at their initial norm."""

import math

import pytest
import torch
from torch import nn

import biofa.models as bm
import biofa.nn as bnn
from biofa.errors import ConfigError, SpecError
from biofa.experiment import spec as es


def _steps(model, shape, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(shape, generator=gen)).square().mean().backward()
        opt.step()


def _norms(model):
    return {n: m.weight.detach().norm() for n, m in model.named_modules() if isinstance(m, bnn.FeedbackLayer)}


@pytest.mark.parametrize("free, freed", [([-1], {"classifier.5"}), (["classifier.5", 0], {"classifier.5", "features.0"})])
@pytest.mark.parametrize("sign", [None, "fixed"])
def test_free_layers_move_the_others_stay_exact(f64, free, freed, sign):
    model = bm.build("lenet", input_shape=(1, 28, 28), n_outputs=10, feedback="fa", sign=sign,
                     norm="const", free_norm=free, generator=torch.Generator().manual_seed(0))
    before = _norms(model)
    _steps(model, (6, 1, 28, 28))
    after = _norms(model)
    assert set(after) == {"features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"}
    for name in after:
        layer = model.get_submodule(name)
        if name in freed:
            assert layer.norm is None and not torch.equal(after[name], before[name])
        else:  # W ν0/‖W‖ has norm ν0 up to the roundings of a tree sum of n squares and one product
            rtol = (math.log2(layer.weight.numel()) + 4) * torch.finfo(torch.float64).eps
            torch.testing.assert_close(after[name], layer.norm.target, rtol=rtol, atol=0)
            torch.testing.assert_close(after[name], before[name], rtol=rtol, atol=0)


def test_free_norm_through_convert_names_and_errors(f64):
    plain = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    model = bnn.convert(plain, norm="const", free_norm=["2"])
    assert model[0].norm is not None and model[2].norm is None
    with pytest.raises(ConfigError, match=r"free_norm entry 'fc9' is not a convertible layer.*\['0', '2'\]"):
        bnn.convert(plain, norm="const", free_norm=["fc9"])
    with pytest.raises(ConfigError, match="free_norm index 2 is out of range"):
        bnn.convert(plain, norm="const", free_norm=[2])
    with pytest.raises(ConfigError, match="not a convertible layer"):
        bnn.convert(plain, norm="const", exclude=["2"], free_norm=["2"])
    with pytest.raises(ConfigError, match="not a convertible layer"):
        bm.build("mlp", input_shape=(4,), n_outputs=3, norm="const", free_norm=["readout"])


def test_free_norm_in_a_spec():
    tree = {"model": {"name": "mlp", "norm": "const", "free_norm": [-1]}}
    assert es.from_dict(tree).base["model"]["free_norm"] == [-1]
    with pytest.raises(SpecError, match=r"\[model\] free_norm must be a list of layer names or indices"):
        es.from_dict({"model": {"name": "mlp", "free_norm": "out"}})
