"""The mathematics of the feedback rules as small pure functions.

Convention: a feedback matrix ``B`` has the shape of the forward weight ``W`` it stands in for, so
the error a layer sends to its input is ``g @ B`` where backprop would send ``g @ W``
(:ref:`Background, feedback rules <background-feedback-rules>`).
"""

from __future__ import annotations

import math

import torch


def rms(weight: torch.Tensor) -> torch.Tensor:
    """Root mean square of ``weight``: :math:`\\|W\\|_F / \\sqrt{n}`, a 0-d tensor."""
    return weight.norm() / weight.numel() ** 0.5


def uniform_sign_feedback(weight: torch.Tensor, scale, out: torch.Tensor | None = None) -> torch.Tensor:
    """uSF (Liao 2016): :math:`B = c \\, \\mathrm{sign}(W)`.

    ``scale`` is c, a float or a 0-d tensor. With ``c = rms(W)`` this is the "SN" scaling and
    :math:`\\|B\\|_F = \\|W\\|_F` whenever W has no exact zeros. ``out``: a buffer to write B into.
    """
    return torch.sign(weight, out=out).mul_(scale)


def random_magnitude_sign_feedback(weight: torch.Tensor, magnitude: torch.Tensor,
                                   nonnegative: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """frSF / brSF: :math:`B = \\mathrm{sign}(W) \\circ |R|` with ``magnitude`` = R (any sign).

    ``nonnegative=True`` promises R ≥ 0 already and skips taking its absolute value. ``out``: a
    buffer to write B into.
    """
    return torch.sign(weight, out=out).mul_(magnitude if nonnegative else magnitude.abs())


_MASK32 = 0xFFFFFFFF
# lowbias32's multipliers (C. Wellons' hash prospector); both < 2^31, so that the key schedule can
# run in int64 without overflow and the per-synapse hash in int32 with wrap-around.
_M1, _M2 = 0x21F0AAAD, 0x735A2D97
_WEYL = 0x9E3779B9 - 2**32  # golden-ratio increment, as a signed int32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding 32-bit values (shifts are logical on values ≥ 0)."""
    x = x ^ (x >> 16)
    x = (x * _M1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _M2) & _MASK32
    return x ^ (x >> 15)


def counter_key(seed, step):
    """The 32-bit key of draw (seed, step), as signed int32 bits.

    Both are non-negative int64; each 32-bit half enters one lowbias32 round. Tensors (0-d) give a
    0-d int32 tensor on ``seed``'s device (traceable, no host synchronisation); Python ints give
    the same bits as a Python int (what eager calls use: no tensor ops at all).
    """
    if isinstance(seed, int) and isinstance(step, int):
        if seed < 0 or step < 0:
            raise ValueError(f"counter_key: seed and step must be non-negative, got {seed}, {step}")
    else:
        step = step.to(device=seed.device, dtype=torch.int64)
    k = _mix32((step & _MASK32) ^ 0x5BD1E995)
    k = _mix32(k ^ (step >> 32))
    k = _mix32(k ^ (seed & _MASK32))
    k = _mix32(k ^ (seed >> 32))
    if isinstance(k, int):
        return k - 2**32 if k >= 2**31 else k
    return torch.where(k >= 2**31, k - 2**32, k).to(torch.int32)  # the same 32 bits, signed


def weyl_counter(words: int, device=None) -> torch.Tensor:
    """The counter :math:`j \\varphi \\bmod 2^{32}` for j < ``words``, as int32."""
    return torch.arange(words, device=device, dtype=torch.int32).mul_(_WEYL)


def _xorshift_(x: torch.Tensor, shift: int, tmp: torch.Tensor | None) -> torch.Tensor:
    # x ^= x >>> shift on int32: the arithmetic shift masked to a logical one
    if tmp is None:
        return x ^ ((x >> shift) & ((1 << (32 - shift)) - 1))
    torch.bitwise_right_shift(x, shift, out=tmp)
    tmp &= (1 << (32 - shift)) - 1
    return x.bitwise_xor_(tmp)


def uniform_magnitudes(shape, bound: float, seed: torch.Tensor, step: torch.Tensor,
                       workspace: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """Magnitudes :math:`|R| \\sim \\mathcal U[0, a]`, 16 random bits each, float32, on ``seed``'s device.

    .. math:: h_j = \\mathrm{mix}\\big((j \\cdot \\varphi) \\oplus \\kappa(\\mathrm{seed}, t)\\big),
              \\qquad |R_i| = a \\, (k_i + 2^{15} + \\tfrac12) / 2^{16}

    A counter-based generator: word j of draw (seed, step t) is two rounds of multiply/xorshift
    (lowbias32's) applied to the Weyl counter :math:`j\\varphi \\bmod 2^{32}` xor the draw's key
    :math:`\\kappa` (:func:`counter_key`); each 32-bit word gives two signed 16-bit k, so
    :math:`k + 2^{15}` is uniform on :math:`\\{0, \\dots, 2^{16}-1\\}` and :math:`|R|` a 16-bit discretisation
    of U[0, a] (mean a/2, variance a²/12·(1 − 2⁻³²)). Only torch integer ops (int32 with
    wrap-around) and one exact float add and one rounded multiply: the same bits on every
    device and under torch.compile, a pure function of (seed, step), no host synchronisation.

    ``seed`` and ``step``: non-negative int64 tensors (0-d). ``workspace``: see
    :func:`keyed_magnitudes`.
    """
    return keyed_magnitudes(shape, bound, counter_key(seed, step), seed.device, workspace)


def keyed_magnitudes(shape, bound: float, key, device=None,
                     workspace: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """:func:`uniform_magnitudes` from the draw's key :math:`\\kappa` (:func:`counter_key`).

    ``key``: a 0-d int32 tensor or a Python int (the same bits); the result is on ``device``
    (default: the key tensor's). ``workspace``: see :func:`keyed_levels`; the result is then a
    view of its ``out``.
    """
    return keyed_levels(shape, key, device, workspace).mul_(magnitude_scale(bound))


def magnitude_scale(bound: float) -> float:
    """:math:`a / 2^{16}`, the factor from :func:`keyed_levels` to magnitudes (torch rounds it to
    float32 once, on every device)."""
    return bound / 2**16


def keyed_levels(shape, key, device=None, workspace: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """The levels :math:`k + 2^{15} + \\tfrac12` of the draw keyed ``key``, float32 (exact).

    :math:`|R| = (a / 2^{16}) \\cdot` level, rounded once (:func:`keyed_magnitudes`).
    ``workspace``: optional ``(words, out)`` or ``(words, out, counter)`` buffers for
    allocation-free eager use: int32 of ⌈n/2⌉ words, float32 of at least n, and
    :func:`weyl_counter` of ⌈n/2⌉ (kept between draws, it saves two passes over the words); the
    result is then a view of ``out``. Traced by torch.compile (no workspace), the hash is written
    synapse by synapse instead, which fuses into one loop; the bits are the same.
    """
    count = math.prod(shape)
    words = -(-count // 2)
    if workspace is None:
        device = key.device if device is None else device
        if torch.compiler.is_compiling() and count < 2**31:  # an int32 index reaches every synapse
            return _levels_per_synapse(count, key, device).view(shape)
        x = weyl_counter(words, device) ^ key
        tmp = out = None
    else:
        x, out = workspace[:2]
        if len(workspace) > 2:
            torch.bitwise_xor(workspace[2], key, out=x)
        else:
            torch.arange(words, out=x).mul_(_WEYL).bitwise_xor_(key)
        tmp = out.view(torch.int32)[:words]  # out is written only after the hash: its memory is free
    for mult in (_M1, _M2):
        x = x.mul_(mult) if tmp is not None else x * mult
        x = _xorshift_(x, 15, tmp)
    k = x.view(torch.int16)[:count].reshape(shape)  # little-endian: low half first
    if out is None:
        return k.to(torch.float32).add_(2**15 + 0.5)
    return out[:count].view(shape).copy_(k).add_(2**15 + 0.5)  # exact: 17-bit integer plus a half


def _levels_per_synapse(count: int, key, device) -> torch.Tensor:
    """:func:`keyed_levels` (flat) with the hash written per synapse, for traced graphs.

    Synapse i reads half i mod 2 of word ⌊i/2⌋ (little-endian: the low half first); as an
    unsigned 16-bit b, the signed k of that half is b − 2¹⁶·[b ≥ 2¹⁵], so
    :math:`k + 2^{15} + \\tfrac12 = (b \\oplus 2^{15}) + \\tfrac12`: the same bits as the
    word-wise draw. Twice the integer work, but one elementwise expression that inductor fuses
    into a single loop writing only the result (the word-wise draw's int16 view of its words
    keeps inductor from vectorising: 7× slower compiled on a 1000×1000 layer).
    """
    i = torch.arange(count, device=device, dtype=torch.int32)
    x = (i >> 1).mul(_WEYL) ^ key
    for mult in (_M1, _M2):
        x = _xorshift_(x * mult, 15, None)
    half = torch.where((i & 1) == 1, x >> 16, x) & 0xFFFF
    return (half ^ 0x8000).to(torch.float32).add_(0.5)


def level_sign_feedback(weight: torch.Tensor, levels: torch.Tensor, scale: float,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`random_magnitude_sign_feedback` with :math:`|R| = \\mathrm{fl}(c \\cdot \\mathrm{level})`,
    bit for bit, in two passes: :math:`\\mathrm{sign}(W)` and one ``addcmul``.

    .. math:: B = 0 + c \\cdot \\mathrm{level} \\cdot \\mathrm{sign}(W)

    is exact whatever the order of the products: a product with ±1 or 0 is exact and rounding is
    symmetric, so either order gives :math:`\\pm\\mathrm{fl}(c \\cdot \\mathrm{level})`, and
    ``torch.sign`` never returns −0. float32 ``weight`` and ``levels`` (``scale`` rounds to float32).
    """
    s = torch.sign(weight, out=out)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    return torch.addcmul(zero, levels, s, value=scale, out=s)


def match_norm(feedback: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """"SN" scaling: :math:`B \\, \\|W\\|_F / \\|B\\|_F`, so that the two norms are equal.

    A zero B stays zero (there is no direction to scale).
    """
    norm_b = feedback.norm()
    return feedback * torch.where(norm_b > 0, weight.norm() / norm_b, torch.zeros_like(norm_b))


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """W viewed as the matrix (out, in·k₁·k₂…) that a convolution applies to unfolded patches."""
    return weight.reshape(weight.shape[0], -1)


def spectral_norm(weight: torch.Tensor, u: torch.Tensor | None = None,
                  iterations: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:math:`\\sigma_1` of :func:`as_matrix` (W): exact, or by power iteration from ``u``.

    ``iterations = 0``: the exact largest singular value (an SVD), and ``u`` is returned as given.
    ``iterations = k > 0``: k steps of

    .. math:: v \\leftarrow A^\\top u / \\|A^\\top u\\|, \\qquad \\hat\\sigma = \\|A v\\|,
              \\qquad u \\leftarrow A v / \\hat\\sigma

    from the unit left vector ``u`` (shape (out,)); returns (:math:`\\hat\\sigma`, the new u). Since
    v is a unit vector :math:`\\hat\\sigma \\le \\sigma_1`, and with :math:`\\theta_0` the angle
    between u and the top left singular vector,
    :math:`1 - \\hat\\sigma^2/\\sigma_1^2 \\le \\tan^2\\theta_0 \\, (\\sigma_2/\\sigma_1)^{4k-2}`; a u kept from the
    previous step of training (W moved little) starts close, as in
    :func:`torch.nn.utils.spectral_norm`. Where :math:`A^\\top u` or :math:`Av` is zero, u is kept.
    Computed in at least float32.
    """
    a = as_matrix(weight)
    if iterations == 0 or u is None:
        return torch.linalg.matrix_norm(a.to(torch.promote_types(a.dtype, torch.float32)), ord=2).to(a.dtype), u
    dtype = torch.promote_types(a.dtype, torch.float32)
    a, u = a.to(dtype), u.to(dtype)
    sigma = torch.zeros((), dtype=dtype, device=a.device)
    for _ in range(iterations):
        v = a.T @ u
        v = v / torch.where(v.norm() > 0, v.norm(), torch.ones_like(sigma))
        av = a @ v
        sigma = av.norm()
        u = torch.where(sigma > 0, av / torch.where(sigma > 0, sigma, torch.ones_like(sigma)), u)
    return sigma.to(weight.dtype), u


def match_spectral_norm(feedback: torch.Tensor, weight: torch.Tensor, iterations: int = 0,
                        u_feedback: torch.Tensor | None = None, u_weight: torch.Tensor | None = None):
    """"SN" by the spectral norm: :math:`B \\, \\|W\\|_2 / \\|B\\|_2`, W and B viewed as (out, in·k).

    Exact with ``iterations = 0`` (the vectors are returned unchanged), else each norm is estimated
    by :func:`spectral_norm` from its own left vector. Returns ``(B', u_feedback', u_weight')``.
    A zero B stays zero.
    """
    sigma_b, u_feedback = spectral_norm(feedback, u_feedback, iterations)
    sigma_w, u_weight = spectral_norm(weight, u_weight, iterations)
    factor = torch.where(sigma_b > 0, sigma_w / torch.where(sigma_b > 0, sigma_b, torch.ones_like(sigma_b)),
                         torch.zeros_like(sigma_b))
    return feedback * factor, u_feedback, u_weight


def kolen_pollack_gradient(grad_weight: torch.Tensor) -> torch.Tensor:
    """Kolen–Pollack (Akrout 2019): B's gradient is W's local gradient :math:`g^\\top h`.

    Handed to the same optimizer with the same weight decay λ, plain SGD gives
    :math:`W_{t+1} - B_{t+1} = (1 - \\eta\\lambda)(W_t - B_t)`, so B → W.
    """
    return grad_weight


def weight_mirror_gradient(
    weight: torch.Tensor, feedback: torch.Tensor, noise: torch.Tensor, noise_std: float, decay: float
) -> torch.Tensor:
    """Weight mirror (Akrout 2019), written as a gradient for B (descent adds its negative).

    .. math:: \\Delta B = \\eta \\left(\\frac{1}{n\\sigma^2} \\sum_k (W\\xi_k)\\xi_k^\\top - \\lambda B\\right),
              \\qquad \\xi_k \\sim \\mathcal N(0, \\sigma^2 I)

    Since :math:`E[\\xi\\xi^\\top] = \\sigma^2 I` the expected update is :math:`\\eta(W - \\lambda B)`,
    whose fixed point is :math:`B = W / \\lambda \\propto W`. ``weight`` is viewed as a matrix
    (out, in·k·k) for convolutions; ``noise`` has shape (n, in·k·k).
    """
    w = weight.reshape(weight.shape[0], -1)
    mirrored = (noise @ w.T).T @ noise / (noise.shape[0] * noise_std**2)
    return (decay * feedback.reshape_as(w) - mirrored).reshape_as(weight)
