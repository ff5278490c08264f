r"""Eligibility traces of the online rules for recurrent circuits: RFLO and e-prop (rate neurons).

For the synapses s (pre → post) into a population with :math:`\alpha = \Delta t/\tau_\mathrm{post}`,
a trace :math:`p^n` (post × pre, per sample) estimates :math:`\partial r^n_\mathrm{post}/\partial W_s`
with every dependence of :math:`r^n_\mathrm{post}` on W through *other* recurrent rates detached
(the population's own leak kept). Time indices follow :mod:`biofa.circuit.dynamics`: step n
reads :math:`r^n`, computes :math:`I^n` and writes :math:`s^{n+1}`; :math:`p^0 = 0`.

RFLO (Murray, eLife 2019), exact for the **rate** form :math:`r^{n+1} = (1-\alpha) r^n + \alpha f(I^n)`:

.. math:: p^{n+1} = (1-\alpha)\,p^n + \alpha\, f'(I^n_\mathrm{post})\, r^{n\top}_\mathrm{pre}

e-prop (Bellec et al., Nat Commun 2020), exact for the **current** form
:math:`x^{n+1} = (1-\alpha) x^n + \alpha I^n,\ r^n = f(x^n)`:

.. math:: \epsilon^{n+1} = (1-\alpha)\,\epsilon^n + \alpha\, r^{n}_\mathrm{pre}, \qquad
          p^n = f'(v^n_\mathrm{post})\, \epsilon^{n\top}

with :math:`v = x` (current form; :math:`\partial r^n/\partial W = f'(x^n)\,\partial x^n/\partial W`
and :math:`\partial x^n/\partial W = \epsilon^n`), or :math:`v^n = I^n` when applied to the rate form.

Each rule is thus the exact gradient of its own form with the recurrent dependence detached, and
the two are the same rule derived for two forms. Applied to the *other* form they differ:
RFLO on the current form filters :math:`f'(I)\,r_\mathrm{pre}` (the pseudo-derivative inside the
filter, taken at the current I rather than at the state x that sets the rate); e-prop on the
rate form filters :math:`r_\mathrm{pre}` alone and multiplies by :math:`f'(I^n)` at read time
(the derivative outside the filter). Both agree with either form's exact trace when f is
linear (f' constant) or when α = 1 (τ = Δt, no memory).

The update of a synapse sums a learning signal :math:`L^m` (batch × post, the error reaching
:math:`r^m_\mathrm{post}`) against the trace at the same index m:
:math:`G = \sum_b L_b^{m\top} \circ p_b^m` (:meth:`Trace.gradient`). A bias is a synapse from a
presynaptic rate held at 1.

A mode is a class: each trace class registers in :data:`TRACES` under its rule name (a spiking
LIF/ALIF e-prop trace with its own pseudo-derivative and adaptation trace slots in the same way).
"""

from __future__ import annotations

import abc
import torch

__all__ = ["TRACES", "Trace", "RFLOTrace", "EpropTrace", "rflo_advance", "eprop_advance",
           "rflo_gradient", "eprop_gradient", "rflo_summed", "eprop_summed", "reverse_filter", "exact_trace"]


# -- the math: pure functions -------------------------------------------------------------------
def rflo_advance(p: torch.Tensor, alpha: float, d_prime: torch.Tensor, r_pre: torch.Tensor) -> torch.Tensor:
    r""":math:`p \leftarrow (1-\alpha) p + \alpha f'(I_\mathrm{post}) r_\mathrm{pre}^\top`, in place.

    p: (batch, post, pre); d_prime: f'(I) (batch, post); r_pre: (batch, pre)."""
    return p.mul_(1.0 - alpha).addcmul_(d_prime.unsqueeze(2), r_pre.unsqueeze(1), value=alpha)


