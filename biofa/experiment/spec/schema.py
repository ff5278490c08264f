"""The schema of a grid study: every table and key, its check and its default.

The tables and keys are documented in :mod:`biofa.experiment`. A bad value raises
:class:`~biofa.errors.SpecError` naming the file (and ``[quick]`` / ``--set`` when the value came
from there), the table and the key::

    experiments/x.toml: [train] epochs must be a positive integer, got -1
"""

from __future__ import annotations

import copy

from ...constraints import NORMS, SIGNS
from ...errors import SpecError
from ...feedback import check_value as check_feedback
from ...models import INPUTS
from ...nn import EI
from .paths import canonical, flatten, get_path
from .values import (betas, boolean, device, folder_name, gamma, is_int, layers, milestones, nonempty_string,
                     nonneg_int, nonneg_num, one_of, positive_int, positive_num, sbatch_options, string, strings, unit_interval_exclusive,
                     suggest, unit_interval_open, validation_size)

SECTIONS = ("experiment", "data", "task", "model", "train", "metrics", "log", "grid", "per_rule", "per_task", "quick",
            "search", "compare", "executor", "published")


#: A spec file must have at least one of these tables (an empty file is a mistake, not a study).
RUN_TABLES = ("data", "task", "model", "grid")


#: Keys that say where and how a run executes, not what it computes: left out of its run id, so
#: a study resumed on another device, with other threads or logs, keeps the runs it finished.
EXECUTION_KEYS = ("train.device", "train.threads", "train.keep_last", "train.checkpoint_s", "log")


#: Values of ``sign`` / ``norm`` that mean "no constraint" (TOML has no null).
NONE_WORDS = ("free", "none")


def sign_value(v):
    if isinstance(v, dict):
        v = v.get("rule")
    ok = v in NONE_WORDS or v in SIGNS
    return None if ok else "one of " + ", ".join(repr(c) for c in (*NONE_WORDS, *sorted(SIGNS)))


def norm_value(v):
    if isinstance(v, dict):
        v = v.get("rule")
    ok = v in NONE_WORDS or v in NORMS
    return None if ok else "one of " + ", ".join(repr(c) for c in (*NONE_WORDS, *sorted(NORMS)))


def ei_value(v):
    name = v.get("rule") if isinstance(v, dict) else v
    if name in EI:
        return None
    return "one of " + ", ".join(repr(c) for c in EI) + " (or a table {rule = ..., ...})" + \
        (suggest(name, EI) if isinstance(name, str) else "")


#: Every known key, by table, with its check and default (``None``: no default, optional).
SCHEMA: dict[str, dict[str, tuple]] = {
    "experiment": {"name": (folder_name, None), "description": (string, ""),
                   "kind": (one_of("grid", "conservation_laws"), "grid")},
    "data": {"name": (nonempty_string, "mnist1d"), "validation": (validation_size, 0.1),
             "normalize": (boolean, True), "seed": (nonneg_int, 0)},
    # a cognitive task instead of a data set (biofa.tasks; the runner's biofa.experiment.runner.trials);
    # the table's other keys are the task's settings
    "task": {"name": (nonempty_string, None), "dt": (positive_num, None),
             "trials_per_epoch": (positive_int, 10000), "validation_per_condition": (positive_int, 100),
             "test_per_condition": (positive_int, 100), "stop_at_criterion": (boolean, True)},
    "model": {"name": (nonempty_string, None), "circuit": (nonempty_string, None), "feedback": (check_feedback, "bp"),
              "sign": (sign_value, "free"), "norm": (norm_value, "none"), "free_norm": (layers, None),
              "free_sign": (layers, None), "ei": (ei_value, None),
              "inhibitory_fraction": (unit_interval_exclusive, None), "shunting": (boolean, None),
              "corrected": (boolean, None), "inputs": (one_of(*INPUTS), None),
              "batch_manhattan": (boolean, False),
              "init_scale": (positive_num, None), "feedback_init_scale": (positive_num, None)},
    "train": {"epochs": (positive_int, 10), "batch_size": (positive_int, 64),
              "loss": (one_of("auto", "cross_entropy", "mse"), "auto"),
              "dtype": (one_of("float32", "float64"), "float32"),
              "eval_batch_size": (positive_int, 1024), "device": (device, "cpu"),
              "threads": (positive_int, 1), "keep_last": (boolean, False),
              "checkpoint_s": (nonneg_num, 10.0), "grad_clip": (positive_num, None),
              "omega": (nonneg_num, None), "method": (one_of("bptt", "rflo", "eprop"), None),
              "online_update": (one_of("sequence", "step"), None)},
    "train.optimizer": {"name": (one_of("sgd", "adam", "adamw", "rmsprop"), "sgd"),
                        "lr": (positive_num, 0.01), "momentum": (unit_interval_open, 0.0),
                        "weight_decay": (nonneg_num, 0.0), "nesterov": (boolean, False),
                        "betas": (betas, None)},
    "train.schedule": {"name": (one_of("none", "step", "multistep", "cosine"), "none"),
                       "milestones": (milestones, None), "step_size": (positive_int, None),
                       "gamma": (gamma, 0.1)},
    "metrics": {"alignment": (boolean, True), "update_alignment": (boolean, True),
                "every": (positive_int, 1), "update_batch": (positive_int, 256),
                "invariants": (boolean, False), "min_norm": (boolean, False),
                # no default: a key absent from older specs' runs keeps their run ids
                "spectra": (boolean, None)},
    "log": {"tensorboard": (boolean, False)},
    # where runs execute with --executor slurm (biofa.experiment.executors.slurm); not part of a
    # run's configuration, so it never changes run ids
    "executor": {"partition": (nonempty_string, None), "time_min": (positive_int, 60),
                 "cpus_per_task": (positive_int, 1), "gpus_per_task": (nonneg_int, 0),
                 "mem_gb": (positive_num, None), "array_parallelism": (positive_int, None),
                 "runs_per_job": (positive_int, 1), "setup": (strings, None),
                 "signal_delay_s": (positive_int, None), "max_requeues": (nonneg_int, 3),
                 "account": (nonempty_string, None), "qos": (nonempty_string, None), "constraint": (nonempty_string, None),
                 "sbatch": (sbatch_options, None)},
}


