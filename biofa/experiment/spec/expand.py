"""Expand a grid spec's ``[grid]`` and ``[search]`` into runs: the Cartesian product over every key.

Each run is a plain dict (picklable, JSON-able) holding its full configuration, the grid values
that label it and a stable id derived from the configuration, so a study that is run again finds
the runs it already finished.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re

from ...feedback import rule_name
from ..results import cell_text, parse_cell
from .paths import display, set_path
from .schema import without_execution_keys


def label(value) -> str:
    """A short text for a grid value: ``"fa"``, ``"free"``, ``"0.01"``, ``"usf(scale=sn)"``; a table
    with a ``label`` key is named by it (``{rule = "usf", scale = "sn", label = "usf-sn"}``)."""
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        return value["label"]
    if isinstance(value, dict):
        head = value.get("rule", value.get("kind", value.get("name", "")))
        rest = ",".join(f"{k}={label(v)}" for k, v in value.items() if k not in ("rule", "kind", "name"))
        return f"{head}({rest})" if rest else str(head)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(label(v) for v in value) + "]"
    return str(value)


def unlabelled(value):
    """A grid value without its ``label`` key (the name is the grid's, not the run's configuration)."""
    if isinstance(value, dict) and "label" in value:
        return {k: v for k, v in value.items() if k != "label"}
    return value


def value_text(value) -> str:
    """The text a value has in ``runs.csv`` once read back (``1.0`` → ``"1"``, ``1e-3`` → ``"0.001"``)."""
    return cell_text(parse_cell(label(value)))


def config_hash(config: dict) -> str:
    """Eight hex digits identifying a run's configuration (less where and how it executes)."""
    text = json.dumps(without_execution_keys(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def expand(spec) -> list[dict]:
    """The runs of ``spec``, in grid order (the first grid key varies slowest, then the
    ``[search]`` keys, which vary fastest).

    A run is ``{"run_id", "labels": {column: value}, "config": {data, model, train, metrics,
    seed}}``; ``[per_rule.<rule>]`` entries are applied to runs whose feedback rule is ``<rule>``,
    ``[per_task.<task>]`` entries to runs on task ``<task>``.
    Each ``[search]`` candidate of a condition is a run per seed of its own, labelled by the search
    keys too, with ``<key><value>`` in its id (``bp-dale-lr0.001-s0-<hash>``); a spec without
    ``[search]`` gives the ids it always gave.
    """
    search = getattr(spec, "search", {}) or {}
    keys = list(spec.grid) + list(search)
    lists = [spec.grid[k] for k in spec.grid] + [search[k] for k in search]
    runs = []
    for values in itertools.product(*lists):
        config = copy.deepcopy(spec.base)
        config["seed"] = 0
        for path, value in zip(keys, values):
            if path == "seed":
                config["seed"] = value
            else:
                set_path(config, path, copy.deepcopy(unlabelled(value)))
        for path, value in spec.per_rule.get(rule_name(config["model"].get("feedback", "")), {}).items():
            set_path(config, path, copy.deepcopy(value))
        for path, value in getattr(spec, "per_task", {}).get(config.get("task", {}).get("name"), {}).items():
            set_path(config, path, copy.deepcopy(value))
        labels = {display(k): v for k, v in zip(keys, values)}
        if search:  # columns: the condition, the candidate, then the seed
            labels = {k: v for k, v in labels.items() if k != "seed"} | {"seed": labels["seed"]}
        parts = [label(v) for k, v in zip(keys, values) if k != "seed" and k not in search]
        parts += [f"{k.rpartition('.')[2]}{label(v)}" for k, v in zip(keys, values) if k in search]
        parts.append(f"s{config['seed']}")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))[:80]
        runs.append({"run_id": f"{stem}-{config_hash(config)}", "labels": labels, "config": config})
    return runs
