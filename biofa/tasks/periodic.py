r"""A periodic target produced without input (Murray 2019, "Local online learning in recurrent
networks with random feedback", eLife 8: e43299).

Murray trains N = 30 tanh units with τ = 10 time steps to produce a periodic output with no input,
of period 20 τ (and, harder, 160 τ), online (RFLO). This task gives that target as trials.
"""

from __future__ import annotations

import math

import torch

from .base import Task, Trials, check_outputs, default_generator, masked_mse


#: Murray's target (his code's example): harmonics 1, 2 and 4 of the period, amplitudes 1, 1/2, 1/4.
HARMONICS = ((1, 1.0), (2, 0.5), (4, 0.25))


def periodic_signal(steps: torch.Tensor, period: int, harmonics=HARMONICS) -> torch.Tensor:
    r"""The target at integer ``steps``, a sum of harmonics of the period P:

    .. math:: y(n) = \sin\frac{2\pi n}{P} + \tfrac12 \sin\frac{2\pi\,2n}{P} + \tfrac14 \sin\frac{2\pi\,4n}{P}

    (Murray's example; ``harmonics`` = ((k, a_k), ...) gives another). Returns float64 of the shape
    of ``steps``.
    """
    n = steps.to(torch.float64)
    return sum(a * torch.sin(2 * math.pi * k * n / period) for k, a in harmonics)


class Periodic(Task):
    r"""Produce a periodic signal of period ``period`` steps from no input.

    Input: one channel, always 0 (a circuit needs an input population; a zero channel keeps the
    interface uniform). Target: :func:`periodic_signal` on each of the ``n_outputs`` outputs, mask
    1 on every step. A trial has ``duration`` steps (default one period) and starts at phase 0,
    from the circuit's initial state, as every trial of Murray's example does (``random_phase``:
    :meth:`trials` starts each at a random phase, ``conditions["phase"]`` in steps, and
    :meth:`balanced` at ``per_condition`` evenly spaced phases). ``kind = "regression"``: score
    gives ``loss`` and ``correct = None``; the stopping rule (not Murray's, who trains for a
    fixed number of trials) is the latest ``normalized_loss`` (loss / target variance) below
    ``tolerance``.

    ``dt`` defaults to 0.01 s so that τ = 0.1 s (the ``ei_recurrent`` circuit) is 10 steps as in
    Murray; the period is in steps of the task's ``dt``: a call with another ``dt`` keeps the
    period in seconds, ``period * self.dt``.
    """

    name = "periodic"
    n_inputs = 1
    kind = "regression"

    def __init__(self, period: int = 200, duration: int | None = None, n_outputs: int = 1,
                 random_phase: bool = False, tolerance: float = 0.05, dt: float = 0.01):
        self.period, self.duration, self.n_outputs = period, duration, n_outputs
        self.random_phase, self.tolerance, self.dt = random_phase, tolerance, dt

    def shortest_epoch(self) -> float:
        return self.period * self.dt / 4       # a quarter period: at least 4 samples a cycle

    def _build(self, phase: torch.Tensor, dt, dtype) -> Trials:
        dt = self.step(dt)
        ratio = dt / self.dt                                      # task steps per step of this dt
        n_steps = int(round((self.duration or self.period) / ratio))
        batch = int(phase.shape[0])
        m = phase.to(torch.float64) + ratio * torch.arange(n_steps, dtype=torch.float64).unsqueeze(1)
        targets = periodic_signal(m, self.period).unsqueeze(-1).expand(*m.shape, self.n_outputs)
        return Trials(torch.zeros(n_steps, batch, 1, dtype=dtype), targets.to(dtype),
                      torch.ones(n_steps, batch, self.n_outputs, dtype=dtype),
                      torch.full((batch,), n_steps, dtype=torch.int64),
                      {"phase": phase.to(torch.int64), "catch": torch.zeros(batch, dtype=torch.bool)}, dt)

    def trials(self, batch: int, dt=None, generator=None, dtype=torch.float32) -> Trials:
        generator = default_generator(generator)
        if not self.random_phase:
            return self._build(torch.zeros(batch, dtype=torch.int64), dt, dtype)
        return self._build(torch.randint(self.period, (batch,), generator=generator), dt, dtype)

    def balanced(self, per_condition: int, dt=None, generator=None, dtype=torch.float32,
                 split: str = "val") -> Trials:
        if not self.random_phase:
            return self._build(torch.zeros(per_condition, dtype=torch.int64), dt, dtype)
        phase = torch.div(torch.arange(per_condition) * self.period, max(per_condition, 1), rounding_mode="floor")
        return self._build(phase, dt, dtype)

    def score(self, outputs, trials) -> dict:
        check_outputs(type(self).__name__, outputs, trials)
        loss = masked_mse(outputs.detach(), trials.targets, trials.mask)
        var = float(trials.targets.to(torch.float64).var())
        return {"correct": None, "loss": loss, "normalized_loss": loss / var if var > 0 else float("nan"),
                "n_scored": len(trials), "per_condition": []}

    def criterion(self, history: list) -> bool:
        """The latest ``normalized_loss`` < ``tolerance`` (biofa's rule; Murray has none)."""
        return bool(history) and history[-1]["normalized_loss"] < self.tolerance
