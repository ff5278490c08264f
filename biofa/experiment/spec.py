"""Experiment specs: read a TOML file, apply ``[quick]`` and ``--set`` overrides, validate.

The schema is documented in :mod:`biofa.experiment`. Every key has a validator; a bad value raises
:class:`~biofa.errors.SpecError` with a message that names the file, the table and the key::

    experiments/x.toml: [train] epochs must be a positive integer, got -1
"""

from __future__ import annotations

import copy
import difflib
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .._resources import packaged_dir
from ..errors import BiofaWarning, SpecError

#: Short names accepted in ``[grid]``, ``[quick]``, ``[per_rule.*]`` and ``--set``.
ALIASES = {
    "feedback": "model.feedback",
    "sign": "model.sign",
    "norm": "model.norm",
    "batch_manhattan": "model.batch_manhattan",
    "lr": "train.optimizer.lr",
    "momentum": "train.optimizer.momentum",
    "weight_decay": "train.optimizer.weight_decay",
    "train.lr": "train.optimizer.lr",
    "train.momentum": "train.optimizer.momentum",
    "train.weight_decay": "train.optimizer.weight_decay",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
}
SECTIONS = ("experiment", "data", "model", "train", "metrics", "log", "grid", "per_rule", "quick",
            "search", "compare", "executor", "published")
#: A spec file must have at least one of these tables (an empty file is a mistake, not a study).
RUN_TABLES = ("data", "model", "grid")
#: Keys that say where and how a run executes, not what it computes: left out of its run id, so
#: a study resumed on another device, with other threads or logs, keeps the runs it finished.
EXECUTION_KEYS = ("train.device", "train.threads", "train.keep_last", "log")
#: Values of ``sign`` / ``norm`` that mean "no constraint" (TOML has no null).
NONE_WORDS = ("free", "none")


# -- value checks: each returns None when the value is fine, else what was expected -------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v):
    return None if _is_int(v) and v > 0 else "a positive integer"


def _nonneg_int(v):
    return None if _is_int(v) and v >= 0 else "a non-negative integer"


def _positive_num(v):
    return None if _is_num(v) and v > 0 else "a positive number"


def _nonneg_num(v):
    return None if _is_num(v) and v >= 0 else "a non-negative number"


def _unit_interval_open(v):
    return None if _is_num(v) and 0 <= v < 1 else "a number in [0, 1)"


def _validation(v):
    ok = (_is_num(v) and 0 <= v < 1) or (_is_int(v) and v >= 0)
    return None if ok else "a fraction in [0, 1) or a whole number of examples"


def _bool(v):
    return None if isinstance(v, bool) else "true or false"


def _string(v):
    return None if isinstance(v, str) else "a string"


def _name(v):
    return None if isinstance(v, str) and v else "a non-empty string"


def _folder_name(v):
    plain = isinstance(v, str) and v not in ("", ".", "..") and not any(c in v for c in "/\\\0")
    return None if plain else "a plain folder name (no '/' or '\\', not '.' or '..')"


def _one_of(*choices):
    def check(v):
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)
    return check


def _feedback(v):
    from ..feedback import RULES
    if isinstance(v, dict):
        v = v.get("rule")
    return None if v in RULES else "a feedback rule, one of " + ", ".join(sorted(RULES)) + \
        " (or a table {rule = ..., ...})"


def _sign(v):
    from ..constraints import SIGNS
    if isinstance(v, dict):
        v = v.get("rule")
    ok = v in NONE_WORDS or v in SIGNS
    return None if ok else "one of " + ", ".join(repr(c) for c in (*NONE_WORDS, *sorted(SIGNS)))


def _norm(v):
    from ..constraints import NORMS
    if isinstance(v, dict):
        v = v.get("rule")
    ok = v in NONE_WORDS or v in NORMS
    return None if ok else "one of " + ", ".join(repr(c) for c in (*NONE_WORDS, *sorted(NORMS)))


def _layers(v):
    ok = isinstance(v, list) and all(isinstance(x, str) or _is_int(x) for x in v)
    return None if ok else "a list of layer names or indices (-1: the read-out)"


