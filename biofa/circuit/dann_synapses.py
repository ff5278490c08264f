r"""DANN synapses: excitatory synapses with their own feed-forward inhibitory interneurons.

.. math:: W = W_{EE} - W_{EI} W_{IE}, \qquad I_\mathrm{post} \mathrel{+}= W\, r_\mathrm{pre}
          = W_{EE} r_\mathrm{pre} - W_{EI} (W_{IE} r_\mathrm{pre})

:math:`W_{EE}` (post × pre), :math:`W_{IE}` (n_I × pre) and :math:`W_{EI}` (post × n_I) are all
non-negative: the presynaptic units excite the postsynaptic ones directly and through n_I linear
inhibitory interneurons, which inhibit them. The interneurons act within the step that reads the
presynaptic rates, as in the recurrent DANN of Cornford et al. (ICLR 2021) that Li et al. (NeurIPS
2023) train, :math:`h_t = f((U_{EE} - U_{EI} U_{IE}) x_t + (W_{EE} - W_{EI} W_{IE}) h_{t-1} + b)`:
a population of interneurons with dynamics of their own would inhibit one step late.

Every engine reads the synapses through :attr:`DANNSynapses.weight` (differentiable in the three
factors), so the factors learn from the gradient G of W by the chain rule,
:math:`\Delta W_{EE} \propto G`, :math:`\Delta W_{EI} \propto -G W_{IE}^\top`,
:math:`\Delta W_{IE} \propto -W_{EI}^\top G`, and the error reaches ``pre`` through the
synapses' feedback B, which the rule makes from the effective W (``bp``: W itself; ``fa``: a
fixed random B of W's shape; the sign-concordant rules: W's signs).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .. import _hooks
from ..constraints import functional as CF
from ..constraints.sign import Dale
from ..errors import ConfigError, DegenerateFeedbackWarning
from ..nn.functional import FeedbackLinearFunction, call_mode, cast_for_autocast
from .synapses import FeedforwardSynapses


class DANNSynapses(FeedforwardSynapses):
    r"""Synapses from an excitatory ``pre`` to ``post`` through ``interneurons`` inhibitory
    interneurons (module docstring): :math:`W = W_{EE} - W_{EI} W_{IE}`, every factor
    :math:`\ge 0` (projected after every optimizer step).

    Initialisation (Li et al.'s for the recurrent DANN and its input, Cornford et al.'s column
    centring): :math:`W_{EE} \sim \mathrm{Exp}` with standard deviation
    :math:`\sigma = \sqrt{v\, n/(n-1)}` (n = post.size > 1, else :math:`\sigma^2 = v`), every row of
    :math:`W_{IE}` the mean row of :math:`W_{EE}`, :math:`W_{EI}` exponential with each row
    divided by its sum. Then :math:`W_{EI} W_{IE}` is the column means of :math:`W_{EE}`: every
    column of W is centred and its entries have variance v.

    Parameters
    ----------
    pre, post : Population
        ``pre`` must be excitatory: typed ``"E"``, or untyped with ``sign = "E"`` (an input read as
        excitatory rates).
    interneurons : int >= 1
        n_I.
    feedback : a paired rule with a fixed or derived B (``"bp"``, ``"fa"``, ``"usf"``, ``"frsf"``,
        ``"brsf"``) or ``"none"``; it acts on the effective W. Learned feedback (``kp``, ``wm``)
        would need B to follow W's updates, which here are the factors'.
    variance : the variance of W's entries at initialisation (default :math:`1/(3\, n_\mathrm{pre})`,
        PyTorch's default for a linear layer).
    corrected : Cornford et al.'s corrected updates as learning-rate multipliers
        (:meth:`lr_multipliers`).
    name, generator, device, dtype : as :class:`FeedforwardSynapses`; ``sign``: only ``"E"``.
    """

    def __init__(self, pre, post, *, interneurons: int, feedback="fa", sign=None, variance: float | None = None,
                 corrected: bool = False, name: str | None = None, generator: torch.Generator | None = None,
                 device=None, dtype=None, **unsupported):
        owner = f"DANNSynapses {pre.name}->{post.name}" if name is None else f"DANNSynapses {name!r}"
        if unsupported:
            raise ConfigError(f"{owner}: {sorted(unsupported)} are not options of a DANN synapse (it has no "
                              "connectivity mask, norm constraint, feedback sign or init scheme of its own); "
                              "remove them or drop 'interneurons'")
        if isinstance(interneurons, bool) or not isinstance(interneurons, int) or interneurons < 1:
            raise ConfigError(f"{owner}: interneurons must be a positive int (a DANN synapse needs inhibitory "
                              f"interneurons), got {interneurons!r}")
        if variance is not None and (isinstance(variance, bool) or not isinstance(variance, (int, float))
                                     or not math.isfinite(variance) or variance <= 0):
            raise ConfigError(f"{owner}: variance must be a positive number, got {variance!r}")
        if not isinstance(corrected, bool):
            raise ConfigError(f"{owner}: corrected must be true or false, got {corrected!r}")
        with warnings.catch_warnings():
            # the core layer warns that uSF under Dale's law is degenerate (sign(W_EE) is rank one),
            # but here the rule reads the signs of the effective, signed W
            warnings.simplefilter("ignore", DegenerateFeedbackWarning)
            super().__init__(pre, post, feedback=feedback, sign=sign, name=name, generator=generator,
                             device=device, dtype=dtype)
        constraint = self.layer.sign
        if not (isinstance(constraint, Dale) and bool((constraint.signs > 0).all())):
            raise ConfigError(f"{owner}: a DANN synapse needs excitatory presynaptic units, but {pre.name!r} is "
                              f"{'inhibitory' if pre.sign == 'I' else 'untyped'}; type it 'E', or give the "
                              "synapses sign = \"E\" to read an untyped input as excitatory rates")
        if self.has_feedback and self.layer.feedback.learned:
            raise ConfigError(f"{owner}: feedback {self.layer.feedback.name!r} learns B alongside W, but a DANN "
                              "synapse's W changes through its factors; use 'bp', 'fa', 'usf', 'frsf' or 'brsf'")
        self.interneurons, self.variance, self.corrected = interneurons, variance, corrected
        w = self.layer.weight
        factory = {"device": w.device, "dtype": w.dtype}
        # W_EE is the core layer's weight (Dale's law with every presynaptic unit excitatory, so the
        # layer's own projection keeps it >= 0); the interneurons' two factors live here
        self.w_ie = nn.Parameter(torch.empty(interneurons, pre.size, **factory))
        self.w_ei = nn.Parameter(torch.empty(post.size, interneurons, **factory))
        _hooks.register_constrained(self)
        self.reset_factors(generator)

    @torch.no_grad()
    def reset_factors(self, generator: torch.Generator | None = None) -> None:
        """Draw the factors as the class docstring says."""
        n_post, n_pre = self.post.size, self.pre.size
        v = 1.0 / (3 * n_pre) if self.variance is None else float(self.variance)
        std = math.sqrt(v * n_post / (n_post - 1)) if n_post > 1 else math.sqrt(v)
        w_ee = torch.empty_like(self.layer.weight).exponential_(1.0 / std, generator=generator)
        w_ei = torch.empty_like(self.w_ei).exponential_(1.0, generator=generator)
        self.write_factors(w_ee, w_ei / w_ei.sum(1, keepdim=True), w_ee.mean(0, keepdim=True).expand_as(self.w_ie))

    @torch.no_grad()
    def write_factors(self, w_ee: torch.Tensor, w_ei: torch.Tensor, w_ie: torch.Tensor) -> None:
        """Set :math:`W_{EE}, W_{EI}, W_{IE}` (each projected onto :math:`\\ge 0`)."""
        for name, value, target in (("w_ee", w_ee, self.layer.weight), ("w_ei", w_ei, self.w_ei),
                                    ("w_ie", w_ie, self.w_ie)):
            if tuple(value.shape) != tuple(target.shape):
                raise ConfigError(f"DANNSynapses {self.name!r}: {name} must have shape {tuple(target.shape)}, "
                                  f"got {tuple(value.shape)}")
        self.layer._set_weight(w_ee.clamp(min=0))
        self.w_ei.copy_(w_ei.clamp(min=0))
        self.w_ie.copy_(w_ie.clamp(min=0))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`(W_{EE}, W_{EI}, W_{IE})` as the forward pass uses them (differentiable)."""
        return (self.layer._weight_for_forward(), CF.hold_nonnegative(self.w_ei), CF.hold_nonnegative(self.w_ie))

    @property
    def weight(self) -> torch.Tensor:
        """The effective W = W_EE - W_EI W_IE, shape (post.size, pre.size), differentiable in the factors."""
        w_ee, w_ei, w_ie = self.factors()
        return w_ee - w_ei @ w_ie

    def write_weight(self, value: torch.Tensor) -> None:
        raise ConfigError(f"DANNSynapses {self.name!r}: W = W_EE - W_EI W_IE is set through its factors "
                          "(write_factors), not as one matrix; an initialisation that writes whole recurrent "
                          "matrices (recurrent_init, balance) does not apply to it")

    def in_place_update_error(self, what: str) -> str:
        return (f"is a DANN synapse (W = W_EE - W_EI W_IE, interneurons = {self.interneurons}): {what} updates W "
                "itself, but W is a product of non-negative factors, each of which needs its own gradient; train "
                "this circuit by backpropagation through time, or use plain Dale synapses and an interneuron "
                "population")

    def forward_tensors(self):
        w = self.weight
        return w, self.layer.feedback.feedback_input(w)

    def project(self, r_pre: torch.Tensor) -> torch.Tensor:
        w, fb = self.forward_tensors()
        w, r_pre, fb = cast_for_autocast(w, r_pre, fb)
        return FeedbackLinearFunction.apply(r_pre, w, None, fb, self.layer, call_mode(self.layer, r_pre))

    def feedback_matrix(self) -> torch.Tensor:
        with torch.no_grad():
            w, fb = self.forward_tensors()
            return self.layer.feedback.matrix_from(w, fb)

    def lr_multipliers(self) -> dict[nn.Parameter, float]:
        """Cornford et al.'s corrected updates (Li et al.'s recurrent form) as learning-rate
        multipliers, empty unless ``corrected``: :math:`\\eta_{IE} = \\eta / \\sqrt{n_\\mathrm{post}}`,
        :math:`\\eta_{EI} = \\eta / n_\\mathrm{pre}`."""
        if not self.corrected:
            return {}
        return {self.w_ie: 1 / math.sqrt(self.post.size), self.w_ei: 1 / self.pre.size}

    # -- the optimizer hook's interface (biofa._hooks); W_EE is its layer's ----------------------
    def constrained_parameters(self):
        return [self.w_ei, self.w_ie]

    @torch.no_grad()
    def enforce_constraints(self) -> None:
        self.w_ei.clamp_(min=0)
        self.w_ie.clamp_(min=0)

    def __setstate__(self, state):
        super().__setstate__(state)
        _hooks.register_constrained(self)

    def to_spec(self) -> dict:
        spec = super().to_spec()
        del spec["init"]
        spec["interneurons"] = self.interneurons
        if self.variance is not None:
            spec["variance"] = self.variance
        if self.corrected:
            spec["corrected"] = True
        return spec

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, interneurons={self.interneurons}"
