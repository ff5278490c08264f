"""Dale's ANN (DANN) layer: excitatory output units with feed-forward inhibitory interneurons.

Cornford et al. (ICLR 2021, "Learning to live with Dale's principle") keep every synapse sign-fixed
by giving each layer a small population of inhibitory interneurons: E units project forward, the
interneurons subtract (or divide) locally. The three weight matrices are ordinary biofa
:class:`~biofa.nn.Linear` layers with non-negative weights (Dale's law with every presynaptic unit
excitatory), so each has its own feedback synapse and rule, and the sign projection, optimizer
hooks, ``state_dict`` and conversion machinery are the layers' own.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import _hooks
from ..constraints.sign import Dale
from ..errors import ConfigError
from .layers import Linear


def inhibitory_units(n_excitatory: int, inhibitory_fraction: float, owner: str = "DANNLinear") -> int:
    """:math:`n_I = \\max(1, \\mathrm{round}(f\\, n_E))`: Cornford's 10 % default, at least one
    interneuron (their 10-unit read-out has one)."""
    if isinstance(inhibitory_fraction, bool) or not isinstance(inhibitory_fraction, (int, float)) \
            or not 0.0 < inhibitory_fraction < 1.0:
        raise ConfigError(f"The 'inhibitory_fraction' parameter of {owner} must be in (0, 1). "
                          f"Got {inhibitory_fraction!r} instead.")
    return max(1, int(round(inhibitory_fraction * n_excitatory)))


class DANNLinear(nn.Module):
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

    epsilon = 1e-8

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, feedback="fa",
                 inhibitory_fraction: float = 0.1, n_inhibitory: int | None = None, shunting: bool = False,
                 corrected: bool = False, relu_input: bool = True, enforce: str = "project",
                 init="xavier", batch_manhattan: bool = False, generator: torch.Generator | None = None,
                 device=None, dtype=None):
        super().__init__()
        n_i = inhibitory_units(out_features, inhibitory_fraction) if n_inhibitory is None else n_inhibitory
        if isinstance(n_i, bool) or not isinstance(n_i, int) or n_i < 1:
            raise ConfigError(f"The 'n_inhibitory' parameter of DANNLinear must be a positive int (a DANN "
                              f"needs inhibitory units). Got {n_inhibitory!r} instead.")
        self.in_features, self.out_features, self.n_inhibitory = in_features, out_features, n_i
        self.inhibitory_fraction, self.shunting, self.corrected = inhibitory_fraction, bool(shunting), bool(corrected)
        self.relu_input = bool(relu_input)
        sub = {"feedback": feedback, "sign": Dale(e_fraction=1.0, enforce=enforce), "init": init,
               "batch_manhattan": batch_manhattan, "generator": generator, "device": device, "dtype": dtype}
        # registration order puts `ee` last: DFA takes the last biofa layer as the output layer
        self.ie = Linear(in_features, n_i, False, **sub)
        self.ei = Linear(n_i, out_features, False, **sub)
        self.ee = Linear(in_features, out_features, False, **sub)
        factory = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        if self.shunting:
            self.alpha = nn.Parameter(torch.empty(n_i, **factory))
            self.gain = nn.Parameter(torch.empty(out_features, **factory))
            _hooks.register_constrained(self)  # g >= 0 after every step
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Cornford et al.'s initialisation (see the class docstring); B redrawn for each matrix."""
        n_in, n_i = self.in_features, self.n_inhibitory
        if self.relu_input:
            sigma = math.sqrt(2 * math.pi / (n_in * (2 * math.pi - 1)))
        else:
            sigma = math.sqrt(1 / (2 * n_in))
        w = self.ee.weight
        w_ee = torch.empty_like(w).exponential_(1 / sigma, generator=generator)
        if n_i == 1:  # one interneuron: the mean excitatory row, not a random one
            w_ie = w_ee.mean(0, keepdim=True)
        else:
            w_ie = torch.empty(n_i, n_in, dtype=w.dtype, device=w.device).exponential_(1 / sigma, generator=generator)
        w_ei = torch.full((self.out_features, n_i), 1.0 / n_i, dtype=w.dtype, device=w.device)
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
            shunt = self.ei(self.alpha.exp() * z_i) + self.epsilon
        h = self.ee(x) - inhibition
        if self.shunting:
            h = self.gain * h / shunt
        return h if self.bias is None else h + self.bias

    def effective_weight(self) -> torch.Tensor:
        """:math:`W = W_{EE} - W_{EI} W_{IE}` (detached): the subtractive layer's linear map, and the
        shunting layer's numerator."""
        with torch.no_grad():
            return self.ee.weight - self.ei.weight @ self.ie.weight

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
        root_e, n_in = math.sqrt(self.out_features), self.in_features
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

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"n_inhibitory={self.n_inhibitory}, bias={self.bias is not None}")
        if self.shunting:
            s += ", shunting=True"
        if self.corrected:
            s += ", corrected=True"
        return s
