"""The numbers a report presents, from a study's ``runs.csv`` rows: per condition, the runs it
reports (with ``[search]``: those of the candidate chosen on validation, see :mod:`.selection`),
the mean and 95 % t interval over seeds of each score (:mod:`.stats`), and the declared
comparisons (:mod:`.comparisons`).

Test scores are read here only for the runs already chosen: the test score at the best
validation epoch (``test_acc_at_best_val``), in percent for classification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import comparisons, selection, stats
from ..results import cell_text, condition


@dataclass
class ConditionSummary:
    """One condition: its reported runs and the intervals of their scores (None: no finished run)."""

    condition: tuple
    runs: list[dict]
    n_ok: int
    test: stats.Interval | None        # test score at the best validation epoch
    test_final: stats.Interval | None  # test score after the last epoch
    val: stats.Interval | None         # best validation score
    best_epoch: stats.Interval | None
    choice: selection.Choice | None = None


@dataclass
class Summary:
    classification: bool
    scale: float                       # 100 for accuracies in percent, 1 for losses
    conditions: dict[tuple, ConditionSummary]
    choices: dict | None               # {condition: Choice} with [search], else None
    comparisons: list = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)

    @property
    def n_per_condition(self) -> list[int]:
        """The number of finished seeds of each condition, sorted and distinct."""
        return sorted({c.n_ok for c in self.conditions.values()})


def columns(classification: bool) -> tuple[str, str, str]:
    """(test @ best val, test @ final, best val) columns of ``runs.csv`` for the task."""
    if classification:
        return "test_acc_at_best_val", "test_acc_final", "best_val_acc"
    return "test_loss_at_best_val", "test_loss_final", "best_val_loss"


def analyse(study: dict) -> Summary:
    """The :class:`Summary` of a study read by :func:`biofa.experiment.report.read_study`."""
    runs, keys = study["runs"], study["conditions"]
    search = study.get("search") or {}
    classification = any(r.get("test_acc_final") is not None for r in runs)
    scale = 100.0 if classification else 1.0
    choices = selection.choose(runs, keys, search) if search else None
    chosen = selection.selected_runs(choices) if search else None
    test_col, final_col, val_col = columns(classification)
    groups: dict[tuple, list] = {}
    for row in runs:
        groups.setdefault(condition(row, keys), [])
        if chosen is None or row["run_id"] in chosen:
            groups[condition(row, keys)].append(row)
    summaries = {}
    for cond, rows in groups.items():
        ok = [r for r in rows if r.get("status") == "ok"]

        def interval(column, factor=scale, ok=ok):
            return stats.t_interval([r[column] * factor for r in ok if stats.finite([r.get(column)])])
        summaries[cond] = ConditionSummary(cond, rows, len(ok), interval(test_col), interval(final_col),
                                           interval(val_col), interval("best_epoch", 1.0),
                                           choices[cond] if choices else None)
    per_seed = {cond: {cell_text(r.get("seed")): (r.get(test_col) * scale if r.get("status") == "ok"
                                                  and stats.finite([r.get(test_col)]) else None)
                       for r in s.runs} for cond, s in summaries.items()}
    declared = study.get("compare") or {}
    seeds = sorted({cell_text(r.get("seed")) for r in runs if r.get("seed") is not None},
                   key=lambda s: (len(s), s))
    return Summary(classification, scale, summaries, choices,
                   comparisons.compare(per_seed, keys, declared), seeds)


def reported(study: dict, summary: Summary) -> dict:
    """``study`` with only the runs the summary reports (with ``[search]``, each condition's chosen
    candidate), for the per-layer tables and figures."""
    if summary.choices is None:
        return study
    ids = {r["run_id"] for s in summary.conditions.values() for r in s.runs}
    return {**study, "runs": [r for r in study["runs"] if r["run_id"] in ids],
            "history": [h for h in study["history"] if h.get("run_id") in ids]}


def final_layer_values(study: dict, metric: str, epoch: int | None = None
                       ) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Layers measured for ``metric`` and, per run id, its value at the last epoch that has one
    (at ``epoch`` when given: 0 is the initialisation)."""
    layers, per_run = [], {}
    prefix = metric + ":"
    for row in study["history"]:
        if epoch is not None and row.get("epoch") != epoch:
            continue
        for key, value in row.items():
            if key.startswith(prefix) and isinstance(value, float):
                layer = key[len(prefix):]
                if layer not in layers:
                    layers.append(layer)
                per_run.setdefault(row["run_id"], {})[layer] = value
    return layers, per_run
