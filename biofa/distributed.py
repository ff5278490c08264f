"""Data-parallel training: biofa's fixed feedback tensors under ``DistributedDataParallel``.

DDP all-reduces gradients, so every rule trains under it as in one process on the global batch
(learned B, Kolen–Pollack's and the weight mirror's, are Parameters and are all-reduced too;
Batch Manhattan and the training-step counter act at the optimizer step, see
:mod:`biofa.feedback`). What DDP does not know is that biofa's buffers (FA's B, frSF's
magnitudes, brSF's and WM's seeds, sign masks, norm targets, DFA's blocks) never change after
construction: with its default ``broadcast_buffers=True`` it broadcasts all of them from rank 0
at every forward, as many bytes as the forward weights for FA. :func:`prepare_ddp` broadcasts
them once and tells DDP to skip them, leaving the buffers that do change (BatchNorm's running
statistics) to DDP's per-forward broadcast.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import ConfigError
from .nn.layers import FeedbackLayer


def fixed_buffers(model: nn.Module) -> list[str]:
    """Qualified names of the buffers of ``model``'s biofa layers. None needs a broadcast after
    construction: they are fixed (B, magnitudes, seeds, signs, norm targets, DFA blocks) or, like
    the weight mirror's count of noise draws, advanced identically by every process."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, FeedbackLayer):
            names += [f"{prefix}.{name}" if prefix else name for name, _ in module.named_buffers()]
    return names


def prepare_ddp(model: nn.Module, src: int = 0, group=None) -> nn.Module:
    """Make ``model``'s fixed biofa buffers rank ``src``'s once, and keep DDP from re-broadcasting
    them at every forward. Call on every rank before ``DistributedDataParallel(model, ...)``;
    returns ``model``.

    The buffers are broadcast here (so ranks that drew different B agree, as DDP's own
    construction would make them) and their names are added to the model's DDP ignore list,
    which DDP reads when it is constructed. Parameters and other buffers are DDP's business.
    """
    if isinstance(model, DistributedDataParallel):
        raise ConfigError("prepare_ddp: pass the model before wrapping it in DistributedDataParallel "
                          "(DDP reads its ignore list when it is constructed)")
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("prepare_ddp: call torch.distributed.init_process_group first")
    names = fixed_buffers(model)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name in names:
            if buffers[name] is not None:
                dist.broadcast(buffers[name], src=src, group=group)
    ignored = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ())) | set(names)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(ignored))
    return model


__all__ = ["prepare_ddp", "fixed_buffers"]