def rflo_gradient(signal: torch.Tensor, p: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`G_{ij} = \sum_b L_{bi}\, p_{bij}`: signal (batch, post), p (batch, post, pre) → (post, pre).

    A product and a sum over the batch: on CPU about 4x faster than the batched matrix-vector
    product (``bmm`` with one row) or ``einsum``; ``scratch`` (p's shape) holds the product, so
    no buffer of p's size is allocated per step."""
    return torch.mul(p, signal.unsqueeze(2), out=scratch).sum(0)


def eprop_advance(eps: torch.Tensor, alpha: float, r_pre: torch.Tensor) -> torch.Tensor:
    r""":math:`\epsilon \leftarrow (1-\alpha)\epsilon + \alpha r_\mathrm{pre}`, in place; eps, r_pre: (batch, pre)."""
    return eps.lerp_(r_pre, alpha)


def eprop_gradient(signal: torch.Tensor, prime: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r""":math:`G = (L \odot f'(v))^\top \epsilon`: signal, prime (batch, post), eps (batch, pre) → (post, pre)."""
    return (signal * prime).T @ eps


# -- a whole sequence at once, backwards in time ---------------------------------------------------
def reverse_filter(z: torch.Tensor, beta: float) -> torch.Tensor:
    r""":math:`\Lambda^k = z^k + \beta\,\Lambda^{k+1}` from :math:`\Lambda^{K-1} = z^{K-1}` down to k = 0
    (the adjoint of the trace filter); z: (K, ...), returned as a new tensor."""
    out = z.clone()
    for k in range(out.shape[0] - 2, -1, -1):
        out[k].add_(out[k + 1], alpha=beta)
    return out


def _outer_sum(a: torch.Tensor, r_pre: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_{k,b} a^k_b\, r^{k\top}_b`: a (T, batch, post), r_pre (T, batch, pre) → (post, pre), one matmul."""
    return a.reshape(-1, a.shape[-1]).T @ r_pre.reshape(-1, r_pre.shape[-1])


def rflo_summed(alpha: float, signal: torch.Tensor, d_prime: torch.Tensor, r_pre: torch.Tensor) -> torch.Tensor:
    r"""The RFLO gradient of a whole sequence, :math:`G = \sum_{m=0}^{T} \sum_b L^m_b \circ p^m_b`,
    without the trace: with :math:`p^m = \sum_{k<m} \alpha (1-\alpha)^{m-1-k} f'(I^k) r^{k\top}`,

    .. math:: G = \alpha \sum_k \big(f'(I^k) \odot \Lambda^k\big)^\top r^k, \qquad
              \Lambda^k = L^{k+1} + (1-\alpha)\Lambda^{k+1},\ \Lambda^{T-1} = L^T.

    signal: (T + 1, batch, post), the learning signal on :math:`r^m` (row 0 meets :math:`p^0 = 0`
    and is unused); d_prime :math:`f'(I^k)` and r_pre :math:`r^k`: (T, batch, ·)."""
    return _outer_sum(d_prime * reverse_filter(signal[1:], 1.0 - alpha), r_pre).mul_(alpha)


def eprop_summed(alpha: float, signal: torch.Tensor, v_prime: torch.Tensor, r_pre: torch.Tensor) -> torch.Tensor:
    r"""The e-prop gradient of a whole sequence, :math:`G = \sum_m \sum_b (L^m_b \odot f'(v^m_b))^\top \epsilon^m_b`
    with :math:`\epsilon^m = \sum_{k<m} \alpha(1-\alpha)^{m-1-k} r^k`:

    .. math:: G = \alpha \sum_k \Lambda^{k\top} r^k, \qquad
              \Lambda^k = L^{k+1} \odot f'(v^{k+1}) + (1-\alpha)\Lambda^{k+1}.

    signal, v_prime: (T + 1, batch, post) on :math:`r^m`; r_pre: (T, batch, pre)."""
    return _outer_sum(reverse_filter(signal[1:] * v_prime[1:], 1.0 - alpha), r_pre).mul_(alpha)


# -- the modes: small trace classes -------------------------------------------------------------
class Trace(abc.ABC):
    r"""Eligibility trace of the weights into one population with
    :math:`\alpha = \Delta t/\tau_\mathrm{post}`, for ``batch`` samples: ``n_pre`` columns, the
    presynaptic rates of its synapse objects side by side (and 1 for the bias), so that one update
    and one gradient per step serve all of them (the loop slices the gradient per synapse object).

    Subclasses set ``name`` (the ``method`` string) and ``exact_form`` (the dynamics form for
    which the trace is the exact detached derivative) and implement :meth:`advance` and
    :meth:`gradient`. Step n calls ``gradient`` for a signal on :math:`r^m` (m = n for a hidden
    population, m = n + 1 for the output, after ``advance``) and ``advance`` once with step n's
    quantities.
    """

    name: str = ""
    exact_form: str = ""

    def __init__(self, alpha: float, batch: int, n_post: int, n_pre: int, *, dtype=None, device=None):
        self.alpha = float(alpha)
        self.shape = (batch, n_post, n_pre)
        self.factory = {"dtype": dtype, "device": device}
        self.reset()

    @abc.abstractmethod
    def reset(self) -> None:
        """Zero the trace (:math:`p^0 = 0`)."""
        raise NotImplementedError

    @abc.abstractmethod
    def advance(self, r_pre: torch.Tensor, d_prime: torch.Tensor) -> None:
        """:math:`p^n \\to p^{n+1}` from :math:`r^n_\\mathrm{pre}` and :math:`f'(I^n_\\mathrm{post})`."""
        raise NotImplementedError

    @abc.abstractmethod
    def gradient(self, signal: torch.Tensor, v_prime: torch.Tensor | None) -> torch.Tensor:
        """:math:`\\sum_b L_b \\circ p^m_b` for a signal (batch, post) on :math:`r^m`; ``v_prime`` is
        :math:`f'(v^m)` (x in the current form, I in the rate form), used by traces that apply the
        derivative at read time."""
        raise NotImplementedError

    @staticmethod
    @abc.abstractmethod
    def summed(alpha: float, signal: torch.Tensor, d_prime: torch.Tensor, v_prime: torch.Tensor | None,
               r_pre: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_m \\sum_b L^m_b \\circ p^m_b` over a whole sequence in one pass backwards in time
        (what ``advance`` and ``gradient`` sum step by step): signal and v_prime (T + 1, batch, post)
        on :math:`r^m`, d_prime :math:`f'(I^k)` and r_pre :math:`r^k` (T, batch, ·)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        b, i, j = self.shape
        return f"{type(self).__name__}(alpha={self.alpha}, batch={b}, post={i}, pre={j})"


class RFLOTrace(Trace):
    """RFLO: the filtered product :math:`f'(I)\\, r_\\mathrm{pre}^\\top` (module docstring);
    memory batch × post × pre."""

    name = "rflo"
    exact_form = "rate"

    def reset(self) -> None:
        self.p = torch.zeros(self.shape, **self.factory)
        self._scratch = torch.empty(self.shape, **self.factory)

    def advance(self, r_pre, d_prime) -> None:
        rflo_advance(self.p, self.alpha, d_prime, r_pre)

    def gradient(self, signal, v_prime=None):
        return rflo_gradient(signal, self.p, self._scratch)

    @staticmethod
    def summed(alpha, signal, d_prime, v_prime, r_pre):
        return rflo_summed(alpha, signal, d_prime, r_pre)


class EpropTrace(Trace):
    """e-prop: the filtered presynaptic rate ε times the pseudo-derivative at read time
    (module docstring); memory batch × pre."""

    name = "eprop"
    exact_form = "current"

    def reset(self) -> None:
        b, _, j = self.shape
        self.eps = torch.zeros(b, j, **self.factory)

    def advance(self, r_pre, d_prime=None) -> None:
        eprop_advance(self.eps, self.alpha, r_pre)

    def gradient(self, signal, v_prime):
        return eprop_gradient(signal, v_prime, self.eps)

    @staticmethod
    def summed(alpha, signal, d_prime, v_prime, r_pre):
        return eprop_summed(alpha, signal, v_prime, r_pre)


#: rule name → trace class (the ``method`` of :func:`biofa.circuit.online.learn_online`)
TRACES: dict[str, type[Trace]] = {cls.name: cls for cls in (RFLOTrace, EpropTrace)}


def exact_trace(form: str) -> type[Trace]:
    """The registered trace that is exact for dynamics ``form`` (the read-out uses it whatever the
    method: it has no recurrence, so its trace is its exact gradient)."""
    for cls in TRACES.values():
        if cls.exact_form == form:
            return cls
    raise KeyError(form)
