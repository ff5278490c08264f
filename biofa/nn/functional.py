"""The autograd functions behind every biofa layer: forward as torch, backward through B.

.. math:: y = W h + b, \\qquad \\frac{\\partial L}{\\partial h} := g B, \\qquad
          \\frac{\\partial L}{\\partial W} = g^\\top h, \\qquad \\frac{\\partial L}{\\partial b} = \\textstyle\\sum g

For convolutions the input gradient is the transposed convolution of g with the kernel B
(``aten.convolution_backward`` with B in place of W), or for rules whose B is untied across
space (DenseFA) :math:`\\mathrm{reshape}(g_\\mathrm{flat} B)`. The weight gradient is always the local
one. DFA layers send no error to their input here: the output layer's projection does
(``biofa.feedback.direct``).

The functions are pure in the sense torch.func and torch.compile need: B is rebuilt in backward
from tensors captured at forward time (``fb_input``: FA's buffer, frSF's magnitudes, brSF's draw
key, the learned B of Kolen–Pollack and weight mirror), never read back from the module, so
``functional_call`` with a substituted B uses that B. Under autocast W, b, the input and a floating
``fb_input`` are cast to the autocast dtype before the function (as autocast casts ``F.linear``'s
arguments), so B is cast like W, the backward runs in that dtype and autograd returns each
gradient in its parameter's dtype.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

from .._autograd import PositionalFunction
from ..errors import ConfigError

_state = threading.local()

#: Modes of one layer call, decided at forward time (a plain value, so compiled graphs do not guard
#: on mutable state). In eager mode a DFA call that registered its input carries the hub's ticket
#: instead of ``DIRECT``, so that its backward can tell whether the output layer's error came.
RULE, EXACT, DIRECT, ORPHAN = "rule", "exact", "direct", "orphan"


def exact_gradients_active() -> bool:
    return getattr(_state, "exact", 0) > 0


@contextlib.contextmanager
def exact_gradients():
    """Within this block, graphs built by biofa layers backpropagate exactly (B = W, no DFA).

    For analysis — the true BP error for update alignment, white-box attacks — without touching
    the model: no feedback is learned for graphs built inside. (Batch Manhattan never touches
    gradients: it is applied when an optimizer steps.)
    """
    _state.exact = getattr(_state, "exact", 0) + 1
    try:
        yield
    finally:
        _state.exact -= 1


def autocast_dtype(weight: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would run ``F.linear``/``conv`` in for ``weight``, or None (no cast).

    Autocast leaves float64 alone and casts the other floating types to its dtype.
    """
    device = weight.device.type
    if weight.dtype == torch.float64 or not weight.is_floating_point() or not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    return None if dtype == weight.dtype else dtype


def cast_for_autocast(weight, *tensors):
    """``(weight, *tensors)`` cast to the autocast dtype of ``weight`` (unchanged when none)."""
    dtype = autocast_dtype(weight)
    if dtype is None:
        return (weight, *tensors)
    return tuple(t if t is None or not t.is_floating_point() or t.dtype == torch.float64 else t.to(dtype)
                 for t in (weight, *tensors))


def _in_backward() -> bool:
    # A forward run while the autograd engine executes a backward is a checkpoint's recomputation.
    return not torch.compiler.is_compiling() and torch._C._current_graph_task_id() != -1


def call_mode(layer, x) -> str:
    """Called by a layer's forward (outside the autograd function, where grad mode is visible)."""
    if exact_gradients_active():
        return EXACT
    if not layer.feedback.direct:
        return RULE
    if not torch.is_grad_enabled():
        return DIRECT
    if _in_backward():
        # torch.utils.checkpoint(use_reentrant=True) reruns the forward inside the backward and
        # backpropagates through the new graph at once, after the output layer's projection
        # has gone by: this call's input can get no DFA error (raised in backward if it is needed).
        # Non-reentrant checkpointing only recomputes saved tensors: that graph is never used.
        return ORPHAN
    return DIRECT


_REENTRANT = (
    "DFA: a {name} layer was recomputed inside the backward pass (torch.utils.checkpoint with "
    "use_reentrant=True), after the output layer had sent its error to the hidden layers: its input "
    "gets no DFA error that way. Use torch.utils.checkpoint(..., use_reentrant=False), which "
    "recomputes only the saved activations and is exact under DFA."
)


def _check_direct(layer, mode) -> None:
    """A DFA layer's backward: its input's error must have come from the output layer."""
    if mode == ORPHAN:
        raise ConfigError(_REENTRANT.format(name=type(layer).__name__))
    if mode is not None and not isinstance(mode, str):  # a DFA pass ticket (eager only)
        mode.check(type(layer).__name__)


