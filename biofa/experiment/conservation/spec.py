"""The spec of a conservation-laws study (``[experiment] kind = "conservation_laws"``).

It is not a grid of classifier runs: its tables are the settings of the three measurements of
:mod:`biofa.experiment.conservation.measure`, each validated here (a bad key or value raises
:class:`~biofa.errors.SpecError` naming the file, table and key). ``[quick]`` and ``--set``
take dotted keys such as ``drift.lrs = [0.1, 0.01]``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ...errors import SpecError
from ..spec.paths import override_items
from ..spec.paths import set_path
from ..spec.schema import check_tables
from ..spec.values import is_int, is_num, nonempty_string, positive_int, positive_num, string, suggest

KIND = "conservation_laws"


def _widths(v):
    ok = isinstance(v, list) and len(v) >= 3 and all(is_int(w) and w > 0 for w in v)
    return None if ok else "a list of at least three positive integers (input, hidden..., output)"


def _positive_list(v):
    ok = isinstance(v, list) and v and all(is_num(x) and x > 0 for x in v) and len(set(v)) == len(v)
    return None if ok else "a non-empty list of distinct positive numbers"


def _seeds(v):
    ok = isinstance(v, list) and v and all(is_int(s) and s >= 0 for s in v) and len(set(v)) == len(v)
    return None if ok else "a non-empty list of distinct non-negative integers"


def _subset(*choices):
    def check(v):
        ok = isinstance(v, list) and v and all(c in choices for c in v) and len(set(v)) == len(v)
        return None if ok else "a non-empty list of distinct values from " + ", ".join(map(repr, choices))
    return check


def _tolerance(v):
    return None if is_num(v) and 0 < v < 1e-3 else "a number in (0, 1e-3)"


#: table -> key -> (check, default). Every key has a default: a spec may give only [experiment].
SCHEMA: dict[str, dict[str, tuple]] = {
    "experiment": {"name": (nonempty_string, None), "description": (string, ""), "kind": (None, KIND)},
    "drift": {"widths": (_widths, [20, 50, 40, 5]), "samples": (positive_int, 100),
              "networks": (_subset("linear", "relu"), ["linear", "relu"]),
              "lrs": (_positive_list, [0.1, 0.01, 0.001]), "time": (positive_num, 1.0),
              "seeds": (_seeds, [0, 1, 2]), "points": (positive_int, 20),
              "flow": (_subset("linear", "relu"), ["linear"]),
              "rtol": (_tolerance, 1e-10), "atol": (_tolerance, 1e-12)},
    "alignment": {"widths": (_widths, [20, 50, 40, 5]), "samples": (positive_int, 100),
                  "init_scale": (positive_num, 0.01), "lr": (positive_num, 0.01),
                  "steps": (positive_int, 3000), "seeds": (_seeds, [0, 1, 2]), "points": (positive_int, 40)},
    "min_norm": {"d": (positive_int, 100), "samples": (positive_int, 30), "hidden": (positive_int, 50),
                 "outputs": (positive_int, 1), "rules": (_subset("fa", "bp"), ["fa", "bp"]),
                 "init_scales": (_positive_list, [1e-4, 1e-3, 1e-2, 1e-1, 1.0]),
                 "lr": (positive_num, 0.1), "steps": (positive_int, 1000), "seeds": (_seeds, [0, 1, 2])},
}
SECTIONS = (*SCHEMA, "quick")


@dataclass
class ConservationSpec:
    """A validated conservation-laws spec: ``settings[table][key]`` with every default filled in."""

    source: str
    name: str
    description: str
    settings: dict
    quick: bool = False
    tree: dict | None = None


def from_dict(tree: dict, *, source: str = "<spec>", quick: bool = False, overrides=None,
              default_name: str = "conservation_laws") -> ConservationSpec:
    """Validate a conservation-laws spec given as nested dicts; ``overrides`` as ``--set``."""
    tree = copy.deepcopy(tree)
    check_tables(tree, SECTIONS, source, KIND)
    origins = {}
    for key, value, origin in override_items(tree, source=source, quick=quick, overrides=overrides,
                                             example="drift.lrs=[0.1,0.01]"):
        table = key.split(".")[0]
        if table not in SCHEMA or key.count(".") != 1:
            raise SpecError(f"{source} ({origin}): unknown key {key!r}; expected table.key with a table "
                            f"among {', '.join(SCHEMA)}, e.g. 'drift.lrs'")
        set_path(tree, key, value)
        origins[key] = origin
    settings = {}
    for table, known in SCHEMA.items():
        given = tree.get(table, {})
        out = {}
        for key, value in given.items():
            if key not in known:
                raise SpecError(f"{source}: unknown key [{table}] {key}{suggest(key, known)}; expected "
                                f"some of {', '.join(known)}")
            check = known[key][0]
            expected = None if check is None else check(value)
            if expected is not None:
                where = f"{source} ({origins[f'{table}.{key}']})" if f"{table}.{key}" in origins else source
                raise SpecError(f"{where}: [{table}] {key} must be {expected}, got {value!r}")
            out[key] = value
        for key, (_, default) in known.items():
            if key not in out and default is not None:
                out[key] = copy.deepcopy(default)
        settings[table] = out
    if settings["experiment"]["kind"] != KIND:
        raise SpecError(f"{source}: [experiment] kind must be {KIND!r} here, got {settings['experiment']['kind']!r}")
    flow = [n for n in settings["drift"]["flow"] if n not in settings["drift"]["networks"]]
    if flow:
        raise SpecError(f"{source}: [drift] flow names {flow} which [drift] networks does not include")
    if settings["min_norm"]["d"] <= settings["min_norm"]["samples"]:
        raise SpecError(f"{source}: [min_norm] d must exceed samples (over-parameterised regression), got "
                        f"d = {settings['min_norm']['d']}, samples = {settings['min_norm']['samples']}")
    experiment = settings.pop("experiment")
    return ConservationSpec(source=source, name=experiment.get("name", default_name),
                            description=experiment["description"], settings=settings, quick=quick, tree=tree)


__all__ = ["KIND", "SCHEMA", "ConservationSpec", "from_dict"]
