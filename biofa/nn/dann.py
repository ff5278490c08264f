"""Dale's ANN (DANN) layers: excitatory output units with feed-forward inhibitory interneurons.

Cornford et al. (ICLR 2021, "Learning to live with Dale's principle") keep every synapse sign-fixed
by giving each layer a small population of inhibitory interneurons: E units project forward, the
interneurons subtract (or divide) locally. The three weight matrices are ordinary biofa
:class:`~biofa.nn.Linear` layers with non-negative weights (Dale's law with every presynaptic unit
excitatory), so each has its own feedback synapse and rule, and the sign projection, optimizer
hooks, ``state_dict`` and conversion machinery are the layers' own.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

from .. import _hooks
from ..constraints.sign import Dale
from ..errors import ConfigError
from .layers import Conv1d, Conv2d, Linear


def inhibitory_units(n_excitatory: int, inhibitory_fraction: float, owner: str = "DANNLinear") -> int:
    """:math:`n_I = \\max(1, \\mathrm{round}(f\\, n_E))`: Cornford's 10 % default, at least one
    interneuron (their 10-unit read-out has one)."""
    if isinstance(inhibitory_fraction, bool) or not isinstance(inhibitory_fraction, (int, float)) \
            or not 0.0 < inhibitory_fraction < 1.0:
        raise ConfigError(f"The 'inhibitory_fraction' parameter of {owner} must be in (0, 1). "
                          f"Got {inhibitory_fraction!r} instead.")
    return max(1, int(round(inhibitory_fraction * n_excitatory)))


class _DANN(nn.Module, abc.ABC):
    """What every DANN layer shares: the three sub-layers ``ie``, ``ei``, ``ee`` (each a biofa
    layer with its own feedback synapse), the shunting parameters, Cornford et al.'s
    initialisation and corrected updates. Subclasses build the sub-layers (:meth:`_sublayers`) and
    say how a per-unit vector broadcasts over an output (:meth:`_per_unit`)."""

    epsilon = 1e-8

    def _build(self, n_in: int, fan_in: int, n_out: int, bias: bool, *, feedback, inhibitory_fraction, n_inhibitory,
               shunting, corrected, relu_input, enforce, init, batch_manhattan, generator, device, dtype,
               owner: str) -> None:
        n_i = inhibitory_units(n_out, inhibitory_fraction, owner) if n_inhibitory is None else n_inhibitory
        if isinstance(n_i, bool) or not isinstance(n_i, int) or n_i < 1:
            raise ConfigError(f"The 'n_inhibitory' parameter of {owner} must be a positive int (a DANN "
                              f"needs inhibitory units). Got {n_inhibitory!r} instead.")
        self.n_inhibitory, self.fan_in, self.n_excitatory = n_i, fan_in, n_out
        self.inhibitory_fraction, self.shunting, self.corrected = inhibitory_fraction, bool(shunting), bool(corrected)
        self.relu_input = bool(relu_input)
        sub = {"feedback": feedback, "sign": Dale(e_fraction=1.0, enforce=enforce), "init": init,
               "batch_manhattan": batch_manhattan, "generator": generator, "device": device, "dtype": dtype}
        # registration order puts `ee` last: DFA takes the last biofa layer as the output layer
        self.ie, self.ei, self.ee = self._sublayers(n_in, n_i, n_out, sub)
        factory = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.empty(n_out, **factory)) if bias else None
        if self.shunting:
            self.alpha = nn.Parameter(torch.empty(n_i, **factory))
            self.gain = nn.Parameter(torch.empty(n_out, **factory))
            _hooks.register_constrained(self)  # g >= 0 after every step
        self.reset_parameters(generator)

    @abc.abstractmethod
    def _sublayers(self, n_in: int, n_i: int, n_out: int, sub: dict):
        """(ie: input -> n_I, ei: n_I -> n_E, ee: input -> n_E), in that order."""

    def _per_unit(self, v: torch.Tensor) -> torch.Tensor:
        """A vector over units (n_E or n_I) shaped to broadcast over an output of the layer."""
        return v

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Cornford et al.'s initialisation (see the class docstring); B redrawn for each matrix."""
        n_in, n_i = self.fan_in, self.n_inhibitory
        if self.relu_input:
            sigma = math.sqrt(2 * math.pi / (n_in * (2 * math.pi - 1)))
        else:
            sigma = math.sqrt(1 / (2 * n_in))
        w = self.ee.weight
        w_ee = torch.empty_like(w).exponential_(1 / sigma, generator=generator)
        if n_i == 1:  # one interneuron: the mean excitatory row, not a random one
            w_ie = w_ee.mean(0, keepdim=True)
        else:
            w_ie = torch.empty_like(self.ie.weight).exponential_(1 / sigma, generator=generator)
        w_ei = torch.full_like(self.ei.weight, 1.0 / n_i)
        for layer, value in ((self.ie, w_ie), (self.ei, w_ei), (self.ee, w_ee)):
            layer.load_forward_weights(value, None, generator)
        if self.bias is not None:
            self.bias.zero_()
        if self.shunting:
            self.alpha.fill_(0.5 * math.log((2 * math.pi - 1) / n_in))
            self.gain.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the interneurons first, `ee` last: under DFA `ee` of the read-out is the output layer,
        # whose forward collects the inputs the other DFA layers registered in this pass
        z_i = self.ie(x)
        inhibition = self.ei(z_i)
        if self.shunting:
            shunt = self.ei(self._per_unit(self.alpha.exp()) * z_i) + self.epsilon
        h = self.ee(x) - inhibition
        if self.shunting:
            h = self._per_unit(self.gain) * h / shunt
        return h if self.bias is None else h + self._per_unit(self.bias)

    def effective_weight(self) -> torch.Tensor:
        """:math:`W = W_{EE} - W_{EI} W_{IE}` (detached): the subtractive layer's linear map, and the
        shunting layer's numerator; for a convolution as (out, in · kernel), the kernels side by side."""
        with torch.no_grad():
            n_e, n_i = self.n_excitatory, self.n_inhibitory
            return self.ee.weight.reshape(n_e, -1) - self.ei.weight.reshape(n_e, n_i) @ self.ie.weight.reshape(n_i, -1)

    def lr_multipliers(self) -> dict[nn.Parameter, float]:
        """Cornford et al.'s corrected-SGD factors as learning-rate multipliers (empty unless
        ``corrected``).

        .. math:: \\eta_{IE} = \\eta / \\sqrt{n_E}, \\quad \\eta_{EI} = \\eta / n_{in}, \\quad
                  \\eta_\\alpha = \\eta / (\\sqrt{n_E}\\, n_{in})

        Their code divides these gradients by the factors before SGD; as multipliers of the
        learning rate they mean the same under SGD and keep their meaning under Adam, which would
        undo a rescaled gradient.
        """
        if not self.corrected:
            return {}
        root_e, n_in = math.sqrt(self.n_excitatory), self.fan_in
        out = {self.ie._raw_weight(): 1 / root_e, self.ei._raw_weight(): 1 / n_in}
        if self.shunting:
            out[self.alpha] = 1 / (root_e * n_in)
        return out

    # -- the optimizer hook's interface (biofa._hooks): the sub-layers project themselves ---------
    def constrained_parameters(self):
        return [self.gain] if self.shunting else []

    @torch.no_grad()
    def enforce_constraints(self) -> None:
        if self.shunting:
            self.gain.clamp_(min=0)

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.shunting:
            _hooks.register_constrained(self)

    def _describe(self) -> str:
        s = f"n_inhibitory={self.n_inhibitory}, bias={self.bias is not None}"
        if self.shunting:
            s += ", shunting=True"
        if self.corrected:
            s += ", corrected=True"
        return s


