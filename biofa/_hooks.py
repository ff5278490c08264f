"""The global optimizer hooks biofa installs, and the training-step counter.

Before *any* torch optimizer's ``step()`` the pre-hook applies Batch Manhattan: the gradient of
every layer with ``batch_manhattan=True`` whose parameters that optimizer updates is replaced by
its sign. At step time the gradient is the whole batch's, all-reduced across processes under
DDP and summed over accumulated micro-batches, so the sign is taken of the averaged gradient, not
averaged over signs. After the step the post-hook (1) projects the weights of every constrained
biofa layer whose parameters that optimizer updates and (2) advances the global training-step
counter, which is what "once per training step" means for brSF's redraw.

A step nested inside another optimizer's step on the same parameters (``ZeroRedundancyOptimizer``
runs the local optimizer's ``step()`` inside its own) is part of the same training step: the
hooks act once, for the outermost step. A training loop calls nothing. Code that updates weights
by hand calls :func:`biofa.constraints.enforce` and :func:`biofa.feedback.next_step` itself.
"""

from __future__ import annotations

import sys
import threading
import weakref

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

_step = 0
# The counter as a 0-d tensor too, kept equal to _step: compiled graphs read it as an input
# (a Python int would be baked in as a constant and recompile the graph at every step).
_step_tensor = torch.zeros((), dtype=torch.int64)
_constrained_layers: "weakref.WeakSet" = weakref.WeakSet()
_layers: "weakref.WeakSet" = weakref.WeakSet()
_local = threading.local()


def training_step() -> int:
    """Number of training steps taken in this process: outermost optimizer steps plus manual
    :func:`next_step` calls."""
    return _step


def next_step() -> int:
    """Advance the training-step counter by hand (for loops that do not use torch.optim)."""
    global _step
    _step += 1
    _step_tensor.fill_(_step)
    return _step


def reset_step(value: int = 0) -> None:
    """Set the training-step counter, e.g. to 0 at the start of a run, so that brSF's redraws
    (a function of seed and step) are the same whatever ran before in the process."""
    global _step
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"reset_step: value must be a non-negative int, got {value!r}")
    _step = value
    _step_tensor.fill_(value)


def step_tensor() -> torch.Tensor:
    """The training-step counter as a 0-d int64 CPU tensor, updated in place (read-only for users):
    what code inside ``torch.compile`` reads instead of :func:`training_step`."""
    return _step_tensor


def register_constrained(layer) -> None:
    """Let the optimizer hook project ``layer`` after each step that updates it."""
    _constrained_layers.add(layer)


def register_layer(layer) -> None:
    """Let the pre-step hook apply ``layer.batch_manhattan`` (read at every step)."""
    _layers.add(layer)


def _updated(optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def _stepping() -> list:
    """Optimizers whose ``step()`` is running in this thread, outermost first."""
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _running(optimizer) -> bool:
    """Whether a call with ``self`` bound to ``optimizer`` (its ``step``) is on the call stack."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_locals.get("self") is optimizer:
            return True
        frame = frame.f_back
    return False


def _manhattan_parameters(layer):
    params = [layer._raw_weight(), layer.bias]
    rule = layer.feedback
    if rule.learned and rule.name == "kp":  # Kolen–Pollack's B gets W's own (signed) update
        params.append(rule.feedback_parameter())
    return params


@torch._disable_dynamo  # torch.compiler.disable, imported lazily (torch._dynamo takes 1.5 s): eager in a compiled step: it walks Python frames and reads hook state
def _before_optimizer_step(optimizer, args, kwargs) -> None:
    stack = _stepping()
    # a step() that raised never ran its post-hook; an optimizer is never nested in itself
    while stack and (stack[-1] is optimizer or not _running(stack[-1])):
        stack.pop()
    stack.append(optimizer)
    if len(stack) > 1:
        return
    layers = [layer for layer in list(_layers) if layer.batch_manhattan]
    if layers:
        updated = _updated(optimizer)
        for layer in layers:
            for p in _manhattan_parameters(layer):
                if p is not None and p.grad is not None and id(p) in updated:
                    p.grad.sign_()


@torch._disable_dynamo  # torch.compiler.disable, imported lazily (torch._dynamo takes 1.5 s): run eagerly in a compiled step: reading _step would recompile every step
def _after_optimizer_step(optimizer, args, kwargs) -> None:
    stack = _stepping()
    if optimizer in stack:
        del stack[stack.index(optimizer):]
    if stack:  # nested: the outermost step projects and counts
        return
    if len(_constrained_layers):
        updated = _updated(optimizer)
        for layer in list(_constrained_layers):
            if any(id(p) in updated for p in layer.constrained_parameters()):
                layer.enforce_constraints()
    next_step()


_pre_handle = register_optimizer_step_pre_hook(_before_optimizer_step)
_handle = register_optimizer_step_post_hook(_after_optimizer_step)
