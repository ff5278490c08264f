"""One run of a study: build the data, the model and the optimizer from a run's configuration,
train, measure, and return a result dict (see :mod:`biofa.experiment.results`).

Model selection uses the validation split only: the best epoch is the one with the highest
validation accuracy (lowest validation loss for regression, and to break ties); its weights are
kept and evaluated on the test split once, at the end, beside the final epoch's weights.

A run whose training loss (or any weight) becomes NaN or infinite stops and is recorded as
``failed`` with the reason; any other exception inside a run is recorded the same way, so a study
always goes on. Warnings biofa issues while the run builds and trains (e.g.
:class:`~biofa.errors.DegenerateFeedbackWarning` for uSF under Dale's law) go to the run's notes.

The loop, in the order a run goes through it: :class:`_Training` sets everything up from the
configuration and the seed, :meth:`~_Training.resume` continues from ``last.pt`` when there is
one, :meth:`~_Training.epoch` trains one epoch, :meth:`~_Training.checkpoint` writes ``best.pt``
and ``last.pt``, and :meth:`~_Training.finish` scores the test split.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import time
import traceback
import warnings

import numpy as np
import torch

from ...errors import BiofaError, BiofaWarning
from ...feedback import reset_step
from ...nn import parameter_groups
from ..results import utc_now
from . import checkpoints, devices, trials
from .divergence import Diverged
from .batches import evaluate, run_batches, sum_dtype
from .build import Loss, build_model, check_loss, make_optimizer, make_schedule
from .data import augmentation, load_data
from .metrics import conservation_columns, initial_invariants, layer_columns


def _better(val: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if val["acc"] is not None and val["acc"] != best["acc"]:
        return val["acc"] > best["acc"]
    return val["loss"] < best["loss"]


def _note(w: warnings.WarningMessage) -> str:
    """One line for a warning: its category and message (notes are joined by "; ")."""
    text = " ".join(str(w.message).split()).replace("; ", ", ")
    return f"{w.category.__name__}: {text}"


#: Errors of the filesystem the study writes to: they stop the study instead of failing one run.
_FILESYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})


def _filesystem_error(err: BaseException) -> bool:
    return (isinstance(err, OSError) and not isinstance(err, BiofaError)
            and err.errno in _FILESYSTEM_ERRNOS)


def run(task: dict, *, progress: bool = False, out=None) -> dict:
    """Train one run (``{"run_id", "labels", "config"}`` from :func:`biofa.experiment.expand`).

    ``out``: the study's results folder; the run then checkpoints into ``out/runs/<run_id>/``
    every epoch and continues from there when it was interrupted (see
    :mod:`biofa.experiment.runner.checkpoints`). Returns the result dict; never raises for a
    failure inside the run (it is recorded).
    """
    config = task["config"]
    seed = int(config["seed"])
    train_cfg = config["train"]
    result = {"run_id": task["run_id"], "labels": task["labels"], "config": config,
              "status": "ok", "reason": "", "notes": "",
              "model": config["model"].get("name", config["model"].get("circuit")),
              "data": config["task"]["name"] if "task" in config else config["data"]["name"], "epochs": train_cfg["epochs"], "epochs_done": 0,
              "started_at": utc_now(), "pid": os.getpid(), "history": []}
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(train_cfg.get("threads", 1))
    notes: dict[str, None] = {}
    folder = checkpoints.run_folder(out, task["run_id"]) if out is not None else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BiofaWarning)
            try:
                _train(config, result, seed, folder, progress)
            except Diverged as err:
                result["status"], result["reason"] = "failed", f"diverged: {err}"
            except Exception as err:  # a crash inside one run must not stop the study
                if _filesystem_error(err):
                    raise  # a full or read-only disk ends the study (exit 2), it is not the run's fault
                result["status"] = "failed"
                result["reason"] = f"error: {type(err).__name__}: {err}"
                result["traceback"] = traceback.format_exc(limit=8)
            for w in caught:
                notes.setdefault(_note(w))
    finally:
        torch.set_num_threads(threads)
    result["notes"] = "; ".join(notes)
    result["time_s"] = round(result.pop("_time_before", 0.0) + time.perf_counter() - t0, 3)
    result["finished_at"] = utc_now()
    return result


class _Epoch:
    """Training sums of one epoch, kept on the device (no host sync per step)."""

    def __init__(self, device, classification: bool):
        self.loss = torch.zeros((), dtype=sum_dtype(device), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen, self.classification = 0, classification

    def add(self, loss, out, y) -> None:
        self.loss.add_(loss.detach(), alpha=len(y))  # the sum of per-example losses, in float64
        if self.classification:
            self.correct.add_((out.detach().argmax(1) == y).sum())
        self.seen += len(y)

    def read(self, model) -> tuple[dict, bool]:
        """(mean loss and accuracy, whether every weight is finite): one read from the device."""
        finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
        loss, correct, ok = torch.stack([self.loss, self.correct.to(self.loss.dtype),
                                         finite.to(self.loss.dtype)]).tolist()
        n = max(self.seen, 1)
        return {"loss": loss / n, "acc": correct / n if self.classification else None}, bool(ok)


def _train(config, result, seed, folder, progress):
    task_run = "task" in config
    training = trials.TaskTraining(config, result, seed) if task_run else _Training(config, result, seed)
    start = training.resume(folder)
    if folder is not None and config.get("log", {}).get("tensorboard"):
        from .tblog import TensorBoardLog
        # a resumed run's log drops what the killed process logged after its last checkpoint
        training.log = TensorBoardLog(folder / "tb", config, purge_step=start if start > 1 else None)
    t_run = time.perf_counter()
    if start == 1:
        training.record(0, None if task_run else {}, 0.0)
    if not task_run and not training.has_val:
        warnings.warn("no validation split (data.validation = 0): nothing selects an epoch, so "
                      "'test @ best val' is the final epoch", BiofaWarning, stacklevel=2)
    epochs = config["train"]["epochs"]
    epoch_bar = None
    if progress:
        from tqdm.auto import tqdm
        epoch_bar = tqdm(total=epochs, initial=start - 1, desc=result["run_id"][:40], leave=False, unit="ep")
    interval = config["train"].get("checkpoint_s", 0.0)
    last_checkpoint = None
    try:
        for epoch in range(start, epochs + 1):
            stop = training.epoch(epoch)  # a task run stops at its criterion when asked to
            now = time.perf_counter()
            due = last_checkpoint is None or now - last_checkpoint >= interval or (
                (epoch == epochs or stop) and config["train"].get("keep_last", False))
            if folder is not None and due:  # the first epoch, then every `interval` seconds
                training.checkpoint(folder, epoch, now - t_run)
                last_checkpoint = time.perf_counter()
            if epoch_bar is not None:
                epoch_bar.update(1)
            if stop:
                break
    finally:
        if epoch_bar is not None:
            epoch_bar.close()
        training.record_best()
    if folder is not None:
        training.save_best(folder)  # the best epoch's weights, for load_model
    training.finish(folder)


class _Training:
    """Everything one run trains with, built from its configuration and seed (in an order that
    fixes every random draw: the seeds, the data, the model's initial weights, the batch order)."""

    def __init__(self, config: dict, result: dict, seed: int):
        self.config, self.result = config, result
        train_cfg, self.metrics_cfg = config["train"], config["metrics"]
        dtype = getattr(torch, train_cfg["dtype"])
        self.device = devices.resolve(train_cfg.get("device", "cpu"))
        reset_step(0)  # brSF redraws are a function of (seed, training step): start every run at 0
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        splits = self.splits = load_data(config["data"])
        generator = torch.Generator().manual_seed(seed)
        self.model = build_model(config["model"], splits, generator, seed).to(device=self.device, dtype=dtype)
        self.loss_fn = Loss(train_cfg["loss"], splits.task, splits.n_outputs)
        check_loss(self.loss_fn, splits)
        self.optimizer = make_optimizer(parameter_groups(self.model), train_cfg["optimizer"])
        self.schedule = make_schedule(self.optimizer, train_cfg["schedule"], train_cfg["epochs"])
        self.clip = train_cfg.get("grad_clip")
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.train_batches, self.val_batches, self.test_batches = run_batches(
            splits, train_cfg, seed, self.device, dtype)
        self.has_val = bool(len(splits.val))
        n_probe = min(self.metrics_cfg["update_batch"], len(splits.val) or len(splits.train))
        x_probe, y_probe = splits.head("val" if self.has_val else "train", n_probe)
        self.augment = augmentation(config["data"], splits)
        if not self.has_val and self.augment is not None and self.augment.size is not None:
            x_probe = self.augment.eval_transform(x_probe)  # whole training images: the model sees s×s
        self.probe = (x_probe.to(self.device, dtype), y_probe.to(self.device)) if n_probe else None
        self.augment_order = torch.Generator().manual_seed((seed * 1_000_003 + 1) % (2**63 - 1))
        self.log = None
        # before any checkpoint is loaded: a resumed run's model is rebuilt with the same initial weights
        self.invariants_at_init = initial_invariants(self.model, self.metrics_cfg)
        self.best, self.best_state = None, None
        self.best_written = None  # the epoch whose weights best.pt holds

    def resume(self, folder) -> int:
        """Continue an interrupted run from its ``last.pt`` (model, optimizer, schedule, RNG
        states, data and augmentation order, history, best epoch); the first epoch to train."""
        if folder is None:
            return 1
        checkpoints.clean(folder)
        state = checkpoints.load_last(folder, model=self.model, optimizer=self.optimizer, scheduler=self.schedule)
        if state is None:
            return 1
        result = self.result
        result["history"] = json.loads(state["history"])
        self.best, self.best_state = state["best"], state["best_state"]
        if self.best_state is None:  # the best epoch was the last one: its weights are the model's
            self.best_state = checkpoints.snapshot(self.model.state_dict())
        self.train_batches.generator.set_state(state["data_order"])
        self.augment_order.set_state(state["augment_order"])
        result["epochs_done"] = state["epoch"]
        result["resumed_from_epoch"] = state["epoch"]
        result["_time_before"] = state["time_s"]
        return state["epoch"] + 1

    def record(self, epoch: int, train_stats: dict, seconds: float) -> dict:
        """Append epoch ``epoch``'s row to the history (validation scores, and the per-layer
        metrics on the epochs ``[metrics] every`` asks for); returns the validation scores."""
        model, metrics_cfg = self.model, self.metrics_cfg
        val = evaluate(model, self.val_batches, self.loss_fn) if self.has_val else {"loss": math.nan, "acc": None}
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_stats.get("loss"),
               "train_acc": train_stats.get("acc"), "val_loss": val["loss"], "val_acc": val["acc"],
               "time_s": round(seconds, 4)}
        if epoch % metrics_cfg["every"] == 0 or epoch == self.config["train"]["epochs"]:
            row.update(layer_columns(model, metrics_cfg, self.probe, self.loss_fn))
            row.update(conservation_columns(model, metrics_cfg, self.splits, self.invariants_at_init))
        self.result["history"].append(row)
        if self.log is not None:
            self.log.epoch(row)
        return val

    def epoch(self, epoch: int) -> None:
        """Train one epoch, record it, and keep its weights when it is the best so far.
        Raises :class:`Diverged` on a non-finite loss or weight."""
        t_epoch = time.perf_counter()
        model, optimizer, loss_fn, augment = self.model, self.optimizer, self.loss_fn, self.augment
        model.train()
        sums = _Epoch(self.device, loss_fn.task == "classification")
        try:
            for x, y in self.train_batches:
                if augment is not None:
                    x = augment(x, generator=self.augment_order)
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                if self.clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, self.clip)
                optimizer.step()
                sums.add(loss, out, y)
        except Exception as err:  # a non-finite loss can make a rule's arithmetic raise
            if not math.isfinite(float(sums.loss)):
                raise Diverged(f"non-finite training loss in epoch {epoch} ({type(err).__name__}: {err})") from err
            raise
        if self.schedule is not None:
            self.schedule.step()
        train_stats, finite = sums.read(model)
        if not math.isfinite(train_stats["loss"]):
            raise Diverged(f"non-finite training loss ({train_stats['loss']}) in epoch {epoch}")
        if not finite:
            raise Diverged(f"non-finite weights after epoch {epoch}")
        val = self.record(epoch, train_stats, time.perf_counter() - t_epoch)
        if not math.isfinite(val["loss"]) and self.has_val:
            raise Diverged(f"non-finite validation loss ({val['loss']}) at epoch {epoch}")
        self.result["epochs_done"] = epoch
        improved = not self.has_val or _better(val, self.best)  # no validation split: the last epoch
        if improved:
            self.best = dict(val, epoch=epoch)
            self.best_state = checkpoints.snapshot(model.state_dict())

    def save_best(self, folder) -> None:
        """Write ``best.pt`` unless it holds the best epoch already."""
        if self.best is not None and self.best["epoch"] != self.best_written:
            checkpoints.save_best(folder, self.best_state, epoch=self.best["epoch"], val=self.best,
                                  config=self.config, splits=self.splits)
            self.best_written = self.best["epoch"]

    def checkpoint(self, folder, epoch: int, seconds: float) -> None:
        """Write ``best.pt`` (when a better epoch came since it was written) before ``last.pt``:
        everything a killed run needs to continue after ``epoch`` exactly as if never stopped."""
        self.save_best(folder)
        best = self.best
        checkpoints.save_last(folder, model=self.model, optimizer=self.optimizer, scheduler=self.schedule, extra={
            # the history as one JSON string: torch.save pickles many small objects slowly
            "epoch": epoch, "history": json.dumps(self.result["history"]), "best": best,
            "best_state": None if best["epoch"] == epoch else self.best_state,
            "data_order": self.train_batches.generator.get_state(),
            "augment_order": self.augment_order.get_state(),
            "time_s": self.result.get("_time_before", 0.0) + seconds})

    def record_best(self) -> None:
        if self.best is not None:
            best = self.best
            self.result.update(best_epoch=best["epoch"], best_val_acc=best["acc"], best_val_loss=best["loss"])

    def finish(self, folder) -> None:
        """The final and the best-validation epochs' test scores; ``last.pt`` removed unless kept."""
        result, model = self.result, self.model
        last = result["history"][-1]
        result.update(final_train_loss=last["train_loss"], final_train_acc=last["train_acc"],
                      final_val_loss=last["val_loss"], final_val_acc=last["val_acc"])
        final = evaluate(model, self.test_batches, self.loss_fn)
        result.update(test_loss_final=final["loss"], test_acc_final=final["acc"])
        model.load_state_dict(self.best_state)
        at_best = evaluate(model, self.test_batches, self.loss_fn)
        result.update(test_loss_at_best_val=at_best["loss"], test_acc_at_best_val=at_best["acc"])
        if self.log is not None:
            self.log.close(result)
        if folder is not None and not self.config["train"].get("keep_last", False):
            (folder / checkpoints.LAST).unlink(missing_ok=True)
