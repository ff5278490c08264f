"""E/I architectures: how :func:`biofa.nn.convert` builds a layer that obeys Dale's law.

=============  =================================================================================
``free``       no sign constraint at all, whatever ``sign`` says: the free-sign baseline of a
               study that varies ``ei`` alone
``projection`` W = S∘|W₀| from the layer's usual init, violators clamped to 0 after each step
               (the default, and the only other choice without Dale's law)
``colei``      the same column signs W = |W|·D, drawn with Cornford et al.'s column-E/I init
``dann``       :class:`~biofa.nn.DANNLinear` (:class:`~biofa.nn.DANNConv1d`, ``DANNConv2d``): W_EE x − W_EI (W_IE x), all three non-negative
=============  =================================================================================

Each is a class with one method, :meth:`EIArchitecture.replace`, turning a torch layer into a biofa
one; :data:`EI` is the registry (``ei="colei"`` or a table ``{"rule": "dann", "shunting": True}``).
Background: :doc:`/guide/ei_architectures`.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math

import torch
from torch import nn

from .._registry import build_from_table
from ..constraints.sign import Dale, make_sign
from ..errors import ConfigError
from .dann import DANNConv1d, DANNConv2d, DANNLinear, inhibitory_units
from .layers import Conv1d, Conv2d, FeedbackLayer, Linear


def _matching_bound(weight: torch.Tensor):
    """Bound a of the uniform U[-a, a] with the copied weight's RMS: a = sqrt(3) * RMS(W)."""
    rms = float(weight.detach().pow(2).mean().sqrt())
    return 3.0**0.5 * rms if rms > 0 else "xavier"


def _replacement(module: nn.Module, options: dict, weight: torch.Tensor | None = None) -> FeedbackLayer:
    """The biofa layer for torch ``module`` with ``module``'s W (or ``weight``) and b."""
    factory = {"device": module.weight.device, "dtype": module.weight.dtype}
    if options["init"] == "match":
        options = {**options, "init": _matching_bound(module.weight)}
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        new = Linear(module.in_features, module.out_features, bias, **options, **factory)
    else:
        cls = Conv1d if isinstance(module, nn.Conv1d) else Conv2d
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                  module.padding, module.dilation, module.groups, bias, module.padding_mode,
                  **options, **factory)
    weight = module.weight.detach() if weight is None else weight
    new.load_forward_weights(weight, module.bias.detach() if bias else None, options.get("generator"))
    new.train(module.training)
    return new


class EIArchitecture(abc.ABC):
    """How a Dale-constrained layer is parameterised; :meth:`replace` builds it."""

    name = ""

    def config(self) -> dict:
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k not in ("self", "args", "kwargs")}

    @abc.abstractmethod
    def replace(self, module: nn.Module, options: dict, first: bool) -> nn.Module:
        """The biofa layer for torch layer ``module``; ``options`` are the layer options of
        :func:`~biofa.nn.convert` (feedback, sign, norm, init, ...); ``first``: it reads the data."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class Projection(EIArchitecture):
    """W = S∘|W₀| with the layer's own init, projected onto its signs after every step."""

    name = "projection"

    def replace(self, module, options, first):
        return _replacement(module, options)


class FreeSigns(EIArchitecture):
    """Every layer free of the sign constraint (as if listed in ``free_sign``), whatever ``sign``
    says: the baseline of an architecture comparison, so that a study's ``[grid] ei`` can run
    ``["free", "projection", "colei", "dann"]`` under one ``sign = "dale"``."""

    name = "free"

    def replace(self, module, options, first):
        return _replacement(module, {**options, "sign": None})


def colei_weight(shape, signs: torch.Tensor, generator=None, dtype=None, device=None) -> torch.Tensor:
    """Cornford et al.'s column-E/I initialisation: magnitudes :math:`|W|` of a layer with column signs.

    .. math:: |W_{:,E}| \\sim \\mathrm{Exp}(\\sigma_E), \\quad |W_{:,I}| \\sim \\mathrm{Exp}(\\sigma_I),
              \\quad \\sigma_E^{-2} = \\tfrac{2\\pi - 1}{2\\pi}\\,(n_E + n_E^2 / n_I), \\quad
              \\sigma_I = \\tfrac{n_E}{n_I}\\, \\sigma_E

    so that each unit's summed excitation and inhibition cancel in expectation (:math:`n_E \\sigma_E
    = n_I \\sigma_I`) with unit-scale output for rectified inputs. n_E and n_I count presynaptic
    weights (input units times kernel taps). Without inhibitory inputs (an all-E first layer) every
    weight is :math:`\\mathrm{Exp}(\\sqrt{1/n_{in}})` as in their first-layer policy.
    ``signs`` is the ±1 sign pattern, broadcastable to ``shape``.
    """
    signs = signs.expand(shape)
    magnitudes = torch.empty(shape, dtype=dtype, device=device).exponential_(1.0, generator=generator)
    # per output unit (row of W): the E and I weights it receives, kernel taps included
    n_e, n_i = int((signs[0] > 0).sum()), int((signs[0] < 0).sum())
    if n_i == 0 or n_e == 0:
        return magnitudes * math.sqrt(1.0 / (n_e + n_i))
    sigma_e = math.sqrt(1.0 / ((2 * math.pi - 1) / (2 * math.pi) * (n_e + n_e**2 / n_i)))
    sigma_i = n_e / n_i * sigma_e
    return magnitudes * torch.where(signs > 0, sigma_e, sigma_i).to(magnitudes)


