"""A run's checkpoints: what a killed run continues from, and the best model of a finished run.

Layout, beside the run's result ``runs/<run_id>.json``::

    runs/<run_id>/last.pt   after the first epoch, then every ``[train] checkpoint_s`` seconds
                            (at the end of an epoch): model, optimizer, schedule, the feedback
                            step counter, RNG states, the data order's generator, the epoch, the
                            history so far and the best epoch so far (with its weights).
                            Deleted when the run finishes, unless ``[train] keep_last = true``.
    runs/<run_id>/best.pt   the weights of the best-validation epoch (written with each
                            ``last.pt`` when a better epoch came since, and when the run ends),
                            the run's configuration and the data's shapes: kept, for
                            :func:`load_model`.
    runs/<run_id>/tb/       TensorBoard event files, with ``[log] tensorboard = true``.

Both files are written atomically (a temporary file, then ``os.replace``), ``best.pt`` before
``last.pt``, so a run killed at any moment resumes from a consistent pair. A run resumed from
``last.pt`` ends bit-identical to one never stopped (same device and dtype): its next epoch sees
the same batches, the same random draws and the same feedback step counter.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..._hooks import reset_step, training_step
from ...checkpoint import load_checkpoint, save_checkpoint
from ...errors import ConfigError
from .. import results
from .batches import Batches, evaluate
from .build import Loss, build_model, build_task_model, load_task
from .task_scoring import evaluate_task
from .data import load_data

LAST, BEST = "last.pt", "best.pt"


def run_folder(out: str | os.PathLike, run_id: str) -> Path:
    """``out/runs/<run_id>/``: the run's checkpoints and logs."""
    return Path(out) / "runs" / run_id


def clean(folder: Path) -> None:
    """Delete the temporary files a killed run left in its folder (``best.pt``'s and
    ``last.pt``'s, as :func:`~biofa.experiment.results.atomic_write_bytes` and
    :func:`biofa.save_checkpoint` name them)."""
    if folder.is_dir():
        for pattern in (results.TMP_PREFIX + "*", f".{LAST}.*.tmp"):
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)


def snapshot(state: dict, device=None) -> dict:
    """A copy of a state dict that later steps do not change (tensors cloned, on ``device`` if
    given; extra state, e.g. a feedback rule's draw counter, deep-copied)."""
    return {k: (v.detach().to(device, copy=True) if device is not None else v.detach().clone())
            if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}


def save_last(folder: Path, *, model, optimizer, scheduler, extra: dict) -> None:
    """Write ``last.pt`` (everything a resumed run needs; see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / LAST, model=model, optimizer=optimizer, scheduler=scheduler, extra=extra)


def load_last(folder: Path, *, model, optimizer, scheduler) -> dict | None:
    """Restore ``last.pt`` into the run's objects (and the step counter and RNG states); returns
    its ``extra`` dict, or None when there is none."""
    path = folder / LAST
    if not path.is_file():
        return None
    return load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)


def save_best(folder: Path, state: dict, *, epoch: int, val: dict, config: dict, splits) -> None:
    """Write ``best.pt``: the best epoch's weights (``state``, a state dict) and what rebuilds
    the model without the data (its configuration, the input shape, the number of outputs)."""
    blob = {"model": snapshot(state, "cpu"), "epoch": epoch,
            "val_loss": val["loss"], "val_acc": val["acc"], "config": config,
            "data": None if splits is None else  # a task run: its config's task rebuilds the model
            {"name": splits.name, "input_shape": list(splits.input_shape),
             "n_outputs": splits.n_outputs, "task": splits.task}}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    results.atomic_write_bytes(folder / BEST, buffer.getvalue())


def _path(out, run_id: str, which: str) -> Path:
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.startswith("."):
        raise ConfigError(f"not a run id: {run_id!r} (see the run_id column of runs.csv)")
    folder = run_folder(out, run_id)
    path = folder / (BEST if which == "best" else LAST)
    if path.is_file():
        return path
    if which == "last" and (folder / BEST).is_file():
        hint = "; last.pt is deleted when a run finishes unless [train] keep_last = true"
    else:
        known = sorted(p.name for p in (Path(out) / "runs").glob("*") if p.is_dir())
        hint = (f"; runs with checkpoints in {out}: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
                if known else f"; {out} holds no run checkpoints (give the folder a study wrote)")
    raise ConfigError(f"{path}: no such checkpoint{hint}")


@contextlib.contextmanager
def _kept_rng():
    """Leave the caller's RNG states and step counter as they were (loading a run's last.pt
    restores the run's)."""
    step, rng = training_step(), torch.get_rng_state()
    numpy_state, python_state = np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        reset_step(step)
        torch.set_rng_state(rng)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def load_model(out: str | os.PathLike, run_id: str, which: str = "best"):
    """The model of run ``run_id`` of the study in ``out``, with its best-validation weights
    (``which="best"``) or those of its last finished epoch (``which="last"``: while the run is
    unfinished, or with ``[train] keep_last = true``); on the CPU, in eval mode.

    The model is rebuilt from the run's configuration as the run built it, then the weights are
    loaded. Raises :class:`~biofa.errors.ConfigError` when there is no such checkpoint.
    """
    return _load(out, run_id, which)[0]


