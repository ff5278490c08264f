"""Direct feedback alignment (Nøkland 2016): every hidden layer hears the output error directly.

.. math:: \\delta h_l = B_l^\\top e \\quad (\\text{here: } e B_l, \\; B_l \\in \\mathbb R^{n_\\mathrm{out} \\times n_l})

In biofa a DFA layer sends no error to its **input** h_l; the output layer does: every DFA layer
registers its input with the hub in forward, and the output layer's forward attaches one
autograd function whose backward sends ``e @ B_l`` to each registered input, so the
error reaching h_l never involves a downstream W, and autograd carries it through the activation
(f'), BatchNorm etc. into the layer below. The output layer's weight still gets its true local
gradient. All B_l are column blocks of one buffer held by a :class:`DirectFeedbackHub` on the
output layer, and the output layer's backward computes every hidden error with **one matmul**
``e @ [B_1 | B_2 | ...]``; no sequential backward through the Ws is computed and discarded.

Structure for convolutions: ``"channel"`` (default) gives each input channel one feedback weight
per output unit, broadcast over space: B_l has shape (n_out, C_l), far less memory than the
forward weights. Linear layers use a dense (n_out, n_in) block.
"""

from __future__ import annotations

import torch
from torch import nn

from .._autograd import PositionalFunction
from ..errors import ConfigError, ShapeError, check_choice
from ..init import init_weight
from .base import Feedback, register_rule

STRUCTURES = ("auto", "dense", "channel")


@register_rule
class DFA(Feedback):
    """Direct feedback alignment for one layer; wired to the output by :func:`biofa.nn.connect_dfa`.

    ``init``: distribution of B_l (default: the layer's init scheme, drawn for a weight of shape
    (n_out, n_l)). ``structure``: ``"auto"`` (dense for Linear, channel for Conv), ``"dense"``
    (Linear only) or ``"channel"``.
    """

    name = "dfa"
    direct = True

    def __init__(self, init=None, structure: str = "auto"):
        super().__init__()
        check_choice("DFA", "structure", structure, STRUCTURES)
        self.init = init
        self.structure = structure
        object.__setattr__(self, "_hub", None)
        self.register_module("hub", None)
        self.slot = None  # (offset, width) of B_l in the hub's buffer, set when connected

    @property
    def connected(self) -> bool:
        return self._hub is not None

    def width(self) -> int:
        """Number of columns this layer's B_l takes: its input features or input channels."""
        layer = self._owner
        if hasattr(layer, "in_features"):
            if self.structure == "channel":
                raise ConfigError("DFA structure 'channel' is for convolutions; Linear layers are dense.")
            return layer.in_features
        if self.structure == "dense":
            raise ConfigError(
                "DFA structure 'dense' is not available for convolutions (its size depends on the "
                "input resolution); use structure='channel'."
            )
        return layer.in_channels

    def _slot(self):
        if self._hub is None:
            name = type(self._owner).__name__
            raise ConfigError(
                f"DFA feedback of a {name} is not connected to an output layer: build the model "
                "with biofa.nn.convert(model, feedback='dfa') or call biofa.nn.connect_dfa(model)."
            )
        return self.slot

    def matrix_for(self, weight):
        offset, width = self._slot()
        return self._hub.matrix_all[:, offset : offset + width]

    def check_connected(self) -> None:
        """Raise a ConfigError naming the fix unless an output layer's hub holds this B_l."""
        self._slot()

    def register(self, x: torch.Tensor):
        """Forward-time bookkeeping: ``x``, this layer's input, wants the output error ``e @ B_l``.

        Returns the pass's ticket (None when compiling, where the check is not needed).
        """
        offset, width = self._slot()
        return self._hub.register(x, offset, width, not hasattr(self._owner, "in_features"),
                                  type(self._owner).__name__)


class _Ticket:
    """One DFA pass in eager mode: set when the output layer's error has been projected."""

    __slots__ = ("received",)

    def __init__(self):
        self.received = False

    def check(self, owner: str) -> None:
        if not self.received:
            raise ShapeError(
                f"A DFA {owner} layer was reached by a backward pass in which the output layer "
                "received no error: DFA needs the loss to depend on the network output."
            )


