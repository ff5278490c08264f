"""The one global optimizer hook biofa installs, and the training-step counter.

After *any* torch optimizer's ``step()`` the hook (1) projects the weights of every constrained
biofa layer whose parameters that optimizer updates, and (2) advances the global training-step
counter, which is what "once per training step" means for brSF's redraw. A user's training loop
calls nothing. Code that updates weights by hand calls :func:`biofa.constraints.enforce` and
:func:`biofa.feedback.next_step` itself.
"""

from __future__ import annotations

import weakref

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

_step = 0
# The counter as a 0-d tensor too, kept equal to _step: compiled graphs read it as an input
# (a Python int would be baked in as a constant and recompile the graph at every step).
_step_tensor = torch.zeros((), dtype=torch.int64)
_constrained_layers: "weakref.WeakSet" = weakref.WeakSet()


def training_step() -> int:
    """Number of optimizer steps taken in this process (plus manual :func:`next_step` calls)."""
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


@torch.compiler.disable  # run eagerly in a compiled step: reading _step would recompile every step
def _after_optimizer_step(optimizer, args, kwargs) -> None:
    if len(_constrained_layers):
        updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for layer in list(_constrained_layers):
            if any(id(p) in updated for p in layer.constrained_parameters()):
                layer.enforce_constraints()
    next_step()


_handle = register_optimizer_step_post_hook(_after_optimizer_step)
