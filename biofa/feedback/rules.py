"""The layer-wise feedback rules: BP, FA, uSF, frSF, brSF, Kolen–Pollack, weight mirror.

Each rule is a :class:`~biofa.feedback.base.Feedback` module; the mathematics is in
:mod:`biofa.feedback.functional`. Direct feedback alignment lives in :mod:`biofa.feedback.direct`.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from .. import _hooks
from ..errors import ConfigError, check_choice
from ..init import init_bound, init_std, init_weight
from . import functional as F
from .base import Feedback, register_rule

SCALES = ("init", "sn", "sn-spectral")
#: Power-iteration steps at bind time, from a random vector (as torch.nn.utils.spectral_norm).
WARMUP_ITERATIONS = 15


@register_rule
class BP(Feedback):
    """Backpropagation through the same code path: :math:`B = W` at every use."""

    name = "bp"

    def matrix_for(self, weight):
        return weight


@register_rule
class FA(Feedback):
    """Feedback alignment (Lillicrap et al. 2016): a fixed random B.

    .. math:: B \\sim \\mathcal U[-a, a] \\text{ drawn once}, \\quad \\delta_{l-1} = g_l B_l

    ``init`` is the distribution B is drawn from: ``None`` (default) uses the layer's own init
    scheme (Xavier-uniform by default), so B has W's init distribution and scale; ``"xavier"``,
    ``"kaiming"`` or a bound a > 0 for U[-a, a] choose another.
    B is a registered buffer.
    """

    name = "fa"

    def __init__(self, init=None):
        super().__init__()
        self.init = init
        self.register_buffer("B", None)

    def reset_parameters(self, weight, generator=None):
        self.B = init_weight(torch.empty_like(weight), self.init_scheme, generator)

    def matrix_for(self, weight):
        return self.B

    def feedback_input(self, weight):
        return self.B

    def matrix_from(self, weight, fb_input):
        return fb_input


class _SignConcordant(Feedback):
    sign_concordant = True

    def __init__(self, scale: str = "init", init=None, power_iterations: int = 1):
        super().__init__()
        check_choice(type(self).__name__, "scale", scale, SCALES)
        if isinstance(power_iterations, bool) or not isinstance(power_iterations, int) or power_iterations < 0:
            raise ConfigError(f"{type(self).__name__}: power_iterations must be a non-negative int "
                              f"(0: exact spectral norms by SVD), got {power_iterations!r}")
        self.scale = scale
        self.init = init
        self.power_iterations = power_iterations
        self._scratch = None  # where an eager backward writes B: derived, not state
        # "sn-spectral" by power iteration: the left singular vectors of W and of the unscaled B,
        # kept from step to step (state: a reloaded model continues with the same estimates)
        self.register_buffer("u_weight", None)
        self.register_buffer("u_feedback", None)

    def config(self) -> dict:
        config = super().config()
        if self.scale != "sn-spectral":  # meaningless there: the config of those rules is unchanged
            del config["power_iterations"]
        return config

    @property
    def _power(self) -> bool:
        return self.scale == "sn-spectral" and self.power_iterations > 0

    def reset_parameters(self, weight, generator=None):
        if not self._power:
            return
        u = torch.randn(weight.shape[0], generator=generator, dtype=weight.dtype, device=weight.device)
        u = u / u.norm()
        _, self.u_weight = F.spectral_norm(weight, u, WARMUP_ITERATIONS)
        _, self.u_feedback = F.spectral_norm(self._unscaled(weight, None), u, WARMUP_ITERATIONS)
        self.u_weight, self.u_feedback = self.u_weight.to(weight.dtype), self.u_feedback.to(weight.dtype)

    @abc.abstractmethod
    def _unscaled(self, weight, fb_input):
        """B before an "sn" rescaling: sign(W) for uSF, sign(W)∘|R| for frSF/brSF."""

    def _rescaled(self, b, weight, update: bool):
        """B rescaled by ``scale`` ("init": as it is). ``update``: an eager backward, which advances
        the persistent power-iteration vectors; every other use reads them without writing."""
        if self.scale == "sn":
            return F.match_norm(b, weight)
        if self.scale != "sn-spectral":
            return b
        b, u_b, u_w = F.match_spectral_norm(b, weight, self.power_iterations, self.u_feedback, self.u_weight)
        if update and self._power:
            with torch.no_grad():
                self.u_feedback.copy_(u_b)
                self.u_weight.copy_(u_w)
        return b

    def _eager_backward(self) -> bool:
        return not (torch.compiler.is_compiling() or torch.is_grad_enabled()
                    or torch._C._functorch.peek_interpreter_stack() is not None)

    def scratch(self, weight) -> torch.Tensor | None:
        """A reused buffer for B in an eager backward (B is consumed at once there), else None.

        Not when compiling, under torch.func transforms or when the backward builds a graph
        (``create_graph=True`` would save B).
        """
        if not self._eager_backward():
            return None
        buf = self._scratch
        if buf is None or buf.shape != weight.shape or buf.dtype != weight.dtype or buf.device != weight.device:
            buf = self._scratch = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        return buf

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: pickling must not clear our own buffers
        state["_scratch"] = None
        return state


@register_rule
class USF(_SignConcordant):
    """Uniform sign-concordant feedback (Liao et al. 2016), re-read from W at every use.

    .. math:: B = c \\, \\mathrm{sign}(W)

    ``scale="init"``: c is the standard deviation of the init distribution (Xavier-uniform:
    :math:`\\sqrt{2/(n_\\mathrm{in}+n_\\mathrm{out})}`); ``scale="sn"``:
    :math:`c = \\|W\\|_F / \\|\\mathrm{sign}(W)\\|_F` (the RMS of W's non-zero entries) so that
    :math:`\\|B\\|_F = \\|W\\|_F` every step, also when a projection has set weights to exactly 0
    (one of our readings of Moskovitz et al. 2018's "SN"; :doc:`/guide/moskovitz`).

    ``scale="sn-spectral"``: :math:`c = \\|W\\|_2 / \\|\\mathrm{sign}(W)\\|_2`, the spectral norms of W and
    B viewed as (out, in·k) matrices (a convolution's kernel as the matrix it applies to unfolded
    patches), so that :math:`\\|B\\|_2 = \\|W\\|_2`. ``power_iterations`` k > 0 (default 1)
    estimates each norm by k power-iteration steps per training step from left singular vectors
    kept in buffers ``u_weight`` and ``u_feedback`` (as :func:`torch.nn.utils.spectral_norm`;
    the estimate is never above the true norm, see :func:`~biofa.feedback.functional.spectral_norm`);
    ``0`` computes both exactly by SVD at every use (two SVDs per layer and step: costly for large
    layers). An eager backward advances the vectors; ``matrix()``, ``torch.compile`` and
    ``torch.func`` read them without writing. ``power_iterations`` is ignored by the other scales.

    Under Dale's law sign(W) is rank one and with softmax cross-entropy the hidden error is
    exactly zero; biofa warns when this combination is built
    (:ref:`Background, uSF under Dale's law <background-dale-usf>`).
    """

    name = "usf"

    def matrix_for(self, weight):
        return self._matrix(weight, None, update=False)

    def backward_matrix(self, weight, fb_input):
        return self._matrix(weight, self.scratch(weight), update=self._eager_backward())

    def _unscaled(self, weight, fb_input):
        return torch.sign(weight)

    def _matrix(self, weight, out, update):
        if self.scale != "init":
            return self._rescaled(torch.sign(weight), weight, update)
        return F.uniform_sign_feedback(weight, init_std(weight.shape, self.init_scheme), out)


@register_rule
class FRSF(_SignConcordant):
    """Fixed random-magnitude sign-concordant feedback: :math:`B = \\mathrm{sign}(W) \\circ |R|`.

    R is drawn once from the init distribution (buffer ``magnitude``); the signs follow W at every
    use. ``scale="sn"`` rescales B to :math:`\\|W\\|_F` every step, ``scale="sn-spectral"`` to
    :math:`\\|W\\|_2` (as :class:`USF`).
    """

    name = "frsf"

    def __init__(self, scale: str = "init", init=None, power_iterations: int = 1):
        super().__init__(scale, init, power_iterations)
        self.register_buffer("magnitude", None)

    def reset_parameters(self, weight, generator=None):
        self.magnitude = init_weight(torch.empty_like(weight), self.init_scheme, generator).abs_()
        super().reset_parameters(weight, generator)

    def feedback_input(self, weight):
        return self.magnitude

    def _unscaled(self, weight, fb_input):
        return F.random_magnitude_sign_feedback(weight, self.magnitude if fb_input is None else fb_input, True)

    def matrix_from(self, weight, fb_input, out=None, update=False):
        b = F.random_magnitude_sign_feedback(weight, fb_input, nonnegative=True, out=out)
        return self._rescaled(b, weight, update)

    def backward_matrix(self, weight, fb_input):
        return self.matrix_from(weight, fb_input, self.scratch(weight), self._eager_backward())

    def matrix_for(self, weight):
        return self.matrix_from(weight, self.magnitude)


def _set_plain(module: nn.Module, name: str, value) -> None:
    # a plain (non-tensor) attribute set at every step: skips nn.Module.__setattr__'s checks
    object.__setattr__(module, name, value)


@register_rule
class BRSF(_SignConcordant):
    """Batchwise random-magnitude sign-concordant feedback: :math:`B_t = \\mathrm{sign}(W) \\circ |R_t|`.

    :math:`R_t` is redrawn once per **training step** (an optimizer ``step()`` anywhere in the
    process, see :func:`biofa.feedback.training_step`), never in eval and never by a second
    forward of the same step: :math:`R_t` is a function of (seed, step), so the same step always
    sees the same magnitudes and a run is reproducible. The seed is a buffer. :math:`|R_t|` follows
    W's init distribution folded to :math:`[0, a]`, drawn in float32 with 16 random bits per synapse
    by a counter-based generator on W's device
    (:func:`~biofa.feedback.functional.uniform_magnitudes`): the same B on every device and under
    ``torch.compile``, and ``.to(dtype)`` keeps B up to rounding.

    A forward captures only the draw's key :math:`\\kappa(\\mathrm{seed}, t)` (a 0-d int32 tensor,
    :meth:`feedback_input`); the backward draws :math:`|R_t|` from it when, and only when, it
    sends an error to the layer's input (not for a first layer whose input needs no gradient). A
    graph kept past an optimizer step still backpropagates through its own step's B. Eager
    calls draw once per step into reused buffers; compiled graphs read the step from
    :func:`biofa.feedback.step_tensor` and redraw in the graph (fused, no recompilation per step).
    ``scale``: ``"init"``, ``"sn"`` or ``"sn-spectral"`` as for :class:`USF` (the power-iteration vector of
    B then starts each step from the previous step's B, whose magnitudes were other draws).
    """

    name = "brsf"

    def __init__(self, scale: str = "init", init=None, power_iterations: int = 1):
        super().__init__(scale, init, power_iterations)
        self.register_buffer("seed", None)
        # derived, not state: (seed's identity, seed, step, κ, κ as tensor) of the last key handed
        # out, and (κ, device, shape, workspace) of the levels now in the workspace
        self._cache = None
        self._drawn = None

    def reset_parameters(self, weight, generator=None):
        self.seed = torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)
        self._cache = self._drawn = None
        super().reset_parameters(weight, generator)

    def _unscaled(self, weight, fb_input):
        magnitudes = self.magnitudes(weight) if fb_input is None else self._magnitudes_from(weight, fb_input)
        return F.random_magnitude_sign_feedback(weight, magnitudes, True)

    def _eager(self) -> bool:
        return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is None

    def draw_key(self, device, step: int | None = None) -> torch.Tensor:
        """:math:`\\kappa(\\mathrm{seed}, t)` of training step ``step`` (default: the current one), 0-d int32."""
        if torch.compiler.is_compiling():  # read the step from a tensor: no guard on its value
            step_t = _hooks.step_tensor() if step is None else torch.tensor(step, dtype=torch.int64)
            return F.counter_key(self.seed.to(device), step_t)
        step = _hooks.training_step() if step is None else step
        if not self._eager():  # torch.func: the seed may be a wrapped (e.g. batched) tensor
            return F.counter_key(self.seed.to(device), torch.tensor(step, dtype=torch.int64))
        # the seed's version changes when load_state_dict writes another seed
        seed_key = (self.seed.data_ptr(), self.seed._version, self.seed.device)
        cache = self._cache
        if cache is None or cache[0] != seed_key or cache[2] != step:
            # read back once per seed (a host sync on a GPU), then Python ints: no tensor ops per step
            seed = int(self.seed) if cache is None or cache[0] != seed_key else cache[1]
            kappa = F.counter_key(seed, step)
            cache = (seed_key, seed, step, kappa, torch.tensor(kappa, dtype=torch.int32))
            _set_plain(self, "_cache", cache)
        return cache[4]

    def _levels(self, weight, kappa) -> torch.Tensor | None:
        """The draw's levels (:func:`~biofa.feedback.functional.keyed_levels`) in the reused
        workspace, drawn once per key; None unless ``kappa`` is the key this rule handed out in
        an eager call (traced, transformed or foreign keys take the pure draw)."""
        if not (self._eager() and self._cache is not None and kappa is self._cache[4]):
            return None
        drawn = (self._cache[3], weight.device, weight.shape)
        if self._drawn is None or self._drawn[:3] != drawn:
            space = self._workspace(weight)
            _set_plain(self, "_drawn", None)  # the workspace is overwritten: no stale tag if the draw fails
            F.keyed_levels(weight.shape, self._cache[3], weight.device, space)
            _set_plain(self, "_drawn", (*drawn, space))
        return self._drawn[3][1][:weight.numel()].view(weight.shape)

    def _workspace(self, weight):
        count, words = weight.numel(), -(-weight.numel() // 2)
        if self._drawn is not None and self._drawn[1] == weight.device and self._drawn[3][0].numel() == words:
            return self._drawn[3]
        return (torch.empty(words, dtype=torch.int32, device=weight.device),
                torch.empty(count, dtype=torch.float32, device=weight.device),
                F.weyl_counter(words, weight.device))

    def _magnitudes_from(self, weight, kappa) -> torch.Tensor:
        """:math:`|R|` of the draw keyed ``kappa`` (a :meth:`draw_key` tensor), in W's dtype."""
        bound = init_bound(weight.shape, self.init_scheme)
        levels = self._levels(weight, kappa)
        if levels is None:
            return F.keyed_magnitudes(weight.shape, bound, kappa, weight.device).to(weight.dtype)
        return (levels * F.magnitude_scale(bound)).to(weight.dtype)

    def magnitudes(self, weight, step: int | None = None) -> torch.Tensor:
        """:math:`|R_t|` for training step ``step`` (default: the current one), in W's dtype."""
        return self._magnitudes_from(weight, self.draw_key(weight.device, step))

    def feedback_input(self, weight):
        return self.draw_key(weight.device)

    def matrix_from(self, weight, fb_input, out=None, update=False):
        levels = self._levels(weight, fb_input) if weight.dtype == torch.float32 else None
        if levels is not None:  # B straight from the levels: one pass fewer, the same bits
            scale = F.magnitude_scale(init_bound(weight.shape, self.init_scheme))
            b = F.level_sign_feedback(weight, levels, scale, out)
        else:
            b = F.random_magnitude_sign_feedback(weight, self._magnitudes_from(weight, fb_input),
                                                 nonnegative=True, out=out)
        return self._rescaled(b, weight, update)

    def backward_matrix(self, weight, fb_input):
        return self.matrix_from(weight, fb_input, self.scratch(weight), self._eager_backward())

    def matrix_for(self, weight):
        return self.matrix_from(weight, self.feedback_input(weight))

    def __getstate__(self):
        state = super().__getstate__()
        state["_cache"] = state["_drawn"] = None
        return state


class _Learned(Feedback):
    learned = True

    def __init__(self, init=None):
        super().__init__()
        self.init = init
        self.register_parameter("B", None)

    def reset_parameters(self, weight, generator=None):
        self.B = nn.Parameter(init_weight(torch.empty_like(weight), self.init_scheme, generator))

    def matrix_for(self, weight):
        return self.B.detach()

    def feedback_input(self, weight):
        return self.B

    def matrix_from(self, weight, fb_input):
        return fb_input.detach()

    def feedback_parameter(self):
        return self.B


@register_rule
class KolenPollack(_Learned):
    """Kolen–Pollack (Akrout et al. 2019): B learns with W's own update.

    .. math:: \\Delta W = -\\eta(g^\\top h + \\lambda W), \\qquad \\Delta B = -\\eta(g^\\top h + \\lambda B)

    B is a :class:`~torch.nn.Parameter` whose gradient is W's local gradient; hand it to the same
    optimizer (``model.parameters()`` does) and it gets the same update and the same weight decay,
    so with SGD :math:`W - B` shrinks by :math:`(1-\\eta\\lambda)` per step and B → W.
    B starts random, drawn like FA's.
    """

    name = "kp"

    def feedback_grad(self, weight, grad_weight, fb_input=None):
        return F.kolen_pollack_gradient(grad_weight)


@register_rule
class WeightMirror(_Learned):
    """Weight mirror (Akrout et al. 2019): B learns from noise sent through W.

    .. math:: \\nabla_B = \\lambda B - \\frac{1}{n\\sigma^2}\\sum_k (W\\xi_k)\\xi_k^\\top,
              \\qquad \\xi_k \\sim \\mathcal N(0, \\sigma^2 I)

    so the optimizer's step drives B towards :math:`W/\\lambda \\propto W`. One fresh batch of
    ``samples`` noise vectors per backward pass, drawn from a generator seeded by (seed, step).
    """

    name = "wm"

    def __init__(self, noise_std: float = 1.0, decay: float = 1.0, samples: int = 64, init=None):
        super().__init__(init)
        self.noise_std = noise_std
        self.decay = decay
        self.samples = samples
        self.register_buffer("seed", None)
        # noise batches drawn so far: a buffer, so that state_dict (and a checkpoint) continues them
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))

    def reset_parameters(self, weight, generator=None):
        super().reset_parameters(weight, generator)
        self.seed = torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)

    @torch._disable_dynamo  # torch.compiler.disable, imported lazily (torch._dynamo takes 1.5 s): a torch.Generator and a draw counter: Python state, run eagerly
    def feedback_grad(self, weight, grad_weight, fb_input=None):
        b = self.B if fb_input is None else fb_input
        gen = torch.Generator(device=weight.device)
        gen.manual_seed((int(self.seed) * 1_000_003 + int(self.draws)) % (2**63 - 1))
        if torch._C._functorch.maybe_current_level() is None:
            self.draws += 1
        else:  # inside a torch.func transform a captured buffer must not be mutated in place
            self.draws = self.draws + 1
        width = weight[0].numel()
        # at least float32 (under autocast W and B arrive in bf16/fp16): the same noise stream
        dtype = torch.promote_types(weight.dtype, torch.float32)
        noise = torch.randn(self.samples, width, generator=gen, device=weight.device, dtype=dtype)
        noise.mul_(self.noise_std)
        grad = F.weight_mirror_gradient(weight.to(dtype), b.detach().to(dtype), noise, self.noise_std, self.decay)
        return grad.to(b.dtype)
