"""Feedforward synapse layers with separate feedback: ``Linear``, ``Conv1d``, ``Conv2d``.

Each layer owns W (``weight``, always the effective forward weight), b, a feedback rule
(``layer.feedback``; ``layer.feedback.matrix()`` is the B in use now) and optional sign and norm
constraints. The forward pass is torch's own; the backward goes through B
(:mod:`biofa.nn.functional`).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .. import _hooks
from ..constraints.norm import make_norm
from ..constraints.pickling import reduce_module, restore_parametrizations
from ..constraints.sign import Dale, SignReparametrization, make_sign
from ..errors import ConfigError, DegenerateFeedbackWarning, ShapeError
from ..feedback.base import make_feedback
from ..init import check_init, init_weight
from .functional import DIRECT, EXACT, FeedbackConvFunction, FeedbackLinearFunction, call_mode, cast_for_autocast


def degenerate_usf_message(where: str) -> str:
    """The warning for uSF under Dale's law (:ref:`background-dale-usf`)."""
    return (
        f"{where}: uniform sign-concordant feedback ('usf') under Dale's law is degenerate: sign(W) "
        "is rank one, so the error reaching presynaptic unit j is s_j * sum_k e_k, which is exactly "
        "zero with softmax cross-entropy, and nothing below the layer learns from the task. In "
        "float32 the sum leaves a rounding residue (~1e-8 of the output error) that adaptive "
        "optimizers such as Adam rescale into full-size, meaningless steps. With any other loss the "
        "hidden error is still rank one (one number per input, signed by each unit's type). Use "
        "'frsf'/'brsf' or fixed per-synapse signs (sign='fixed') instead."
    )