#: Tables whose unknown keys are passed on as options (to biofa.data.load / biofa.models.build).
OPEN_TABLES = ("data", "task", "model")


def located(source, origins, path):
    origin = origins.get(path)
    return f"{source} ({origin})" if origin else source


def check_value(source, origins, table, key, value):
    checker = SCHEMA.get(table, {}).get(key, (None,))[0]
    if checker is None:
        return
    expected = checker(value)
    if expected is not None:
        where = located(source, origins, f"{table}.{key}")
        raise SpecError(f"{where}: [{table}] {key} must be {expected}, got {value!r}")


def fill_table(tree, table, source, origins) -> dict:
    given = get_path(tree, table, {})
    if not isinstance(given, dict):
        if table in ("train.schedule", "train.optimizer") and isinstance(given, str):
            given = {"name": given}
        else:
            raise SpecError(f"{located(source, origins, table)}: [{table}] must be a table, got {given!r}")
    known = SCHEMA[table]
    out = {}
    for key, value in given.items():
        if f"{table}.{key}" in SCHEMA:
            continue  # a sub-table, filled on its own
        if key not in known and table not in OPEN_TABLES:
            raise SpecError(f"{located(source, origins, f'{table}.{key}')}: unknown key [{table}] {key}"
                            f"{suggest(key, known)}; expected some of {', '.join(known)}")
        check_value(source, origins, table, key, value)
        out[key] = value
    for key, (_, default) in known.items():
        if key not in out and default is not None:
            out[key] = default
    return out


def check_run_value(path, value, source, origins, label):
    """Validate one value that a grid or per-rule table puts at ``path``."""
    if path == "seed":
        if not (is_int(value) and value >= 0):
            raise SpecError(f"{located(source, origins, 'grid.seed')}: {label} values must be "
                            f"non-negative integers, got {value!r}")
        return
    table, _, key = path.rpartition(".")
    if table not in SCHEMA:
        raise SpecError(f"{source}: {label}: {path!r} is not a spec key; expected a dotted path into "
                        "[data], [task], [model], [train] or [metrics] (e.g. 'train.optimizer.lr') or "
                        "feedback, sign, norm, seed")
    if key not in SCHEMA[table] and table not in OPEN_TABLES:
        raise SpecError(f"{source}: {label}: unknown key [{table}] {key}{suggest(key, SCHEMA[table])}")
    if isinstance(value, dict) and "label" in value:  # a grid value's name (biofa.experiment.spec.expand.label)
        if not label.startswith("[grid]") or not isinstance(value["label"], str) or not value["label"]:
            raise SpecError(f"{located(source, origins, path)}: {label}: 'label' names a [grid] value and "
                            f"must be a non-empty string, got {value!r}")
        value = {k: v for k, v in value.items() if k != "label"}
    checker = SCHEMA[table].get(key, (None,))[0]
    if checker is not None:
        expected = checker(value)
        if expected is not None:
            raise SpecError(f"{located(source, origins, path)}: {label} must be {expected}, got {value!r}")


def check_schedule(schedule, source, origins):
    name = schedule["name"]
    if name == "multistep" and "milestones" not in schedule:
        raise SpecError(f"{source}: [train.schedule] milestones must be given for name = 'multistep'")
    if name == "step" and "step_size" not in schedule:
        raise SpecError(f"{source}: [train.schedule] step_size must be given for name = 'step'")


def without_execution_keys(config: dict) -> dict:
    """A run's configuration less :data:`EXECUTION_KEYS` (what identifies the run)."""
    config = copy.deepcopy(config)
    for path in EXECUTION_KEYS:
        table, _, key = path.rpartition(".")
        (get_path(config, table, {}) if table else config).pop(key, None)
    return config


def value_lists(table: dict, name: str, source: str, origins: dict, *, what: str = "values",
                origin_by_path: bool = False):
    """``(key, full dotted path, values, where)`` for each key of a ``[grid]`` or ``[search]``
    table ``name``: every value a non-empty list, no key given twice under two aliases. ``where``
    names the file (and ``[quick]`` / ``--set`` when the list came from there)."""
    seen = set()
    for key, values in flatten(table).items():
        path = canonical(key)
        where = located(source, origins, f"{name}.{path if origin_by_path else key}")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: [{name}] {key} must be a non-empty list of {what}, got {values!r}")
        if path in seen:
            raise SpecError(f"{source}: [{name}] {key} is given twice (as {key!r} and another alias)")
        seen.add(path)
        yield key, path, values, where


def check_tables(tree: dict, sections, source: str, kind: str = "") -> None:
    """Every top-level entry of a spec ``tree`` is a table among ``sections`` (``kind``, e.g.
    ``"conservation_laws"``, is named in the message when given)."""
    in_kind = f" in a {kind} spec" if kind else ""
    for section, table in tree.items():
        if section not in sections:
            raise SpecError(f"{source}: unknown table [{section}]{suggest(section, sections)}{in_kind}; "
                            f"expected some of {', '.join(f'[{s}]' for s in sections)}")
        if not isinstance(table, dict):
            raise SpecError(f"{source}: {section} must be a table [{section}], got {table!r}")
