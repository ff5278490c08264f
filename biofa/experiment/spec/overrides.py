"""``[quick]`` and ``--set``: the overrides every study kind applies, read the same way.

A spec's ``[quick]`` table (with ``quick=True``) comes first, then the ``--set key=value`` items
in order; a value is parsed as TOML (bare words are strings). Each study kind then applies the
items to its own tables (:func:`biofa.experiment.spec.grid.from_dict`,
:func:`biofa.experiment.conservation.spec.from_dict`).
"""

from __future__ import annotations

import warnings

from ...errors import BiofaWarning, SpecError
from .paths import flatten, parse_value

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