def checkpoint_info(out: str | os.PathLike, run_id: str) -> dict:
    """What ``best.pt`` says about the run: ``{"epoch", "val_loss", "val_acc", "config", "data"}``."""
    blob = torch.load(_path(out, run_id, "best"), map_location="cpu", weights_only=True)
    return {k: v for k, v in blob.items() if k != "model"}


def _load(out, run_id: str, which: str):
    path = _path(out, run_id, which)
    blob = torch.load(_path(out, run_id, "best"), map_location="cpu", weights_only=True)
    config, shapes = blob["config"], blob["data"]
    seed = int(config["seed"])
    with _kept_rng():
        if "task" in config:
            model = build_task_model(config["model"], load_task(config["task"])[0], seed)
        else:
            splits = SimpleNamespace(name=shapes["name"], input_shape=tuple(shapes["input_shape"]),
                                     n_outputs=shapes["n_outputs"], task=shapes["task"])
            model = build_model(config["model"], splits, torch.Generator().manual_seed(seed), seed)
        model = model.to(getattr(torch, config["train"]["dtype"]))
        if which == "best":
            model.load_state_dict(blob["model"])
            epoch = blob["epoch"]
        else:
            epoch = load_checkpoint(path, model=model)["epoch"]
    model.eval()
    return model, config, epoch


def find_run(out: str | os.PathLike, run_id: str) -> str:
    """The run id in ``out`` that is ``run_id`` or starts with it (a unique prefix is enough)."""
    runs = Path(out) / "runs"
    if not runs.is_dir():
        raise ConfigError(f"{out}: no runs/ folder here; give the folder a study wrote (biofa run ... --out DIR)")
    if (runs / run_id / BEST).is_file():
        return run_id
    matches = sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name.startswith(run_id)
                     and (p / BEST).is_file())
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{out}: {len(matches)} runs start with {run_id!r} ({', '.join(matches[:5])}"
                          f"{' ...' if len(matches) > 5 else ''}); give more of the run id")
    return _path(out, run_id, "best").parent.name  # no such run: raises, listing the runs there


def evaluate_run(out: str | os.PathLike, run_id: str, *, which: str = "best", split: str = "test") -> dict:
    """Loss and accuracy of a run's stored model on one split of its data:
    ``{"run_id", "which", "epoch", "split", "n", "loss", "acc"}`` (``acc`` None for regression)."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test', got {split!r}")
    run_id = find_run(out, run_id)
    model, config, epoch = _load(out, run_id, which)
    if "task" in config:
        return {"run_id": run_id, "which": which, "epoch": epoch, "split": split,
                **evaluate_task(model, config, split)}
    splits = load_data(config["data"])
    dataset = getattr(splits, split)
    if not len(dataset):
        raise ConfigError(f"run {run_id}: its {split} split is empty")
    loss_fn = Loss(config["train"]["loss"], splits.task, splits.n_outputs)
    batches = Batches(dataset, config["train"]["eval_batch_size"], torch.device("cpu"),
                      getattr(torch, config["train"]["dtype"]))
    scores = evaluate(model, batches, loss_fn)
    return {"run_id": run_id, "which": which, "epoch": epoch, "split": split, "n": len(dataset), **scores}
