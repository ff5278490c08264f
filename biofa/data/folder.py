"""Image classification from an ImageNet-layout folder, decoded lazily with Pillow.

Layout: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG`` (ImageNet after its
validation images are sorted into class folders; any folder of class sub-folders of JPEG / PNG
files works). Classes are the sorted names of the ``train`` sub-folders, label :math:`k` for the
:math:`k`-th; ``val`` must use the same names. ``train`` gives the training and validation parts
(a seeded hold-out) and ``val`` the test part:

.. math:: \\text{train: } \\mathrm{RandomResizedCrop}(s) \\circ \\mathrm{flip}, \\qquad
          \\text{validation, test: } \\mathrm{CenterCrop}(s) \\circ \\mathrm{Resize}(r)

each followed by the ImageNet normalisation (see :mod:`biofa.data.transforms`). Nothing is read
at load time but the file names; images are decoded when a :class:`~torch.utils.data.DataLoader`
(and its workers) reads them, so ``Splits.train`` etc. are :class:`ImageFolderDataset` s, not
tensors.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataFileError
from . import transforms
from .files import ENV_VAR, default_base
from .splits import Splits, count_examples, split_indices

EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
SOURCES = {
    "imagefolder": ("an image folder", (), "your own images, one sub-folder per class"),
    "imagenet": ("ImageNet (ILSVRC-2012)", ("imagenet", "ILSVRC2012"),
                 "https://image-net.org/download.php (ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar; "
                 "extract the train archive's per-class tars into train/<wnid>/ and sort the validation "
                 "images into val/<wnid>/ with the devkit's labels)"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFiles:
    """What a folder source finds: the class names and (path, label) arrays of the ``train`` and
    ``val`` folders (paths relative to ``root``, as bytes), with the transform sizes to apply."""

    root: Path
    classes: tuple
    train_paths: np.ndarray
    train_labels: np.ndarray
    test_paths: np.ndarray
    test_labels: np.ndarray
    image_size: int
    resize: int
    scale: tuple
    ratio: tuple


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images read from ``root/files[i]`` with their ``labels``, decoded and transformed when indexed.

    ``train=True``: random-resized crop and flip, drawn from a :class:`random.Random` seeded by the
    key: ``ds[(i, seed)]`` (what :func:`~biofa.data.loaders` passes, a fresh seed per example and
    epoch) or ``ds[i]`` (seed ``i``). ``train=False``: resize and central crop. Items are
    ``(x, label)`` with x float32 of shape (3, size, size), normalised by ``mean``/``std`` when given.
    ``files`` are relative paths (bytes or str) kept in one numpy bytes array, not a list of
    strings: ImageNet's 1.28 M names take ~50 MB, and forked workers do not copy them page by page.
    """

    def __init__(self, root, files, labels, *, train: bool, image_size: int, resize: int,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), mean=None, std=None):
        self.root = os.fspath(root)
        files = np.asarray(files)
        if files.dtype.kind != "S":
            files = np.asarray([os.fsencode(str(f)) for f in files.tolist()], dtype=bytes)
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.files.shape != self.labels.shape:
            raise ConfigError(f"ImageFolderDataset: {len(self.files)} files but {len(self.labels)} labels")
        self.train, self.image_size, self.resize = bool(train), int(image_size), int(resize)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.mean, self.std = mean, std

    @property
    def seeded_keys(self) -> bool:
        """True for a training set: its items are random, drawn from the seed in the key."""
        return self.train

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> str:
        """The full path of example ``index``."""
        return os.path.join(self.root, os.fsdecode(self.files[index]))

    @property
    def paths(self) -> list[str]:
        """The full paths of all examples, in order."""
        return [self.path(i) for i in range(len(self))]

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, key)
        index = int(index)
        img = transforms.decode(self.path(index))
        if self.train:
            img = transforms.train_transform(img, self.image_size, random.Random(int(seed)), self.scale, self.ratio)
        else:
            img = transforms.eval_transform(img, self.image_size, self.resize)
        return transforms.to_tensor(img, self.mean, self.std), int(self.labels[index])


def _scan(folder: Path, classes: tuple | None, title: str) -> tuple[tuple, list, list]:
    """(classes, paths relative to ``folder.parent``, labels) of ``folder/<class>/<image>``,
    classes and files sorted by name."""
    found = tuple(sorted(entry.name for entry in os.scandir(folder) if entry.is_dir()))
    if not found:
        raise DataFileError(f"{title}: {folder} has no class sub-folders; expected {folder}/<class>/<image>.JPEG")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataFileError(f"{title}: {folder} has class folders that train/ does not have: "
                                f"{extra[:5]}{' ...' if len(extra) > 5 else ''}; both must use the same class names")
    index = {name: k for k, name in enumerate(classes)}
    paths, labels = [], []
    for name in found:
        files = sorted(os.fsencode(f"{folder.name}/{name}/{e.name}") for e in os.scandir(folder / name)
                       if e.is_file() and e.name.lower().endswith(EXTENSIONS))
        if not files:
            raise DataFileError(f"{title}: the class folder {folder / name} has no images "
                                f"(files ending in {', '.join(EXTENSIONS)}); remove it or add its images")
        paths += files
        labels += [index[name]] * len(files)
    return classes, paths, labels


