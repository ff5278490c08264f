"""The dataset registry and :func:`load`, the one entry point to every dataset."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

from ..errors import ConfigError, check_choice
from .cifar import cifar10, cifar100
from .digits import digits
from .folder import folder_splits, image_folder, imagenet
from .idx import fashion_mnist, mnist
from .mnist1d import mnist1d
from .splits import RawData, Splits, make_splits
from .teacher import linear_teacher, relu_teacher


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A registry entry: ``source(**options) -> RawData``; ``files``: it reads files from ``root``.

    ``splitter(raw, name, validation=, normalize=, seed=, n_train=, n_test=) -> Splits`` turns what
    the source returns into splits: :func:`~biofa.data.splits.make_splits` for in-memory arrays,
    :func:`~biofa.data.folder.folder_splits` for lazily decoded image folders.
    """

    name: str
    source: Callable[..., RawData]
    files: bool = False
    splitter: Callable[..., Splits] = make_splits

    def options(self) -> dict:
        """The source's own options and their defaults (``root`` excluded)."""
        return {k: p.default for k, p in inspect.signature(self.source).parameters.items() if k != "root"}

    @property
    def description(self) -> str:
        return (self.source.__doc__ or "").strip().splitlines()[0]


DATASETS: dict[str, Dataset] = {}


def register_dataset(name: str, source: Callable[..., RawData], *, files: bool = False,
                     splitter: Callable[..., Splits] = make_splits) -> Dataset:
    """Make ``source`` loadable by ``name``; it returns a :class:`RawData` with the official splits
    (or whatever ``splitter`` turns into :class:`Splits`)."""
    entry = Dataset(name, source, files, splitter)
    DATASETS[name] = entry
    return entry


register_dataset("mnist1d", mnist1d)
register_dataset("digits", digits)
register_dataset("mnist", mnist, files=True)
register_dataset("fashion_mnist", fashion_mnist, files=True)
register_dataset("cifar10", cifar10, files=True)
register_dataset("cifar100", cifar100, files=True)
register_dataset("imagefolder", image_folder, files=True, splitter=folder_splits)
register_dataset("imagenet", imagenet, files=True, splitter=folder_splits)
register_dataset("linear_teacher", linear_teacher)
register_dataset("relu_teacher", relu_teacher)


def available() -> list[str]:
    """Names of the registered datasets."""
    return sorted(DATASETS)


def load(name: str = "mnist1d", *, root=None, validation=0.1, normalize: bool = True, seed: int = 0,
         n_train: int | None = None, n_test: int | None = None, **options) -> Splits:
    """Load dataset ``name`` as train / validation / test :class:`Splits`.

    .. math:: \\mathcal D_\\mathrm{train} = \\mathcal D_\\mathrm{tr} \\cup \\mathcal D_\\mathrm{val}
              \\text{ (seeded permutation)}, \\qquad \\mathcal D_\\mathrm{test} \\text{ untouched}

    Parameters
    ----------
    name : one of :func:`available` (default ``"mnist1d"``).
    root : folder with the data files (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``,
        ``"cifar100"``, ``"imagefolder"``, ``"imagenet"``); default ``$BIOFA_DATA`` or ``./data``
        and their usual sub-folders. Ignored by generated datasets.
    validation : fraction in [0, 1) (or an int count) of the training split held out for model
        selection with a permutation seeded by ``seed``.
    normalize : standardise with the training part's mean and std (per feature; per channel
        for images), applied to all three parts; the image folders use the ImageNet statistics.
    seed : seed of the validation permutation (and of the ``n_train`` subset).
    n_train, n_test : keep only this many training (before the validation hold-out) / test
        examples, for fast runs. The teacher datasets generate exactly this many.
    **options : the dataset's own options (see ``DATASETS[name].options()``), e.g. ``data_seed``.
    """
    check_choice("load", "name", name, available())
    entry = DATASETS[name]
    allowed = entry.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"Unknown option(s) {unknown} for dataset {name!r}; "
                          f"it accepts {sorted(allowed) + ['n_train', 'n_test']}.")
    split_sizes = {"n_train": n_train, "n_test": n_test}
    for key in ("n_train", "n_test"):
        if key in allowed and split_sizes[key] is not None:  # the source generates exactly that many
            options[key] = split_sizes.pop(key)
            split_sizes[key] = None
    raw = entry.source(root=root, **options) if entry.files else entry.source(**options)
    return entry.splitter(raw, name, validation=validation, normalize=normalize, seed=seed, **split_sizes)
