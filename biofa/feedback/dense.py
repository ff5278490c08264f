"""DenseFA: feedback alignment whose convolutional feedback is untied across space.

.. math:: \\delta_\\mathrm{in} = \\mathrm{reshape}\\big(g_\\mathrm{flat}\\, B\\big), \\qquad
          B \\in \\mathbb R^{(C_\\mathrm{out} L_\\mathrm{out}) \\times (C_\\mathrm{in} L_\\mathrm{in})}

where :math:`g_\\mathrm{flat}` is the error at a convolution's output flattened per sample and
:math:`L` the number of positions (:math:`H W` for 2-D maps). B is one fixed random matrix from the
whole output map to the whole input map, with no weight sharing over positions; on a Linear layer
DenseFA is exactly FA. The weight gradient stays the local one, :math:`g^\\top h`.

By a third-party summary of Moskovitz, Litwin-Kumar & Abbott (2018) (we could not read the paper's
text), the paper compares FA in conv nets against "DenseFA", and memory limits DFA and DenseFA on
large models. Their definition could not be checked; this dense reading is ours, and the one
biofa adopts (:doc:`/guide/feedback`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, FeedbackMemoryError, ShapeError
from ..init import init_bound, init_weight
from .base import Feedback, register_rule

#: Default largest B one DenseFA layer may hold, in bytes (512 MiB); ``DenseFA(max_bytes=...)``.
DEFAULT_MAX_BYTES = 2**29

_CONV = {1: F.conv1d, 2: F.conv2d}


def conv_output_size(in_size, kernel_size, stride, padding, dilation) -> tuple[int, ...]:
    """Spatial output size of a convolution, as torch computes it.

    .. math:: L_\\mathrm{out} = \\lfloor (L_\\mathrm{in} + 2p - d(k - 1) - 1) / s \\rfloor + 1
    """
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(in_size, kernel_size, stride, padding, dilation))


def dense_feedback_bytes(n_out: int, n_in: int, dtype: torch.dtype) -> int:
    """Bytes of a dense B of shape ``(n_out, n_in)`` in ``dtype``: :math:`n_\\mathrm{out} n_\\mathrm{in}`
    times the element size."""
    return n_out * n_in * torch.empty((), dtype=dtype).element_size()


def _format_bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _tap_count(layer, in_size) -> int:
    """Number of (output position, input position) pairs a kernel tap connects, zero padding
    excluded: the number of non-zero entries of one channel pair of the unrolled convolution."""
    nd = len(in_size)
    ones = torch.ones((1, 1, *in_size), dtype=torch.float64)
    taps = torch.ones((1, 1, *layer.kernel_size), dtype=torch.float64)
    counts = _CONV[nd](ones, taps, None, layer.stride, layer._pad_in_conv, layer.dilation)
    return int(counts.sum())


@register_rule
class DenseFA(Feedback):
    """Feedback alignment with a dense, position-specific feedback matrix per convolution.

    .. math:: \\delta_\\mathrm{in} = \\mathrm{reshape}(g_\\mathrm{flat} B), \\qquad
              B \\sim \\mathcal U[-a_B, a_B]^{(C_\\mathrm{out} L_\\mathrm{out}) \\times
              (C_\\mathrm{in} L_\\mathrm{in})}, \\qquad
              a_B = a \\sqrt{\\frac{\\mathrm{nnz}(J)}{C_\\mathrm{out} L_\\mathrm{out} \\, C_\\mathrm{in} L_\\mathrm{in}}}

    a is the bound FA would draw the kernel from (the layer's init scheme for W's shape, or
    ``init``) and :math:`\\mathrm{nnz}(J)` the number of non-zero entries of the unrolled
    convolution J (:math:`C_\\mathrm{out} (C_\\mathrm{in}/\\mathrm{groups})` times the kernel taps
    that land inside the input). So :math:`E\\|B\\|_F^2 = E\\|J_{B_\\mathrm{FA}}\\|_F^2`, the
    squared norm of FA's random kernel unrolled, and for an error g with independent entries the
    backward signal :math:`g B` has FA's expected size. For a stride-1 convolution without
    padding border effects this is Xavier-uniform over :math:`(n_\\mathrm{in}, n_\\mathrm{out}) =
    (C_\\mathrm{in} L_\\mathrm{in}, C_\\mathrm{out} L_\\mathrm{out})`, and under Kaiming init
    Kaiming over :math:`n_\\mathrm{in}` for any stride.

    B's size depends on the input's, which a convolution does not know when it is built: B is
    drawn at the layer's **first forward** (or by :meth:`materialize`) from a generator seeded by
    the buffer ``seed``, drawn when the rule is bound, so it is a function of (seed, input size)
    and the same on every device. ``B``, ``input_size``, ``seed`` and ``gain`` (the factor
    ``feedback_init_scale`` puts on B) are buffers; ``load_state_dict`` into a model that has
    not run yet takes B's shape from the state. A later input of another spatial size raises
    :class:`~biofa.errors.ShapeError`. On a Linear layer B is FA's, drawn at bind time.

    Parameters
    ----------
    init : distribution of B as for :class:`~biofa.feedback.FA` (None: the layer's scheme).
    max_bytes : the largest B one layer may draw, in bytes (default 512 MiB); a larger one
        raises :class:`~biofa.errors.FeedbackMemoryError` before anything is allocated.
    """

    name = "densefa"
    untied = True

    def __init__(self, init=None, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__()
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"DenseFA: max_bytes must be a positive int (bytes per layer), got {max_bytes!r}")
        self.init = init
        self.max_bytes = max_bytes
        self.register_buffer("B", None)
        self.register_buffer("seed", None)
        self.register_buffer("gain", None)
        self.register_buffer("input_size", None)
        self._size = None  # input_size as a tuple: checked every forward without reading a tensor

    @property
    def _is_conv(self) -> bool:
        return self._owner is not None and self._owner.weight.dim() > 2

    def reset_parameters(self, weight, generator=None):
        self.input_size, self._size = None, None
        if weight.dim() == 2:  # Linear: exactly FA, the same draw from the same generator
            self.B = init_weight(torch.empty_like(weight), self.init_scheme, generator)
            return
        self.B = None
        self.seed = torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)
        self.gain = torch.ones((), dtype=weight.dtype, device=weight.device)

    # -- the dense matrix ----------------------------------------------------------------------
    def dense_shape(self, in_size) -> tuple[int, int]:
        """(n_out, n_in) of B for inputs of spatial size ``in_size`` (as the convolution sees them,
        after a non-zero padding mode's padding)."""
        layer = self._owner
        out_size = conv_output_size(in_size, layer.kernel_size, layer.stride, layer._pad_in_conv, layer.dilation)
        if any(n < 1 for n in out_size):
            raise ShapeError(f"DenseFA: {self._where()}: an input of spatial size {tuple(in_size)} is "
                             "smaller than the kernel")
        return layer.out_channels * math.prod(out_size), layer.in_channels * math.prod(in_size)

    def _where(self) -> str:
        layer = self._owner
        what = (f"{type(layer).__name__}({layer.in_channels}, {layer.out_channels}, "
                f"kernel_size={layer.kernel_size}, stride={layer.stride})")
        return f"layer {self.where!r} ({what})" if self.where else what

    def _check_bytes(self, n_out: int, n_in: int, in_size) -> None:
        dtype = self._owner.weight.dtype
        need = dense_feedback_bytes(n_out, n_in, dtype)
        if need > self.max_bytes:
            raise FeedbackMemoryError(
                f"DenseFA: {self._where()} on inputs of spatial size {tuple(in_size)} needs a feedback "
                f"matrix B of {n_out} x {n_in} {dtype} = {need} bytes ({_format_bytes(need)}), over "
                f"the limit max_bytes={self.max_bytes} ({_format_bytes(self.max_bytes)}) per layer. "
                "Use feedback='fa' (a kernel shared over positions, W's size) for this layer or the "
                "model, feed smaller inputs, or, if the memory is there, raise the limit with "
                "feedback={'rule': 'densefa', 'max_bytes': ...}. "
                "biofa.nn.densefa_memory(model, input_shape) lists every layer's size."
            )

    @torch._disable_dynamo  # torch.compiler.disable, imported lazily (torch._dynamo takes 1.5 s): a one-off draw with a seeded generator: eager
    @torch.no_grad()
    def materialize(self, in_size) -> None:
        """Draw B for inputs of spatial size ``in_size`` (``(L,)`` or ``(H, W)``) now.

        Done by the first forward; a no-op when B already has that size, a
        :class:`~biofa.errors.ShapeError` when it has another.
        """
        if not self._is_conv:
            raise ConfigError("DenseFA.materialize is for a rule bound to a convolution; on a "
                              "Linear layer B is FA's and drawn when the layer is built.")
        size = tuple(int(n) for n in in_size)
        if self._size is not None:
            self._check_size(size)
            return
        if len(size) != self._owner.weight.dim() - 2:
            raise ShapeError(f"DenseFA: {self._where()} takes a spatial size of "
                             f"{self._owner.weight.dim() - 2} numbers, got {size}")
        n_out, n_in = self.dense_shape(size)
        self._check_bytes(n_out, n_in, size)
        weight = self._owner.weight
        nnz = self._owner.out_channels * weight.shape[1] * _tap_count(self._owner, size)
        bound = init_bound(weight.shape, self.init_scheme) * math.sqrt(nnz / (n_out * n_in))
        gen = torch.Generator().manual_seed(int(self.seed))
        b = torch.empty(n_out, n_in, dtype=weight.dtype)  # drawn on the CPU: the same B on every device
        b.uniform_(-bound, bound, generator=gen).mul_(self.gain.to(b.dtype).cpu())
        self.B = b.to(weight.device)
        self.input_size = torch.tensor(size, dtype=torch.int64, device=weight.device)
        self._size = size

    def _check_size(self, size) -> None:
        if size != self._size:
            raise ShapeError(
                f"DenseFA fixes the input size: {self._where()} drew its feedback matrix B for inputs "
                f"of spatial size {self._size} and got one of size {size}. Feed inputs of that size "
                "(resize or crop them), or use feedback='fa', whose kernel works at any size."
            )

    def prepare(self, x):
        if not self._is_conv:
            return
        size = tuple(x.shape[2:])
        if self._size is None:
            self.materialize(size)
        else:
            self._check_size(size)

    def matrix_for(self, weight):
        if self.B is None:
            raise ConfigError(f"DenseFA: {self._where()} has not drawn its B yet (its size depends on "
                              "the input's): run a forward or call layer.feedback.materialize(size).")
        return self.B

    def feedback_input(self, weight):
        return self.B

    def matrix_from(self, weight, fb_input):
        return fb_input

    # -- state ---------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if self._is_conv:
            b, size = state_dict.get(prefix + "B"), state_dict.get(prefix + "input_size")
            if b is not None and size is not None:
                size = tuple(int(n) for n in size.tolist())
                if self._size != size or self.B is None or self.B.shape != b.shape:
                    self._check_bytes(b.shape[0], b.shape[1], size)
                    w = self._owner.weight  # room for the stored B, which super() copies in
                    self.B = torch.empty(b.shape, dtype=w.dtype, device=w.device)
                    self.input_size = torch.empty(len(size), dtype=torch.int64, device=w.device)
                    self._size = size
            elif prefix + "seed" in state_dict and self.B is not None:
                # the saved model had not drawn B yet: draw it from the loaded seed at the next forward
                self.B, self.input_size, self._size = None, None, None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