class FeedbackLayer(nn.Module):
    """Common machinery of biofa's layers: feedback, constraints, initialisation."""

    #: set by subclasses: shape of W
    _weight_shape: tuple
    groups: int = 1

    def _setup(self, *, bias, feedback, sign, norm, init, batch_manhattan, generator, device, dtype):
        owner = type(self).__name__
        check_init(owner, init)
        self.init = init
        self.batch_manhattan = bool(batch_manhattan)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self._weight_shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self._weight_shape[0], **factory))
        else:
            self.register_parameter("bias", None)
        self.feedback = make_feedback(feedback, owner)
        self.sign = make_sign(sign, owner)
        self.norm = make_norm(norm, owner)
        if self.sign is not None:
            self.sign.bind(self.weight, self.groups, generator)
        self.reset_parameters(generator)
        if self.sign is not None and self.sign.reparameterised:
            parametrize.register_parametrization(self, "weight", SignReparametrization(self.sign))
        if self.sign is not None or self.norm is not None:
            _hooks.register_constrained(self)
            self.register_load_state_dict_post_hook(_project_after_load)
        _hooks.register_layer(self)  # Batch Manhattan, applied at the optimizer step
        if isinstance(self.sign, Dale) and self.feedback.name == "usf":
            warnings.warn(degenerate_usf_message(owner), DegenerateFeedbackWarning, stacklevel=3)

    # -- parameters ---------------------------------------------------------------------------
    def _raw_weight(self) -> nn.Parameter:
        """The Parameter the optimizer updates (V under a sign reparameterisation, else W)."""
        if parametrize.is_parametrized(self, "weight"):
            return self.parametrizations.weight.original
        return self.weight

    def constrained_parameters(self):
        return [self._raw_weight()]

    @torch.no_grad()
    def _set_weight(self, value: torch.Tensor) -> None:
        """Write an effective weight, through the reparameterisation when there is one."""
        if parametrize.is_parametrized(self, "weight"):
            param = self.parametrizations.weight
            param.original.copy_(param[0].right_inverse(value))
        else:
            self.weight.copy_(value)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw W from the init scheme (made sign-compliant as S∘|W|), zero b, draw B."""
        w = init_weight(torch.empty_like(self.weight), self.init, generator)
        self.load_forward_weights(w, None, generator)
        if self.bias is not None:
            self.bias.zero_()

    @torch.no_grad()
    def load_forward_weights(self, weight, bias=None, generator=None) -> None:
        """Set W (and b) from given values, e.g. a torch layer's; constraints and B follow.

        Under a sign constraint the weight becomes :math:`S \\circ |W|` (magnitudes kept).
        """
        if self.sign is not None:
            weight = self.sign.comply(weight.to(self.weight.dtype))
        self._set_weight(weight)
        if bias is not None:
            self.bias.copy_(bias)
        if self.norm is not None:
            self.norm.bind(weight)
        self.feedback.bind(self, generator)

    @property
    def _needs_projection(self) -> bool:
        return self.norm is not None or (self.sign is not None and not self.sign.reparameterised)

    @torch.no_grad()
    def enforce_constraints(self) -> None:
        """Project W onto its constraints now (sign projection, then norm rescaling)."""
        if not self._needs_projection:
            return
        w = self.weight
        projected = self._project(w)
        if projected is not w:  # Dale's projection with every unit excitatory clamps W itself, in place
            self._set_weight(projected)

    def __reduce_ex__(self, protocol):
        return reduce_module(self)  # torch.save(model) also under a reparameterised sign

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_parametrizations(self)
        if self.sign is not None or self.norm is not None:  # submodules live in state["_modules"]
            _hooks.register_constrained(self)
        _hooks.register_layer(self)

    def __deepcopy__(self, memo):
        # The standard deepcopy procedure, written out because torch's parametrize injects its own
        # ``__deepcopy__`` (which skips ``__setstate__``) into classes that lack one: a copy of a
        # reparameterised layer must register with the optimizer hook too.
        replica = type(self).__new__(type(self))
        memo[id(self)] = replica
        replica.__setstate__(copy.deepcopy(self.__dict__, memo))
        return replica

    def _weight_for_forward(self) -> torch.Tensor:
        # Projected out of place on every forward, whatever wrote W (`.data`, vector_to_parameters
        # bypass the optimizer hook and the version counter): W itself, bit for bit, when it
        # complies, which the optimizer hook ensures after every step.
        w = self.weight
        if self.sign is not None and not self.sign.reparameterised:
            w = self.sign.hold(w)
        if self.norm is not None:
            w = self.norm.hold(w)
        return w

    def _project(self, w: torch.Tensor) -> torch.Tensor:
        if self.sign is not None and not self.sign.reparameterised:
            w = self.sign.project(w)
        if self.norm is not None:
            w = self.norm.project(w)
        return w

    def _call(self, function, x: torch.Tensor) -> torch.Tensor:
        """Run ``function`` (the layer's autograd function) on ``x`` with W, b and the feedback
        tensors of this forward, cast like autocast casts ``F.linear``/``conv``; DFA bookkeeping."""
        w = self._weight_for_forward()
        fb = self.feedback
        mode = call_mode(self, x)
        fb.prepare(x)
        w, x, bias, fb_input = cast_for_autocast(w, x, self.bias, fb.feedback_input(w))
        if mode == DIRECT and torch.is_grad_enabled():
            fb.check_connected()
        if mode == DIRECT and x.requires_grad and torch.is_grad_enabled():
            mode = fb.register(x) or mode  # the pass's ticket in eager mode
        y = function.apply(x, w, bias, fb_input, self, mode)
        if fb.direct and fb.hub is not None and mode != EXACT and torch.is_grad_enabled():
            y = fb.hub.project(y)  # the output layer sends e @ B_l to every registered input
        return y

    def _describe(self) -> str:
        parts = [f"feedback={self.feedback.name!r}"]
        if self.init != "xavier":
            parts.append(f"init={self.init!r}")
        if self.batch_manhattan:
            parts.append("batch_manhattan=True")
        return ", ".join(parts)


def _project_after_load(layer, incompatible_keys) -> None:
    layer.enforce_constraints()  # the stored weights comply right after load_state_dict


class Linear(FeedbackLayer):
    """A fully connected layer whose error travels back through its feedback synapses.

    .. math:: y = W x + b, \\qquad \\delta x = \\delta y \\, B, \\qquad \\Delta W \\propto \\delta y^\\top x

    Parameters
    ----------
    in_features, out_features, bias : as :class:`torch.nn.Linear`; W has shape (out, in).
    feedback : rule name (``"bp"``, ``"fa"``, ``"usf"``, ``"frsf"``, ``"brsf"``, ``"dfa"``,
        ``"kp"``, ``"wm"``), a :class:`~biofa.feedback.Feedback` object (cloned) or a table
        ``{"rule": "usf", "scale": "sn"}``. Default ``"fa"``.
    sign : ``None`` (free), ``"dale"``, ``"fixed"`` or a :class:`~biofa.constraints.SignConstraint`.
    norm : ``None``, ``"const"`` or a :class:`~biofa.constraints.ConstNorm`.
    init : ``"xavier"`` (default, uniform), ``"kaiming"`` or a bound a for U[-a, a]; b starts at 0.
    batch_manhattan : step along the sign of the batch gradient of W and b (Liao 2016); applied
        when the optimizer steps, to the accumulated (under DDP: averaged) gradient.
    generator : torch.Generator for W, B and random sign masks (default: torch's global one).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, feedback="fa",
                 sign=None, norm=None, init="xavier", batch_manhattan: bool = False,
                 generator: torch.Generator | None = None, device=None, dtype=None):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ConfigError(f"Linear: in_features and out_features must be > 0, got {in_features}, {out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self._weight_shape = (out_features, in_features)
        self._setup(bias=bias, feedback=feedback, sign=sign, norm=norm, init=init,
                    batch_manhattan=batch_manhattan, generator=generator, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear: expected input of shape (..., {self.in_features}), got {tuple(x.shape)}")
        return self._call(FeedbackLinearFunction, x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._describe()}")


class _ConvNd(FeedbackLayer):
    _nd: int
    _conv_fn = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, feedback="fa", sign=None, norm=None,
                 init="xavier", batch_manhattan=False, generator=None, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if in_channels <= 0 or out_channels <= 0:
            raise ConfigError(f"{name}: channel counts must be > 0, got {in_channels}, {out_channels}")
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"{name}: in_channels and out_channels must be divisible by groups={groups}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ConfigError(f"The 'padding_mode' parameter of {name} must be one of "
                              f"{{'zeros', 'reflect', 'replicate', 'circular'}}. Got {padding_mode!r} instead.")
        tup = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * self._nd  # noqa: E731
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = tup(kernel_size), tup(stride), tup(dilation)
        self.groups = groups
        self.padding = padding
        self.padding_mode = padding_mode
        self._padding_ints = self._resolve_padding(padding)
        self._weight_shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._setup(bias=bias, feedback=feedback, sign=sign, norm=norm, init=init,
                    batch_manhattan=batch_manhattan, generator=generator, device=device, dtype=dtype)

    def _resolve_padding(self, padding):
        name = type(self).__name__
        if padding == "valid":
            return (0,) * self._nd
        if padding == "same":
            if any(s != 1 for s in self.stride):
                raise ConfigError(f"{name}: padding='same' needs stride 1")
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(t % 2 for t in totals):
                raise ConfigError(f"{name}: padding='same' with an even kernel pads asymmetrically; give padding as ints")
            return tuple(t // 2 for t in totals)
        if isinstance(padding, str):
            raise ConfigError(f"The 'padding' parameter of {name} must be an int, a tuple, 'same' or 'valid'. Got {padding!r} instead.")
        return tuple(padding) if isinstance(padding, (tuple, list)) else (padding,) * self._nd

    def _conv(self, x, weight, bias):
        return self._conv_fn(x, weight, bias, self.stride, self._pad_in_conv, self.dilation, self.groups)

    @property
    def _pad_in_conv(self):
        return self._padding_ints if self.padding_mode == "zeros" else (0,) * self._nd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self._nd + 2 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, "
                f"{', '.join('L' * self._nd)}), got {tuple(x.shape)}"
            )
        if self.padding_mode != "zeros":
            pads = [p for p in reversed(self._padding_ints) for _ in range(2)]
            x = F.pad(x, pads, mode=self.padding_mode)
        return self._call(FeedbackConvFunction, x)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return f"{s}, {self._describe()}"


class Conv1d(_ConvNd):
    """1-D convolution with separate feedback; arguments as :class:`torch.nn.Conv1d` plus
    ``feedback``, ``sign``, ``norm``, ``init``, ``batch_manhattan``, ``generator`` (see
    :class:`Linear`). Dale's law is per input channel; the feedback kernel B has W's shape."""

    _nd = 1
    _conv_fn = staticmethod(F.conv1d)


class Conv2d(_ConvNd):
    """2-D convolution with separate feedback; see :class:`Conv1d`. The input gradient is the
    transposed convolution of g with B."""

    _nd = 2
    _conv_fn = staticmethod(F.conv2d)


LAYERS = (Linear, Conv1d, Conv2d)
