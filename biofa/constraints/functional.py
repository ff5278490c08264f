"""Sign and norm constraints as pure functions.

Background: :ref:`sign constraints <background-signs>`, :ref:`norm constraints <background-norms>`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def project_signs(weight: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Projection onto :math:`\\{W : S \\circ W \\ge 0\\}`: violators are clamped to 0.

    .. math:: W \\leftarrow S \\circ \\max(S \\circ W, 0)

    ``signs`` holds ±1 and broadcasts against ``weight``; the result is exact (multiplying by ±1
    loses nothing), and a clamped synapse can grow back when its gradient turns.
    """
    return (weight * signs).clamp_(min=0).mul_(signs)


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
    """Rescale W to a target Frobenius norm, per layer or per output unit (Moskovitz 2018 "const").

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


def unit_norms(weight: torch.Tensor, per_unit: bool) -> torch.Tensor:
    """Frobenius norm of W, or the norm of each output unit's incoming weights."""
    if per_unit:
        return weight.reshape(weight.shape[0], -1).norm(dim=1)
    return weight.norm()
