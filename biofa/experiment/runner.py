"""One run of a study: build the data, the model and the optimizer from a run's configuration,
train, measure, and return a result dict (see :mod:`biofa.experiment.results`).

Model selection uses the validation split only: the best epoch is the one with the highest
validation accuracy (lowest validation loss for regression, and to break ties); its weights are
kept and evaluated on the test split once, at the end, beside the final epoch's weights.

A run whose training loss (or any weight) becomes NaN or infinite stops and is recorded as
``failed`` with the reason; any other exception inside a run is recorded the same way, so a study
always goes on. Warnings biofa issues while the run builds and trains (e.g.
:class:`~biofa.errors.DegenerateFeedbackWarning` for uSF under Dale's law) go to the run's notes.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import random
import time
import traceback
import warnings
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..feedback import reset_step
from ..errors import BiofaError, BiofaWarning, ConfigError, SpecError
from . import checkpoints, devices
from .batches import evaluate, run_batches, sum_dtype
from .grid import rule_name
from .metrics import conservation_columns, initial_invariants
from .spec import NONE_WORDS


class Diverged(ArithmeticError):
    """The training loss or the weights became NaN or infinite."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _none(value):
    return None if isinstance(value, str) and value in NONE_WORDS else value


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
        from .. import data
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
    from ..data import augment
    try:
        return augment.build(spec, splits)
    except ConfigError as err:  # the study's preflight names the table itself
        raise ConfigError(str(err).removeprefix("[data] ")) from None


def build_model(model_config: dict, splits, generator: torch.Generator | None = None, seed: int = 0):
    """The model of a run: ``biofa.models.build`` or a circuit from ``biofa.circuit``."""
    options = dict(model_config)
    if "circuit" in options:
        return _build_circuit(options, splits, seed)
    feedback = options.pop("feedback")
    sign = _none(options.pop("sign"))
    norm = _none(options.pop("norm"))
    batch_manhattan = options.pop("batch_manhattan")
    from .. import models
    name = options.pop("name")
    return models.build(name, input_shape=tuple(splits.input_shape), n_outputs=splits.n_outputs,
                        feedback=feedback, sign=sign, norm=norm, batch_manhattan=batch_manhattan,
                        generator=generator, **options)


def _build_circuit(options: dict, splits, seed: int):
    """A circuit spec with the run's feedback / sign / norm written into every synapse table.

    Only the keys the experiment sets are written (``sign = "free"`` lifts Dale's law from
    populations that have a type; without a ``sign`` the circuit's own constraints stay).
    """
    from .. import circuit
    name = options.pop("circuit")
    overrides = {k: options.pop(k) for k in ("feedback", "sign", "norm") if k in options}
    if options.pop("batch_manhattan", False):
        raise ConfigError(f"circuit {name!r}: batch_manhattan is not an option of circuits")
    if options:
        raise ConfigError(f"circuit {name!r}: unknown option(s) {sorted(options)}; a circuit takes "
                          "feedback, sign and norm (everything else is in its own spec)")
    spec = circuit.read(name)
    if rule_name(overrides.get("feedback", "")) == "dfa":
        raise ConfigError(f"circuit {name!r}: feedback = 'dfa' needs direct [[feedback]] tables in the "
                          "circuit spec itself (write a circuit with rule = 'dfa' feedback tables)")
    for table in spec.get("synapses", []):
        for key, value in overrides.items():
            if key == "norm" and _none(value) is None:
                table.pop("norm", None)
            else:
                table[key] = value
    model = circuit.from_spec(spec, seed=seed)
    sizes = {p.name: p.size for p in model.populations}
    n_in, n_out = sizes[model.input], sizes[model.output]
    n_features = int(np.prod(splits.input_shape))
    if n_in != n_features or n_out != splits.n_outputs:
        raise ConfigError(f"circuit {name!r}: its input population has {n_in} neurons and its output "
                          f"{n_out}, but dataset {splits.name!r} has {n_features} features and "
                          f"{splits.n_outputs} outputs")
    if len(splits.input_shape) > 1:
        model = torch.nn.Sequential(torch.nn.Flatten(), model)
    return model


def make_optimizer(parameters, opt: dict) -> torch.optim.Optimizer:
    name, lr, wd = opt["name"], opt["lr"], opt["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=opt["momentum"], weight_decay=wd,
                               nesterov=opt["nesterov"])
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=opt["momentum"], weight_decay=wd)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    betas = tuple(opt.get("betas", (0.9, 0.999)))
    return cls(parameters, lr=lr, betas=betas, weight_decay=wd)


