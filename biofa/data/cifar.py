"""CIFAR-10 from the official python batches (``cifar-10-batches-py``).

Each batch is a pickled dict with ``b"data"`` (uint8, shape (n, 3072), channel-major 3×32×32) and
``b"labels"`` (n ints in 0..9). The unpickler accepts only the builtins and numpy types those
files contain, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from ..errors import DataFileError
from .files import candidate_folders, locate, read_bytes
from .splits import RawData

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FOLDER = "cifar-10-batches-py"
SOURCE = ("https://www.cs.toronto.edu/~kriz/cifar.html (the 'CIFAR-10 python version', "
          "cifar-10-python.tar.gz; extract it)")

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 of shape (n, 3, 32, 32), labels int64 of shape (n,)) from one batch file."""
    raw = read_bytes(path)
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means the file is not a CIFAR batch
        raise DataFileError(f"{path} is not a readable CIFAR-10 python batch ({err}); download it again") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataFileError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels', got {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataFileError(f"{path}: b'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataFileError(f"{path}: b'labels' must hold one label per image ({data.shape[0]}), "
                            f"got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(f"{path}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def cifar10(root=None) -> RawData:
    """CIFAR-10 (Krizhevsky 2009): 50000 train / 10000 test, 3×32×32, 10 classes, X in [0, 1].

    ``root`` is the folder that holds ``cifar-10-batches-py`` or that folder itself.
    """
    names = [*TRAIN_FILES, TEST_FILE]
    paths = locate(names, candidate_folders(root, (FOLDER, f"cifar10/{FOLDER}")),
                   title="CIFAR-10", source=SOURCE, gz=False)
    parts = [read_cifar10_batch(paths[n]) for n in TRAIN_FILES]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = read_cifar10_batch(paths[TEST_FILE])
    scale = lambda x: x.astype(np.float32) / 255.0  # noqa: E731
    return RawData(scale(x_tr), y_tr, scale(x_te), y_te, "classification", 10, image=True)
