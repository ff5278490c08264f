"""Which assumptions of the FA conservation laws a model and optimizer break.

The laws of :mod:`biofa.analysis.conservation` hold under gradient flow of plain (full-batch or
stochastic) gradient descent with fixed, layer-wise feedback and positively homogeneous
activations. Momentum, adaptive optimizers, weight decay, normalisation layers, norm and sign
projections, learned or sign-concordant feedback, DFA and Batch Manhattan each break them
(:ref:`Background, conservation laws <background-conservation>`).
"""

from __future__ import annotations

import torch
from torch import nn

from .alignment import feedback_layers

#: Activation modules that are not positively homogeneous (f(λa) ≠ λ f(a) for λ > 0).
NON_HOMOGENEOUS = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
    nn.Softshrink, nn.Hardshrink, nn.Threshold, nn.Softmax, nn.LogSoftmax, nn.ReLU6, nn.RReLU,
)
#: Normalisation layers (their statistics couple samples and rescale activations).
NORMALISATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

_RULE_REASONS = {
    "bp": "B = W (backprop): FA's laws do not apply; gradient descent conserves the "
          "balancedness W_l W_l^T - W_(l+1)^T W_(l+1) instead",
    "usf": "sign-concordant feedback ('usf'): B = c*sign(W) follows W",
    "frsf": "sign-concordant feedback ('frsf'): B = sign(W)*|R| follows the signs of W",
    "brsf": "sign-concordant feedback ('brsf'): B = sign(W)*|R_t| follows W and is redrawn every step",
    "kp": "learned feedback ('kp', Kolen-Pollack): B receives W's update",
    "wm": "learned feedback ('wm', weight mirror): B learns from noise",
    "dfa": "direct feedback alignment ('dfa'): hidden errors skip the layer above",
}


def _optimizer_reasons(optimizer) -> list[str]:
    reasons = []
    kind = type(optimizer).__name__
    if not isinstance(optimizer, torch.optim.SGD):
        reasons.append(f"optimizer {kind} is not plain SGD (adaptive or preconditioned steps "
                       "rescale the gradient per parameter)")
    for i, group in enumerate(optimizer.param_groups):
        if group.get("momentum", 0):
            reasons.append(f"optimizer {kind} param group {i}: momentum={group['momentum']}")
        if group.get("weight_decay", 0):
            reasons.append(f"optimizer {kind} param group {i}: weight_decay={group['weight_decay']}")
    return reasons


def conservation_diagnostic(model: nn.Module, optimizer=None) -> list[str]:
    """Human-readable reasons why the FA conservation laws will *not* hold; empty when they should.

    .. math:: \\frac{d}{dt} C_l = 0 \\iff \\dot W = -\\nabla^{\\mathrm{FA}} \\mathcal L,\\;
              \\dot B = 0,\\; f(\\lambda a) = \\lambda f(a)

    Checks ``optimizer`` (optional; a ``torch.optim.Optimizer``): not plain SGD (Adam, RMSprop,
    ...), momentum, weight decay. Checks ``model``: normalisation layers (BatchNorm, LayerNorm,
    GroupNorm, ...), activation modules that are not positively homogeneous (the linear law also
    needs no activation at all), and per biofa layer: norm projection, Dale/sign projection or
    reparameterisation, Batch Manhattan, and rules whose B is not fixed or not layer-wise (bp,
    usf, frsf, brsf, kp, wm, dfa; the first layer's rule is ignored, as its B only sends the error
    to the input and enters no law). Activations applied as functions inside ``forward`` and skip
    connections cannot be seen from the module tree and are not reported.
    """
    reasons = [] if optimizer is None else _optimizer_reasons(optimizer)
    for name, module in model.named_modules():
        label = name or type(model).__name__
        if isinstance(module, NORMALISATION):
            reasons.append(f"normalisation layer {label!r} ({type(module).__name__})")
        elif isinstance(module, NON_HOMOGENEOUS):
            reasons.append(f"activation {label!r} ({type(module).__name__}) is not positively homogeneous")
    for index, (name, layer) in enumerate(feedback_layers(model)):
        label = name or type(layer).__name__
        if layer.norm is not None:
            reasons.append(f"layer {label!r}: norm projection ({type(layer.norm).__name__}) rescales W every step")
        if layer.sign is not None:
            how = "reparameterisation" if layer.sign.reparameterised else "projection"
            reasons.append(f"layer {label!r}: sign constraint {type(layer.sign).__name__} ({how})")
        if layer.batch_manhattan:
            reasons.append(f"layer {label!r}: Batch Manhattan replaces the gradient by its sign")
        rule = layer.feedback.name
        # B_1 (the first layer's feedback) sends the error to the input and enters no law.
        if index and rule in _RULE_REASONS:
            reasons.append(f"layer {label!r}: {_RULE_REASONS[rule]}")
    return reasons
