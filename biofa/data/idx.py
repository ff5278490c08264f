"""MNIST and Fashion-MNIST from IDX files (LeCun's format), gzip-compressed or raw.

IDX layout: a magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values in C order (big-endian for multi-byte types).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataFileError
from .files import candidate_folders, locate, read_bytes
from .splits import RawData

#: IDX type code -> numpy dtype (big-endian where it matters)
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

SOURCES = {
    "mnist": ("MNIST", ("mnist", "MNIST/raw"),
              "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"),
    "fashion_mnist": ("Fashion-MNIST", ("fashion_mnist", "FashionMNIST/raw"),
                      "https://github.com/zalandoresearch/fashion-mnist "
                      "(files: http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/)"),
}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array of its declared type and shape.

    Raises :class:`~biofa.errors.DataFileError` when the magic number, type code, dimensions or
    length do not fit.
    """
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataFileError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
                            "download it again")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise DataFileError(f"{path}: unknown IDX type code 0x{code:02x}; the file is corrupt")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DataFileError(f"{path}: truncated IDX header ({ndim} dimensions); the file is corrupt")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims)) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise DataFileError(f"{path}: the header declares shape {dims} ({expected} bytes of data) but the "
                            f"file holds {body}; it is truncated or corrupt, download it again")
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _images(path, name) -> np.ndarray:
    x = read_idx(path)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataFileError(f"{path}: {name} images must be a uint8 IDX array of shape (n, rows, cols), "
                            f"got {x.dtype} {x.shape}")
    return x


def _labels(path, n_images, name) -> np.ndarray:
    y = read_idx(path)
    if y.ndim != 1 or y.shape[0] != n_images:
        raise DataFileError(f"{path}: {name} labels must be a 1-d IDX array with one label per image "
                            f"({n_images}), got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataFileError(f"{path}: {name} labels must lie in 0..9, got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def load_idx_dataset(key: str, root=None) -> RawData:
    """The official train/test splits of ``"mnist"`` or ``"fashion_mnist"``; X scaled to [0, 1],
    shape (n, 1, rows, cols)."""
    title, subfolders, source = SOURCES[key]
    paths = locate(list(FILES), candidate_folders(root, subfolders), title=title, source=source)
    x_tr = _images(paths[FILES[0]], title)
    y_tr = _labels(paths[FILES[1]], len(x_tr), title)
    x_te = _images(paths[FILES[2]], title)
    y_te = _labels(paths[FILES[3]], len(x_te), title)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataFileError(f"{title}: train images are {x_tr.shape[1:]} but test images {x_te.shape[1:]}")
    scale = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return RawData(scale(x_tr), y_tr, scale(x_te), y_te, "classification", 10, image=True)


def mnist(root=None) -> RawData:
    """MNIST (LeCun et al. 1998): 60000 train / 10000 test, 1×28×28, 10 classes."""
    return load_idx_dataset("mnist", root)


def fashion_mnist(root=None) -> RawData:
    """Fashion-MNIST (Xiao et al. 2017): 60000 train / 10000 test, 1×28×28, 10 classes."""
    return load_idx_dataset("fashion_mnist", root)
