"""Datasets as train / validation / test splits: MNIST-1D, digits, MNIST, Fashion-MNIST, CIFAR-10,
CIFAR-100, image folders (ImageNet), teacher-network regression tasks; batched augmentation.

>>> import biofa.data as bd
>>> splits = bd.load("mnist1d", validation=0.1, seed=0)
>>> train, val, test = bd.loaders(splits, batch_size=64, seed=0)

The validation set is held out of the training split (model selection never touches test);
normalisation statistics come from the training part alone. Datasets that come as files are read
from ``root``; biofa never downloads.
"""

from .augment import Augment
from .cifar import read_cifar10_batch, read_cifar100_batch
from .files import ENV_VAR
from .folder import ImageFolderDataset
from .idx import read_idx
from .registry import DATASETS, Dataset, available, load, register_dataset
from .splits import RawData, Splits, loaders, make_splits
from .teacher import teacher_matrix

__all__ = [
    "load", "loaders", "available", "DATASETS", "Dataset", "register_dataset",
    "Splits", "RawData", "make_splits", "read_idx", "read_cifar10_batch", "read_cifar100_batch", "teacher_matrix",
    "ENV_VAR", "Augment", "ImageFolderDataset",
]