class DANNLinear(_DANN):
    """A fully connected E/I layer: n_E excitatory outputs, n_I inhibitory interneurons.

    Subtractive form (``shunting=False``):

    .. math:: h = W_{EE}\\, x - W_{EI} (W_{IE}\\, x) + b

    Shunting (divisive) form of Cornford et al.'s code (``shunting=True``):

    .. math:: h = g \\odot \\frac{W_{EE} x - W_{EI} (W_{IE} x)}{W_{EI} (e^{\\alpha} \\odot W_{IE} x) + \\epsilon} + b

    - :math:`W_{EE}` (n_E × n_in), :math:`W_{IE}` (n_I × n_in), :math:`W_{EI}` (n_E × n_I): the
      sub-layers ``ee``, ``ie``, ``ei``, all :math:`\\ge 0` (projected after every step); each
      sends its error back through its own B (``layer.ee.feedback.matrix()``, ...). In the shunting
      form the divisive path uses ``ei`` (and its B) a second time.
    - :math:`\\alpha` (n_I), :math:`g \\ge 0` (n_E): shunting parameters; :math:`\\epsilon = 10^{-8}`.
      The denominator is positive only for non-negative inputs (rates: a ReLU layer's output, on/off
      inputs); with signed inputs (e.g. after tanh) it can cross zero and the output diverge.
    - n_I = ``n_inhibitory`` or :func:`inhibitory_units` (``inhibitory_fraction`` · n_E, at least 1).

    Initialisation (their "ICLR" policy): :math:`W_{EE}, W_{IE} \\sim \\mathrm{Exp}(\\sigma)` with
    :math:`\\sigma = \\sqrt{2\\pi / (n_{in} (2\\pi - 1))}` for rectified inputs (``relu_input``) or
    :math:`\\sqrt{1 / (2 n_{in})}` for the first layer; with one interneuron :math:`W_{IE}` is the
    mean row of :math:`W_{EE}`; :math:`W_{EI} = 1/n_I`, so inhibition cancels excitation in
    expectation; :math:`b = 0`, :math:`g = 1`, :math:`e^{\\alpha} = \\sqrt{(2\\pi - 1)/n_{in}}`.

    ``corrected=True`` asks for their corrected updates (:meth:`lr_multipliers`, applied by
    :func:`biofa.nn.parameter_groups`). ``feedback``, ``init`` (of B), ``batch_manhattan``,
    ``generator``, ``device``, ``dtype`` are those of :class:`~biofa.nn.Linear`; ``enforce`` is the
    sign constraint's (``"project"`` or a reparameterisation).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, feedback="fa",
                 inhibitory_fraction: float = 0.1, n_inhibitory: int | None = None, shunting: bool = False,
                 corrected: bool = False, relu_input: bool = True, enforce: str = "project",
                 init="xavier", batch_manhattan: bool = False, generator: torch.Generator | None = None,
                 device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._build(in_features, in_features, out_features, bias, feedback=feedback,
                    inhibitory_fraction=inhibitory_fraction, n_inhibitory=n_inhibitory, shunting=shunting,
                    corrected=corrected, relu_input=relu_input, enforce=enforce, init=init,
                    batch_manhattan=batch_manhattan, generator=generator, device=device, dtype=dtype,
                    owner="DANNLinear")

    def _sublayers(self, n_in, n_i, n_out, sub):
        return Linear(n_in, n_i, False, **sub), Linear(n_i, n_out, False, **sub), Linear(n_in, n_out, False, **sub)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._describe()}"


class _DANNConvNd(_DANN):
    """A convolutional DANN layer (Cornford et al.'s code, ``EiConvLayer``): excitatory and
    inhibitory filter banks of the same geometry, and :math:`W_{EI}` as a 1 × 1 convolution from
    the n_I inhibitory maps to the n_E excitatory ones, at every position:

    .. math:: h = \\mathrm{conv}(x; W_{EE}) - W_{EI} \\cdot \\mathrm{conv}(x; W_{IE}) + b

    (shunting: as :class:`DANNLinear`, per position). The fan-in is in_channels × kernel size; the
    initialisation, corrected updates and effective W (as (out, in · kernel)) are those of
    :class:`DANNLinear` with that fan-in. ``groups`` must be 1 (an interneuron reads every input
    channel)."""

    _conv = None  # the biofa convolution class

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, feedback="fa",
                 inhibitory_fraction: float = 0.1, n_inhibitory: int | None = None, shunting: bool = False,
                 corrected: bool = False, relu_input: bool = True, enforce: str = "project", init="xavier",
                 batch_manhattan: bool = False, generator: torch.Generator | None = None, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if groups != 1:
            raise ConfigError(f"The 'groups' parameter of {name} must be 1 (an interneuron reads every input "
                              f"channel). Got {groups!r} instead.")
        self.in_channels, self.out_channels = in_channels, out_channels
        self._geometry = {"kernel_size": kernel_size, "stride": stride, "padding": padding, "dilation": dilation,
                          "padding_mode": padding_mode}
        nd = self._conv._nd
        self.kernel_size = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * nd
        fan_in = in_channels * math.prod(self.kernel_size)
        self._build(in_channels, fan_in, out_channels, bias, feedback=feedback,
                    inhibitory_fraction=inhibitory_fraction, n_inhibitory=n_inhibitory, shunting=shunting,
                    corrected=corrected, relu_input=relu_input, enforce=enforce, init=init,
                    batch_manhattan=batch_manhattan, generator=generator, device=device, dtype=dtype, owner=name)

    def _sublayers(self, n_in, n_i, n_out, sub):
        g = self._geometry
        ie = self._conv(n_in, n_i, bias=False, **g, **sub)
        ei = self._conv(n_i, n_out, 1, bias=False, **sub)  # W_EI at every position
        ee = self._conv(n_in, n_out, bias=False, **g, **sub)
        return ie, ei, ee

    def _per_unit(self, v):
        return v.view(-1, *([1] * len(self.kernel_size)))

    def extra_repr(self) -> str:
        g = self._geometry
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={g['stride']}, "
                f"padding={g['padding']}, {self._describe()}")


class DANNConv1d(_DANNConvNd):
    """A 1-d convolutional DANN layer; see :class:`_DANNConvNd` (arguments as :class:`~biofa.nn.Conv1d`
    plus :class:`DANNLinear`'s)."""

    _conv = Conv1d


class DANNConv2d(_DANNConvNd):
    """A 2-d convolutional DANN layer; see :class:`_DANNConvNd`."""

    _conv = Conv2d


#: every DANN layer class (``isinstance(m, DANN_LAYERS)``)
DANN_LAYERS = (DANNLinear, DANNConv1d, DANNConv2d)
