"""Choice of each condition's ``[search]`` candidate on validation only.

A *condition* is one combination of the grid values other than the seed; a *candidate* is one
combination of the ``[search]`` values. Every candidate of a condition ran once per seed. The
score of a candidate is the mean over its finished seeds of each run's best validation score
(best validation accuracy; lowest validation loss for regression). The chosen candidate is the
first under the order

1. fewer failed runs (a candidate that diverged on some seed loses to one that did not, however
   well its surviving seeds did),
2. better score (higher accuracy, lower loss); scores equal to 10 significant digits are tied
   (a mean of the same accuracies in another order may differ in the last bit),
3. earlier in the ``[search]`` lists (the first list varies slowest): write a list in the order
   you prefer on a tie, e.g. ascending learning rates choose the smaller one.

Only the validation columns of ``runs.csv`` (``best_val_acc``, ``best_val_loss``) and ``status``
are read here; test scores are never looked at until the choice is made. Candidates with no
finished run are not eligible; with a study still running, scores are over the seeds finished.

A choice at the smallest or largest value a numeric key searched is flagged (*at the edge*): the
best value may lie outside the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..results import condition
from ..spec.expand import value_text

#: Columns of ``runs.csv`` the choice reads besides the condition and search columns: no test score.
READ_COLUMNS = ("run_id", "seed", "status", "best_val_acc", "best_val_loss")


def score_column(rows) -> tuple[str, bool]:
    """(column, higher is better): best validation accuracy when any run has one, else loss."""
    if any(_finite(r.get("best_val_acc")) for r in rows):
        return "best_val_acc", True
    return "best_val_loss", False


@dataclass
class Candidate:
    """One ``[search]`` combination of one condition: its values, runs and validation score."""

    values: dict[str, str]           # search column -> value text
    position: int                    # index in the product of the [search] lists
    runs: list[dict] = field(default_factory=list)
    n_ok: int = 0
    n_failed: int = 0
    score: float | None = None       # mean validation score over the ok runs

    @property
    def eligible(self) -> bool:
        return self.n_ok > 0


@dataclass
class Choice:
    """A condition's candidates (in ``[search]`` order), the chosen one and its edge flags."""

    condition: tuple
    candidates: list[Candidate]
    selected: Candidate | None
    column: str
    higher_is_better: bool
    edges: list[str] = field(default_factory=list)


def _rounded(score: float) -> float:
    """``score`` to 10 significant digits: the precision at which two scores count as tied."""
    return float(f"{score:.10g}")


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def candidate_values(search: dict[str, list]) -> list[dict[str, str]]:
    """Every combination of ``{column: [values]}`` as ``{column: text}``, first list slowest."""
    import itertools
    columns = list(search)
    return [dict(zip(columns, (value_text(v) for v in combo)))
            for combo in itertools.product(*(search[c] for c in columns))]


def choose(rows: list[dict], condition_keys: list[str], search: dict[str, list]) -> dict[tuple, Choice]:
    """The choice per condition from ``runs.csv`` rows.

    ``search`` maps each search column (as in ``runs.csv``) to its candidate values, in the
    spec's order. Returns ``{condition: Choice}`` in the order conditions first appear in ``rows``.
    """
    rows = [{c: r.get(c) for c in (*condition_keys, *search, *READ_COLUMNS)} for r in rows]
    column, higher = score_column(rows)
    combos = candidate_values(search)
    position = {tuple(c.values()): i for i, c in enumerate(combos)}
    by_condition: dict[tuple, dict[tuple, Candidate]] = {}
    for row in rows:
        cond = condition(row, condition_keys)
        key = condition(row, list(search))
        table = by_condition.setdefault(cond, {})
        if key not in position:  # a value no longer in [search] (an older, wider study): skip it
            continue
        cand = table.setdefault(key, Candidate(dict(zip(search, key)), position[key]))
        cand.runs.append(row)
        if row.get("status") == "ok" and _finite(row.get(column)):
            cand.n_ok += 1
        else:
            cand.n_failed += 1
    choices = {}
    for cond, table in by_condition.items():
        candidates = [table.get(tuple(c.values())) or Candidate(c, i) for i, c in enumerate(combos)]
        for cand in candidates:
            values = [r[column] for r in cand.runs if r.get("status") == "ok" and _finite(r.get(column))]
            if values:
                cand.score = math.fsum(values) / len(values)
        eligible = [c for c in candidates if c.eligible]
        sign = -1.0 if higher else 1.0
        selected = min(eligible, key=lambda c: (c.n_failed, sign * _rounded(c.score), c.position),
                       default=None)
        choices[cond] = Choice(cond, candidates, selected, column, higher,
                               edges(selected.values, search) if selected else [])
    return choices


def edges(chosen: dict[str, str], search: dict[str, list]) -> list[str]:
    """``"lr=0.01 is the largest value searched"`` for each numeric key chosen at an end of its
    range (keys with a single value, or non-numeric values, have no edge)."""
    out = []
    for column, values in search.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) != len(values) or len(set(numbers)) < 2:
            continue
        short = column.rpartition(".")[2]
        text = chosen[column]
        if text == value_text(max(numbers)):
            out.append(f"{short}={text} is the largest value searched")
        elif text == value_text(min(numbers)):
            out.append(f"{short}={text} is the smallest value searched")
    return out


def selected_runs(choices: dict[tuple, Choice]) -> set[str]:
    """The run ids of every condition's chosen candidate."""
    return {r["run_id"] for choice in choices.values() if choice.selected
            for r in choice.selected.runs if "run_id" in r}
