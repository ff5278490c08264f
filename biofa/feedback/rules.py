"""The layer-wise feedback rules: BP, FA, uSF, frSF, brSF, Kolen–Pollack, weight mirror.

Each rule is a :class:`~biofa.feedback.base.Feedback` module; the mathematics is in
:mod:`biofa.feedback.functional`. Direct feedback alignment lives in :mod:`biofa.feedback.direct`.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _hooks
from ..errors import check_choice
from ..init import init_bound, init_std, init_weight
from . import functional as F
from .base import Feedback, register_rule

SCALES = ("init", "sn")


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


class _SignConcordant(Feedback):
    sign_concordant = True

    def __init__(self, scale: str = "init", init=None):
        super().__init__()
        check_choice(type(self).__name__, "scale", scale, SCALES)
        self.scale = scale
        self.init = init


@register_rule
class USF(_SignConcordant):
    """Uniform sign-concordant feedback (Liao et al. 2016), re-read from W at every use.

    .. math:: B = c \\, \\mathrm{sign}(W)

    ``scale="init"``: c is the standard deviation of the init distribution (Xavier-uniform:
    :math:`\\sqrt{2/(n_\\mathrm{in}+n_\\mathrm{out})}`); ``scale="sn"``:
    :math:`c = \\|W\\|_F / \\|\\mathrm{sign}(W)\\|_F` (the RMS of W's non-zero entries) so that
    :math:`\\|B\\|_F = \\|W\\|_F` every step, also when a projection has set weights to exactly 0
    (Moskovitz et al. 2018).

    Under Dale's law sign(W) is rank one and with softmax cross-entropy the hidden error is
    exactly zero; biofa warns when this combination is built
    (:ref:`Background, uSF under Dale's law <background-dale-usf>`).
    """

    name = "usf"

    def matrix_for(self, weight):
        if self.scale == "sn":
            return F.match_norm(torch.sign(weight), weight)
        return F.uniform_sign_feedback(weight, init_std(weight.shape, self.init_scheme))


@register_rule
class FRSF(_SignConcordant):
    """Fixed random-magnitude sign-concordant feedback: :math:`B = \\mathrm{sign}(W) \\circ |R|`.

    R is drawn once from the init distribution (buffer ``magnitude``); the signs follow W at every
    use. ``scale="sn"`` rescales B to :math:`\\|W\\|_F` every step.
    """

    name = "frsf"

    def __init__(self, scale: str = "init", init=None):
        super().__init__(scale, init)
        self.register_buffer("magnitude", None)

    def reset_parameters(self, weight, generator=None):
        self.magnitude = init_weight(torch.empty_like(weight), self.init_scheme, generator).abs_()

    def matrix_for(self, weight):
        b = F.random_magnitude_sign_feedback(weight, self.magnitude, nonnegative=True)
        return F.match_norm(b, weight) if self.scale == "sn" else b


@register_rule
class BRSF(_SignConcordant):
    """Batchwise random-magnitude sign-concordant feedback: :math:`B_t = \\mathrm{sign}(W) \\circ |R_t|`.

    :math:`R_t` is redrawn once per **training step** (an optimizer ``step()`` anywhere in the
    process, see :func:`biofa.feedback.training_step`), never in eval and never by a second
    forward of the same step: :math:`R_t` is a function of (seed, step), so the same step always
    sees the same magnitudes and a run is reproducible. The seed is a buffer. :math:`|R_t|` follows
    W's init distribution folded to :math:`[0, a]` and does not depend on W's dtype, so ``.to(dtype)``
    keeps B. On the CPU it is drawn with 16 random bits per synapse
    (:func:`~biofa.feedback.functional.uniform_magnitudes_cpu`, three times cheaper than torch's CPU
    generator, whose redraw costs about as much as a matmul); on other devices by torch's
    generator there (another random stream).
    """

    name = "brsf"

    def __init__(self, scale: str = "init", init=None):
        super().__init__(scale, init)
        self.register_buffer("seed", None)
        self._cache = None  # (key, |R_t|): derived, not state

    def reset_parameters(self, weight, generator=None):
        self.seed = torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)
        self._cache = None

    def magnitudes(self, weight, step: int | None = None) -> torch.Tensor:
        """:math:`|R_t|` for training step ``step`` (default: the current one)."""
        step = _hooks.training_step() if step is None else step
        # the seed's version changes when load_state_dict writes another seed
        key = (step, weight.device, weight.dtype, weight.shape, self.seed.data_ptr(), self.seed._version)
        if self._cache is None or self._cache[0] != key:
            bound = init_bound(weight.shape, self.init_scheme)
            if weight.device.type == "cpu":
                r = F.uniform_magnitudes_cpu(weight.shape, bound, (int(self.seed), step))
            else:  # drawn in float32 whatever W's dtype, so that .to(dtype) keeps B (up to rounding)
                gen = torch.Generator(device=weight.device)
                gen.manual_seed((int(self.seed) * 1_000_003 + step) % (2**63 - 1))
                r = torch.empty(weight.shape, device=weight.device, dtype=torch.float32)
                r.uniform_(0.0, bound, generator=gen)
            self._cache = (key, r.to(weight.dtype))
        return self._cache[1]

    def matrix_for(self, weight):
        b = F.random_magnitude_sign_feedback(weight, self.magnitudes(weight), nonnegative=True)
        return F.match_norm(b, weight) if self.scale == "sn" else b

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: pickling must not clear our own cache
        state["_cache"] = None
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

    def feedback_grad(self, weight, grad_weight):
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
        self._draws = 0

    def reset_parameters(self, weight, generator=None):
        super().reset_parameters(weight, generator)
        self.seed = torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)

    def get_extra_state(self):  # in state_dict: a reloaded rule continues the noise stream
        return {"draws": self._draws}

    def set_extra_state(self, state):
        self._draws = int(state["draws"])

    def feedback_grad(self, weight, grad_weight):
        gen = torch.Generator(device=weight.device)
        gen.manual_seed((int(self.seed) * 1_000_003 + self._draws) % (2**63 - 1))
        self._draws += 1
        width = weight[0].numel()
        noise = torch.randn(self.samples, width, generator=gen, device=weight.device, dtype=weight.dtype)
        noise.mul_(self.noise_std)
        return F.weight_mirror_gradient(weight, self.B.detach(), noise, self.noise_std, self.decay)
