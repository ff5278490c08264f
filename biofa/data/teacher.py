"""Regression tasks defined by a random teacher network.

``linear_teacher`` is the task of Lillicrap et al. (2016), Fig. 2:

.. math:: x \\sim \\mathcal N(0, I_{30}), \\qquad y = T x, \\qquad T_{ij} \\sim \\mathcal U[-1, 1], \\; T \\in \\mathbb R^{10 \\times 30}

``relu_teacher`` is a random one-hidden-layer ReLU network:

.. math:: y = W_2 \\, \\mathrm{relu}(W_1 x + b_1), \\quad (W_1)_{ij} \\sim \\mathcal N(0, 1/n_\\mathrm{in}), \\;
          (b_1)_i \\sim \\mathcal N(0, 0.1^2), \\; (W_2)_{ij} \\sim \\mathcal N(0, 1/n_\\mathrm{hidden})

Both draw the teacher, then the training inputs, then the test inputs, from
``numpy.random.default_rng(data_seed)``; ``noise`` adds N(0, noise²) to the training and test targets.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .splits import RawData


def _check(**sizes):
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"teacher dataset: {key} must be a positive int, got {value!r}")


def _finish(rng, teacher, n_train, n_test, in_dim, noise) -> RawData:
    if noise < 0:
        raise ConfigError(f"teacher dataset: noise must be >= 0, got {noise!r}")
    x_tr = rng.standard_normal((n_train, in_dim))
    x_te = rng.standard_normal((n_test, in_dim))
    y_tr, y_te = teacher(x_tr), teacher(x_te)
    if noise:
        y_tr = y_tr + noise * rng.standard_normal(y_tr.shape)
        y_te = y_te + noise * rng.standard_normal(y_te.shape)
    return RawData(x_tr, y_tr, x_te, y_te, "regression")


def teacher_matrix(in_dim: int = 30, out_dim: int = 10, data_seed: int = 0) -> np.ndarray:
    """The T of :func:`linear_teacher` for these arguments, shape (out_dim, in_dim)."""
    return np.random.default_rng(data_seed).uniform(-1.0, 1.0, (out_dim, in_dim))


def linear_teacher(n_train: int = 1000, n_test: int = 1000, in_dim: int = 30, out_dim: int = 10,
                   noise: float = 0.0, data_seed: int = 0) -> RawData:
    """Lillicrap et al. (2016): learn y = T x with T ~ U[-1, 1] of shape (out_dim, in_dim)."""
    _check(n_train=n_train, n_test=n_test, in_dim=in_dim, out_dim=out_dim)
    rng = np.random.default_rng(data_seed)
    t = rng.uniform(-1.0, 1.0, (out_dim, in_dim))
    return _finish(rng, lambda x: x @ t.T, n_train, n_test, in_dim, noise)


def relu_teacher(n_train: int = 1000, n_test: int = 1000, in_dim: int = 30, hidden: int = 20,
                 out_dim: int = 10, noise: float = 0.0, data_seed: int = 0) -> RawData:
    """A random 1-hidden-layer ReLU teacher network (see the module docstring)."""
    _check(n_train=n_train, n_test=n_test, in_dim=in_dim, hidden=hidden, out_dim=out_dim)
    rng = np.random.default_rng(data_seed)
    w1 = rng.standard_normal((hidden, in_dim)) / np.sqrt(in_dim)
    b1 = 0.1 * rng.standard_normal(hidden)
    w2 = rng.standard_normal((out_dim, hidden)) / np.sqrt(hidden)
    return _finish(rng, lambda x: np.maximum(x @ w1.T + b1, 0.0) @ w2.T, n_train, n_test, in_dim, noise)
