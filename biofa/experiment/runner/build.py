"""What a run trains: its model (a ``biofa.models`` architecture or a circuit), optimizer,
learning-rate schedule and loss, built from the run's configuration.

The runner, the study's preflight and the checkpoint loader build through these functions, so a
model rebuilt to load a checkpoint is the model the run trained.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ... import circuit, models, tasks
from ...errors import ConfigError, SpecError
from ...feedback import rule_name
from ...nn import scale_learning_rates
from ..spec.schema import NONE_WORDS

def _none(value):
    """None for the words that mean "no constraint" (``free``, ``none``), else the value."""
    return None if isinstance(value, str) and value in NONE_WORDS else value


def build_model(model_config: dict, splits, generator: torch.Generator | None = None, seed: int = 0):
    """The model of a run: ``biofa.models.build`` or a circuit from ``biofa.circuit``."""
    options = dict(model_config)
    if "circuit" in options:
        return _build_circuit(options, splits, seed)
    feedback = options.pop("feedback")
    sign = _none(options.pop("sign"))
    norm = _none(options.pop("norm"))
    batch_manhattan = options.pop("batch_manhattan")
    name = options.pop("name")
    return models.build(name, input_shape=tuple(splits.input_shape), n_outputs=splits.n_outputs,
                        feedback=feedback, sign=sign, norm=norm, batch_manhattan=batch_manhattan,
                        generator=generator, **options)


def _circuit_spec(options: dict) -> tuple[str, dict]:
    """The circuit spec a run's ``[model]`` names, with the run's feedback / sign / norm written
    into every synapse table and ``sizes`` (population name → size) into its populations.

    Only the keys the experiment sets are written (``sign = "free"`` lifts Dale's law from
    populations that have a type; without a ``sign`` the circuit's own constraints stay).
    """
    name = options.pop("circuit")
    overrides = {k: options.pop(k) for k in ("feedback", "sign", "norm") if k in options}
    sizes = options.pop("sizes", None) or {}
    if options.pop("batch_manhattan", False):
        raise ConfigError(f"circuit {name!r}: batch_manhattan is not an option of circuits")
    if options:
        raise ConfigError(f"circuit {name!r}: unknown option(s) {sorted(options)}; a circuit takes "
                          "feedback, sign, norm and sizes (everything else is in its own spec)")
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
    populations = spec.get("populations", {})
    if not isinstance(sizes, dict):
        raise ConfigError(f"circuit {name!r}: sizes must be a table of population name = size, got {sizes!r}")
    for pop, size in sizes.items():
        if pop not in populations:
            raise ConfigError(f"circuit {name!r}: sizes.{pop}: no population {pop!r}; the circuit has "
                              f"{', '.join(populations)}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"circuit {name!r}: sizes.{pop} must be a positive integer, got {size!r}")
        populations[pop]["size"] = size
    return name, spec


def _build_circuit(options: dict, splits, seed: int):
    """A circuit that a study trains at its steady state ``circuit(x)`` (see :func:`_circuit_spec`)."""
    name, spec = _circuit_spec(options)
    model = circuit.from_spec(spec, seed=seed)
    if model.cycle is not None:  # a study trains circuit(x), which a cyclic circuit does not have
        raise ConfigError(f"circuit {name!r}: its synapses form a cycle {' -> '.join(model.cycle)}, so it has no "
                          "steady state circuit(x) for a study to train; train it in time on a task "
                          "([task], see the guide 'Cognitive tasks') or in Python "
                          "(circuit.simulate / circuit.unroll, see the guide 'Recurrent E/I circuits in time')")
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


#: Keys of a run's ``task`` table that the runner reads; the others are the task's settings.
RUNNER_TASK_KEYS = ("name", "dt", "trials_per_epoch", "validation_per_condition", "test_per_condition",
                    "stop_at_criterion")


def load_task(task_config: dict):
    """The :class:`biofa.tasks.Task` of a run's ``task`` table and its time step."""
    settings = {k: v for k, v in task_config.items() if k not in RUNNER_TASK_KEYS}
    task = tasks.load(task_config["name"], **settings)
    return task, float(task_config.get("dt") or task.dt)


def build_task_model(model_config: dict, task, seed: int = 0):
    """The circuit of a task run, trained in time (:mod:`biofa.experiment.runner.trials`).

    A population size written ``"task"`` in the circuit spec (the packaged task circuits' input
    and output) is the task's number of inputs / outputs; a number must match them.
    """
    options = dict(model_config)
    if "circuit" not in options:
        raise ConfigError(f"[model] name = {options.get('name')!r}: a task run trains a circuit in time; give "
                          "[model] circuit = ... (e.g. 'song_ei', see `biofa list`)")
    name, spec = _circuit_spec(options)
    inp, out = spec.get("input"), spec.get("output")
    if out is None:
        raise ConfigError(f"circuit {name!r}: it has no output population; a task scores the output")
    pops = spec.get("populations", {})
    for pop, wanted, what in ((inp, task.n_inputs, "inputs"), (out, task.n_outputs, "outputs")):
        table = pops.get(pop, {})
        size = table.get("size")
        if size == "task":
            table["size"] = wanted
        elif size != wanted:
            raise ConfigError(f"circuit {name!r}: [populations.{pop}] size is {size!r}, but task {task.name!r} has "
                              f"{wanted} {what}; set it to {wanted} (or \"task\", or [model] sizes.{pop} = {wanted})")
    model = circuit.from_spec(spec, seed=seed)
    if model.output is None:
        raise ConfigError(f"circuit {name!r}: it has no output population; a task scores the output")
    return model


def make_optimizer(parameters, opt: dict) -> torch.optim.Optimizer:
    """The ``[train.optimizer]`` optimizer over ``parameters`` (tensors or parameter groups).

    A group's ``lr_scale`` (:func:`biofa.nn.parameter_groups`: DANN's corrected updates)
    multiplies its learning rate, whatever the optimizer.
    """
    name, lr, wd = opt["name"], opt["lr"], opt["weight_decay"]
    if name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=opt["momentum"], weight_decay=wd,
                                    nesterov=opt["nesterov"])
    elif name == "rmsprop":
        optimizer = torch.optim.RMSprop(parameters, lr=lr, momentum=opt["momentum"], weight_decay=wd)
    else:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        betas = tuple(opt.get("betas", (0.9, 0.999)))
        optimizer = cls(parameters, lr=lr, betas=betas, weight_decay=wd)
    scale_learning_rates(optimizer)
    return optimizer


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


def check_loss(loss: Loss, splits) -> None:
    """Raise :class:`~biofa.errors.SpecError` when cross-entropy is asked of a regression dataset."""
    if loss.kind == "cross_entropy" and splits.task != "classification":
        raise SpecError(f"[train] loss = 'cross_entropy' needs a classification dataset; "
                        f"{splits.name!r} is a regression task (use 'mse' or 'auto')")
