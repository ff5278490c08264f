r"""Trials, the :class:`Task` base class and the helpers every task shares.

A task turns conditions into tensors laid out in time, one row per Euler step of length
:math:`\Delta t` (seconds), following the time convention of :mod:`biofa.circuit.dynamics`:
``inputs[n]`` is the stimulus clamped during step n and ``targets[n]`` / ``mask[n]`` score
``rates[out][n + 1]``, the output *after* step n. pycog's row n pairs its input row n with the
output computed from it, so its targets and masks carry over row for row.

An epoch ``(start, end]`` in seconds covers the steps n with ``start < (n + 1) Δt <= end``
(pycog's ``get_epochs_idx``), i.e. ``floor(start / Δt) <= n < floor(end / Δt)``;
:func:`epoch_bounds` and :func:`step_masks` compute these for a whole batch at once.
"""

from __future__ import annotations

import abc
import inspect
import itertools
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ShapeError

#: Tolerance of the floor in :func:`to_steps` (a duration of exactly k Δt is k steps).
STEP_TOLERANCE = 1e-9


@dataclass
class Trials:
    """A batch of trials, padded in time to the longest.

    ``inputs`` (T, batch, n_in): the raw stimulus (no baseline: the circuit's input population adds
    it); ``targets`` (T, batch, n_out); ``mask``: (T, batch, n_out) or (T, batch), float 0/1;
    ``lengths`` (batch,) int64: steps of each trial, rows ``n >= lengths[b]`` are padding (zero
    input, zero target, mask 0); ``conditions``: name → (batch,) per-trial labels, always with
    ``"catch"`` (bool) and, for choice tasks, ``"choice"`` (int64, -1 on catch trials);
    ``dt``: the step in seconds.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    conditions: dict
    dt: float

    def to(self, device=None, dtype=None) -> "Trials":
        """A copy on ``device`` with floating tensors (inputs, targets, mask) in ``dtype``;
        lengths and condition labels keep their dtypes."""
        def move(t, floating):
            return t.to(device=device, dtype=dtype if floating else None)
        return Trials(move(self.inputs, True), move(self.targets, True), move(self.mask, True),
                      move(self.lengths, False),
                      {k: move(v, False) for k, v in self.conditions.items()}, self.dt)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def to_steps(seconds, dt: float) -> torch.Tensor:
    """``floor(seconds / dt)`` as int64, tolerant of rounding (pycog's discretisation)."""
    seconds = torch.as_tensor(seconds, dtype=torch.float64)
    return torch.floor(seconds / dt + STEP_TOLERANCE).to(torch.int64)


def epoch_bounds(durations: list, dt: float) -> tuple[dict, torch.Tensor]:
    """Consecutive epochs → step boundaries.

    ``durations``: ``[(name, seconds), ...]`` in order, each ``seconds`` a float or a (batch,)
    tensor. Returns ``({name: (start, end)}, total)``, int64 step indices (the epoch covers
    ``start <= n < end``) and the number of steps of the whole trial.
    """
    bounds, elapsed = {}, torch.zeros((), dtype=torch.float64)
    for name, seconds in durations:
        start = to_steps(elapsed, dt)
        elapsed = elapsed + torch.as_tensor(seconds, dtype=torch.float64)
        bounds[name] = (start, to_steps(elapsed, dt))
    return bounds, to_steps(elapsed, dt)


def step_masks(bounds: dict, n_steps: int) -> dict:
    """``{name: (n_steps, batch) bool}``: True where step n lies in the epoch."""
    n = torch.arange(n_steps).unsqueeze(1)
    return {name: (n >= start) & (n < end) for name, (start, end) in bounds.items()}


def valid_steps(lengths: torch.Tensor, n_steps: int) -> torch.Tensor:
    """(n_steps, batch) bool: True on the steps a trial has (``n < lengths[b]``)."""
    return torch.arange(n_steps).unsqueeze(1) < lengths


def condition_grid(factors: dict) -> list[dict]:
    """Every combination of the factors' values, the first factor varying fastest (pycog's
    ``unravel_index(..., order='F')``)."""
    names = list(factors)
    combos = itertools.product(*(factors[k] for k in reversed(names)))
    return [dict(zip(names, reversed(c))) for c in combos]


def check_dt(owner: str, dt, shortest: float) -> float:
    """``dt`` as a float, or a :class:`ConfigError` when it is not positive or exceeds the shortest
    epoch ``shortest`` (seconds)."""
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: dt must be a number of seconds, got {dt!r}") from None
    if not value > 0:
        raise ConfigError(f"{owner}: dt must be > 0 seconds, got {dt!r}")
    if value > shortest + STEP_TOLERANCE:
        raise ConfigError(f"{owner}: dt = {value} s is longer than its shortest epoch ({shortest} s); "
                          f"use dt <= {shortest}")
    return value


def check_outputs(owner: str, outputs: torch.Tensor, trials: Trials) -> None:
    """A :class:`ShapeError` unless ``outputs`` has the shape of ``trials.targets``."""
    expected = tuple(trials.targets.shape)
    if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != expected:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ShapeError(f"{owner}.score: outputs must have shape (T, batch, n_out) = {expected} "
                         f"like trials.targets, got {got}")


def masked_mse(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    r""":math:`\sum M (z - y)^2 / \sum M` over every step, trial and output (pycog's loss)."""
    if mask.dim() == outputs.dim() - 1:
        mask = mask.unsqueeze(-1).expand_as(outputs)
    mask = mask.to(outputs.dtype)
    total = mask.sum()
    if total == 0:
        return float("nan")
    return float((mask * (outputs - targets.to(outputs.dtype)) ** 2).sum() / total)


def default_generator(generator) -> torch.Generator:
    """``generator``, or a fresh one seeded 0 when None (so a call without one is reproducible,
    and two such calls give the same trials: pass a generator to draw new ones)."""
    return torch.Generator().manual_seed(0) if generator is None else generator


class Task(abc.ABC):
    """Base class of the tasks: the interface the training code relies on.

    Class attributes: ``name``, ``n_inputs``, ``n_outputs``, ``dt`` (default step, seconds),
    ``kind`` (``"choice"``, ``"regression"`` or ``"classification"``). A subclass implements
    :meth:`trials`, :meth:`balanced`, :meth:`score` and, where pycog has one, :meth:`criterion`;
    its constructor arguments are stored unmodified under their own names, so
    ``type(task)(**task.settings())`` rebuilds it.
    """

    name: str = ""
    n_inputs: int = 0
    n_outputs: int = 0
    dt: float = 0.02
    kind: str = "choice"

    @abc.abstractmethod
    def trials(self, batch: int, dt=None, generator=None, dtype=torch.float32) -> Trials:
        """``batch`` random trials (the training distribution, catch trials included)."""
        raise NotImplementedError

    @abc.abstractmethod
    def balanced(self, per_condition: int, dt=None, generator=None, dtype=torch.float32,
                 split: str = "val") -> Trials:
        """Every condition ``per_condition`` times (and catch trials ``per_condition`` times).

        ``split`` (``"val"`` or ``"test"``): the held-out examples a task that reads a data set
        takes them from; a task that generates its trials draws fresh ones from ``generator``
        either way (the runner gives validation and test separate generators)."""
        raise NotImplementedError

    def conditions(self) -> list[dict]:
        """The task's conditions (catch trials excluded), as label dicts."""
        return []

    @abc.abstractmethod
    def score(self, outputs: torch.Tensor, trials: Trials) -> dict:
        """Performance of ``outputs`` (T, batch, n_out), aligned with ``trials.targets``."""
        raise NotImplementedError

    def criterion(self, history: list) -> bool:
        """Whether training may stop, given the score dicts of the validations so far."""
        return False

    def settings(self) -> dict:
        """The constructor arguments, by name."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"
                and params[k].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}

    def step(self, dt) -> float:
        """The step to use: ``dt`` or the task's default, checked against the shortest epoch."""
        return check_dt(type(self).__name__, self.dt if dt is None else dt, self.shortest_epoch())

    def shortest_epoch(self) -> float:
        """Duration of the shortest epoch (seconds): the largest usable ``dt``."""
        return float("inf")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