def make_schedule(optimizer, schedule: dict, epochs: int):
    """A per-epoch learning-rate schedule, or None."""
    name = schedule["name"]
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, schedule["step_size"], schedule["gamma"])
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, schedule["milestones"], schedule["gamma"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


class Loss:
    """The training loss: softmax cross-entropy, or squared error (one-hot targets for labels).

    .. math:: L_\\mathrm{CE} = -\\frac1N\\sum_n \\log\\mathrm{softmax}(y_n)_{c_n}, \\qquad
              L_\\mathrm{MSE} = \\frac{1}{N K}\\sum_{n,k} (y_{nk} - t_{nk})^2
    """

    def __init__(self, kind: str, task: str, n_outputs: int):
        if kind == "auto":
            kind = "cross_entropy" if task == "classification" else "mse"
        self.kind, self.task, self.n_outputs = kind, task, n_outputs

    def __call__(self, output, target, reduction: str = "mean"):
        if self.kind == "cross_entropy":
            return F.cross_entropy(output, target, reduction=reduction)
        if self.task == "classification":
            target = F.one_hot(target, self.n_outputs).to(output.dtype)
        target = target.reshape(output.shape).to(output.dtype)
        loss = F.mse_loss(output, target, reduction="none").flatten(1).mean(1)
        return loss.mean() if reduction == "mean" else loss.sum()


def _layer_columns(model, metrics: dict, probe, loss_fn) -> dict:
    """``{"<metric>:<layer>": value}`` from biofa.analysis for the current weights."""
    from .. import analysis
    out = {}
    if metrics["alignment"]:
        for layer, values in analysis.layer_metrics(model).items():
            for metric, value in values.items():
                out[f"{metric}:{layer or 'model'}"] = value
    if metrics["update_alignment"] and probe is not None:
        for layer, value in analysis.update_alignment(model, probe[0], probe[1], loss_fn).items():
            out[f"update_alignment:{layer or 'model'}"] = value
    return out


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
    """Train one run (``{"run_id", "labels", "config"}`` from :func:`biofa.experiment.grid.expand`).

    ``out``: the study's results folder; the run then checkpoints into ``out/runs/<run_id>/``
    every epoch and continues from there when it was interrupted (see
    :mod:`biofa.experiment.checkpoints`). Returns the result dict; never raises for a failure
    inside the run (it is recorded).
    """
    config = task["config"]
    seed = int(config["seed"])
    train_cfg = config["train"]
    result = {"run_id": task["run_id"], "labels": task["labels"], "config": config,
              "status": "ok", "reason": "", "notes": "",
              "model": config["model"].get("name", config["model"].get("circuit")),
              "data": config["data"]["name"], "epochs": train_cfg["epochs"], "epochs_done": 0,
              "started_at": _now(), "pid": os.getpid(), "history": []}
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
    result["finished_at"] = _now()
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
    train_cfg, metrics_cfg = config["train"], config["metrics"]
    dtype = getattr(torch, train_cfg["dtype"])
    device = devices.resolve(train_cfg.get("device", "cpu"))
    reset_step(0)  # brSF redraws are a function of (seed, training step): start every run at 0
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    splits = load_data(config["data"])
    generator = torch.Generator().manual_seed(seed)
    model = build_model(config["model"], splits, generator, seed).to(device=device, dtype=dtype)
    loss_fn = Loss(train_cfg["loss"], splits.task, splits.n_outputs)
    if loss_fn.kind == "cross_entropy" and splits.task != "classification":
        raise SpecError(f"[train] loss = 'cross_entropy' needs a classification dataset; "
                        f"{splits.name!r} is a regression task (use 'mse' or 'auto')")
    optimizer = make_optimizer(model.parameters(), train_cfg["optimizer"])
    schedule = make_schedule(optimizer, train_cfg["schedule"], train_cfg["epochs"])
    train_batches, val_batches, test_batches = run_batches(splits, train_cfg, seed, device, dtype)
    n_probe = min(metrics_cfg["update_batch"], len(splits.val) or len(splits.train))
    x_probe, y_probe = splits.head("val" if len(splits.val) else "train", n_probe)
    augment = augmentation(config["data"], splits)
    if not len(splits.val) and augment is not None and augment.size is not None:
        x_probe = augment.eval_transform(x_probe)  # whole training images: the model sees s×s
    probe = (x_probe.to(device, dtype), y_probe.to(device)) if n_probe else None
    augment_order = torch.Generator().manual_seed((seed * 1_000_003 + 1) % (2**63 - 1))
    classification = loss_fn.task == "classification"
    log = None
    # before any checkpoint is loaded: a resumed run's model is rebuilt with the same initial weights
    invariants_at_init = initial_invariants(model, metrics_cfg)

    def record(epoch, train_stats, seconds):
        val = evaluate(model, val_batches, loss_fn) if len(splits.val) else {"loss": math.nan, "acc": None}
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_stats.get("loss"),
               "train_acc": train_stats.get("acc"), "val_loss": val["loss"], "val_acc": val["acc"],
               "time_s": round(seconds, 4)}
        if epoch % metrics_cfg["every"] == 0 or epoch == train_cfg["epochs"]:
            row.update(_layer_columns(model, metrics_cfg, probe, loss_fn))
            row.update(conservation_columns(model, metrics_cfg, splits, invariants_at_init))
        result["history"].append(row)
        if log is not None:
            log.epoch(row)
        return val

    best, best_state, start = None, None, 1
    state = None
    if folder is not None:
        checkpoints.clean(folder)
        state = checkpoints.load_last(folder, model=model, optimizer=optimizer, scheduler=schedule)
    if state is not None:  # continue an interrupted run after its last finished epoch
        result["history"] = json.loads(state["history"])
        best, best_state = state["best"], state["best_state"]
        if best_state is None:  # the best epoch was the last one: its weights are the model's
            best_state = checkpoints.snapshot(model.state_dict())
        train_batches.generator.set_state(state["data_order"])
        augment_order.set_state(state["augment_order"])
        start = state["epoch"] + 1
        result["epochs_done"] = state["epoch"]
        result["resumed_from_epoch"] = state["epoch"]
        result["_time_before"] = state["time_s"]
    if folder is not None and config.get("log", {}).get("tensorboard"):
        from .tblog import TensorBoardLog
        # a resumed run's log drops what the killed process logged after its last checkpoint
        log = TensorBoardLog(folder / "tb", config, purge_step=start if state is not None else None)
    t_run = time.perf_counter()
    if state is None:
        record(0, {}, 0.0)
    if not len(splits.val):
        warnings.warn("no validation split (data.validation = 0): nothing selects an epoch, so "
                      "'test @ best val' is the final epoch", BiofaWarning, stacklevel=2)
    epoch_bar = None
    if progress:
        from tqdm.auto import tqdm
        epoch_bar = tqdm(total=train_cfg["epochs"], initial=start - 1, desc=result["run_id"][:40],
                         leave=False, unit="ep")
    try:
        for epoch in range(start, train_cfg["epochs"] + 1):
            t_epoch = time.perf_counter()
            model.train()
            sums = _Epoch(device, classification)
            try:
                for x, y in train_batches:
                    if augment is not None:
                        x = augment(x, generator=augment_order)
                    optimizer.zero_grad(set_to_none=True)
                    out = model(x)
                    loss = loss_fn(out, y)
                    loss.backward()
                    optimizer.step()
                    sums.add(loss, out, y)
            except Exception as err:  # a non-finite loss can make a rule's arithmetic raise
                if not math.isfinite(float(sums.loss)):
                    raise Diverged(f"non-finite training loss in epoch {epoch} ({type(err).__name__}: {err})") from err
                raise
            if schedule is not None:
                schedule.step()
            train_stats, finite = sums.read(model)
            if not math.isfinite(train_stats["loss"]):
                raise Diverged(f"non-finite training loss ({train_stats['loss']}) in epoch {epoch}")
            if not finite:
                raise Diverged(f"non-finite weights after epoch {epoch}")
            val = record(epoch, train_stats, time.perf_counter() - t_epoch)
            if not math.isfinite(val["loss"]) and len(splits.val):
                raise Diverged(f"non-finite validation loss ({val['loss']}) at epoch {epoch}")
            result["epochs_done"] = epoch
            improved = not len(splits.val) or _better(val, best)  # no validation split: the last epoch
            if improved:
                best = dict(val, epoch=epoch)
                best_state = checkpoints.snapshot(model.state_dict())
            if folder is not None:
                if improved:
                    checkpoints.save_best(folder, best_state, epoch=epoch, val=val, config=config, splits=splits)
                checkpoints.save_last(folder, model=model, optimizer=optimizer, scheduler=schedule, extra={
                    # the history as one JSON string: torch.save pickles many small objects slowly
                    "epoch": epoch, "history": json.dumps(result["history"]), "best": best,
                    "best_state": None if best["epoch"] == epoch else best_state,
                    "data_order": train_batches.generator.get_state(),
                    "augment_order": augment_order.get_state(),
                    "time_s": result.get("_time_before", 0.0) + time.perf_counter() - t_run})
            if epoch_bar is not None:
                epoch_bar.update(1)
    finally:
        if epoch_bar is not None:
            epoch_bar.close()
        if best is not None:
            result.update(best_epoch=best["epoch"], best_val_acc=best["acc"], best_val_loss=best["loss"])
    last = result["history"][-1]
    result.update(final_train_loss=last["train_loss"], final_train_acc=last["train_acc"],
                  final_val_loss=last["val_loss"], final_val_acc=last["val_acc"])
    final = evaluate(model, test_batches, loss_fn)
    result.update(test_loss_final=final["loss"], test_acc_final=final["acc"])
    model.load_state_dict(best_state)
    at_best = evaluate(model, test_batches, loss_fn)
    result.update(test_loss_at_best_val=at_best["loss"], test_acc_at_best_val=at_best["acc"])
    if log is not None:
        log.close(result)
    if folder is not None and not train_cfg.get("keep_last", False):
        (folder / checkpoints.LAST).unlink(missing_ok=True)