def _milestones(v):
    ok = isinstance(v, list) and all(_is_int(m) and m > 0 for m in v) and v == sorted(v)
    return None if ok else "an increasing list of positive integers"


def _betas(v):
    ok = isinstance(v, list) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v)
    return None if ok else "a list of two numbers in [0, 1)"


def _device(v):
    from .devices import valid_name
    return None if valid_name(v) else "one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"


def _gamma(v):
    return None if _is_num(v) and 0 < v <= 1 else "a number in (0, 1]"


def _strings(v):
    return None if isinstance(v, list) and all(isinstance(s, str) for s in v) else "a list of strings"


def _options(v):
    ok = isinstance(v, dict) and all(isinstance(x, (str, int)) and not isinstance(x, bool) or x is True
                                     for x in v.values())
    return None if ok else "a table of sbatch option = value (strings, integers or true)"


#: Every known key, by table, with its check and default (``None``: no default, optional).
SCHEMA: dict[str, dict[str, tuple]] = {
    "experiment": {"name": (_folder_name, None), "description": (_string, ""),
                   "kind": (_one_of("grid", "conservation_laws"), "grid")},
    "data": {"name": (_name, "mnist1d"), "validation": (_validation, 0.1),
             "normalize": (_bool, True), "seed": (_nonneg_int, 0)},
    "model": {"name": (_name, None), "circuit": (_name, None), "feedback": (_feedback, "bp"),
              "sign": (_sign, "free"), "norm": (_norm, "none"), "free_norm": (_layers, None),
              "batch_manhattan": (_bool, False),
              "init_scale": (_positive_num, None), "feedback_init_scale": (_positive_num, None)},
    "train": {"epochs": (_positive_int, 10), "batch_size": (_positive_int, 64),
              "loss": (_one_of("auto", "cross_entropy", "mse"), "auto"),
              "dtype": (_one_of("float32", "float64"), "float32"),
              "eval_batch_size": (_positive_int, 1024), "device": (_device, "cpu"),
              "threads": (_positive_int, 1), "keep_last": (_bool, False)},
    "train.optimizer": {"name": (_one_of("sgd", "adam", "adamw", "rmsprop"), "sgd"),
                        "lr": (_positive_num, 0.01), "momentum": (_unit_interval_open, 0.0),
                        "weight_decay": (_nonneg_num, 0.0), "nesterov": (_bool, False),
                        "betas": (_betas, None)},
    "train.schedule": {"name": (_one_of("none", "step", "multistep", "cosine"), "none"),
                       "milestones": (_milestones, None), "step_size": (_positive_int, None),
                       "gamma": (_gamma, 0.1)},
    "metrics": {"alignment": (_bool, True), "update_alignment": (_bool, True),
                "every": (_positive_int, 1), "update_batch": (_positive_int, 256),
                "invariants": (_bool, False), "min_norm": (_bool, False)},
    "log": {"tensorboard": (_bool, False)},
    # where runs execute with --executor slurm (biofa.experiment.executors.slurm); not part of a
    # run's configuration, so it never changes run ids
    "executor": {"partition": (_name, None), "time_min": (_positive_int, 60),
                 "cpus_per_task": (_positive_int, 1), "gpus_per_task": (_nonneg_int, 0),
                 "mem_gb": (_positive_num, None), "array_parallelism": (_positive_int, None),
                 "runs_per_job": (_positive_int, 1), "setup": (_strings, None),
                 "signal_delay_s": (_positive_int, None), "max_requeues": (_nonneg_int, 3),
                 "account": (_name, None), "qos": (_name, None), "constraint": (_name, None),
                 "sbatch": (_options, None)},
}
#: Tables whose unknown keys are passed on as options (to biofa.data.load / biofa.models.build).
OPEN_TABLES = ("data", "model")


def canonical(path: str) -> str:
    """The full dotted path of a key given by its short name (``"lr"`` → ``"train.optimizer.lr"``)."""
    return ALIASES.get(path, path)


