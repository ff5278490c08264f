"""[model] init_scale and feedback_init_scale: separate init scales of W and B ("small W, Xavier B")."""

import math

import pytest
import torch

from biofa import models
from biofa.errors import ConfigError, SpecError
from biofa.experiment import from_dict
from biofa.experiment.runner import build_model, load_data
from biofa.init import init_std
from biofa.models.initialization import scale_feedback


def _layers(model):
    return [m for m in model.modules() if hasattr(m, "feedback") and hasattr(m, "weight")]


def _drawn(layer):
    fb = layer.feedback
    return fb.magnitude if fb.name == "frsf" else fb.matrix()


def _build(rule, seed=0, **kw):
    return models.build("mlp", input_shape=(12,), n_outputs=4, hidden=[9, 7], feedback=rule,
                        generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("rule", ["fa", "frsf", "kp", "wm", "dfa"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scaled_model_is_exactly_the_factor_times_the_unscaled_one(f64, rule, seed):
    """The draws do not depend on the factors: the same generator gives s * W and s_B * B."""
    s, sb = 1e-3, 0.25
    plain, scaled = _build(rule, seed), _build(rule, seed, init_scale=s, feedback_init_scale=sb)
    for a, b in zip(_layers(plain), _layers(scaled)):
        assert torch.equal(a.weight * s, b.weight)
        if rule != "dfa":
            assert torch.equal(_drawn(a) * sb, _drawn(b))
    if rule == "dfa":
        hub = lambda m: [t for n, t in m.named_buffers() if n.endswith("matrix_all")]  # noqa: E731
        (ha,), (hb,) = hub(plain), hub(scaled)
        assert torch.equal(ha * sb, hb)


def test_small_w_keeps_b_at_its_init_std(f64):
    """B's std equals s_B times the Xavier std, within 6 standard errors of the sample std.

    For U[-a, a], Var(x^2) = a^4/5 - a^4/9 = 4a^4/45, so the sample variance of n entries has
    relative standard error sqrt(4/45 * 9 / n) = sqrt(0.8 / n), and the std half of that."""
    shape = (300, 400)
    model = models.build("mlp", input_shape=(shape[1],), n_outputs=3, hidden=[shape[0]], feedback="fa",
                         init_scale=1e-3, feedback_init_scale=2.0, generator=torch.Generator().manual_seed(0))
    first, second = _layers(model)
    n = first.weight.numel()
    tol = 6 * 0.5 * math.sqrt(0.8 / n)
    assert float(first.weight.detach().std()) / (1e-3 * init_std(shape)) == pytest.approx(1.0, abs=tol)
    assert float(first.feedback.matrix().std()) / (2.0 * init_std(shape)) == pytest.approx(1.0, abs=tol)


def test_scale_errors():
    with pytest.raises(ConfigError, match="no drawn feedback"):
        _build("bp", feedback_init_scale=0.5)
    with pytest.raises(ConfigError, match="no drawn feedback"):
        _build("usf", feedback_init_scale=0.5)
    _build("bp", feedback_init_scale=1.0)  # a factor of 1 changes nothing and is always accepted
    for bad in (0, -1.0, True, float("inf"), "big"):
        with pytest.raises(ConfigError, match="init_scale must be a positive finite number"):
            _build("fa", init_scale=bad)
    with pytest.raises(ConfigError, match="feedback_init_scale"):
        scale_feedback(_build("fa"), -2)


def test_spec_passes_and_validates_the_scales(f64):
    spec = from_dict({"data": {"name": "linear_teacher", "n_train": 20, "n_test": 10},
                      "model": {"hidden": [6], "feedback": "fa", "init_scale": 0.01, "feedback_init_scale": 3}})
    assert spec.base["model"]["init_scale"] == 0.01
    splits = load_data(spec.base["data"])
    model = build_model(spec.base["model"], splits, torch.Generator().manual_seed(4))
    cfg = {k: v for k, v in spec.base["model"].items() if k not in ("init_scale", "feedback_init_scale")}
    ref = build_model(cfg, splits, torch.Generator().manual_seed(4))
    for a, b in zip(_layers(ref), _layers(model)):
        assert torch.equal(a.weight * 0.01, b.weight)
        assert torch.equal(a.feedback.matrix() * 3, b.feedback.matrix())
    for key in ("init_scale", "feedback_init_scale"):
        with pytest.raises(SpecError, match=rf"\[model\] {key} must be a positive number, got -1"):
            from_dict({"model": {key: -1}})