class ColEI(EIArchitecture):
    """Column signs :math:`W = |W| D` (projected like ``projection``) with :func:`colei_weight`'s
    init instead of the layer's own. ``inhibitory_fraction`` f (optional): every Dale layer's share
    of inhibitory inputs, i.e. ``sign``'s ``e_fraction`` set to 1 - f (a DANN's f is n_I / n_E). Li et al. (NeurIPS 2023) trace ColEI's poorer learning to the
    spread of its singular values, which this init does not remove (:func:`biofa.analysis.nse`)."""

    name = "colei"

    def __init__(self, inhibitory_fraction: float | None = None):
        if inhibitory_fraction is not None and (isinstance(inhibitory_fraction, bool) or not isinstance(
                inhibitory_fraction, (int, float)) or not 0.0 < inhibitory_fraction < 1.0):
            raise ConfigError(f"The 'inhibitory_fraction' parameter of ei='colei' must be in (0, 1). "
                              f"Got {inhibitory_fraction!r} instead.")
        self.inhibitory_fraction = inhibitory_fraction

    def replace(self, module, options, first):
        sign = make_sign(options["sign"])
        f = self.inhibitory_fraction
        # the fraction of inhibitory *inputs* of every layer: Dale's e_fraction = 1 - f, except where
        # every input is excitatory (the first layer reading on/off inputs keeps e_fraction 1)
        if f is not None and isinstance(sign, Dale) and sign.types is None and sign.e_fraction < 1.0:
            sign = Dale(**{**sign.config(), "e_fraction": 1.0 - f})
            options = {**options, "sign": sign}
        w = module.weight.detach()
        groups = getattr(module, "groups", 1)
        signs = sign.make_signs(w, groups, options.get("generator")).to(w.dtype)
        weight = colei_weight(w.shape, signs, options.get("generator"), w.dtype, w.device)
        return _replacement(module, options, weight)


class DANN(EIArchitecture):
    """:class:`~biofa.nn.DANNLinear` for every Linear layer, :class:`~biofa.nn.DANNConv1d` /
    ``DANNConv2d`` for every convolution (``groups`` = 1)."""

    name = "dann"

    def __init__(self, inhibitory_fraction: float = 0.1, shunting: bool = False, corrected: bool = False):
        inhibitory_units(10, inhibitory_fraction, "ei='dann'")  # validates the fraction
        self.inhibitory_fraction, self.shunting, self.corrected = inhibitory_fraction, shunting, corrected

    def replace(self, module, options, first):
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            raise ConfigError(f"ei='dann' replaces Linear, Conv1d and Conv2d layers; this model has a "
                              f"{type(module).__name__}: use ei='colei' or 'projection'")
        if options.get("norm") is not None:
            raise ConfigError("ei='dann': norm constraints are not defined for DANN layers (three matrices); "
                              "drop norm or use ei='projection'")
        sign = make_sign(options["sign"])
        w = module.weight
        common = dict(feedback=options["feedback"], inhibitory_fraction=self.inhibitory_fraction,
                      shunting=self.shunting, corrected=self.corrected, relu_input=not first,
                      enforce=sign.enforce, init=options["init"], batch_manhattan=options["batch_manhattan"],
                      generator=options.get("generator"), device=w.device, dtype=w.dtype)
        if isinstance(module, nn.Linear):
            new = DANNLinear(module.in_features, module.out_features, module.bias is not None, **common)
        else:
            cls = DANNConv1d if isinstance(module, nn.Conv1d) else DANNConv2d
            new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                      module.dilation, module.groups, module.bias is not None, module.padding_mode, **common)
        new.train(module.training)
        return new


EI = {cls.name: cls for cls in (FreeSigns, Projection, ColEI, DANN)}


def make_ei(spec, owner: str = "convert") -> EIArchitecture:
    """``None`` or a name (``"dann"``), a table ``{"rule": "dann", "inhibitory_fraction": 0.2}`` or an
    :class:`EIArchitecture`; an unknown name gets a did-you-mean."""
    if spec is None:
        return Projection()
    if isinstance(spec, EIArchitecture):
        return spec
    if isinstance(spec, dict):
        return build_from_table(spec, EI, owner, "ei")
    if spec not in EI:
        close = difflib.get_close_matches(str(spec), list(EI), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"The 'ei' parameter of {owner} must be one of {set(sorted(EI))}. "
                          f"Got {spec!r} instead{hint}.")
    return EI[spec]()


def check_ei_sign(ei: EIArchitecture, sign, owner: str = "convert") -> None:
    """An E/I architecture other than ``projection`` needs Dale's law (``sign="dale"``)."""
    if not isinstance(ei, (FreeSigns, Projection)) and not isinstance(make_sign(sign), Dale):
        raise ConfigError(f"{owner}: ei={ei.name!r} is an architecture for Dale's law and needs "
                          f"sign='dale', got sign={sign!r}")
