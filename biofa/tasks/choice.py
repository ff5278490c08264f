r"""Two-alternative forced-choice tasks built from epochs, after pycog (Song, Yang & Wang 2016).

A trial is a sequence of epochs (fixation, stimulus, ..., decision). The targets are pycog's:

.. math::
    y_k^n = \begin{cases} \mathrm{lo} & n \in \text{fixation} \\
                          \mathrm{hi}\,[k = c] + \mathrm{lo}\,[k \ne c] & n \in \text{decision}\end{cases}
    \qquad M^n_k = [n \in \text{fixation} \cup \text{decision}]

with hi = 1, lo = 0.2 and c the correct choice. A catch trial (probability ``p_catch``) has no
stimulus, lasts ``catch_duration`` and asks for lo on both outputs throughout, every step masked.
The choice is pycog's ``performance_2afc``: the argmax over the outputs at each trial's last step.
"""

from __future__ import annotations

import abc
import torch

from .base import (Task, Trials, check_outputs, condition_grid, default_generator, epoch_bounds,
                   masked_mse, step_masks, to_steps, valid_steps)
from .psychometric import psychometric

#: Target of the chosen output during the decision epoch, and of every output otherwise (pycog).
HI, LO = 1.0, 0.2


def decisions(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(batch,) int64: argmax over outputs at each trial's last step ``lengths - 1``."""
    last = outputs[lengths - 1, torch.arange(outputs.shape[1])]
    return last.argmax(-1)


class ChoiceTask(Task):
    """Base of the epoch-structured two-choice tasks.

    A subclass gives ``factors`` (condition name → values, pycog's order), ``catch_duration``,
    ``catch_weight`` (``p_catch = catch_weight / (n_conditions + 1)``) and implements
    :meth:`choice_of` (correct output per condition), :meth:`epochs` (per-trial durations) and
    :meth:`stimulus` (input values per epoch).
    """

    kind = "choice"
    n_outputs = 2
    catch_duration: float = 2.0
    catch_weight: float = 1.0
    target_performance: float = 0.85
    criterion_window: int = 5

    # -- what a subclass defines ------------------------------------------------------------
    @abc.abstractmethod
    def factors(self) -> dict:
        raise NotImplementedError

    def choice_of(self, condition: dict) -> int:
        """The correct output of ``condition``; what the default :meth:`conditions` reads (a task
        that defines its conditions itself, as working memory does, need not define it)."""
        raise NotImplementedError

    @abc.abstractmethod
    def epochs(self, batch: int, dt: float, generator: torch.Generator) -> list:
        """``[(name, seconds), ...]`` of a non-catch trial; seconds a float or a (batch,) tensor."""
        raise NotImplementedError

    @abc.abstractmethod
    def stimulus(self, labels: dict) -> dict:
        """``{epoch: (batch, n_in) float64}``: the input held during each epoch."""
        raise NotImplementedError

    def psychometric_levels(self, labels: dict) -> torch.Tensor | None:
        """Per-trial stimulus level of the psychometric curve, or None for no curve."""
        return None

    # -- shared machinery --------------------------------------------------------------------
    @property
    def p_catch(self) -> float:
        return self.catch_weight / (len(self.conditions()) + 1)

    def conditions(self) -> list[dict]:
        """Every combination of :meth:`factors` (first factor fastest, as pycog enumerates its
        validation trials), each with its correct ``"choice"``."""
        return [{**c, "choice": self.choice_of(c)} for c in condition_grid(self.factors())]

    def label_table(self) -> dict:
        """name → (n_conditions,) tensor of each condition's label."""
        conds = self.conditions()
        return {k: torch.tensor([c[k] for c in conds]) for k in conds[0]}

    def trials(self, batch: int, dt=None, generator=None, dtype=torch.float32) -> Trials:
        """``batch`` trials of pycog's ``'gradient'`` distribution: catch with probability
        ``p_catch``, otherwise a condition drawn uniformly (each factor uniform and independent)."""
        generator = default_generator(generator)
        catch = torch.rand(batch, generator=generator, dtype=torch.float64) < self.p_catch
        index = torch.randint(len(self.conditions()), (batch,), generator=generator)
        return self.build(index, catch, dt, generator, dtype)

    def balanced(self, per_condition: int, dt=None, generator=None, dtype=torch.float32,
                 split: str = "val") -> Trials:
        """``per_condition`` blocks of [catch, condition 0, condition 1, ...] (pycog's
        ``'validation'`` trials: minibatch index b → catch if b mod (n + 1) = 0)."""
        generator = default_generator(generator)
        block = torch.arange(-1, len(self.conditions()))
        index = block.repeat(int(per_condition))
        return self.build(index.clamp(min=0), index < 0, dt, generator, dtype)

    def shortest_epoch(self) -> float:
        return min([self.catch_duration] + [float(torch.as_tensor(s, dtype=torch.float64).min())
                                            for _, s in self.epochs(1, 1.0, torch.Generator().manual_seed(0))])

    def build(self, index: torch.Tensor, catch: torch.Tensor, dt, generator, dtype=torch.float32) -> Trials:
        """Trials of conditions ``index`` ((batch,) int64), catch where ``catch`` is True."""
        dt = self.step(dt)
        batch = int(index.shape[0])
        table = self.label_table()
        labels = {}
        for k, v in table.items():
            filler = -1 if k == "choice" else 0
            labels[k] = torch.where(catch, torch.full_like(v[index], filler), v[index])
        bounds, total = epoch_bounds(self.epochs(batch, dt, generator), dt)
        lengths = torch.where(catch, to_steps(self.catch_duration, dt), total.expand(batch))
        n_steps = int(lengths.max()) if batch else 0
        epochs = {k: m & ~catch for k, m in step_masks(bounds, n_steps).items()}
        inside = valid_steps(lengths, n_steps)

        inputs = torch.zeros(n_steps, batch, self.n_inputs, dtype=torch.float64)
        for name, value in self.stimulus(labels).items():
            inputs += epochs[name].unsqueeze(-1) * value.to(torch.float64).unsqueeze(0)
        inputs = torch.where(catch.unsqueeze(-1), torch.zeros(()), inputs)

        scored = epochs["fixation"] | epochs["decision"] | (catch & inside)
        chosen = torch.nn.functional.one_hot(labels["choice"].clamp(min=0), self.n_outputs).to(torch.float64)
        targets = LO * scored.unsqueeze(-1) + (HI - LO) * epochs["decision"].unsqueeze(-1) * chosen
        mask = scored.unsqueeze(-1).expand(n_steps, batch, self.n_outputs)
        return Trials(inputs.to(dtype), targets.to(dtype), mask.to(dtype), lengths.to(torch.int64),
                      {**labels, "catch": catch.clone()}, dt)

    def score(self, outputs: torch.Tensor, trials: Trials) -> dict:
        """``correct`` (fraction of non-catch trials choosing ``choice``; NaN with none), ``loss``
        (masked mean squared error, catch trials included), ``n_scored``, ``per_condition``,
        ``psychometric`` where the task has a stimulus axis (choice-0 fractions and their fit)."""
        check_outputs(type(self).__name__, outputs, trials)
        chose = decisions(outputs.detach(), trials.lengths)
        scored = ~trials.conditions["catch"]
        right = (chose == trials.conditions["choice"]) & scored
        n_scored = int(scored.sum())
        result = {"correct": float(right.sum()) / n_scored if n_scored else float("nan"),
                  "loss": masked_mse(outputs.detach(), trials.targets, trials.mask),
                  "n_scored": n_scored, "per_condition": []}
        for condition in self.conditions():
            here = scored.clone()
            for k, v in condition.items():
                here &= trials.conditions[k] == v
            n = int(here.sum())
            result["per_condition"].append({**condition, "correct": float((right & here).sum()) / n if n else float("nan"),
                                            "n": n})
        levels = self.psychometric_levels(trials.conditions)
        if levels is not None:
            result["psychometric"] = psychometric(levels[scored], chose[scored] == 0)
        return result

    def criterion(self, history: list) -> bool:
        """pycog's rule: the mean ``correct`` of the last ``criterion_window`` validations exceeds
        ``target_performance`` (a fraction here, a percentage in pycog)."""
        if not history:
            return False
        recent = [h["correct"] for h in history[-self.criterion_window:]]
        return sum(recent) / len(recent) > self.target_performance