def _size(value, key: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{owner}: {key} must be a positive int (pixels), got {value!r}")
    return int(value)


def _interval(value, key: str, owner: str, low: float, high: float) -> tuple:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {key} must be a pair [low, high], got {value!r}") from None
    if not low < lo <= hi <= high:
        raise ConfigError(f"{owner}: {key} must satisfy {low} < low <= high <= {high}, got {value!r}")
    return lo, hi


def read_image_folder(key: str, root=None, image_size: int = 224, resize: int | None = None,
                      scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> ImageFiles:
    """The file lists of ``root/train`` and ``root/val`` for source ``key`` (``"imagefolder"`` or
    ``"imagenet"``); a :class:`DataFileError` that says what is missing and where to get it."""
    title, subfolders, source = SOURCES[key]
    image_size = _size(image_size, "image_size", key)
    resize = round(image_size * 256 / 224) if resize is None else _size(resize, "resize", key)
    if resize < image_size:
        raise ConfigError(f"{key}: resize={resize} is smaller than image_size={image_size}; the evaluation "
                          "crop is taken from the image resized to that shorter side")
    scale = _interval(scale, "scale", key, 0.0, 1.0)
    ratio = _interval(ratio, "ratio", key, 0.0, float("inf"))
    base = (default_base() if root is None else Path(root).expanduser()).absolute()
    folders = [base, *(base / sub for sub in subfolders)]
    for folder in folders:
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            classes, tr_paths, tr_labels = _scan(folder / "train", None, title)
            _, te_paths, te_labels = _scan(folder / "val", classes, title)
            return ImageFiles(folder, classes, np.asarray(tr_paths, dtype=bytes), np.asarray(tr_labels, np.int64),
                              np.asarray(te_paths, dtype=bytes), np.asarray(te_labels, np.int64),
                              image_size, resize, scale, ratio)
    searched = ", ".join(str(f) for f in folders)
    raise DataFileError(
        f"{title} needs the folders train/<class>/ and val/<class>/ of images (e.g. train/n01440764/*.JPEG); "
        f"none of the folders searched has both: {searched}. Get them from {source} and pass "
        f"root=<the folder that holds train/ and val/> (or set ${ENV_VAR})."
    )


def image_folder(root=None, image_size: int = 224, resize: int | None = None, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3)) -> ImageFiles:
    """Images in class folders root/train/<class>/ and root/val/<class>/ (JPEG, PNG), decoded lazily.

    ``image_size``: side of the square crops (224); ``resize``: shorter side before the evaluation
    crop (default ``image_size``·256/224); ``scale``, ``ratio``: the training crop's area fraction
    and aspect-ratio ranges.
    """
    return read_image_folder("imagefolder", root, image_size, resize, scale, ratio)


def imagenet(root=None, image_size: int = 224, resize: int | None = None, scale=(0.08, 1.0),
             ratio=(3 / 4, 4 / 3)) -> ImageFiles:
    """ImageNet ILSVRC-2012 (Russakovsky et al. 2015) in class folders, decoded lazily; val = test.

    ``root`` holds ``train/`` and ``val/`` (default ``$BIOFA_DATA/imagenet``); options as
    for ``"imagefolder"``.
    """
    return read_image_folder("imagenet", root, image_size, resize, scale, ratio)


def folder_splits(files: ImageFiles, name: str, *, validation=0.1, normalize: bool = True, seed: int = 0,
                  n_train: int | None = None, n_test: int | None = None) -> Splits:
    """:class:`Splits` of image-folder datasets: train and validation from ``train/`` (the same
    seeded hold-out as :func:`~biofa.data.splits.make_splits`), test from ``val/`` (its first
    ``n_test`` files in class order). ``normalize`` applies the ImageNet mean and std."""
    train_idx, val_idx = split_indices(len(files.train_paths), name, validation=validation, seed=seed,
                                       n_train=n_train)
    n_te = count_examples(n_test, len(files.test_paths), "n_test", name)
    mean, std = (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD) if normalize else (None, None)
    common = dict(image_size=files.image_size, resize=files.resize, scale=files.scale, ratio=files.ratio,
                  mean=mean, std=std)
    root = files.root
    train = ImageFolderDataset(root, files.train_paths[train_idx], files.train_labels[train_idx], train=True, **common)
    val = ImageFolderDataset(root, files.train_paths[val_idx], files.train_labels[val_idx], train=False, **common)
    test = ImageFolderDataset(root, files.test_paths[:n_te], files.test_labels[:n_te], train=False, **common)
    as_tensor = lambda v: None if v is None else torch.tensor(v, dtype=torch.float32).view(3, 1, 1)  # noqa: E731
    return Splits(train=train, val=val, test=test, task="classification", n_classes=len(files.classes),
                  n_outputs=len(files.classes), input_shape=(3, files.image_size, files.image_size),
                  name=name, mean=as_tensor(mean), std=as_tensor(std), classes=files.classes)