def _feedback_matrix(layer, mode, weight, fb_input):
    if mode == EXACT:
        return weight
    if fb_input is None:  # called without the forward's feedback tensor: the module's own
        fb_input = layer.feedback.feedback_input(weight)
    return layer.feedback.backward_matrix(weight, fb_input)


def _learned_grad(layer, mode, need_fb, weight, grad_w, fb_input):
    if need_fb and mode != EXACT:
        return layer.feedback.feedback_grad(weight, grad_w, fb_input)
    return None


def _linear_grads(grad_out, x, weight, fb_input, layer, mode, to_x, to_w, to_b):
    """A linear map's gradients: ``g @ B`` to the input, :math:`g^\\top x` to W, :math:`\\sum g` to b
    (each None unless asked for)."""
    grad_x = grad_w = grad_b = None
    if to_x:
        grad_x = grad_out @ _feedback_matrix(layer, mode, weight, fb_input).to(grad_out.dtype)
    g2 = grad_out.reshape(-1, grad_out.shape[-1])
    if to_w:
        grad_w = g2.T @ x.reshape(-1, x.shape[-1])
    if to_b:
        grad_b = g2.sum(0)
    return grad_x, grad_w, grad_b


def _conv_grads(grad_out, x, weight, fb_input, layer, mode, to_x, to_w, to_b):
    """A convolution's gradients: g convolved with the transposed kernel B (DenseFA: one matmul
    with its dense B) to the input, the local gradient to W, g summed over batch and space to b."""
    grad_x = grad_w = grad_b = None
    if to_x and mode == RULE and layer.feedback.untied:  # DenseFA: one matmul, no kernel
        b = _feedback_matrix(layer, mode, weight, fb_input)
        grad_x = (grad_out.flatten(1) @ b.to(grad_out.dtype)).reshape(x.shape)
        to_x = False
    if to_x or to_w:
        b = _feedback_matrix(layer, mode, weight, fb_input).to(weight.dtype) if to_x else weight
        nd = weight.dim() - 2
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad_out, x, b, None, layer.stride, layer._pad_in_conv, layer.dilation,
            False, [0] * nd, layer.groups, [to_x, to_w, False],
        )
        if to_x:
            grad_x = gx
        grad_w = gw
    if to_b:
        grad_b = grad_out.sum(dim=[0, *range(2, grad_out.dim())])
    return grad_x, grad_w, grad_b


class _FeedbackFunction(PositionalFunction):
    """What the linear and convolution functions share: their arguments (see
    :class:`FeedbackLinearFunction`), what they save and their backward, which differ only in the
    gradients of the op itself (:func:`_linear_grads` for W of shape (out, in), :func:`_conv_grads`
    for a kernel (out, in/groups, *size))."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, fb_input, layer, mode = inputs
        ctx.save_for_backward(x, weight, fb_input)
        ctx.layer, ctx.mode = layer, RULE if mode is None else mode

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, fb_input = ctx.saved_tensors
        layer, mode = ctx.layer, ctx.mode
        need_x, need_w, need_b, need_fb = ctx.needs_input_grad[:4]
        if need_x:
            _check_direct(layer, mode)
        to_x = need_x and mode in (RULE, EXACT)  # DFA: the input's error comes from the output layer
        op_grads = _linear_grads if weight.dim() == 2 else _conv_grads
        grad_x, grad_w, grad_b = op_grads(grad_out, x, weight, fb_input, layer, mode, to_x, need_w or need_fb, need_b)
        grad_fb = _learned_grad(layer, mode, need_fb, weight, grad_w, fb_input)
        return grad_x, grad_w if need_w else None, grad_b, grad_fb, None, None


class FeedbackLinearFunction(_FeedbackFunction):
    """``F.linear`` whose backward sends ``g @ B`` to the input (nothing for DFA).

    ``apply(x, weight, bias, fb_input, layer, mode)``: ``fb_input`` is the layer's
    ``feedback.feedback_input(weight)`` (None: read it from the module in backward) and receives
    the learned B's gradient for Kolen–Pollack and weight mirror; ``mode`` comes from
    :func:`call_mode` (None: the layer's rule).
    """

    @staticmethod
    def forward(x, weight, bias, fb_input, layer, mode):
        return F.linear(x, weight, bias)


class FeedbackConvFunction(_FeedbackFunction):
    """N-d convolution whose backward convolves g with the feedback kernel B (transposed).

    Arguments as :class:`FeedbackLinearFunction`.
    """

    @staticmethod
    def forward(x, weight, bias, fb_input, layer, mode):
        return layer._conv(x, weight, bias)
