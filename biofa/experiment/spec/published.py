"""A spec's ``[published]`` table: reference numbers the report shows beside the study's own.

.. code-block:: toml

    [published]
    source = "Sanfiz & Akrout 2021, LeNet on MNIST, top-1 test error (%)"
    metric = "test_error"          # or "test_acc" (both in %)
    [published.values]             # keyed by condition (the grid values other than the seed)
    bp = 0.91
    fa = 1.70

With several condition keys (grid keys other than the seed and the ``[search]`` keys) ``keys``
names the nesting order: ``keys = ["sign", "feedback"]`` and ``[published.values.dale] bp = ...``.
A condition without a value shows "–".

The report puts a *published* column in its main table and, for ``test_error``, the study's test
error at the best validation epoch beside it,

.. math:: e = 100 - a, \\qquad [e_\\mathrm{low}, e_\\mathrm{high}] = [100 - a_\\mathrm{high}, 100 - a_\\mathrm{low}],

(a: the test accuracy in %, an affine map of the same seeds, so the t interval maps exactly).
"""

from __future__ import annotations

import dataclasses
import math

from ...errors import SpecError
from .expand import value_text
from .paths import canonical, display

#: Metrics a published value may be given in, and the column title of each.
METRICS = {"test_error": "test error (%)", "test_acc": "test acc (%)"}


@dataclasses.dataclass(frozen=True)
class Published:
    """Reference numbers: ``values[(value of keys[0], value of keys[1], ...)] = number`` in
    ``metric``, citing ``source``."""

    source: str
    metric: str
    keys: tuple
    values: dict

    def value(self, condition_keys, condition) -> float | None:
        """The published number of a report's condition (its values under ``condition_keys``)."""
        where = dict(zip(condition_keys, condition))
        return self.values.get(tuple(where.get(k) for k in self.keys))

    @property
    def title(self) -> str:
        return METRICS[self.metric]


def _flat(table, depth: int, where: str, prefix=()) -> dict[tuple, float]:
    """``{(key_1, ..., key_depth): number}`` of a table nested ``depth`` levels deep."""
    out = {}
    for key, value in table.items():
        path = (*prefix, str(key))
        if isinstance(value, dict):
            if len(path) >= depth:
                raise SpecError(f"{where}: [published.values] {'.'.join(path)} is a table, but [published] "
                                f"keys has {depth} key(s); give a number there")
            out.update(_flat(value, depth, where, path))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if len(path) != depth:
                raise SpecError(f"{where}: [published.values] {'.'.join(path)} = {value!r} needs {depth} "
                                "level(s), one per [published] keys entry (e.g. "
                                "[published.values.<first>] <second> = ...)")
            out[path] = float(value)
        else:
            raise SpecError(f"{where}: [published.values] {'.'.join(path)} must be a number, got {value!r}")
    return out


def parse(table, keys: list[str], where: str) -> Published:
    """The :class:`Published` of a ``[published]`` table for a study whose conditions are ``keys``."""
    if not isinstance(table, dict):
        raise SpecError(f"{where}: published must be a table [published], got {table!r}")
    unknown = sorted(set(table) - {"source", "metric", "keys", "values"})
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown} in [published]; expected source, metric, keys, "
                        "values")
    source, metric, values = table.get("source"), table.get("metric"), table.get("values")
    if not isinstance(source, str) or not source.strip():
        raise SpecError(f"{where}: [published] source must say where the numbers come from (a non-empty "
                        f"string such as \"Author 2021, Table 2\"), got {source!r}")
    if metric not in METRICS:
        raise SpecError(f"{where}: [published] metric must be one of {', '.join(map(repr, METRICS))}, "
                        f"got {metric!r}")
    if not isinstance(values, dict) or not values:
        raise SpecError(f"{where}: [published] values must be a non-empty table of condition = number, "
                        f"got {values!r}")
    if not keys:
        raise SpecError(f"{where}: [published] needs conditions to key its values by; the [grid] has "
                        "only seeds")
    order = table.get("keys")
    if order is None and len(keys) > 1:
        raise SpecError(f"{where}: [published] keys must name the nesting order of values for the "
                        f"condition keys {', '.join(keys)}, e.g. keys = {list(keys)!r}")
    if order is not None:
        if not isinstance(order, list) or not all(isinstance(k, str) for k in order):
            raise SpecError(f"{where}: [published] keys must be a list of grid keys, got {order!r}")
        order = [display(canonical(k)) for k in order]
        if sorted(order) != sorted(keys):
            raise SpecError(f"{where}: [published] keys {order!r} must name each condition key once: "
                            f"{', '.join(keys)}")
    order = tuple(order or keys)
    return Published(source.strip(), metric, order, _flat(values, len(order), where))


def validate_published(tree: dict, grid: dict, search: dict, source: str, origins: dict) -> Published | None:
    """Check ``tree["published"]`` against the spec's conditions (the grid keys other than the seed
    and the ``[search]`` keys): every value's key names a grid value, unless that grid key was
    narrowed by ``--quick`` or ``--set`` (its values are then simply not shown)."""
    if "published" not in tree:
        return None
    keys = {display(k): k for k in grid if k != "seed" and k not in search}
    published = parse(tree["published"], list(keys), source)
    for cond in published.values:
        for key, value in zip((keys[k] for k in published.keys), cond):
            known = [value_text(v) for v in grid[key]]
            narrowed = key in origins or any(o.startswith("grid.") and canonical(o[5:]) == key
                                             for o in origins)
            if value not in known and not narrowed:
                raise SpecError(f"{source}: [published.values] {'.'.join(cond)}: {value!r} is not in "
                                f"[grid] {display(key)} ({', '.join(known)})")
    return published


def from_tree(tree: dict, keys: list[str]) -> Published | None:
    """The :class:`Published` of a resolved ``spec.toml`` for a report whose condition columns are
    ``keys`` (None without ``[published]``)."""
    return parse(tree["published"], keys, "spec.toml") if "published" in tree else None
