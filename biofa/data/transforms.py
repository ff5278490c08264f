"""The standard ImageNet transforms, written with Pillow and torch (no torchvision).

Training: a random crop of area fraction :math:`s \\sim \\mathcal U[s_0, s_1]` of the image and
aspect ratio :math:`r` with :math:`\\log r \\sim \\mathcal U[\\log r_0, \\log r_1]`, resized to
``size``×``size`` (``RandomResizedCrop``), then a horizontal flip with probability 1/2.
Evaluation: resize the shorter side to ``resize`` (256 for 224), then the central
``size``×``size`` crop. Both end with

.. math:: \\tilde x_c = (x_c / 255 - \\mu_c) / \\sigma_c

with the ImageNet statistics (or no normalisation). The crop geometry follows torchvision's
``RandomResizedCrop.get_params``, ``Resize`` and ``CenterCrop``; resampling is Pillow's bilinear
filter, which (like torchvision on PIL images) antialiases when it shrinks. Randomness comes from a
:class:`random.Random` the caller seeds, one per example.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image

from ..errors import DataFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BILINEAR = Image.Resampling.BILINEAR


def decode(path) -> Image.Image:
    """The RGB image in ``path``; a :class:`DataFileError` naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataFileError(f"image file {path} does not exist (was the folder changed after loading?)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataFileError(f"cannot decode the image {path} ({err}); the file is corrupt or not an "
                            "image: replace or delete it") from None


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random crop of area fraction in ``scale`` and aspect ratio (w/h) in
    ``ratio`` (log-uniform); after 10 rejected draws, the central crop with the ratio clamped."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(img: Image.Image, size: int, rng: random.Random, scale=(0.08, 1.0),
                    ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """``RandomResizedCrop(size, scale, ratio)`` then a horizontal flip with probability 1/2 (the
    crop box is drawn from ``rng`` first, then the flip)."""
    left, top, w, h = random_resized_crop_box(img.width, img.height, rng, scale, ratio)
    # crop, then resize: only the crop's pixels enter the filter (resize(box=...) would also read
    # the pixels around the box), as torchvision's resized_crop does
    out = img.crop((left, top, left + w, top + h)).resize((size, size), _BILINEAR)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def eval_transform(img: Image.Image, size: int, resize: int) -> Image.Image:
    """Shorter side to ``resize`` (the longer one scaled alike, truncated), then the central
    ``size``×``size`` crop (``resize >= size``)."""
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image, mean=None, std=None) -> torch.Tensor:
    """float32 (3, H, W) in [0, 1], then :math:`(x - \\mu)/\\sigma` per channel when given."""
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    if mean is not None:
        x.sub_(torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))
        x.div_(torch.tensor(std, dtype=torch.float32).view(3, 1, 1))
    return x
