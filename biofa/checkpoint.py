"""Checkpoints that continue a run bit for bit: model, optimizer, scheduler, step counter, RNGs.

A run stopped after step k and continued from :func:`save_checkpoint`'s file by a fresh process
(a new model object, a new optimizer) computes the same weights as a run never stopped: besides
the three ``state_dict`` s the file holds what the next steps draw from,

* the training-step counter (:func:`biofa.feedback.training_step`): brSF's magnitudes
  :math:`|R_t|` are a function of (seed, t);
* torch's CPU generator (dropout, data shuffling), every CUDA device's generator, numpy's and
  Python's global generators;
* every :class:`torch.Generator` held as an attribute by a module of the model.

The file is a ``torch.save`` archive of one dict (``format``, ``version``, ``model``,
``optimizer``, ``scheduler``, ``training_step``, ``rng``, ``generators``, ``extra``) made only of
tensors, numbers, strings and containers, so :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``: loading a checkpoint runs no code from the file. It is written
to a temporary file in the same folder, flushed to disk and renamed over ``path``
(``os.replace``), so a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from . import _hooks
from .errors import CheckpointError, ConfigError

FORMAT = "biofa-checkpoint"
VERSION = 1

_PLAIN = (type(None), bool, int, float, str, torch.Tensor)


def save_checkpoint(path, *, model: nn.Module, optimizer=None, scheduler=None, extra=None) -> None:
    """Write everything that continuing the run needs to ``path``, atomically.

    Parameters
    ----------
    path : file to write (str or path-like); its folder must exist. Replaced if present.
    model : the module being trained (under DDP pass ``ddp.module`` and save on rank 0 only).
    optimizer, scheduler : their ``state_dict`` s are stored when given.
    extra : your own state (epoch, best score, data-loader position...): tensors, numbers,
        strings, and lists, tuples and dicts of them; :func:`load_checkpoint` returns it.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"save_checkpoint: model must be a torch.nn.Module, got {type(model).__name__}")
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "training_step": _hooks.training_step(),
        "rng": _global_rng_states(),
        "generators": {name: gen.get_state() for name, gen in _module_generators(model).items()},
        "extra": extra,
    }
    _atomic_save(payload, os.fspath(path))


def load_checkpoint(path, *, model: nn.Module, optimizer=None, scheduler=None):
    """Restore a :func:`save_checkpoint` file into ``model`` (and ``optimizer``, ``scheduler``).

    Build the model, optimizer and scheduler as for a new run, then call this: their states,
    the training-step counter and every random generator are set to the saved ones, so the next
    step is the one the saved run would have taken. Returns the ``extra`` that was saved.

    Raises :class:`~biofa.errors.CheckpointError` (a ``FileNotFoundError``) when the file is
    missing, truncated or not a biofa checkpoint, and :class:`~biofa.errors.ConfigError` when it
    does not fit the objects given (other layers, an optimizer state that was not saved).
    """
    path = os.fspath(path)
    payload = _read(path)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise ConfigError(f"load_checkpoint: {path!r} does not fit this model: {err}") from err
    for what, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if payload[what] is None:
            raise ConfigError(f"load_checkpoint: {path!r} holds no {what} state; it was saved "
                              f"without {what}=, so pass {what}=None or save it next time")
        try:
            obj.load_state_dict(payload[what])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ConfigError(f"load_checkpoint: the {what} state in {path!r} does not fit the "
                              f"{type(obj).__name__} given: {err}") from err
    generators = _module_generators(model)
    missing = sorted(set(payload["generators"]) - set(generators))
    if missing:
        raise ConfigError(f"load_checkpoint: {path!r} holds generators {missing} that this model lacks")
    for name, state in payload["generators"].items():
        generators[name].set_state(state)
    _hooks.reset_step(int(payload["training_step"]))
    _set_global_rng_states(payload["rng"])
    return payload["extra"]


# -- file ---------------------------------------------------------------------------------------
def _atomic_save(payload: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CheckpointError(f"save_checkpoint: folder {folder!r} does not exist; create it first")
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialised first: a full disk then fails in write(), an OSError
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make the checkpoint private to its writer
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from None  # name the file (ENOSPC has none)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"load_checkpoint: no checkpoint at {path!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"load_checkpoint: {path!r} is not a readable checkpoint (truncated or "
                              f"corrupt?): {err}") from err
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise CheckpointError(f"load_checkpoint: {path!r} is a torch file but not a biofa checkpoint "
                              "(write it with biofa.save_checkpoint)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"load_checkpoint: {path!r} has checkpoint format version "
                              f"{payload.get('version')!r}; this biofa reads version {VERSION}")
    return payload


def _check_plain(value, where: str) -> None:
    """Reject what ``torch.load(weights_only=True)`` would refuse, at save time."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ConfigError(f"save_checkpoint: {where} has a key {key!r} of type "
                                  f"{type(key).__name__}; use str or int keys")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ConfigError(f"save_checkpoint: {where} is a {type(value).__name__}; extra may hold tensors, "
                      "numbers, strings, None, and lists, tuples and dicts of them (store e.g. a "
                      "loader's position, not the loader)")


# -- random generators --------------------------------------------------------------------------
def _module_generators(model: nn.Module) -> dict[str, torch.Generator]:
    """Every torch.Generator a module of ``model`` holds as an attribute, by qualified name."""
    found = {}
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"{prefix}.{attr}" if prefix else attr] = value
    return found


def _global_rng_states() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def _set_global_rng_states(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        n = min(len(rng["cuda"]), torch.cuda.device_count())
        torch.cuda.set_rng_state_all(rng["cuda"][:n])
    state = rng["numpy"]
    np.random.set_state((state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["gauss"]))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


__all__ = ["save_checkpoint", "load_checkpoint"]
