"""Train / validation / test splits, normalisation and data loaders.

.. math:: \\tilde x = (x - \\mu_\\mathrm{train}) / \\sigma_\\mathrm{train}

The validation set is held out of the *training* split with a seeded permutation, so model
selection never touches the test split (:ref:`background-pitfalls`). Normalisation statistics (per feature, or per channel for
images) come from the training part alone and are applied to all three parts.

Most datasets are in-memory tensors (:class:`~torch.utils.data.TensorDataset`); an image-folder
dataset is a map-style dataset that decodes each example when it is read. :func:`loaders`
serves both: whole batches by one fancy index for tensors, per-example reads (in worker processes
when ``num_workers > 0``) for the others.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler, TensorDataset

from ..errors import ConfigError

TASKS = ("classification", "regression")
_TINY = 1e-8


@dataclasses.dataclass(frozen=True)
class RawData:
    """A dataset as its source gives it: arrays for the official train and test splits.

    ``x_*``: float arrays of shape ``(n, *input_shape)``; ``y_*``: integer labels (classification) or
    float targets of shape (n, n_outputs) (regression). ``image``: normalise per channel (axis 1)
    instead of per feature.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: int | None = None
    image: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The three parts of a dataset, ready for torch.

    ``train``, ``val``, ``test``: :class:`~torch.utils.data.TensorDataset` of (X float32, y), y int64
    labels for classification and float32 targets of shape (n, n_outputs) for regression; or, for
    datasets decoded lazily (image folders), map-style datasets whose items are (x float32, y int)
    (see :attr:`in_memory`). ``input_shape``: the shape of one sample. ``mean``/``std``: the
    statistics that were applied (shaped like one sample, broadcastable), or None when
    ``normalize=False``. ``classes``: the class names, where the dataset has them.
    """

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    task: str
    n_classes: int | None
    n_outputs: int
    input_shape: tuple
    name: str
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    classes: tuple | None = None

    def sizes(self) -> dict:
        """Number of examples per part: ``{"train": ..., "val": ..., "test": ...}``."""
        return {k: len(getattr(self, k)) for k in ("train", "val", "test")}

    @property
    def in_memory(self) -> bool:
        """True when every part is a :class:`~torch.utils.data.TensorDataset` (``part.tensors``
        exist); False for datasets decoded when read, which only support ``len`` and indexing."""
        return all(isinstance(getattr(self, k), TensorDataset) for k in ("train", "val", "test"))

    def head(self, part: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples of ``part`` (``"train"``, ``"val"`` or ``"test"``) as a batch
        (x, y), for any kind of dataset (image folders decode them with the evaluation transform)."""
        dataset = getattr(self, part)
        n = min(int(n), len(dataset))
        if isinstance(dataset, TensorDataset):
            return dataset.tensors[0][:n], dataset.tensors[1][:n]
        items = [dataset[i] for i in range(n)]
        if not items:
            return torch.empty((0, *self.input_shape)), torch.empty(0, dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items])


def n_validation(validation, n_pool: int, name: str) -> int:
    """Number of held-out examples: a fraction in [0, 1) of the pool or an int count."""
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real):
        raise ConfigError(f"load({name!r}): validation must be a fraction in [0, 1) or an int count, "
                          f"got {validation!r}")
    if isinstance(validation, numbers.Integral):
        n_val = int(validation)
    elif 0.0 <= validation < 1.0:
        n_val = int(round(float(validation) * n_pool))
    else:
        raise ConfigError(f"load({name!r}): validation fraction must be in [0, 1), got {validation!r}")
    if not 0 <= n_val < n_pool:
        raise ConfigError(f"load({name!r}): validation={validation!r} leaves no training examples "
                          f"(the training split has {n_pool})")
    return n_val


def count_examples(value, available: int, key: str, name: str) -> int:
    """How many of ``available`` examples the option ``key`` (``n_train``, ``n_test``) keeps: all when
    ``value`` is None, else ``value``, a positive int no larger than ``available``."""
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"load({name!r}): {key} must be a positive int, got {value!r}")
    if value > available:
        raise ConfigError(f"load({name!r}): {key}={value} exceeds the {available} examples available")
    return int(value)


def _stats(x: np.ndarray, image: bool) -> tuple[np.ndarray, np.ndarray]:
    axes = (0, *range(2, x.ndim)) if image else (0,)
    mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)[0]
    std = x.std(axis=axes, dtype=np.float64, keepdims=True)[0]
    # a feature constant on the training split (e.g. an always-black pixel) is only centred
    std = np.where(std > _TINY, std, 1.0)
    return mean, std


def _standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, owned: bool) -> np.ndarray:
    """(x - mean) / std in float32, in place when ``x`` is a float32 copy we own (CIFAR-sized
    arrays are not duplicated in float64)."""
    out = x.astype(np.float32, copy=not owned)
    out -= mean.astype(np.float32)
    out /= std.astype(np.float32)
    return out


def _tensor(a: np.ndarray, dtype) -> torch.Tensor:
    a = np.ascontiguousarray(a, dtype=dtype)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _dataset(x: np.ndarray, y: np.ndarray, task: str) -> TensorDataset:
    y_dtype = np.int64 if task == "classification" else np.float32
    return TensorDataset(_tensor(x, np.float32), _tensor(y, y_dtype))


