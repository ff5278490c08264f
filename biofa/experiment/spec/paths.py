"""Key paths of a spec: short names (aliases), dotted paths into nested tables, ``--set`` values.

Every spelling of a key goes through :data:`ALIASES` once, here: ``lr``, ``train.lr`` and
``train.optimizer.lr`` are one key, ``train.optimizer.lr``.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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
