"""Key paths of a spec: short names (aliases), dotted paths into nested tables, and the
``[quick]`` / ``--set key=value`` overrides every study kind reads the same way.

Every spelling of a key goes through :data:`ALIASES` once, here: ``lr``, ``train.lr`` and
``train.optimizer.lr`` are one key, ``train.optimizer.lr``. A spec's ``[quick]`` table (with
``quick=True``) comes first, then the ``--set`` items in order, each value parsed as TOML (bare
words are strings); each study kind applies them to its own tables.
"""

from __future__ import annotations

import sys
import warnings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ...errors import BiofaWarning, SpecError


#: Short names accepted in ``[grid]``, ``[quick]``, ``[per_rule.*]`` and ``--set``.
ALIASES = {
    "feedback": "model.feedback",
    "sign": "model.sign",
    "norm": "model.norm",
    "batch_manhattan": "model.batch_manhattan",
    "ei": "model.ei",
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
             "model.batch_manhattan": "batch_manhattan", "model.ei": "ei"}
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


_TABLE_VALUED = ("model.feedback", "model.sign", "model.norm", "model.ei")


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


QUICK, SET = "[quick]", "--set"


def override_items(tree: dict, *, source: str, quick: bool, overrides, example: str) -> list[tuple]:
    """``(key, value, origin)`` for each entry of ``[quick]`` (when ``quick``), then of ``overrides``
    (``["key=value", ...]``, ``[(key, value), ...]`` or ``{key: value}``); ``origin`` is
    ``"[quick]"`` or ``"--set"``. ``example`` is a key=value shown when an item has no ``=``.

    Warns (:class:`~biofa.errors.BiofaWarning`) when ``quick`` is asked of a spec without ``[quick]``.
    """
    if quick and not tree.get("quick"):
        warnings.warn(f"{source}: --quick, but the spec has no [quick] table: running the full study",
                      BiofaWarning, stacklevel=3)
    items = [(key, value, QUICK) for key, value in flatten(tree.get("quick", {})).items()] if quick else []
    if isinstance(overrides, dict):
        overrides = list(overrides.items())
    for item in overrides or []:
        if isinstance(item, str):
            if "=" not in item:
                raise SpecError(f"--set {item}: expected key=value, e.g. --set {example}")
            key, _, text = item.partition("=")
            item = (key.strip(), parse_value(text.strip()))
        key, value = item
        items.append((key, value, SET))
    return items