def split_indices(n_total: int, name: str, *, validation=0.1, seed: int = 0,
                  n_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), sorted, into an official training split of ``n_total``.

    A seeded permutation gives the validation examples (its first ``n_val``) and the training
    examples (the rest); ``n_train`` keeps only that many examples before the hold-out, chosen by
    the same permutation.
    """
    n_pool = count_examples(n_train, n_total, "n_train", name)
    n_val = n_validation(validation, n_pool, name)
    perm = np.random.default_rng(seed).permutation(n_total)[:n_pool]
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def make_splits(raw: RawData, name: str, *, validation=0.1, normalize: bool = True, seed: int = 0,
                n_train: int | None = None, n_test: int | None = None) -> Splits:
    """Split ``raw`` into train/val/test, optionally subsample and normalise.

    The validation examples are held out of the official training split by
    :func:`split_indices`; ``n_test`` keeps the first ``n_test`` test examples (no randomness: the
    test set does not depend on ``seed``).
    """
    if raw.task not in TASKS:
        raise ConfigError(f"dataset {name!r}: task must be one of {TASKS}, got {raw.task!r}")
    if len(raw.x_train) != len(raw.y_train) or len(raw.x_test) != len(raw.y_test):
        raise ConfigError(f"dataset {name!r}: inputs and targets differ in length")
    train_idx, val_idx = split_indices(len(raw.x_train), name, validation=validation, seed=seed, n_train=n_train)
    n_te = count_examples(n_test, len(raw.x_test), "n_test", name)
    x_tr, y_tr = raw.x_train[train_idx], raw.y_train[train_idx]
    x_va, y_va = raw.x_train[val_idx], raw.y_train[val_idx]
    x_te, y_te = raw.x_test[:n_te], raw.y_test[:n_te]
    mean = std = None
    if normalize:
        m, s = _stats(x_tr, raw.image)
        x_tr, x_va = _standardize(x_tr, m, s, owned=True), _standardize(x_va, m, s, owned=True)
        x_te = _standardize(x_te, m, s, owned=False)
        mean = torch.from_numpy(m.astype(np.float32))
        std = torch.from_numpy(s.astype(np.float32))
    if raw.task == "classification":
        n_classes = int(raw.n_classes)
        n_outputs = n_classes
    else:
        n_classes = None
        n_outputs = int(np.prod(raw.y_train.shape[1:])) if raw.y_train.ndim > 1 else 1
    return Splits(train=_dataset(x_tr, y_tr, raw.task), val=_dataset(x_va, y_va, raw.task),
                  test=_dataset(x_te, y_te, raw.task), task=raw.task, n_classes=n_classes,
                  n_outputs=n_outputs, input_shape=tuple(raw.x_train.shape[1:]), name=name,
                  mean=mean, std=std)


class SeededSampler(Sampler):
    """A reshuffling sampler that pairs each index with a seed for that example's random transform.

    Every epoch draws a permutation of ``range(n)`` and one 62-bit seed per example from
    ``generator``, in the main process, so a lazily transformed training set yields the same
    batches whatever ``num_workers`` is and whichever worker decodes an example.
    """

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = int(n), generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2 ** 62, (self.n,), generator=self.generator).tolist()
        return iter(zip(order, seeds))


def _loader(dataset, batch_size, sampler_cls, num_workers, drop_last, generator=None, pin_memory=False):
    if not isinstance(dataset, TensorDataset):  # decoded per example, collated into a batch
        if generator is None:
            sampler = SequentialSampler(dataset)
        elif getattr(dataset, "seeded_keys", False):
            sampler = SeededSampler(len(dataset), generator)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        return DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last),
                          num_workers=num_workers, pin_memory=pin_memory,
                          persistent_workers=num_workers > 0)
    # One fancy-index per batch (TensorDataset accepts a list of indices) instead of one
    # __getitem__ and a collate per example: several times faster for in-memory tensors.
    sampler = RandomSampler(dataset, generator=generator) if generator is not None else sampler_cls(dataset)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      sampler=BatchSampler(sampler, batch_size, drop_last))


def loaders(splits: Splits, batch_size: int = 64, *, seed: int = 0, num_workers: int = 0,
            eval_batch_size: int | None = None, drop_last: bool = False, pin_memory: bool = False):
    """(train, val, test) :class:`~torch.utils.data.DataLoader` s over ``splits``.

    The training loader reshuffles every epoch with its own generator seeded by ``seed`` (so two
    runs with the same seed see the same batches); validation and test are not shuffled and use
    ``eval_batch_size`` (default ``batch_size``). Each batch is a list ``[x, y]``.

    For lazily decoded datasets (``splits.in_memory`` False) ``num_workers`` processes decode the
    examples (kept alive across epochs), and the training loader also draws every example's
    random-transform seed from that generator: the batches depend on ``seed`` only, not on
    ``num_workers``. ``pin_memory``: page-locked batches, for fast non-blocking copies to a GPU.
    """
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                       ("num_workers", num_workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                  or value < (0 if key == "num_workers" else 1)):
            kind = "an int >= 0" if key == "num_workers" else "a positive int"
            raise ConfigError(f"loaders: {key} must be {kind}, got {value!r}")
    eval_bs = batch_size if eval_batch_size is None else eval_batch_size
    gen = torch.Generator().manual_seed(int(seed))
    train = _loader(splits.train, batch_size, RandomSampler, num_workers, drop_last, gen, pin_memory)
    val = _loader(splits.val, eval_bs, SequentialSampler, num_workers, False, pin_memory=pin_memory)
    test = _loader(splits.test, eval_bs, SequentialSampler, num_workers, False, pin_memory=pin_memory)
    return train, val, test
