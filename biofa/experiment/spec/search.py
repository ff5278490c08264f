"""Validation of a spec's ``[search]`` and ``[compare]`` tables (the rest is in :mod:`.grid`).

``[search]`` maps dotted keys to candidate lists; every condition of the grid is run at every
combination of them (their Cartesian product), and :mod:`biofa.experiment.report.selection` picks one per condition on
validation. ``[compare]`` maps a grid key to ``[a, b]``: the paired difference b - a is reported
for every combination of the other grid keys; ``"*"`` on one side stands for every other value of
that key (``feedback = ["bp", "*"]``: each rule against bp).
"""

from __future__ import annotations

from ...errors import SpecError
from .expand import value_text
from .paths import canonical, display, flatten
from .schema import check_run_value, value_lists

#: Keys that cannot be searched: they define the conditions or the seeds.
_NOT_SEARCHABLE = ("seed", "model.feedback")
#: The wildcard of a ``[compare]`` pair.
ANY = "*"


def override_search(tree, path, value) -> bool:
    """``search.<key>`` or a key that ``[search]`` holds: replace that key's candidate list (a
    single value becomes a one-candidate list, which fixes the key). True if it was one."""
    search = tree.get("search")
    if path.startswith("search."):
        path = canonical(path[len("search."):])
    elif not (isinstance(search, dict) and any(canonical(k) == path for k in flatten(search))):
        return False
    if not isinstance(tree.get("search"), dict):
        tree["search"] = {}
    flat = {k: v for k, v in flatten(tree["search"]).items() if canonical(k) != path}
    flat[path] = value if isinstance(value, list) else [value]
    tree["search"] = flat
    return True


def validate_search(tree: dict, base: dict, grid: dict, per_rule: dict, source: str,
                    origins: dict) -> dict[str, list]:
    """``{full dotted path: candidates}`` of ``tree["search"]``; writes the canonical form back into
    ``tree`` (so the resolved spec.toml a study writes holds what was searched)."""
    table = tree.get("search", {})
    if not isinstance(table, dict):
        raise SpecError(f"{source}: search must be a table [search] of key = [values], got {table!r}")
    search: dict[str, list] = {}
    for key, path, values, where in value_lists(table, "search", source, origins, what="candidate values",
                                                origin_by_path=True):
        if path in _NOT_SEARCHABLE:
            raise SpecError(f"{source}: [search] cannot search {key}: it defines the conditions (put "
                            "it in [grid])")
        if path in grid:
            raise SpecError(f"{source}: [search] {key} is also a [grid] key; keep one of them (a grid "
                            "key is reported for every value, a search key is chosen on validation)")
        for rule, entries in per_rule.items():
            if path in entries:
                raise SpecError(f"{source}: [per_rule.{rule}] {path} is also a [search] key; keep one "
                                "of them (remove it from [per_rule] to search it for every rule)")
        if len({value_text(v) for v in values}) != len(values):  # 1 and 1.0 are one column value
            raise SpecError(f"{where}: [search] {key} repeats a value: {values!r}")
        for value in values:
            check_run_value(path, value, source, origins, f"[search] {key}")
        search[path] = values
    if search and base.get("data", {}).get("validation") == 0:
        raise SpecError(f"{source}: [search] chooses on the validation split, but [data] validation "
                        "= 0; set [data] validation to a fraction such as 0.1")
    if "search" in tree:
        tree["search"] = {k: list(v) for k, v in search.items()}
    return search


def validate_compare(tree: dict, grid: dict, source: str, origins: dict) -> dict[str, tuple]:
    """``{full dotted grid path: (a, b)}`` of ``tree["compare"]`` with a and b as value labels.

    A value must be in that key's grid list unless the list came from ``--quick`` or ``--set``
    (a narrowed grid); comparisons whose values are not run are then left out of the report.
    """
    table = tree.get("compare", {})
    if not isinstance(table, dict):
        raise SpecError(f"{source}: compare must be a table [compare] of key = [a, b], got {table!r}")
    compare: dict[str, tuple] = {}
    for key, pair in flatten(table).items():
        path = canonical(key)
        if path == "seed":
            raise SpecError(f"{source}: [compare] {key}: runs are paired by seed, so seeds cannot be "
                            "compared; name a grid key such as sign or feedback")
        if path not in grid:
            keys = ", ".join(display(k) for k in grid if k != "seed") or "none"
            raise SpecError(f"{source}: [compare] {key} is not a [grid] key (grid keys: {keys})")
        if not (isinstance(pair, list) and len(pair) == 2):
            raise SpecError(f"{source}: [compare] {key} must be a list of two values [a, b] (b - a is "
                            f"reported; \"*\" is every other value), got {pair!r}")
        labels = tuple(ANY if v == ANY else value_text(v) for v in pair)
        if labels.count(ANY) == 2 or labels[0] == labels[1]:
            raise SpecError(f"{source}: [compare] {key} must name two different values, got {pair!r}")
        narrowed = path in origins or f"grid.{key}" in origins or f"grid.{path}" in origins
        known = [value_text(v) for v in grid[path]]
        for value in labels:
            if value != ANY and value not in known and not narrowed:
                raise SpecError(f"{source}: [compare] {key}: {value!r} is not in [grid] {key} "
                                f"({', '.join(known)})")
        compare[path] = labels
    if "compare" in tree:
        tree["compare"] = {k: list(v) for k, v in compare.items()}
    return compare
