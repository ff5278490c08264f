"""Direct feedback alignment (Nøkland 2016): every hidden layer hears the output error directly.

.. math:: \\delta h_l = B_l^\\top e \\quad (\\text{here: } e B_l, \\; B_l \\in \\mathbb R^{n_\\mathrm{out} \\times n_l})

In biofa a DFA layer's backward sends ``e @ B_l`` to its **input** h_l instead of ``g @ W``, so the
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

from ..errors import ConfigError, ShapeError, check_choice
from ..init import init_weight
from .base import Feedback, register_rule

STRUCTURES = ("auto", "dense", "channel")
_MAX_PENDING = 32


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

    # -- used by the layers' autograd functions ----------------------------------------------
    def begin_pass(self) -> int:
        """Forward-time bookkeeping: the id of the pass this forward belongs to."""
        self._slot()
        return self._hub.pass_id

    def expect(self, pass_id: int) -> None:
        self._hub.expect(pass_id)

    def end_output_pass(self) -> int:
        return self._hub.close_pass()

    def project(self, pass_id: int, error: torch.Tensor) -> None:
        self._hub.project(pass_id, error)

    def signal(self, pass_id: int, input_shape: torch.Size) -> torch.Tensor:
        """The error e @ B_l for this layer's input, shaped like the input."""
        offset, width = self._slot()
        block = self._hub.take(pass_id, offset, width, type(self._owner).__name__)
        if len(input_shape) > 2 and not hasattr(self._owner, "in_features"):  # conv: broadcast over space
            block = block.reshape(block.shape[0], width, *([1] * (len(input_shape) - 2)))
            return block.expand(input_shape)
        return block.reshape(input_shape)


class DirectFeedbackHub(nn.Module):
    """All DFA feedback matrices of one model, as column blocks of one buffer ``matrix_all``.

    Lives on the output layer's DFA feedback (so ``state_dict``, ``.to()`` and ``deepcopy`` see it
    once). Holds the projected errors of a backward pass only until every layer that asked for one
    has taken it.
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
        self.pass_id = 0
        self._expected: dict[int, int] = {}  # pass -> number of layers whose input wants an error
        self._errors: dict[int, list] = {}  # pass -> [e @ matrix_all, layers yet to take theirs]

    def expect(self, pass_id: int) -> None:
        self._expected[pass_id] = self._expected.get(pass_id, 0) + 1

    def close_pass(self) -> int:
        pid = self.pass_id
        self.pass_id += 1
        for book in (self._expected, self._errors):
            for old in [p for p in book if p < self.pass_id - _MAX_PENDING]:
                del book[old]  # forwards whose backward never came (e.g. eval with grad on)
        return pid

    def project(self, pass_id: int, error: torch.Tensor) -> None:
        """The one matmul of a DFA step: e @ [B_1 | B_2 | ...].

        Kept until every layer of the pass has taken its block; a second backward through the same
        graph (``retain_graph=True``) projects again.
        """
        wanted = self._expected.get(pass_id, 0)
        if not wanted:
            return  # no hidden layer of this pass wants an error
        e = error.reshape(-1, self.n_out)
        self._errors[pass_id] = [e @ self.matrix_all.to(e.dtype), wanted]

    def take(self, pass_id: int, offset: int, width: int, owner: str) -> torch.Tensor:
        entry = self._errors.get(pass_id)
        if entry is None:
            raise ShapeError(
                f"A DFA {owner} layer was reached by a backward pass in which the output layer "
                "received no error: DFA needs the loss to depend on the network output."
            )
        block = entry[0][:, offset : offset + width]
        entry[1] -= 1
        if entry[1] <= 0:
            del self._errors[pass_id]
        return block
