"""CIFAR-10 and CIFAR-100 from the official python batches (``cifar-10-batches-py``,
``cifar-100-python``).

Each batch is a pickled dict with ``b"data"`` (uint8, shape (n, 3072), channel-major 3×32×32) and
the labels: ``b"labels"`` (n ints in 0..9) for CIFAR-10; ``b"fine_labels"`` (0..99) and
``b"coarse_labels"`` (0..19, the superclasses) for CIFAR-100, whose ``train`` and ``test`` files
hold one batch each (``meta`` holds the class names). The unpickler accepts only the builtins and numpy types those
files contain, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from ..errors import DataFileError, check_choice
from .files import candidate_folders, locate, read_bytes
from .splits import RawData

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FOLDER = "cifar-10-batches-py"
SOURCE = ("https://www.cs.toronto.edu/~kriz/cifar.html (the 'CIFAR-10 python version', "
          "cifar-10-python.tar.gz; extract it)")
FOLDER_100 = "cifar-100-python"
SOURCE_100 = ("https://www.cs.toronto.edu/~kriz/cifar.html (the 'CIFAR-100 python version', "
              "cifar-100-python.tar.gz; extract it)")
#: CIFAR-100 label sets: batch key and number of classes
LABELS_100 = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}

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


def _read_batch(path, title: str, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = read_bytes(path)
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means the file is not a CIFAR batch
        raise DataFileError(f"{path} is not a readable {title} python batch ({err}); download it again") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataFileError(f"{path}: a {title} batch is a dict with b'data' and {label_key!r}, got {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataFileError(f"{path}: b'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataFileError(f"{path}: {label_key!r} must hold one label per image ({data.shape[0]}), "
                            f"got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > n_classes - 1):
        raise DataFileError(f"{path}: {label_key!r} must lie in 0..{n_classes - 1}, "
                            f"got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 of shape (n, 3, 32, 32), labels int64 of shape (n,)) from one batch file."""
    return _read_batch(path, "CIFAR-10", b"labels", 10)


def read_cifar100_batch(path, labels: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 3, 32, 32), labels int64 (n,)) from a CIFAR-100 ``train`` or ``test``
    file; ``labels``: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses)."""
    check_choice("read_cifar100_batch", "labels", labels, LABELS_100)
    key, n_classes = LABELS_100[labels]
    return _read_batch(path, "CIFAR-100", key, n_classes)


def _scale(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


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
    return RawData(_scale(x_tr), y_tr, _scale(x_te), y_te, "classification", 10, image=True)


def cifar100(root=None, labels: str = "fine") -> RawData:
    """CIFAR-100 (Krizhevsky 2009): 50000 train / 10000 test, 3×32×32, 100 classes (or 20), X in [0, 1].

    ``root`` is the folder that holds ``cifar-100-python`` or that folder itself; ``labels``:
    ``"fine"`` (the 100 classes) or ``"coarse"`` (the 20 superclasses).
    """
    check_choice("cifar100", "labels", labels, LABELS_100)
    paths = locate(["train", "test"], candidate_folders(root, (FOLDER_100, f"cifar100/{FOLDER_100}")),
                   title="CIFAR-100", source=SOURCE_100, gz=False)
    x_tr, y_tr = read_cifar100_batch(paths["train"], labels)
    x_te, y_te = read_cifar100_batch(paths["test"], labels)
    n_classes = LABELS_100[labels][1]
    return RawData(_scale(x_tr), y_tr, _scale(x_te), y_te, "classification", n_classes, image=True)
