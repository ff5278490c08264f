"""The autograd functions behind every biofa layer: forward as torch, backward through B.

.. math:: y = W h + b, \\qquad \\frac{\\partial L}{\\partial h} := g B, \\qquad
          \\frac{\\partial L}{\\partial W} = g^\\top h, \\qquad \\frac{\\partial L}{\\partial b} = \\textstyle\\sum g

For convolutions the input gradient is the transposed convolution of g with the kernel B
(``aten.convolution_backward`` with B in place of W). The weight gradient is always the local
one. DFA layers send the projected output error to their input instead (``biofa.feedback.direct``).
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

_state = threading.local()


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


def direct_pass(layer, x) -> int | None:
    """Called by a layer's forward (outside the autograd function, where grad mode is visible):
    the DFA pass this forward belongs to, registering that its input will want an error."""
    fb = layer.feedback
    if not fb.direct or exact_gradients_active() or not torch.is_grad_enabled():
        return None
    pass_id = fb.begin_pass()
    if x.requires_grad:
        fb.expect(pass_id)
    if fb.hub is not None:  # the output layer closes the pass
        fb.end_output_pass()
    return pass_id


def _begin(ctx, layer, pass_id):
    ctx.layer = layer
    ctx.exact = exact_gradients_active()
    ctx.pass_id = pass_id


class FeedbackLinearFunction(torch.autograd.Function):
    """``F.linear`` whose backward sends ``g @ B`` (or the DFA error) to the input."""

    @staticmethod
    def forward(ctx, x, weight, bias, learned_b, layer, pass_id):
        _begin(ctx, layer, pass_id)
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        fb = ctx.layer.feedback
        need_x, need_w, need_b, need_fb = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_b = grad_fb = None
        direct = fb.direct and ctx.pass_id is not None
        if direct:
            if fb.hub is not None:
                fb.project(ctx.pass_id, grad_out)
            if need_x:
                grad_x = fb.signal(ctx.pass_id, x.shape)
        elif need_x:
            b = weight if ctx.exact else fb.matrix_for(weight)
            grad_x = grad_out @ b
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if need_w or need_fb:
            grad_w = g2.T @ x.reshape(-1, x.shape[-1])
            if need_fb and not ctx.exact:
                grad_fb = fb.feedback_grad(weight, grad_w)
        if need_b:
            grad_b = g2.sum(0)
        return grad_x, grad_w if need_w else None, grad_b, grad_fb, None, None


class FeedbackConvFunction(torch.autograd.Function):
    """N-d convolution whose backward convolves g with the feedback kernel B (transposed)."""

    @staticmethod
    def forward(ctx, x, weight, bias, learned_b, layer, pass_id):
        _begin(ctx, layer, pass_id)
        ctx.save_for_backward(x, weight)
        return layer._conv(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        layer = ctx.layer
        fb = layer.feedback
        need_x, need_w, need_b, need_fb = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_b = grad_fb = None
        direct = fb.direct and ctx.pass_id is not None
        if direct and need_x:
            grad_x = fb.signal(ctx.pass_id, x.shape)
        conv_x = need_x and not direct
        if conv_x or need_w or need_fb:
            b = weight if (ctx.exact or not conv_x) else fb.matrix_for(weight)
            nd = weight.dim() - 2
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad_out, x, b, None, layer.stride, layer._pad_in_conv, layer.dilation,
                False, [0] * nd, layer.groups, [conv_x, need_w or need_fb, False],
            )
            if conv_x:
                grad_x = gx
            grad_w = gw
            if need_fb and not ctx.exact:
                grad_fb = fb.feedback_grad(weight, grad_w)
        if need_b:
            grad_b = grad_out.sum(dim=[0, *range(2, grad_out.dim())])
        return grad_x, grad_w if need_w else None, grad_b, grad_fb, None, None
