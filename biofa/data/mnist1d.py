"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package.

4000 train / 1000 test sequences of 40 features, 10 classes, from
``make_dataset(get_dataset_args())`` with the package's default arguments (``data_seed=42`` is
its default seed). Nothing is written to disk; the generated arrays are
kept in memory for the life of the process (generation takes about a second).
"""

from __future__ import annotations

import functools
import random

import numpy as np

from .splits import RawData

DEFAULT_SEED = 42


@functools.lru_cache(maxsize=4)
def _generate(data_seed: int):
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
    arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
    for a in arrays:
        a.setflags(write=False)
    return arrays


def mnist1d(data_seed: int = DEFAULT_SEED) -> RawData:
    """MNIST-1D: x of shape (n, 40) (already centred and scaled by the generator), y in 0..9."""
    x_tr, y_tr, x_te, y_te = _generate(int(data_seed))
    return RawData(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), "classification", 10)
