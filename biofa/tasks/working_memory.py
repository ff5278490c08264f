r"""Parametric working memory: compare two vibrotactile frequencies across a delay (Romo et al. 1999).

The task of Romo, Brody, Hernández & Lemus (1999, Nature 399: 470) as pycog's ``romo.py`` sets it
up (after Barak, Tsodyks & Romo 2010), in seconds.
"""

from __future__ import annotations

import torch

from .base import condition_grid
from .choice import ChoiceTask


class WorkingMemory(ChoiceTask):
    r"""Is f1 > f2? Two stimuli separated by a delay; answer after the second.

    .. math:: u_0 = 0.4 + 0.8 \frac{f - f_\min}{f_\max - f_\min}, \qquad
              u_1 = 0.4 + 0.8 \frac{f_\max - f}{f_\max - f_\min}

    with f = f1 during the first stimulus and f = f2 during the second (f_min = 10, f_max = 34 Hz).
    Epochs: fixation (100 ms), f1 (500 ms), delay (uniform on ``delay`` = [2.5, 3.5] s, floored
    to whole steps as pycog does; a number fixes it — pycog's test trials use 3 s), f2 (500 ms),
    decision (300 ms). Catch trials: 2.5 s, probability 1/(10 + 1). Conditions (10): the pairs
    (18, 10), (22, 14), (26, 18), (30, 22), (34, 26) in either order; ``choice`` 0 when f1 > f2.
    Score adds ``min_condition`` (pycog's ``performance_2afc_min_condition``); stopping rule: the
    latest validation's ``min_condition`` >= 85 %.
    """

    name = "working_memory"
    n_inputs = 2
    catch_duration = 2.5
    target_performance = 0.85

    def __init__(self, fixation: float = 0.1, f1: float = 0.5, delay=(2.5, 3.5), f2: float = 0.5,
                 decision: float = 0.3, fpairs=((18, 10), (22, 14), (26, 18), (30, 22), (34, 26)),
                 dt: float = 0.02):
        self.fixation, self.f1, self.delay, self.f2, self.decision = fixation, f1, delay, f2, decision
        self.fpairs, self.dt = fpairs, dt

    def factors(self) -> dict:
        return {"pair": list(range(len(self.fpairs))), "gt_lt": [1, -1]}

    def conditions(self) -> list[dict]:
        out = []
        for c in condition_grid(self.factors()):
            hi, lo = self.fpairs[c["pair"]]
            f1, f2 = (hi, lo) if c["gt_lt"] > 0 else (lo, hi)
            out.append({"f1": f1, "f2": f2, "choice": 0 if f1 > f2 else 1})
        return out

    def epochs(self, batch, dt, generator) -> list:
        if isinstance(self.delay, (int, float)):
            delay = float(self.delay)
        else:
            lo, hi = self.delay
            draw = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)
            delay = torch.floor(draw / dt) * dt
        return [("fixation", self.fixation), ("f1", self.f1), ("delay", delay), ("f2", self.f2),
                ("decision", self.decision)]

    def shortest_epoch(self) -> float:
        low = self.delay if isinstance(self.delay, (int, float)) else min(self.delay)
        return min(self.fixation, self.f1, float(low), self.f2, self.decision, self.catch_duration)

    def stimulus(self, labels: dict) -> dict:
        freqs = [f for pair in self.fpairs for f in pair]
        fmin, fmax = min(freqs), max(freqs)

        def code(f):
            f = f.to(torch.float64)
            return torch.stack([0.4 + 0.8 * (f - fmin) / (fmax - fmin), 0.4 + 0.8 * (fmax - f) / (fmax - fmin)], -1)
        return {"f1": code(labels["f1"]), "f2": code(labels["f2"])}

    def score(self, outputs, trials) -> dict:
        """:meth:`ChoiceTask.score` and ``min_condition``: the worst condition's correct fraction
        (conditions without trials left out; NaN if none has any)."""
        result = super().score(outputs, trials)
        seen = [c["correct"] for c in result["per_condition"] if c["n"] > 0]
        result["min_condition"] = min(seen) if seen else float("nan")
        return result

    def criterion(self, history: list) -> bool:
        """pycog's rule for this task: the latest ``min_condition`` >= ``target_performance``."""
        return bool(history) and history[-1]["min_condition"] >= self.target_performance
