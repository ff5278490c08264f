"""A run's data: ``biofa.data.load`` for its ``[data]`` table, kept in memory per process, and the
training batches' augmentation.

A study's worker processes are handed the datasets the main process loaded already
(:func:`seed_data_cache`), so each dataset is read from disk once per study.
"""

from __future__ import annotations

import dataclasses
import json

from torch.utils.data import TensorDataset

from ... import data
from ...data import augment
from ...errors import ConfigError

_DATA_CACHE: dict = {}


#: ``[data]`` keys the runner uses itself (the others are options of ``biofa.data.load``).
RUNNER_DATA_KEYS = ("augment",)


def data_key(data_config: dict) -> str:
    return json.dumps({k: v for k, v in data_config.items() if k not in RUNNER_DATA_KEYS}, sort_keys=True)


def seed_data_cache(key: str, splits) -> None:
    """Hand a worker the datasets the main process has loaded already."""
    _DATA_CACHE[key] = splits


def load_data(data_config: dict):
    """``biofa.data.load`` for a run's ``data`` table (kept in memory per process).

    With ``[data] augment`` ``size = s`` the validation and test images are their central s×s
    crops (cut once, here) and ``input_shape`` is (C, s, s), what the model sees; the training
    images stay whole for the random s×s crops of every batch.
    """
    key = data_key(data_config)
    if key not in _DATA_CACHE:
        options = {k: v for k, v in data_config.items() if k not in RUNNER_DATA_KEYS}
        name = options.pop("name")
        if len(_DATA_CACHE) >= 4:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = data.load(name, **options)
    aug = augmentation(data_config, _DATA_CACHE[key])  # a bad [data] augment fails here, at preflight
    if aug is None or aug.size is None:
        return _DATA_CACHE[key]
    cropped = f"{key}|size={aug.size}"
    if cropped not in _DATA_CACHE:
        _DATA_CACHE[cropped] = _centre_cropped(_DATA_CACHE[key], aug)
    return _DATA_CACHE[cropped]


def _centre_cropped(splits, aug):
    """``splits`` with validation and test cut to ``aug``'s central crop, input_shape to match."""
    if not splits.in_memory:
        raise ConfigError(f"[data] augment size needs a dataset held in memory; {splits.name!r} is decoded "
                          "per image (image folders crop in their own transforms: see their size option)")

    def crop(part):
        x, y = part.tensors
        return TensorDataset(aug.eval_transform(x).contiguous(), y)

    return dataclasses.replace(splits, val=crop(splits.val), test=crop(splits.test),
                               input_shape=aug.output_shape(tuple(splits.input_shape)))


def augmentation(data_config: dict, splits):
    """The training batches' augmentation of ``[data] augment`` (:func:`biofa.data.augment.build`),
    or None; drawn from the run's own generator, on the run's device."""
    spec = data_config.get("augment")
    if spec is None:
        return None
    try:
        return augment.build(spec, splits)
    except ConfigError as err:  # the study's preflight names the table itself
        raise ConfigError(str(err).removeprefix("[data] ")) from None
