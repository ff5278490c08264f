r"""Classification of a sequence read one piece per step (sequential digits, row-wise MNIST).

.. math:: x^n = v[nC : (n + 1)C], \quad n = 0..F/C - 1, \qquad
          y^{T-1} = \mathrm{onehot}(\text{label}), \quad M^n = [n = T - 1]

A sample v of F features (an image flattened row by row) is cut into chunks of C features, one per
step; the answer is scored only at the last step, ``targets[T - 1]`` (the output after the last
input, :mod:`biofa.circuit.dynamics`).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import Task, Trials, check_outputs, default_generator, masked_mse


class Sequence(Task):
    r"""Classify a data set read one image row or one chunk of features per step.

    A :mod:`biofa.data` classification set read ``mode="rows"`` (one image row per step) or
    ``mode="steps"`` (``chunk`` features per step, default 1).

    ``sequence(dataset="digits", mode="rows")``: scikit-learn's 8×8 digits as 8 steps of 8 inputs;
    ``dataset="mnist1d", mode="steps"``: 40 steps of 1; ``dataset="mnist", mode="rows"``: 28 steps
    of 28 from the user's files (``root``, see :func:`biofa.data.load`). The data are loaded (and
    standardised) by :func:`biofa.data.load` with ``validation`` and ``seed``. :meth:`trials` draws
    training examples uniformly from the train split; :meth:`balanced` takes the first
    ``per_condition`` examples of each class from the validation split (``split="test"``: the
    test split, which the task runner scores its test trials on; conditions = classes).
    ``kind = "classification"``: ``correct`` is the accuracy of the argmax at the last step. No
    catch trials; every trial has the same length. Stopping rule: the latest ``correct`` >=
    ``target`` (never, with ``target=None``).
    """

    name = "sequence"
    kind = "classification"

    def __init__(self, dataset: str = "digits", mode: str = "rows", chunk: int | None = None,
                 root=None, validation: float = 0.1, seed: int = 0, n_train: int | None = None,
                 target: float | None = None, dt: float = 0.02):
        from ..data import load as load_data
        from ..errors import check_choice
        check_choice("Sequence", "mode", mode, ["rows", "steps"])
        self.dataset, self.mode, self.chunk, self.root = dataset, mode, chunk, root
        self.validation, self.seed, self.n_train, self.target, self.dt = validation, seed, n_train, target, dt
        splits = load_data(dataset, root=root, validation=validation, seed=seed, n_train=n_train)
        if splits.task != "classification" or not splits.in_memory:
            raise ConfigError(f"Sequence: dataset {dataset!r} must be an in-memory classification set")
        n_features = math.prod(splits.input_shape)
        if mode == "rows":
            width = splits.input_shape[-1] if len(splits.input_shape) > 1 else math.isqrt(n_features)
            if chunk is not None:
                raise ConfigError("Sequence: chunk is for mode='steps'; mode='rows' reads one row per step")
        else:
            width = 1 if chunk is None else int(chunk)
        if width < 1 or n_features % width:
            raise ConfigError(f"Sequence: {n_features} features of {dataset!r} cannot be cut into steps of "
                              f"{width} (mode={mode!r}, chunk={chunk!r})")
        self.n_inputs, self.n_outputs, self.n_steps = width, splits.n_classes, n_features // width
        self._x = {part: getattr(splits, part).tensors[0].reshape(-1, n_features) for part in ("train", "val", "test")}
        self._y = {part: getattr(splits, part).tensors[1] for part in ("train", "val", "test")}

    def conditions(self) -> list[dict]:
        return [{"label": k} for k in range(self.n_outputs)]

    def _build(self, part: str, index: torch.Tensor, dt, dtype) -> Trials:
        dt = self.step(dt)
        x, y = self._x[part][index], self._y[part][index]
        batch, T = int(index.shape[0]), self.n_steps
        inputs = x.reshape(batch, T, self.n_inputs).transpose(0, 1)
        targets = torch.zeros(T, batch, self.n_outputs)
        targets[-1] = torch.nn.functional.one_hot(y, self.n_outputs).to(targets.dtype)
        mask = torch.zeros(T, batch, self.n_outputs)
        mask[-1] = 1
        return Trials(inputs.to(dtype).contiguous(), targets.to(dtype), mask.to(dtype),
                      torch.full((batch,), T, dtype=torch.int64),
                      {"label": y.clone(), "index": index.clone(), "catch": torch.zeros(batch, dtype=torch.bool)}, dt)

    def trials(self, batch: int, dt=None, generator=None, dtype=torch.float32) -> Trials:
        generator = default_generator(generator)
        return self._build("train", torch.randint(len(self._y["train"]), (batch,), generator=generator), dt, dtype)

    def balanced(self, per_condition: int, dt=None, generator=None, dtype=torch.float32,
                 split: str = "val") -> Trials:
        if split not in ("val", "test"):
            raise ConfigError(f"Sequence: split must be 'val' or 'test', got {split!r}")
        y = self._y[split]
        picks = []
        for k in range(self.n_outputs):
            where = torch.nonzero(y == k).reshape(-1)
            if len(where) < per_condition:
                name = "validation" if split == "val" else "test"
                raise ConfigError(f"Sequence: the {name} split of {self.dataset!r} has {len(where)} "
                                  f"examples of class {k}, fewer than per_condition = {per_condition}")
            picks.append(where[:per_condition])
        return self._build(split, torch.stack(picks, 1).reshape(-1), dt, dtype)

    def score(self, outputs, trials) -> dict:
        check_outputs(type(self).__name__, outputs, trials)
        chose = outputs.detach()[trials.lengths - 1, torch.arange(len(trials))].argmax(-1)
        label = trials.conditions["label"]
        right = chose == label
        per = []
        for k in range(self.n_outputs):
            here = label == k
            n = int(here.sum())
            per.append({"label": k, "correct": float((right & here).sum()) / n if n else float("nan"), "n": n})
        return {"correct": float(right.to(torch.float64).mean()) if len(trials) else float("nan"),
                "loss": masked_mse(outputs.detach(), trials.targets, trials.mask),
                "n_scored": len(trials), "per_condition": per}

    def criterion(self, history: list) -> bool:
        return self.target is not None and bool(history) and history[-1]["correct"] >= self.target
