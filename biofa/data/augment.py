"""Batched image augmentation on the device: random crop with zero padding and horizontal flip.

.. math:: \\tilde x_n[c, i, j] = \\bar x_n[c,\\; \\delta^y_n + i,\\;
          \\delta^x_n + (W - 1 - j \\text{ if } f_n \\text{ else } j)], \\qquad
          \\delta^y_n, \\delta^x_n \\sim \\mathcal U\\{0, \\dots, 2p\\},\\; f_n \\sim \\mathrm{Bernoulli}(1/2)

where :math:`\\bar x_n` is example :math:`n` padded by :math:`p` pixels of black on every side
(the CIFAR protocol: ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip``). The whole batch
is augmented with one gather on the tensor's own device (no loop over examples); the offsets and
flips are drawn from an explicit :class:`torch.Generator`, so a run's augmentation is a function
of its seed. A CPU generator gives the same draws whatever the tensor's device; a CUDA generator
is another random stream (same seed, other draws than on the CPU).

>>> aug = Augment.from_spec({"crop": 4, "flip": True})
>>> g = torch.Generator().manual_seed(0)
>>> aug(torch.zeros(8, 3, 32, 32), generator=g).shape
torch.Size([8, 3, 32, 32])

A spec is a table ``{crop = 4, flip = true}`` or a list ``["crop:4", "flip"]``; ``false``, ``[]``
or ``{}`` mean no augmentation. Apply it to training batches only, never to validation or test.

``size = s`` crops to s×s instead of back to H×W (the TensorFlow CIFAR-10 tutorial's 24×24
crops of 32×32 images: ``{size = 24, flip = true}``): training offsets are uniform on
:math:`\\{0, \\dots, H + 2p - s\\}` (and likewise for the width), and evaluation batches take the
central s×s crop, offset :math:`\\lfloor (H - s)/2 \\rfloor` (:meth:`Augment.eval_transform`, as
``tf.image.resize_image_with_crop_or_pad``); the model then sees (C, s, s).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch

from ..errors import ConfigError, ShapeError

#: spec keys and what they take
KEYS = {"crop": "the padding p in pixels (int >= 0; 0 = no crop)", "flip": "true or false",
        "size": "the side s of a square s×s crop (int >= 1; default: the image's own size)"}


def _channel_vector(value, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() == 0 or not torch.isfinite(t).all():
        raise ConfigError(f"Augment: {name} must be finite per-channel values, got {value!r}")
    return t


class Augment(torch.nn.Module):
    """Random crop (pad ``crop`` pixels, crop back to H×W) and horizontal flip of a batch (N, C, H, W).

    Parameters
    ----------
    crop : padding :math:`p` in pixels; each example is cropped at offsets uniform on
        :math:`\\{0..2p\\}^2` of its padded copy. 0 turns the crop off.
    flip : mirror each example left-right with probability 1/2.
    size : crop to ``size``×``size`` (random offsets in training, the central crop in
        :meth:`eval_transform`); None (default) crops back to H×W.
    mean, std : per-channel statistics (length C, or shaped (C, 1, 1)) of the pixels.
        With ``normalize=False`` they are the statistics the batch *was* normalised with (e.g.
        ``splits.mean``/``splits.std``) and only set the padding to a black pixel,
        :math:`-\\mu/\\sigma`; without them the padding is 0.
    normalize : the batch is in pixel units: pad with 0, crop, flip, then return
        :math:`(x - \\mu) / \\sigma`; :meth:`eval_transform` applies the same normalisation to
        evaluation batches.
    """

    def __init__(self, crop: int = 0, flip: bool = False, *, size: int | None = None, mean=None, std=None,
                 normalize: bool = False):
        super().__init__()
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
            raise ConfigError(f"Augment: size must be the side of the crop in pixels, an int >= 1; got {size!r}")
        if isinstance(crop, bool) or not isinstance(crop, numbers.Integral) or crop < 0:
            raise ConfigError(f"Augment: crop must be the padding in pixels, an int >= 0; got {crop!r}")
        if not isinstance(flip, bool):
            raise ConfigError(f"Augment: flip must be true or false, got {flip!r}")
        mean, std = _channel_vector(mean, "mean"), _channel_vector(std, "std")
        if (mean is None) != (std is None) or (mean is not None and mean.shape != std.shape):
            raise ConfigError("Augment: give mean and std together, one value per channel each")
        if std is not None and (std <= 0).any():
            raise ConfigError(f"Augment: std must be positive, got {std.tolist()}")
        if normalize and mean is None:
            raise ConfigError("Augment: normalize=True needs the per-channel mean and std")
        self.crop, self.flip, self.normalize = int(crop), flip, bool(normalize)
        self.size = None if size is None else int(size)
        self.mean, self.std = mean, std

    # -- the spec -----------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec, *, mean=None, std=None) -> Augment:
        """An :class:`Augment` from a spec value (see the module docstring); ``mean``/``std`` are
        the statistics the data were normalised with (``splits.mean``, ``splits.std``), so that
        the padding is black."""
        return cls(**parse_spec(spec), mean=mean, std=std)

    @property
    def identity(self) -> bool:
        """True when the augmentation changes nothing (no crop, no flip, no normalisation)."""
        return self.crop == 0 and not self.flip and not self.normalize and self.size is None

    def extra_repr(self) -> str:
        size = "" if self.size is None else f", size={self.size}"
        return f"crop={self.crop}, flip={self.flip}{size}" + (", normalize=True" if self.normalize else "")

    def output_shape(self, shape) -> tuple:
        """The shape (C, H', W') of an augmented or evaluation example of shape (C, H, W)."""
        c, h, w = shape
        if self.size is None:
            return (c, h, w)
        if self.size > h + 2 * self.crop or self.size > w + 2 * self.crop or self.size > min(h, w):
            raise ShapeError(f"Augment: a {self.size}×{self.size} crop does not fit images of {h}×{w} "
                             f"(padded by {self.crop}); give size <= {min(h, w)}")
        return (c, self.size, self.size)

    # -- the transformation -------------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator | None = None, image_size: tuple | None = None):
        """The random parameters for ``n`` examples: offsets ``dy``, ``dx`` in {0..2p} (with
        ``size``: in {0..H+2p-s} and {0..W+2p-s}, ``image_size`` = (H, W) required) and the flip
        mask, int64 / bool tensors of shape (n,) on the generator's device. Drawn in this order
        (``dy``, ``dx``, then flips), so the stream depends only on what is switched on."""
        device = generator.device if generator is not None else torch.device("cpu")
        zeros = torch.zeros(n, dtype=torch.int64, device=device)
        dy = dx = zeros
        span_y = span_x = 2 * self.crop
        if self.size is not None:
            if image_size is None:
                raise ConfigError("Augment.draw: with size, pass image_size=(H, W)")
            _, h, w = self.output_shape((1, *image_size))
            span_y, span_x = image_size[0] + 2 * self.crop - h, image_size[1] + 2 * self.crop - w
        if span_y or span_x:
            dy = torch.randint(0, span_y + 1, (n,), generator=generator, device=device)
            dx = torch.randint(0, span_x + 1, (n,), generator=generator, device=device)
        flips = torch.rand(n, generator=generator, device=device) < 0.5 if self.flip else zeros.bool()
        return dy, dx, flips

    def apply(self, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop ``x`` (N, C, H, W) at offsets (``dy``, ``dx``) of its padded copy and flip the
        examples where ``flips`` is true: one gather for the whole batch."""
        _check_batch(x)
        n, c, h, w = x.shape
        _, oh, ow = self.output_shape((c, h, w))
        p = self.crop
        dy, dx, flips = dy.to(x.device), dx.to(x.device), flips.to(x.device)
        if self.mean is not None and not self.normalize:
            fill = (-self.mean / self.std).to(x.device, x.dtype)
            if fill.numel() != c:
                raise ShapeError(f"Augment: {fill.numel()} channel statistics for a batch of {c} channels")
        else:
            fill = torch.zeros(c, dtype=x.dtype, device=x.device)
        hp, wp = h + 2 * p, w + 2 * p
        if p:
            padded = x.new_empty(n, c, hp, wp)
            padded.copy_(fill.view(1, c, 1, 1).expand(n, c, hp, wp))
            padded[:, :, p:p + h, p:p + w] = x
        else:
            padded = x
        # output pixel (i, j) of example n reads padded pixel (dy_n + i, dx_n + j or dx_n + W-1-j):
        # one flat index per (n, i, j), shared by the channels, and one gather (no host sync)
        rows = dy[:, None] + torch.arange(oh, device=x.device)                        # (N, H')
        cols = torch.arange(ow, device=x.device).expand(n, ow)
        cols = dx[:, None] + torch.where(flips[:, None], ow - 1 - cols, cols)         # (N, W')
        index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, oh * ow).expand(n, c, oh * ow)
        out = padded.reshape(n, c, hp * wp).gather(2, index.contiguous()).view(n, c, oh, ow)
        return self.eval_transform(out) if self.normalize else out

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmented batch (same dtype and device as ``x``; shape :meth:`output_shape`)."""
        _check_batch(x)
        if self.crop == 0 and not self.flip and self.size is None:
            return self.eval_transform(x) if self.normalize else x
        return self.apply(x, *self.draw(x.shape[0], generator, tuple(x.shape[2:])))

    def eval_transform(self, x: torch.Tensor) -> torch.Tensor:
        """What evaluation batches get: the central ``size``×``size`` crop when ``size`` is set, then
        :math:`(x - \\mu)/\\sigma` with ``normalize=True``; else ``x`` itself."""
        if self.size is not None:
            _check_batch(x)
            _, oh, ow = self.output_shape(tuple(x.shape[1:]))
            top, left = (x.shape[2] - oh) // 2, (x.shape[3] - ow) // 2
            x = x[:, :, top:top + oh, left:left + ow]
        if not self.normalize:
            return x
        _check_batch(x)
        if self.mean.numel() != x.shape[1]:
            raise ShapeError(f"Augment: {self.mean.numel()} channel statistics for a batch of {x.shape[1]} channels")
        shape = (1, -1, 1, 1)
        return (x - self.mean.to(x.device, x.dtype).view(shape)) / self.std.to(x.device, x.dtype).view(shape)


def _check_batch(x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"Augment: expects a floating-point image batch (N, C, H, W), got {got}")


def parse_spec(spec) -> dict:
    """``{"crop": int, "flip": bool}`` (and ``"size": int`` when given) from a spec value: a table,
    a list of words (``"crop:4"``, ``"flip"``, ``"size:24"``), or ``false``/``None``/empty for no
    augmentation."""
    where = "[data] augment"
    if spec is None or spec is False:
        return {"crop": 0, "flip": False}
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of "
                              + ", ".join(f"{k} ({v})" for k, v in KEYS.items()))
        out = {"crop": spec.get("crop", 0), "flip": spec.get("flip", False)}
        if "size" in spec:
            out["size"] = spec["size"]
    elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        out = {"crop": 0, "flip": False}
        for item in spec:
            if not isinstance(item, str):
                raise ConfigError(f"{where}: list items are words such as 'crop:4' or 'flip', got {item!r}")
            word, _, arg = item.strip().partition(":")
            if word == "flip" and not arg:
                value = True
            elif word in ("crop", "size") and arg.strip().isdigit():
                value = int(arg)
            elif word in KEYS:
                raise ConfigError(f"{where}: {item!r} is malformed; write 'crop:<pixels>' (e.g. 'crop:4'), "
                                  "'size:<pixels>' or 'flip'")
            else:
                raise ConfigError(f"{where}: unknown augmentation {item!r}; expected 'crop:<pixels>', "
                                  "'size:<pixels>' or 'flip'")
            if [w.strip().partition(":")[0] for w in spec].count(word) > 1:
                raise ConfigError(f"{where}: {word!r} is given more than once in {list(spec)!r}")
            out[word] = value
    else:
        raise ConfigError(f"{where} must be a table such as {{crop = 4, flip = true}}, a list such as "
                          f"[\"crop:4\", \"flip\"], or false; got {spec!r}")
    crop, flip = out["crop"], out["flip"]
    if isinstance(crop, bool) or not isinstance(crop, numbers.Integral) or crop < 0:
        raise ConfigError(f"{where}: crop must be the padding in pixels, an int >= 0; got {crop!r}")
    if not isinstance(flip, bool):
        raise ConfigError(f"{where}: flip must be true or false, got {flip!r}")
    out["crop"] = int(crop)
    if "size" in out:
        size = out["size"]
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ConfigError(f"{where}: size must be the side of the crop in pixels, an int >= 1; got {size!r}")
        out["size"] = int(size)
    return out


def build(spec, splits=None) -> Augment | None:
    """The training-batch augmentation of a spec value, or None when it does nothing.

    ``splits``: the :class:`~biofa.data.Splits` it will augment; its ``mean``/``std`` (when the
    data were normalised) make the crop's padding black, as in pixel space.
    """
    mean = getattr(splits, "mean", None)
    std = getattr(splits, "std", None)
    aug = Augment.from_spec(spec, mean=mean, std=std)
    if aug.identity:
        return None
    if splits is not None and len(getattr(splits, "input_shape", ())) != 3:
        raise ConfigError(f"[data] augment needs image data (C, H, W); dataset {splits.name!r} has "
                          f"samples of shape {splits.input_shape}")
    if splits is not None and aug.size is not None:
        try:
            aug.output_shape(tuple(splits.input_shape))
        except ShapeError as err:
            raise ConfigError(f"[data] augment: {err}") from None
    return aug
