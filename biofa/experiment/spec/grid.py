"""The spec of a grid study: a base configuration, a grid of values, per-rule values, ``[search]``.

:func:`from_dict` applies ``[quick]`` and ``--set``, fills every table's defaults from
:data:`~biofa.experiment.spec.schema.SCHEMA` and validates every value; :func:`load` reads a file.
The tables are documented in :mod:`biofa.experiment`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import SpecError
from ...feedback import RULES
from .expand import label
from .loader import read_tree
from .paths import canonical, flatten, get_path, override_items, set_path
from .published import validate_published
from .values import suggest
from .schema import RUN_TABLES, SECTIONS, check_run_value, check_schedule, check_tables, fill_table, value_lists
from .search import override_search, validate_compare, validate_search

#: The value of ``[experiment] kind`` for this kind of study (the default).
KIND = "grid"


@dataclass
class Spec:
    """A validated experiment spec.

    ``base`` is the configuration every run starts from (tables data, model, train, metrics, with
    defaults filled in); ``grid`` maps full dotted paths to their list of values; ``per_rule`` maps a
    feedback rule name to ``{path: value}`` applied to runs with that rule.
    """

    source: str
    name: str
    description: str
    base: dict
    grid: dict[str, list]
    per_rule: dict[str, dict[str, Any]]
    quick: bool = False
    tree: dict = field(default_factory=dict)
    #: ``[search]``: full dotted path -> candidate values, chosen per condition on validation.
    search: dict[str, list] = field(default_factory=dict)
    #: ``[compare]``: full dotted grid path -> (a, b) value labels; ``"*"`` is every other value.
    compare: dict[str, tuple] = field(default_factory=dict)
    #: the ``[executor]`` table with defaults filled in (used by ``--executor slurm``)
    executor: dict = field(default_factory=dict)
    #: ``[per_task.<task>]``: task name -> ``{full dotted path: value}`` for runs on that task.
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)


def load(spec: str | Path, *, quick: bool = False, overrides: list[str] | dict | None = None) -> Spec:
    """Read, override and validate a grid study's spec.

    Parameters
    ----------
    spec : path of a TOML file, or the name of a packaged experiment.
    quick : apply the spec's ``[quick]`` table (a smaller, faster version of the study).
    overrides : ``["train.epochs=3", ...]`` (values parsed as TOML) or ``{path: value}``;
        applied after ``[quick]``. A grid key (``feedback=fa``) replaces that grid dimension.
    """
    tree, source, stem = read_tree(spec)
    return from_file_tree(tree, source=source, quick=quick, overrides=overrides, default_name=stem)


def from_file_tree(tree: dict, *, source: str, quick: bool = False, overrides=None,
                   default_name: str = "experiment") -> Spec:
    """:func:`from_dict` for a tree read from a file, which must say what to run."""
    if not any(table in tree for table in RUN_TABLES):
        raise SpecError(f"{source}: the spec says nothing to run: give at least one of "
                        f"{', '.join(f'[{t}]' for t in RUN_TABLES)} (`biofa run example` shows every table)")
    return from_dict(tree, source=source, quick=quick, overrides=overrides, default_name=default_name)


def from_dict(tree: dict, *, source: str = "<spec>", quick: bool = False, overrides=None,
              default_name: str = "experiment") -> Spec:
    """Validate a spec given as nested dicts (what ``tomllib`` returns); see :func:`load`."""
    tree = copy.deepcopy(tree)
    if get_path(tree, "experiment.kind") == "conservation_laws":
        raise SpecError(f"{source}: [experiment] kind = {tree['experiment']['kind']!r} is not a grid of "
                        "runs; run it with `biofa run` (biofa.experiment.conservation.load/run)")
    check_tables(tree, SECTIONS, source)
    origins: dict[str, str] = {}
    for key, value, origin in override_items(tree, source=source, quick=quick, overrides=overrides,
                                             example="train.epochs=3"):
        _apply_override(tree, key, value, source, origin)
        origins[canonical(key)] = origin
    return _validate(tree, source, quick, origins, default_name)


def _apply_override(tree, path, value, source, origin):
    path = canonical(path)
    if path.startswith("grid."):
        tree.setdefault("grid", {})[path[5:]] = value
        return
    if override_search(tree, path, value):
        return
    grid = tree.get("grid", {})
    if path == "seed":
        tree.setdefault("grid", {})
        grid = tree["grid"]
        for key in [k for k in grid if canonical(k) == "seed"]:
            del grid[key]
        grid["seed"] = value if isinstance(value, list) else [value]
        return
    for key in list(grid):
        if canonical(key) == path:  # a --set on a grid dimension narrows that dimension
            del grid[key]
            grid[path] = value if isinstance(value, list) else [value]
            return
    section = path.split(".")[0]
    fixed = ("grid", "per_rule", "per_task", "quick", "search", "compare", "published")
    if section not in SECTIONS or section in fixed or "." not in path:
        raise SpecError(f"{source} ({origin}): unknown key {path!r}; expected a dotted path such as "
                        "'train.epochs', 'data.name' or a grid key such as 'feedback'")
    set_path(tree, path, value)


def _validate(tree, source, quick, origins, default_name) -> Spec:
    _move_optimizer_aliases(tree, source)
    experiment = fill_table(tree, "experiment", source, origins)
    base = _base(tree, source, origins)
    grid = _grid(tree, source, origins)
    per_rule = _per_rule(tree, grid, source, origins)
    per_task = _per_task(tree, grid, source, origins)
    search = validate_search(tree, base, grid, per_rule, source, origins)
    compare = validate_compare(tree, grid, source, origins)
    validate_published(tree, grid, search, source, origins)
    name = experiment.get("name", default_name)
    return Spec(source=source, name=name, description=experiment.get("description", ""), base=base,
                grid=grid, per_rule=per_rule, quick=quick, tree=tree, search=search, compare=compare,
                executor=fill_table(tree, "executor", source, origins), per_task=per_task)


def _move_optimizer_aliases(tree, source) -> None:
    """``[train] lr = ...`` (and every other ``train.X`` alias of ``train.optimizer.X``) is short
    for ``[train.optimizer]``: move it there, through the one alias table."""
    train = tree.get("train", {})
    if not isinstance(train, dict):
        return
    for key in list(train):
        path = canonical(f"train.{key}")
        if path == f"train.{key}" or not path.startswith("train.optimizer."):
            continue
        optimizer = train.setdefault("optimizer", {})
        if isinstance(optimizer, str):
            optimizer = train["optimizer"] = {"name": optimizer}
        if isinstance(optimizer, dict) and key in optimizer:
            raise SpecError(f"{source}: [train] {key} is given twice (also in [train.optimizer])")
        optimizer[path.rpartition(".")[2]] = train.pop(key)


def _base(tree, source, origins) -> dict:
    """The configuration every run starts from: tables data, model, train, metrics, log."""
    base = {table: fill_table(tree, table, source, origins)
            for table in ("data", "model", "train", "metrics", "log")}
    for sub in ("optimizer", "schedule"):
        base["train"][sub] = fill_table(tree, f"train.{sub}", source, origins)
    varied = {canonical(k) for k in flatten(tree.get("grid", {}))}  # "task.name" quoted or as a table
    if "task" in tree or any(path.startswith("task.") for path in varied):
        _task_base(tree, base, source, origins, varied)
    else:
        for key in TASK_TRAIN_KEYS:
            if key in base["train"] or f"train.{key}" in varied:
                raise SpecError(f"{source}: [train] {key} applies to runs on a [task], which train a recurrent "
                                "circuit through time")
    model = base["model"]
    if "name" in model and "circuit" in model:
        raise SpecError(f"{source}: [model] give either name or circuit, not both")
    if "name" not in model and "circuit" not in model:
        model["name"] = "mlp"
    if "circuit" in model:  # a circuit keeps its own rules and constraints unless the spec sets them
        given = get_path(tree, "model", {})
        for key in ("feedback", "sign", "norm", "batch_manhattan"):
            if key not in given:
                model.pop(key, None)
    check_schedule(base["train"]["schedule"], source, origins)
    return base


#: ``[train]`` keys that only runs on a task read.
TASK_TRAIN_KEYS = ("omega", "method", "online_update")


def _task_base(tree, base, source, origins, varied: set) -> None:
    """A study on a cognitive task: ``[task]`` replaces ``[data]`` (its trials are drawn, not
    loaded) and the model is a circuit trained in time."""
    if "data" in tree:
        raise SpecError(f"{source}: give either [data] (a data set) or [task] (a cognitive task), not both")
    del base["data"]
    base["task"] = fill_table(tree, "task", source, origins)
    if "name" not in base["task"] and "task.name" not in varied:
        raise SpecError(f"{source}: [task] name is missing; one of the tasks `biofa list` shows, "
                        "e.g. name = \"perceptual_decision\"")
    if "circuit" not in get_path(tree, "model", {}):
        raise SpecError(f"{source}: [model] circuit is missing; a [task] trains a recurrent circuit in time "
                        "(e.g. circuit = \"song_ei\")")
    grid = {canonical(k): v for k, v in flatten(tree.get("grid", {})).items()}
    methods = [base["train"].get("method", "bptt")] + list(grid.get("train.method") or [])
    updates = [base["train"].get("online_update", "sequence")] + list(grid.get("train.online_update") or [])
    _check_online(base["train"], methods, updates, source)


def _check_online(train: dict, methods: list, updates: list, source: str) -> None:
    """A local rule through time (``[train] method`` rflo or eprop) has no backward pass to
    regularise; with ``online_update = "step"`` it also changes the weights itself, by plain
    gradient steps (no optimizer state, no clipping). Under ``"sequence"`` its gradient estimate
    goes to the optimizer like BPTT's."""
    if all(m == "bptt" for m in methods):
        return
    if train.get("omega"):
        raise SpecError(f"{source}: [train] omega needs the backward pass of BPTT; [train] method "
                        "rflo/eprop has none (remove it, or use method = \"bptt\")")
    if "step" not in updates:
        return
    opt = train["optimizer"]
    if opt["name"] != "sgd" or opt["momentum"] or opt["weight_decay"] or opt.get("nesterov"):
        raise SpecError(f"{source}: [train] method rflo/eprop with online_update = \"step\" changes the weights "
                        "every step by plain gradient steps; [train.optimizer] must be name = \"sgd\" without "
                        f"momentum or weight_decay (got {opt['name']!r}), or use online_update = \"sequence\"")
    if train.get("grad_clip"):
        raise SpecError(f"{source}: [train] grad_clip clips a whole gradient; with online_update = \"step\" "
                        "method rflo/eprop applies every step's update at once (remove it, or use "
                        "online_update = \"sequence\")")


