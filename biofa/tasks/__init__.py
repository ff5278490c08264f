"""Cognitive tasks of systems neuroscience as batches of trials in time.

The tasks Song, Yang & Wang (2016) train E/I networks on (perceptual decision, context-dependent
integration, multisensory integration, parametric working memory), Murray's (2019) periodic
target and sequential classification, each a :class:`Task` that yields :class:`Trials`
(inputs, targets, mask, lengths, condition labels) and scores outputs pycog's way.

>>> import torch
>>> import biofa.tasks as bt
>>> task = bt.load("perceptual_decision")
>>> trials = task.trials(16, generator=torch.Generator().manual_seed(0))
>>> trials.inputs.shape[1:], trials.targets.shape[2]
(torch.Size([16, 2]), 2)
>>> task.score(trials.targets, trials)["correct"]
1.0

``targets[n]`` scores the output after step n (:mod:`biofa.circuit.dynamics`).
"""

from .base import Task, Trials
from .choice import ChoiceTask, decisions
from .decision import ContextDecision, Multisensory, PerceptualDecision
from .periodic import Periodic, periodic_signal
from .psychometric import cumulative_gaussian, fit_cumulative_gaussian, psychometric
from .registry import TASKS, available, load, register_task
from .sequence import Sequence
from .working_memory import WorkingMemory

__all__ = [
    "Task", "Trials", "available", "load", "register_task", "TASKS",
    "ChoiceTask", "PerceptualDecision", "ContextDecision", "Multisensory", "WorkingMemory",
    "Periodic", "Sequence", "decisions", "periodic_signal",
    "psychometric", "fit_cumulative_gaussian", "cumulative_gaussian",
]
