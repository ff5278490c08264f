"""An autograd function base that skips torch's per-call argument binding."""

from __future__ import annotations

import torch
from torch._functorch.utils import unwrap_dead_wrappers


class PositionalFunction(torch.autograd.Function):
    """An autograd function whose ``forward`` takes positional arguments only, without defaults.

    Once ``setup_context`` is defined (which torch.func needs), ``torch.autograd.Function.apply``
    binds the arguments to ``forward``'s signature with :mod:`inspect` at every call: about
    0.1 ms of Python per call, paid by every layer at every step. With positional arguments and
    no defaults that binding is the identity, so outside torch.func transforms ``apply`` calls
    the C++ ``apply`` directly (unwrapping dead functorch wrappers as torch does). Keyword
    arguments and transforms take torch's own path; torch.compile never runs this method (it
    traces ``apply`` itself).
    """

    @classmethod
    def apply(cls, *args, **kwargs):
        if kwargs or torch._C._are_functorch_transforms_active():
            return super().apply(*args, **kwargs)
        return super(torch.autograd.Function, cls).apply(*unwrap_dead_wrappers(args))
