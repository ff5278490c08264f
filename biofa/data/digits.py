"""scikit-learn's 8×8 handwritten digits (UCI optdigits test set), with a seeded stratified split."""

from __future__ import annotations

import numpy as np

from .splits import RawData


def digits(test_size: float = 0.2, split_seed: int = 0, image: bool = False) -> RawData:
    """1797 digits, 10 classes, pixel values scaled from 0..16 to [0, 1].

    ``test_size``: fraction held out as the test split, stratified by class with
    ``random_state=split_seed`` (fixed by default, so the test set does not change with the run
    seed). ``image=False`` gives 64 features; ``image=True`` gives 1×8×8 images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=split_seed)
    if image:
        x_tr, x_te = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    return RawData(x_tr, y_tr, x_te, y_te, "classification", 10, image=image)
