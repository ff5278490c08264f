"""Live TensorBoard logs of a run (``[log] tensorboard = true``), written with tensorboardX (no
TensorFlow needed) to ``runs/<run_id>/tb/``; view them with ``tensorboard --logdir OUT/runs``.

Every row of the run's history becomes scalars at step = epoch (finite values only): ``loss/train``, ``loss/val``,
``accuracy/train``, ``accuracy/val``, ``lr``, ``time/epoch_s`` and one per layer metric
(``weight_alignment/<layer>``, ...). When the run ends: ``loss/test_final``,
``loss/test_at_best_val`` (and the accuracies) at the last epoch, and the run's hyper-parameters
(its configuration, one entry per dotted key) with those test scores as the hparams metrics.
``history.csv`` stays the record; these logs are for watching runs.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..spec.expand import label

_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
         "val_acc": "accuracy/val", "lr": "lr", "time_s": "time/epoch_s"}
_FINAL = {"test_loss_final": "loss/test_final", "test_loss_at_best_val": "loss/test_at_best_val",
          "test_acc_final": "accuracy/test_final", "test_acc_at_best_val": "accuracy/test_at_best_val"}


def tag(column: str) -> str | None:
    """The scalar's tag for a history column (``"weight_alignment:1"`` → ``"weight_alignment/1"``),
    or None for ``epoch``."""
    if column == "epoch":
        return None
    return _TAGS.get(column, column.replace(":", "/"))


def hparams(config: dict, prefix: str = "") -> dict:
    """A run's configuration as ``{dotted key: bool | int | float | str}``."""
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("feedback", "sign", "norm"):
            out.update(hparams(value, path + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[path] = value
        else:
            out[path] = label(value)
    return out


class TensorBoardLog:
    """A run's event files in ``folder``. ``purge_step``: a resumed run's first epoch; events
    the interrupted process wrote from that step on are dropped by TensorBoard."""

    def __init__(self, folder: Path, config: dict, *, purge_step: int | None = None):
        from tensorboardX import SummaryWriter
        self.config = config
        self.writer = SummaryWriter(logdir=str(folder), purge_step=purge_step, flush_secs=10)

    def epoch(self, row: dict) -> None:
        step = row["epoch"]
        for column, value in row.items():
            name = tag(column)
            if name is not None and value is not None and math.isfinite(value):  # e.g. no B: NaN angle
                self.writer.add_scalar(name, value, step)

    def close(self, result: dict) -> None:
        step = result["epochs_done"]
        metrics = {}
        for key, name in _FINAL.items():
            value = result.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(name, value, step)
                metrics[name] = value
        self.writer.add_hparams(hparams(self.config), metrics, name="hparams", global_step=step)
        self.writer.close()
