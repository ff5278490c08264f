"""Per-parameter learning-rate multipliers as optimizer parameter groups."""

from __future__ import annotations

from torch import nn


def parameter_groups(model: nn.Module, parameters=None) -> list[dict]:
    """``model``'s parameters as optimizer groups, one per learning-rate multiplier.

    .. math:: \\eta_p = m_p\\, \\eta

    Every module with an ``lr_multipliers()`` method (a :class:`~biofa.nn.DANNLinear` with
    ``corrected=True``) gives factors :math:`m_p` for some parameters; all others have
    :math:`m_p = 1`. Each group carries ``lr_scale``, which :func:`scale_learning_rates` (and
    the study runner's optimizer) multiplies into the group's learning rate. ``parameters``
    restricts the groups to these (default: ``model.parameters()``). Without multipliers the
    result is one group, as ``optimizer(model.parameters())`` would make.
    """
    factors: dict[int, float] = {}
    for module in model.modules():
        if hasattr(module, "lr_multipliers"):
            factors.update({id(p): float(m) for p, m in module.lr_multipliers().items()})
    groups: dict[float, list] = {}
    for p in (model.parameters() if parameters is None else parameters):
        groups.setdefault(factors.get(id(p), 1.0), []).append(p)
    # the unscaled group first: param_groups[0]["lr"] stays the study's learning rate
    order = sorted(groups, key=lambda scale: scale != 1.0)
    return [{"params": groups[scale], "lr_scale": scale} for scale in order]


def scale_learning_rates(optimizer) -> None:
    """Multiply each group's ``lr`` by its ``lr_scale`` once (call right after construction;
    schedulers then scale every group's base rate alike)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
