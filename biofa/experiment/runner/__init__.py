"""One run, from its configuration to its result: what every executor calls.

- :mod:`.data` loads a run's dataset (cached per process) and its augmentation;
- :mod:`.build` builds its model (or circuit), optimizer, schedule and loss;
- :mod:`.batches` batches each split on the run's device and evaluates over them;
- :mod:`.devices` resolves ``[train] device`` and places workers on GPUs;
- :mod:`.metrics` measures the per-layer and conservation-law columns of ``history.csv``;
- :mod:`.train` is the training loop (set up, resume, epoch, checkpoint, finish);
- :mod:`.checkpoints` writes and reads ``best.pt`` / ``last.pt`` and rebuilds a run's model;
- :mod:`.tblog` writes TensorBoard event files.

The study's preflight and the checkpoint loader build through the same functions as the loop, so
a model rebuilt anywhere is the model the run trained.
"""

from __future__ import annotations

from .build import Loss, build_model, check_loss, make_optimizer, make_schedule
from .checkpoints import checkpoint_info, evaluate_run, find_run, load_model
from .data import augmentation, data_key, load_data, seed_data_cache
from .train import Diverged, run

__all__ = ["run", "Diverged", "Loss", "build_model", "check_loss", "make_optimizer", "make_schedule", "load_data",
           "data_key", "seed_data_cache", "augmentation", "load_model", "evaluate_run", "checkpoint_info",
           "find_run"]