class _Projection(PositionalFunction):
    """Identity on the output; its backward is the one matmul of a DFA step, ``e @ [B_1 | B_2 | ...]``,
    sliced into the error of every registered hidden input."""

    generate_vmap_rule = True

    @staticmethod
    def forward(out, matrix_all, slots, ticket, *inputs):
        return out.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, matrix_all, slots, ticket, *xs = inputs
        ctx.save_for_backward(matrix_all)
        ctx.slots, ctx.ticket = slots, ticket
        ctx.shapes = [(x.shape, x.dtype) for x in xs]

    @staticmethod
    def backward(ctx, e):
        (matrix_all,) = ctx.saved_tensors
        if ctx.ticket is not None:
            ctx.ticket.received = True
        projected = e.reshape(-1, e.shape[-1]) @ matrix_all.to(e.dtype)
        grads = []
        for (offset, width, conv), (shape, dtype) in zip(ctx.slots, ctx.shapes):
            block = projected[:, offset : offset + width]
            if conv:  # one feedback weight per channel, broadcast over space
                block = block.reshape(block.shape[0], width, *([1] * (len(shape) - 2))).expand(shape)
            else:
                block = block.reshape(shape)
            grads.append(block.to(dtype))
        return e, None, None, None, *grads


class DirectFeedbackHub(nn.Module):
    """All DFA feedback matrices of one model, as column blocks of one buffer ``matrix_all``.

    Lives on the output layer's DFA feedback (so ``state_dict``, ``.to()`` and ``deepcopy`` see it
    once). Between a forward's first DFA layer and its output layer it holds the inputs that
    want an error; the output layer's forward takes them all, so nothing outlives a forward and a
    compiled step sees the same (empty) state at every call.
    """

    def __init__(self, n_out: int, layers: list[DFA], generator=None, device=None, dtype=None):
        super().__init__()
        widths = [fb.width() for fb in layers]
        blocks = []
        offset = 0
        for fb, width in zip(layers, widths):
            block = torch.empty(n_out, width, device=device, dtype=dtype)
            blocks.append(init_weight(block, fb.init_scheme, generator))
            fb.slot = (offset, width)
            offset += width
        self.register_buffer("matrix_all", torch.cat(blocks, dim=1))
        object.__setattr__(self, "_members", list(layers))
        self.n_out = n_out
        self._pending: list = []  # (input, offset, width, conv) registered since the last output
        self._ticket = None

    def register(self, x, offset: int, width: int, conv: bool, owner: str):
        self._pending.append((x, offset, width, conv, owner))
        if torch.compiler.is_compiling():
            return None
        if self._ticket is None:
            self._ticket = _Ticket()
        return self._ticket

    def project(self, out: torch.Tensor) -> torch.Tensor:
        """Called by the output layer's forward: ``out`` unchanged, with the projection attached
        that sends ``e @ B_l`` to every input registered since the last call."""
        pending = list(self._pending)
        self._pending.clear()
        ticket = None
        if not torch.compiler.is_compiling():
            ticket, self._ticket = self._ticket, None
        if not pending:
            return out
        rows = out.shape[:-1].numel()
        for x, _, width, conv, owner in pending:
            have = x.shape[0] if conv else x.shape[:-1].numel()
            if have != rows:
                raise ShapeError(_rows_message(owner, tuple(x.shape), tuple(out.shape), conv))
        slots = tuple((offset, width, conv) for _, offset, width, conv, _ in pending)
        return _Projection.apply(out, self.matrix_all, slots, ticket, *(p[0] for p in pending))

    def __getstate__(self):
        state = dict(super().__getstate__())  # pending graph tensors are not state
        state["_pending"], state["_ticket"] = [], None
        return state


def _rows_message(owner: str, input_shape, output_shape, conv: bool) -> str:
    what = "its first dimension" if conv else "all its dimensions but the last"
    return (
        f"DFA sends the output error e (output shape {output_shape}; one row per position of all "
        "dimensions but the last) to the input of every DFA layer through its B_l, so each DFA "
        f"layer's input needs as many rows as the output. A {owner} input of shape {input_shape} "
        f"has a different number of rows ({what}): a hidden layer "
        "applied per token or per position with a pooled output has no per-token error under DFA. "
        "Pool after the output layer (so that the output has a row per token), or give this layer a "
        "layer-wise rule (e.g. feedback='fa') with biofa.nn.convert(..., exclude=...) or its own "
        "feedback argument."
    )