def _grid(tree, source, origins) -> dict[str, list]:
    """``{full dotted path: values}`` of ``[grid]``, with ``seed`` ([0] unless given)."""
    grid: dict[str, list] = {}
    for key, path, values, where in value_lists(tree.get("grid", {}), "grid", source, origins):
        for value in values:
            check_run_value(path, value, source, origins, f"[grid] {key}")
        names = [label(v) for v in values]
        if len(set(names)) != len(names):
            raise SpecError(f"{where}: [grid] {key} has two values named "
                            f"alike ({', '.join(names)}); give each table value its own label")
        grid[path] = values
    grid.setdefault("seed", [0])
    return grid


def _per_rule(tree, grid, source, origins) -> dict[str, dict]:
    """``{rule: {full dotted path: value}}`` of the ``[per_rule.<rule>]`` tables."""
    per_rule: dict[str, dict] = {}
    for rule, table in tree.get("per_rule", {}).items():
        if rule not in RULES:
            raise SpecError(f"{source}: [per_rule.{rule}]: {rule!r} is not a feedback rule; expected one "
                            f"of {', '.join(sorted(RULES))}")
        if not isinstance(table, dict):
            raise SpecError(f"{source}: [per_rule.{rule}] must be a table of key = value, got {table!r}")
        entries = {}
        for key, value in flatten(table).items():
            path = canonical(key)
            if path in grid:
                raise SpecError(f"{source}: [per_rule.{rule}] {key} is also a [grid] key; keep one of them")
            if path == "model.feedback" or path == "seed":
                raise SpecError(f"{source}: [per_rule.{rule}] cannot set {key}")
            check_run_value(path, value, source, origins, f"[per_rule.{rule}] {key}")
            entries[path] = value
        per_rule[rule] = entries
    return per_rule


def _per_task(tree, grid, source, origins) -> dict[str, dict]:
    """``{task: {full dotted path: value}}`` of the ``[per_task.<task>]`` tables: settings for the
    runs on one task of a study over several (e.g. a smaller budget for the longest task)."""
    from ... import tasks

    per_task: dict[str, dict] = {}
    for name, table in tree.get("per_task", {}).items():
        if name not in tasks.available():
            raise SpecError(f"{source}: [per_task.{name}]: {name!r} is not a task{suggest(name, tasks.available())}; "
                            f"expected one of {', '.join(tasks.available())}")
        if not isinstance(table, dict):
            raise SpecError(f"{source}: [per_task.{name}] must be a table of key = value, got {table!r}")
        entries = {}
        for key, value in flatten(table).items():
            path = canonical(key)
            if path in grid:
                raise SpecError(f"{source}: [per_task.{name}] {key} is also a [grid] key; keep one of them")
            if path in ("task.name", "seed"):
                raise SpecError(f"{source}: [per_task.{name}] cannot set {key}")
            check_run_value(path, value, source, origins, f"[per_task.{name}] {key}")
            entries[path] = value
        per_task[name] = entries
    return per_task
