"""Sign and norm constraints as pure functions.

``project_*``/``rescale_norm`` compute the projection an optimizer hook writes into W;
``hold_*`` apply it inside a forward pass as differentiable functions that are the identity, bit
for bit and gradient included, on a weight that already satisfies its constraint.

Background: :ref:`sign constraints <background-signs>`, :ref:`norm constraints <background-norms>`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def project_signs(weight: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Projection onto :math:`\\{W : S \\circ W \\ge 0\\}`: violators are clamped to 0.

    .. math:: W \\leftarrow S \\circ \\max(S \\circ W, 0)

    ``signs`` holds ±1 and broadcasts against ``weight``; the result is exact (multiplying by ±1
    loses nothing), and a clamped synapse can grow back when its gradient turns.
    """
    return (weight * signs).clamp_(min=0).mul_(signs)


def hold_signs(weight: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """:func:`project_signs` out of place, for the forward pass: one clamp of W between bounds
    set by S (``[0, inf]`` where S = +1, ``[-inf, 0]`` where S = -1).

    .. math:: \\tilde W = S \\circ \\max(S \\circ W, 0), \\qquad
              \\partial L / \\partial W = [S \\circ W \\ge 0] \\circ \\partial L / \\partial \\tilde W

    On a compliant W the value and the gradient are W's own, bit for bit.
    """
    if _complies(weight, signs):
        return weight
    zero = torch.zeros_like(signs)
    inf = torch.full_like(signs, torch.inf)
    positive = signs > 0
    return weight.clamp(torch.where(positive, zero, -inf), torch.where(positive, inf, zero))


def hold_nonnegative(weight: torch.Tensor) -> torch.Tensor:
    """:func:`hold_signs` with every sign +1 (value and gradient): :math:`\\max(W, 0)`."""
    return weight if _complies(weight, None) else weight.clamp(min=0)


def _complies(weight: torch.Tensor, signs: torch.Tensor | None) -> bool:
    """Whether :math:`S \\circ W \\ge 0` is known cheaply, so the hold can return W itself.

    On a compliant W the clamp is the identity in value and gradient, but its backward builds a
    boolean mask of W's size, which on a CPU costs more than the layer's own weight gradient for
    a wide layer (a DANN's three matrices pay it three times). A float reduction answers first:
    ``amin`` (the minimum ``min()`` returns, NaN included, which fails the test so that the clamp
    runs; ``min()`` without a dimension runs a kernel about twice as slow on a CPU when W is in
    cache), of W detached (no graph, without the cost of entering ``no_grad``).
    Only in eager CPU code: on an accelerator the answer would synchronise the device, and under
    ``torch.compile`` or ``torch.func`` a data-dependent branch is not allowed; there the clamp runs.
    The check runs at every forward rather than once per optimizer step: writes through ``.data``
    (``p.data -= g``, ``vector_to_parameters``) change W without bumping its version counter, so
    no cheaper sign of "unchanged since the last projection" exists.
    """
    if (not weight.is_cpu or torch.compiler.is_compiling()
            or torch._C._functorch.peek_interpreter_stack() is not None or weight.numel() == 0):
        return False
    w = weight.detach()
    low = w.amin() if signs is None else (w * signs).amin()
    return low.item() >= 0


def violations(weight: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Number of weights whose sign contradicts ``signs`` (0-d int64 tensor)."""
    return ((weight * signs) < 0).sum()


PHI = {
    "abs": torch.abs,
    "relu": torch.relu,
    "softplus": F.softplus,
}


def phi_inverse(name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """A raw V with φ(V) = ``magnitude`` (≥ 0) for φ in {abs, relu, softplus}.

    softplus⁻¹(y) = log(expm1(y)); for y = 0 there is no finite pre-image, so a tiny floor is used.
    """
    if name in ("abs", "relu"):
        return magnitude.clone()
    floor = torch.finfo(magnitude.dtype).tiny ** 0.5
    y = magnitude.clamp(min=floor)
    return torch.where(y > 20, y, torch.log(torch.expm1(y)))


def rescale_norm(weight: torch.Tensor, target: torch.Tensor, per_unit: bool) -> torch.Tensor:
    """Rescale W to a target Frobenius norm, per layer or per output unit (``norm="const"``).

    .. math:: W \\leftarrow W \\, \\frac{\\nu}{\\|W\\|_F} \\quad\\text{or}\\quad
              W_{i,:} \\leftarrow W_{i,:} \\, \\frac{\\nu_i}{\\|W_{i,:}\\|}

    An all-zero W (or row) is left at zero.
    """
    if per_unit:
        norms = weight.reshape(weight.shape[0], -1).norm(dim=1)
        factor = torch.where(norms > 0, target / norms, torch.ones_like(norms))
        return weight * factor.reshape(-1, *([1] * (weight.dim() - 1)))
    norm = weight.norm()
    return weight * torch.where(norm > 0, target / norm, torch.ones_like(norm))


def norm_tolerance(weight: torch.Tensor, per_unit: bool) -> float:
    """Relative gap between a computed norm and its target that rounding alone can explain.

    After :func:`rescale_norm` the norm computed again differs from the target by two norm
    evaluations' rounding (each below :math:`(\\log_2 n + 1)\\,\\varepsilon` for torch's blocked
    sums over n terms) and the rounding of the rescale itself (:math:`\\varepsilon`):
    :math:`2(\\log_2 n + 2)\\,\\varepsilon`.
    """
    n = weight[0].numel() if per_unit else weight.numel()
    return 2.0 * (math.log2(max(n, 1)) + 2.0) * torch.finfo(weight.dtype).eps


def hold_norm(weight: torch.Tensor, target: torch.Tensor, per_unit: bool) -> torch.Tensor:
    """:func:`rescale_norm` for the forward pass: W times a constant factor, 1 when the norm is
    already at its target up to :func:`norm_tolerance`.

    .. math:: \\tilde W = c\\, W, \\quad c = \\begin{cases} 1 & |\\|W\\| - \\nu| \\le \\tau\\nu \\\\
              \\nu / \\|W\\| & \\text{otherwise} \\end{cases}, \\qquad
              \\partial L / \\partial W = c\\, \\partial L / \\partial \\tilde W

    c is held constant (no gradient through the norm), as the optimizer hook's rescaling is.
    Pure tensor operations: no host synchronisation, no graph break under ``torch.compile``.
    """
    w = weight.detach()
    norms = unit_norms(w, per_unit)
    close = (norms - target).abs() <= norm_tolerance(w, per_unit) * target
    factor = torch.where(close | (norms == 0), torch.ones_like(norms), target / norms)
    if per_unit:
        factor = factor.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight * factor


def unit_norms(weight: torch.Tensor, per_unit: bool) -> torch.Tensor:
    """Frobenius norm of W, or the norm of each output unit's incoming weights."""
    if per_unit:
        return weight.reshape(weight.shape[0], -1).norm(dim=1)
    return weight.norm()