def display(path: str) -> str:
    """The short column name of a grid path (``"model.feedback"`` → ``"feedback"``)."""
    short = {"model.feedback": "feedback", "model.sign": "sign", "model.norm": "norm",
             "model.batch_manhattan": "batch_manhattan"}
    return short.get(path, path)


def flatten(table: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1}}`` → ``{"train.lr": 1}`` (inline tables of values are kept whole
    for keys whose value may be a table: feedback, sign, norm, schedule)."""
    out = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and canonical(path) not in _TABLE_VALUED:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


_TABLE_VALUED = ("model.feedback", "model.sign", "model.norm")


def get_path(tree: dict, path: str, default=None):
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_path(tree: dict, path: str, value) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def parse_value(text: str):
    """A ``--set`` value as TOML (``3``, ``0.1``, ``[0, 1]``, ``true``, ``"x"``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


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


def resolve_path(spec: str | Path) -> Path:
    """The spec file for ``spec``: a path, or the name of a packaged experiment (``quickstart``)."""
    path = Path(spec)
    if path.is_file():
        return path
    packaged = packaged_dir("experiments")
    for candidate in (packaged / f"{spec}.toml", packaged / str(spec)):
        if candidate.is_file():
            return candidate
    if (packaged_dir("circuits") / f"{spec}.toml").is_file():
        raise SpecError(_circuit_message(str(spec)))
    names = sorted(p.stem for p in packaged.glob("*.toml"))
    raise SpecError(f"{spec}: no such experiment spec file, and no packaged experiment of that name "
                    f"(packaged: {', '.join(names) or 'none'})")


def _circuit_message(circuit: str, source: str | None = None) -> str:
    """What to do with a circuit spec given where an experiment spec is expected."""
    what = f"{source}: a circuit spec ([populations], [synapses])" if source else \
        f"{circuit}: a packaged circuit"
    return (f"{what}, not an experiment spec. To train it, name it in an experiment spec's [model] "
            f"table, circuit = {circuit!r} (see the packaged experiment dale_circuits), then "
            f"`biofa run` that spec; in Python, biofa.circuit.load({circuit!r}) builds it")


def load(spec: str | Path, *, quick: bool = False, overrides: list[str] | dict | None = None) -> Spec:
    """Read, override and validate an experiment spec.

    Parameters
    ----------
    spec : path of a TOML file, or the name of a packaged experiment.
    quick : apply the spec's ``[quick]`` table (a smaller, faster version of the study).
    overrides : ``["train.epochs=3", ...]`` (values parsed as TOML) or ``{path: value}``;
        applied after ``[quick]``. A grid key (``feedback=fa``) replaces that grid dimension.
    """
    path = resolve_path(spec)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            tree = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{source}: not valid TOML: {err}") from None
    if "populations" in tree:  # an experiment spec has no such table
        raise SpecError(_circuit_message(source, source))
    if not any(table in tree for table in RUN_TABLES):
        raise SpecError(f"{source}: the spec says nothing to run: give at least one of "
                        f"{', '.join(f'[{t}]' for t in RUN_TABLES)} (`biofa run example` shows every table)")
    return from_dict(tree, source=source, quick=quick, overrides=overrides, default_name=path.stem)


def from_dict(tree: dict, *, source: str = "<spec>", quick: bool = False, overrides=None,
              default_name: str = "experiment") -> Spec:
    """Validate a spec given as nested dicts (what ``tomllib`` returns); see :func:`load`."""
    tree = copy.deepcopy(tree)
    if get_path(tree, "experiment.kind") == "conservation_laws":
        raise SpecError(f"{source}: [experiment] kind = {tree['experiment']['kind']!r} is not a grid of "
                        "runs; run it with `biofa run` (biofa.experiment.conservation.load/run)")
    origins: dict[str, str] = {}
    for section in tree:
        if section not in SECTIONS:
            raise SpecError(f"{source}: unknown table [{section}]{_suggest(section, SECTIONS)}; "
                            f"expected some of {', '.join(f'[{s}]' for s in SECTIONS)}")
        if not isinstance(tree[section], dict):
            raise SpecError(f"{source}: {section} must be a table [{section}], got {tree[section]!r}")
    if quick and not tree.get("quick"):
        warnings.warn(f"{source}: --quick, but the spec has no [quick] table: running the full study",
                      BiofaWarning, stacklevel=2)
    if quick:
        for path, value in flatten(tree.get("quick", {})).items():
            _apply_override(tree, path, value, source, "[quick]")
            origins[canonical(path)] = "[quick]"
    if isinstance(overrides, dict):
        overrides = [(k, v) for k, v in overrides.items()]
    for item in overrides or []:
        if isinstance(item, str):
            if "=" not in item:
                raise SpecError(f"--set {item}: expected key=value, e.g. --set train.epochs=3")
            key, _, text = item.partition("=")
            item = (key.strip(), parse_value(text.strip()))
        key, value = item
        _apply_override(tree, key, value, source, "--set")
        origins[canonical(key)] = "--set"
    return _validate(tree, source, quick, origins, default_name)


def _apply_override(tree, path, value, source, origin):
    path = canonical(path)
    if path.startswith("grid."):
        tree.setdefault("grid", {})[path[5:]] = value
        return
    from .search_spec import override_search
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
    fixed = ("grid", "per_rule", "quick", "search", "compare", "published")
    if section not in SECTIONS or section in fixed or "." not in path:
        raise SpecError(f"{source} ({origin}): unknown key {path!r}; expected a dotted path such as "
                        "'train.epochs', 'data.name' or a grid key such as 'feedback'")
    set_path(tree, path, value)


def _suggest(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(source, origins, path):
    origin = origins.get(path)
    return f"{source} ({origin})" if origin else source


def _check(source, origins, table, key, value):
    checker = SCHEMA.get(table, {}).get(key, (None,))[0]
    if checker is None:
        return
    expected = checker(value)
    if expected is not None:
        where = _where(source, origins, f"{table}.{key}")
        raise SpecError(f"{where}: [{table}] {key} must be {expected}, got {value!r}")


def _fill_table(tree, table, source, origins) -> dict:
    given = get_path(tree, table, {})
    if not isinstance(given, dict):
        if table in ("train.schedule", "train.optimizer") and isinstance(given, str):
            given = {"name": given}
        else:
            raise SpecError(f"{_where(source, origins, table)}: [{table}] must be a table, got {given!r}")
    known = SCHEMA[table]
    out = {}
    for key, value in given.items():
        if f"{table}.{key}" in SCHEMA:
            continue  # a sub-table, filled on its own
        if key not in known and table not in OPEN_TABLES:
            raise SpecError(f"{_where(source, origins, f'{table}.{key}')}: unknown key [{table}] {key}"
                            f"{_suggest(key, known)}; expected some of {', '.join(known)}")
        _check(source, origins, table, key, value)
        out[key] = value
    for key, (_, default) in known.items():
        if key not in out and default is not None:
            out[key] = default
    return out


def _validate(tree, source, quick, origins, default_name) -> Spec:
    train = tree.get("train", {})
    if isinstance(train, dict):
        for key in ("lr", "momentum", "weight_decay"):  # [train] lr = ... is short for [train.optimizer]
            if key in train:
                optimizer = train.setdefault("optimizer", {})
                if isinstance(optimizer, str):
                    optimizer = train["optimizer"] = {"name": optimizer}
                if isinstance(optimizer, dict) and key in optimizer:
                    raise SpecError(f"{source}: [train] {key} is given twice (also in [train.optimizer])")
                optimizer[key] = train.pop(key)
    experiment = _fill_table(tree, "experiment", source, origins)
    base = {
        "data": _fill_table(tree, "data", source, origins),
        "model": _fill_table(tree, "model", source, origins),
        "train": _fill_table(tree, "train", source, origins),
        "metrics": _fill_table(tree, "metrics", source, origins),
        "log": _fill_table(tree, "log", source, origins),
    }
    for sub in ("optimizer", "schedule"):
        base["train"][sub] = _fill_table(tree, f"train.{sub}", source, origins)
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
    _check_schedule(base["train"]["schedule"], source, origins)

    grid_table = tree.get("grid", {})
    grid: dict[str, list] = {}
    for key, values in flatten(grid_table).items():
        path = canonical(key)
        if not isinstance(values, list) or not values:
            raise SpecError(f"{_where(source, origins, 'grid.' + key)}: [grid] {key} must be a "
                            f"non-empty list of values, got {values!r}")
        if path in grid:
            raise SpecError(f"{source}: [grid] {key} is given twice (as {key!r} and another alias)")
        for value in values:
            _check_run_value(path, value, source, origins, f"[grid] {key}")
        from .grid import label
        names = [label(v) for v in values]
        if len(set(names)) != len(names):
            raise SpecError(f"{_where(source, origins, 'grid.' + key)}: [grid] {key} has two values named "
                            f"alike ({', '.join(names)}); give each table value its own label")
        grid[path] = values
    grid.setdefault("seed", [0])

    per_rule: dict[str, dict] = {}
    from ..feedback import RULES
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
            _check_run_value(path, value, source, origins, f"[per_rule.{rule}] {key}")
            entries[path] = value
        per_rule[rule] = entries

    from .search_spec import validate_compare, validate_search
    search = validate_search(tree, base, grid, per_rule, source, origins)
    compare = validate_compare(tree, grid, source, origins)
    from .published import validate_published
    validate_published(tree, grid, search, source, origins)
    name = experiment.get("name", default_name)
    return Spec(source=source, name=name, description=experiment.get("description", ""), base=base,
                grid=grid, per_rule=per_rule, quick=quick, tree=tree, search=search, compare=compare,
                executor=_fill_table(tree, "executor", source, origins))


def without_execution_keys(config: dict) -> dict:
    """A run's configuration less :data:`EXECUTION_KEYS` (what identifies the run)."""
    config = copy.deepcopy(config)
    for path in EXECUTION_KEYS:
        table, _, key = path.rpartition(".")
        (get_path(config, table, {}) if table else config).pop(key, None)
    return config


def _check_run_value(path, value, source, origins, label):
    """Validate one value that a grid or per-rule table puts at ``path``."""
    if path == "seed":
        if not (_is_int(value) and value >= 0):
            raise SpecError(f"{_where(source, origins, 'grid.seed')}: {label} values must be "
                            f"non-negative integers, got {value!r}")
        return
    table, _, key = path.rpartition(".")
    if table not in SCHEMA:
        raise SpecError(f"{source}: {label}: {path!r} is not a spec key; expected a dotted path into "
                        "[data], [model], [train] or [metrics] (e.g. 'train.optimizer.lr') or "
                        "feedback, sign, norm, seed")
    if key not in SCHEMA[table] and table not in OPEN_TABLES:
        raise SpecError(f"{source}: {label}: unknown key [{table}] {key}{_suggest(key, SCHEMA[table])}")
    if isinstance(value, dict) and "label" in value:  # a grid value's name (biofa.experiment.grid.label)
        if not label.startswith("[grid]") or not isinstance(value["label"], str) or not value["label"]:
            raise SpecError(f"{_where(source, origins, path)}: {label}: 'label' names a [grid] value and "
                            f"must be a non-empty string, got {value!r}")
        value = {k: v for k, v in value.items() if k != "label"}
    checker = SCHEMA[table].get(key, (None,))[0]
    if checker is not None:
        expected = checker(value)
        if expected is not None:
            raise SpecError(f"{_where(source, origins, path)}: {label} must be {expected}, got {value!r}")


def _check_schedule(schedule, source, origins):
    name = schedule["name"]
    if name == "multistep" and "milestones" not in schedule:
        raise SpecError(f"{source}: [train.schedule] milestones must be given for name = 'multistep'")
    if name == "step" and "step_size" not in schedule:
        raise SpecError(f"{source}: [train.schedule] step_size must be given for name = 'step'")
