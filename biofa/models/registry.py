"""The model registry: :func:`build_plain` writes a model in plain torch, :func:`build` converts it.

Each architecture exists once, as a plain ``torch.nn`` module; the learning rule, sign and norm
constraints are applied by :func:`biofa.nn.convert` (BP too, through the same code path), never by
a copy of the model per rule.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError, check_choice
from ..nn import convert
from .cifar_convnet import CifarConvNet
from .cnn1d import CNN1d
from .initialization import initialize, scale_feedback, scale_weights
from .inputs import OnOff, check_inputs, on_off_shape
from .lenet import LeNet
from .mlp import MLP
from .resnet import cifar_resnet, resnet18


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registry entry: ``factory(input_shape, n_outputs, **options) -> nn.Module`` (plain torch)."""

    name: str
    factory: Callable[..., nn.Module]

    def options(self) -> dict:
        """The architecture's own options and their defaults."""
        skip = {"input_shape", "n_outputs", "depth"}
        return {k: p.default for k, p in inspect.signature(self.factory).parameters.items() if k not in skip}


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> ModelEntry:
    """Make ``factory(input_shape, n_outputs, **options)`` (a plain torch model) buildable by ``name``."""
    entry = ModelEntry(name, factory)
    MODELS[name] = entry
    return entry


register_model("mlp", MLP)
register_model("lenet", LeNet)
register_model("cnn1d", CNN1d)
register_model("cifar_convnet", CifarConvNet)
for _depth in (20, 32, 56):
    register_model(f"resnet{_depth}", functools.partial(cifar_resnet, _depth))
register_model("resnet18", resnet18)


def available() -> list[str]:
    """Names of the registered models."""
    return sorted(MODELS)


def build_plain(name: str, *, input_shape: Sequence[int], n_outputs: int, init="xavier",
                generator: torch.Generator | None = None, **options) -> nn.Module:
    """The plain torch model ``name``, initialised by :func:`~biofa.models.initialization.initialize`.

    ``options`` are the architecture's own (``MODELS[name].options()``), e.g. ``hidden`` for
    ``"mlp"``. Built in torch's default dtype.
    """
    check_choice("build", "name", name, available())
    entry = MODELS[name]
    allowed = entry.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"Unknown option(s) {unknown} for model {name!r}; it accepts {sorted(allowed)}.")
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
        raise ConfigError(f"build({name!r}): n_outputs must be a positive int, got {n_outputs!r}")
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"build({name!r}): input_shape must be a tuple of positive ints, got {input_shape!r}")
    return initialize(entry.factory(input_shape=shape, n_outputs=n_outputs, **options), init, generator)


def build(name: str, *, input_shape: Sequence[int], n_outputs: int, feedback="bp", sign=None, norm=None,
          free_norm=(), free_sign=(), ei=None, inhibitory_fraction=None, shunting=None, corrected=None,
          inputs: str = "signed", batch_manhattan: bool = False, init="xavier",
          generator: torch.Generator | None = None, init_scale: float = 1.0, feedback_init_scale: float = 1.0,
          **options) -> nn.Module:
    """Model ``name`` with biofa layers: :func:`build_plain` then :func:`biofa.nn.convert`.

    .. math:: \\text{model} = \\mathrm{convert}(\\text{plain}(\\theta_0), \\text{feedback}, \\text{sign}, \\text{norm})

    Parameters
    ----------
    name : one of :func:`available`.
    input_shape : shape of one sample, e.g. ``(40,)``, ``(1, 28, 28)``, ``(3, 32, 32)``.
    n_outputs : number of classes or regression outputs.
    feedback, sign, norm, batch_manhattan : applied to every Linear/Conv layer by
        :func:`biofa.nn.convert` (``"bp"`` included). With ``"dfa"`` the last Linear is the output.
    free_norm : layers left without the ``norm`` constraint: module names or indices into the
        converted layers (``[-1]``: the read-out), see :func:`biofa.nn.convert`.
    free_sign : layers exempt from the ``sign`` constraint, named like ``free_norm`` (``[0]``: the
        first layer reads signed data with weights of either sign).
    ei : E/I architecture under ``sign="dale"``: ``"projection"`` (default), ``"colei"``, ``"dann"``
        (:mod:`biofa.nn.ei`). ``inhibitory_fraction``, ``shunting``, ``corrected``: options of
        ``"dann"`` (:class:`~biofa.nn.DANNLinear`), given only when set.
    inputs : ``"signed"`` (default) or ``"on_off"``: an :class:`~biofa.models.OnOff` front end
        doubles the input channels into non-negative on/off rates, and under Dale's law the first
        layer's inputs are all excitatory (unless ``free_sign`` exempts it).
    init : scheme of W (and of FA-type B): ``"xavier"`` (default), ``"kaiming"`` or a bound a.
        Under a sign constraint W becomes S∘|W|.
    generator : draws W, then B and random sign masks; the same generator state gives the same model.
    init_scale : factor on every drawn W (before conversion), e.g. ``1e-3`` for a small init.
    feedback_init_scale : factor on every drawn B (fa, dfa, frsf magnitudes, kp/wm's initial B),
        independent of ``init_scale``: "small W, Xavier B" is ``init_scale=1e-3``. The draws do
        not depend on either factor, so a scaled model is exactly the factor times the unscaled one.
    options : the architecture's own options (``MODELS[name].options()``).
    """
    check_inputs(inputs)
    on_off = inputs == "on_off"
    plain = build_plain(name, input_shape=on_off_shape(input_shape) if on_off else input_shape,
                        n_outputs=n_outputs, init=init, generator=generator, **options)
    scale_weights(plain, init_scale)
    model = convert(plain, feedback=feedback, sign=sign, norm=norm, init=init, free_norm=free_norm,
                    free_sign=free_sign, ei=_ei_table(ei, inhibitory_fraction, shunting, corrected),
                    excitatory_input=on_off, batch_manhattan=batch_manhattan, generator=generator, inplace=True)
    model = scale_feedback(model, feedback_init_scale)
    return nn.Sequential(OnOff(), model) if on_off else model


def _ei_table(ei, inhibitory_fraction, shunting, corrected):
    """``ei`` with the architecture options that were given (an unknown one for the architecture
    raises in :func:`biofa.nn.make_ei`)."""
    given = {k: v for k, v in (("inhibitory_fraction", inhibitory_fraction), ("shunting", shunting),
                               ("corrected", corrected)) if v is not None}
    if not given:
        return ei
    if isinstance(ei, dict):
        return {**ei, **given}
    return {"rule": "projection" if ei is None else ei, **given}
