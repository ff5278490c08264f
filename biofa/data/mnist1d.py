"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package.

4000 train / 1000 test sequences of 40 features, 10 classes, from
``make_dataset(get_dataset_args())`` with the package's default arguments (``data_seed=42`` is
its default seed). Generating them (and importing the package) takes seconds, which every study
process would pay again; so the arrays are kept in memory for the life of the process and on
disk in a cache folder, ``$BIOFA_CACHE`` or else ``~/.cache/biofa`` (``$XDG_CACHE_HOME/biofa``),
as ``mnist1d-<package version>-seed<data_seed>.npz``. The cached file holds exactly the
generated arrays (``numpy.save`` round-trips them bit for bit); it is written atomically, a file
that cannot be read is generated again, and without a writable cache folder nothing is written.
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from .splits import RawData

DEFAULT_SEED = 42


#: The arrays of a generated MNIST-1D, in this order, in memory and in the cache file.
_ARRAYS = ("x", "y", "x_test", "y_test")


def cache_folder() -> Path:
    """Where generated datasets are kept: ``$BIOFA_CACHE``, else ``$XDG_CACHE_HOME/biofa``, else
    ``~/.cache/biofa``."""
    if os.environ.get("BIOFA_CACHE"):
        return Path(os.environ["BIOFA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "biofa"


def cache_path(data_seed: int) -> Path:
    """The cache file of MNIST-1D generated with ``data_seed`` by the installed ``mnist1d``."""
    return cache_folder() / f"mnist1d-{metadata.version('mnist1d')}-seed{int(data_seed)}.npz"


@functools.lru_cache(maxsize=4)
def _generate(data_seed: int):
    path = cache_path(data_seed)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = tuple(stored[name] for name in _ARRAYS)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # no cache yet, or unreadable
        arrays = _make(data_seed)
        _store(path, arrays)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _store(path: Path, arrays) -> None:
    """Write the cache file atomically; a cache folder that cannot be written is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **dict(zip(_ARRAYS, arrays)))
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _make(data_seed: int):
    """Generate the arrays with the ``mnist1d`` package (seconds)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = data_seed
    # make_dataset seeds the global `random` and `numpy.random` states: leave the user's untouched
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return tuple(np.asarray(data[name]) for name in _ARRAYS)


def mnist1d(data_seed: int = DEFAULT_SEED) -> RawData:
    """MNIST-1D: x of shape (n, 40) (already centred and scaled by the generator), y in 0..9."""
    x_tr, y_tr, x_te, y_te = _generate(int(data_seed))
    return RawData(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), "classification", 10)
