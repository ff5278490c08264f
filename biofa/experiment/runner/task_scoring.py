"""Scoring a task run's circuit: its outputs on trials, the masked squared error, the task's
scores, the trial-averaged activity, and the generators of a run's training, validation and test
trials (:mod:`biofa.experiment.runner.trials` trains with them, ``biofa evaluate`` re-scores).
"""

from __future__ import annotations

import math

import torch

from .build import load_task

#: The (trials, noise) generator streams of a run, by split: the training trials and noise, the
#: validation trials (drawn once) and the noise they are scored with, the test trials and noise.
SPLIT_STREAMS = {"train": (11, 13), "val": (22, 23), "test": (33, 34)}


def seeded(seed: int, stream: int) -> torch.Generator:
    """A generator for stream ``stream`` of the run seeded ``seed`` (:data:`SPLIT_STREAMS`)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) % (2**63 - 1))


def masked_mse(outputs: torch.Tensor, trials) -> torch.Tensor:
    """The masked mean squared error of ``outputs`` (T, batch, n_out) against the trials' targets."""
    mask = trials.mask if trials.mask.dim() == outputs.dim() else trials.mask.unsqueeze(-1).expand_as(outputs)
    return (mask * (outputs - trials.targets) ** 2).sum() / mask.sum().clamp_min(1)


def forward(model, trials, dt: float, generator=None, probe: bool = False):
    """The circuit's trajectory on ``trials`` and its outputs aligned with the targets."""
    trajectory = model.unroll(trials.inputs, dt=dt, generator=generator, probe=probe)
    return trajectory, trajectory.rates[model.output][1:]


def jsonable(value):
    """``value`` with tensors as lists and non-finite floats as None (for a result's JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def activity(model, task, trials, dt: float, generator) -> dict:
    """Trial-averaged rates of the E and I units per condition, units sorted by preference.

    A unit's preference is the output its rate favours: the sign of its mean rate difference,
    over all steps, between trials whose correct choice is 0 and trials whose choice is 1. The
    conditions are the pairs (the task's first condition label, e.g. the coherence, the context or
    the modality; the correct choice). Returns ``{"dt", "keys", "conditions", "groups"}`` with
    ``groups["E pref 0"]`` of shape (n_conditions, T): the rates averaged over the group's units
    and the condition's trials (catch trials left out). Empty for tasks without choices.
    """
    choice = trials.conditions.get("choice")
    if choice is None:
        return {}
    model.eval()
    with torch.no_grad():
        trajectory, _ = forward(model, trials, dt, generator)
    scored = choice >= 0
    first = next((k for k in trials.conditions if k not in ("catch", "choice")), None)
    keys = ([first] if first else []) + ["choice"]
    labels = torch.stack([trials.conditions[k].to(torch.float64) for k in keys], 1)
    uniq = torch.unique(labels[scored], dim=0)
    groups = {}
    for pop in model.populations:
        if pop.name in (model.input, model.output):
            continue
        rates = trajectory.rates[pop.name][1:].to(torch.float64)  # (T, batch, size)
        diff = rates[:, choice == 0].mean((0, 1)) - rates[:, choice == 1].mean((0, 1))
        for pref, units in ((0, diff >= 0), (1, diff < 0)):
            if bool(units.any()):
                groups[f"{pop.name} pref {pref}"] = torch.stack(
                    [rates[:, scored & (labels == row).all(1)][..., units].mean((1, 2)) for row in uniq])
    return {"dt": dt, "keys": keys, "conditions": uniq.tolist(), "groups": {k: v.tolist() for k, v in groups.items()}}


def evaluate_task(model, config: dict, split: str = "test") -> dict:
    """A task run's stored model scored on its ``split`` trials: the validation or test trials the
    run drew (the same generators), or fresh training trials; ``{"n", "loss", "acc", ...scores}``."""
    seed, task_cfg = int(config["seed"]), config["task"]
    task, dt = load_task(task_cfg)
    dtype = getattr(torch, config["train"]["dtype"])
    trials_stream, noise_stream = SPLIT_STREAMS[split]
    per_condition = task_cfg["test_per_condition" if split == "test" else "validation_per_condition"]
    if split == "train":
        trials = task.trials(config["train"]["batch_size"], dt=dt, generator=seeded(seed, trials_stream))
    else:
        trials = task.balanced(per_condition, dt=dt, generator=seeded(seed, trials_stream), split=split)
    trials = trials.to(dtype=dtype)
    model = model.to(dtype=dtype).eval()
    with torch.no_grad():
        _, outputs = forward(model, trials, dt, seeded(seed, noise_stream))
        scores = task.score(outputs, trials)
        loss = float(masked_mse(outputs, trials))
    acc = scores.get("correct")
    return jsonable({"n": len(trials), "loss": loss, "acc": None if acc is None else float(acc),
                      **{k: v for k, v in scores.items() if k not in ("loss", "correct")}})
