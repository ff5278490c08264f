"""How much memory DenseFA's feedback takes for a model and an input shape, against its weights.

.. math:: \\mathrm{bytes}(B_l) = \\begin{cases}
          C_\\mathrm{out} L_\\mathrm{out} \\cdot C_\\mathrm{in} L_\\mathrm{in} \\cdot s & \\text{convolution} \\\\
          n_\\mathrm{out} n_\\mathrm{in} \\cdot s & \\text{Linear (FA's B, W's size)}
          \\end{cases}

with s the element size of the layer's weight dtype. The layers' input and output sizes come
from one forward of a shadow copy of the model on the ``meta`` device: nothing is allocated and
no B is drawn, whatever the model's rule.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..feedback.dense import dense_feedback_bytes
from .layers import Conv1d, Conv2d, FeedbackLayer, Linear

_CONVS = (nn.Conv1d, nn.Conv2d, Conv1d, Conv2d)
_LAYERS = (nn.Linear, Linear, *_CONVS)


@dataclasses.dataclass(frozen=True)
class LayerMemory:
    """One layer: its name in the model, the input/output shape of one sample (a convolution's
    input as the convolution sees it, after a non-zero padding mode's padding), and the bytes of
    its forward weight W and of DenseFA's feedback B."""

    name: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    weight_bytes: int
    feedback_bytes: int

    @property
    def ratio(self) -> float:
        """bytes(B) / bytes(W)."""
        return self.feedback_bytes / self.weight_bytes


@dataclasses.dataclass(frozen=True)
class DenseFAMemory:
    """DenseFA's feedback memory per layer (``layers``, module order) and in total."""

    layers: tuple[LayerMemory, ...]

    @property
    def weight_bytes(self) -> int:
        return sum(r.weight_bytes for r in self.layers)

    @property
    def feedback_bytes(self) -> int:
        return sum(r.feedback_bytes for r in self.layers)

    @property
    def ratio(self) -> float:
        return self.feedback_bytes / self.weight_bytes

    def table(self) -> str:
        """A plain-text table: one row per layer and a total (bytes, and the ratio B/W)."""
        head = f"{'layer':<22} {'kind':<7} {'input':<16} {'W bytes':>14} {'B bytes':>18} {'B/W':>10}"
        rows = [head, "-" * len(head)]
        for r in self.layers:
            rows.append(f"{r.name:<22} {r.kind:<7} {'x'.join(map(str, r.input_shape)):<16} "
                        f"{r.weight_bytes:>14,} {r.feedback_bytes:>18,} {r.ratio:>10.1f}")
        rows.append(f"{'total':<22} {'':<7} {'':<16} {self.weight_bytes:>14,} "
                    f"{self.feedback_bytes:>18,} {self.ratio:>10.1f}")
        return "\n".join(rows)


def _shape_call(layer, function, x):
    """A biofa layer's forward reduced to torch's op (the shadow's stand-in for ``_call``)."""
    if isinstance(layer, Linear):
        return F.linear(x, layer.weight, layer.bias)
    return layer._conv(x, layer.weight, layer.bias)


def _meta_shadow(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    shadow = copy.deepcopy(model, memo)
    for m in shadow.modules():
        if isinstance(m, FeedbackLayer):  # no feedback code runs: no B is drawn, none is checked
            m._call = types.MethodType(_shape_call, m)
    return shadow.eval()


def _padded(module, size) -> tuple:
    if module.padding_mode == "zeros":
        return tuple(size)
    if isinstance(module, FeedbackLayer):
        pads = module._padding_ints
    else:  # torch keeps (last, last, ..., first, first)
        pads = module._reversed_padding_repeated_twice[::-2]
    return tuple(n + 2 * p for n, p in zip(size, pads))


def densefa_memory(model: nn.Module, input_shape: Sequence[int], dtype: torch.dtype | None = None) -> DenseFAMemory:
    """DenseFA's feedback memory for ``model`` on inputs of shape ``input_shape`` (one sample).

    .. math:: \\mathrm{bytes}(B_\\mathrm{conv}) = C_\\mathrm{out} L_\\mathrm{out} C_\\mathrm{in} L_\\mathrm{in}\\, s,
              \\qquad \\mathrm{bytes}(B_\\mathrm{linear}) = \\mathrm{bytes}(W)

    Returns a :class:`DenseFAMemory` (``.layers``, ``.weight_bytes``, ``.feedback_bytes``,
    ``.table()``). Nothing is allocated: the shapes come from a forward on the ``meta`` device.

    Parameters
    ----------
    model : a torch model or a converted one (any rule); every ``Linear``/``Conv1d``/``Conv2d``
        (torch's or biofa's) is counted. A layer applied several times is counted once, at its
        first call.
    input_shape : the shape of one sample, e.g. ``(1, 28, 28)``.
    dtype : element type to count in (default: each layer's weight dtype).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"densefa_memory expects a torch.nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ConfigError("densefa_memory: input_shape must be a tuple of positive ints (one sample), "
                          f"got {input_shape!r}")
    shadow = _meta_shadow(model)
    found: dict[str, LayerMemory] = {}
    handles = []

    def record(name):
        def hook(module, args, out):
            if name in found:
                return
            x = args[0]
            size = module.weight.element_size() if dtype is None else torch.empty((), dtype=dtype).element_size()
            w_bytes = module.weight.numel() * size
            if isinstance(module, _CONVS):
                in_shape = (x.shape[1], *_padded(module, x.shape[2:]))
                n_in, n_out = math.prod(in_shape), math.prod(out.shape[1:])
                fb = dense_feedback_bytes(n_out, n_in, dtype or module.weight.dtype)
                kind = f"conv{module.weight.dim() - 2}d"
            else:
                in_shape, fb, kind = tuple(x.shape[1:]), w_bytes, "linear"
            found[name] = LayerMemory(name, kind, tuple(in_shape), tuple(out.shape[1:]), w_bytes, fb)
        return hook

    for name, module in shadow.named_modules():
        if isinstance(module, _LAYERS):
            handles.append(module.register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            shadow(torch.empty((1, *shape), device="meta"))
    except (RuntimeError, ValueError) as err:
        raise ShapeError(f"densefa_memory: {type(model).__name__} does not run on inputs of shape "
                         f"{shape}: {err}") from err
    finally:
        for h in handles:
            h.remove()
    order = [n for n, m in shadow.named_modules() if n in found]
    return DenseFAMemory(tuple(found[n] for n in order))
