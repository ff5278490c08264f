"""``runs.csv`` and ``history.csv`` of a study, rebuilt from its run files.

The run files (``runs/<run_id>.json``) are the record; the two tables are views of them, in grid
order, rewritten atomically as each run finishes so they never lag the run files by more than the
run being written. :class:`Tables` reads each run file once and keeps its rows already formatted
as CSV text, so each rewrite formats only the new run and writes the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import results
from ..results import HISTORY_COLUMNS, RUN_COLUMNS
from ..spec.expand import label

#: Order of per-layer metric groups in history.csv.
METRIC_ORDER = ("weight_alignment", "update_alignment", "norm_ratio", "sign_agreement", "dale_violations", "nse")


class Tables:
    """The rows of ``runs.csv`` and ``history.csv`` for the planned ``runs`` of a study in ``out``.

    ``runs`` are the planned runs (``{"run_id", "labels", ...}``, in grid order); runs without a
    stored result have no row. :meth:`add` reads one run's file; :meth:`write` writes both tables.
    """

    def __init__(self, out: str | os.PathLike, runs: list[dict]):
        self.out = Path(out)
        self.runs = runs
        self.label_columns = list(runs[0]["labels"]) if runs else []
        self._rows: dict[str, dict] = {}
        self._history: dict[str, list[dict]] = {}
        self._history_text: dict[str, str] = {}  # per run, under self._text_columns
        self._text_columns: list[str] = []
        self._metrics: dict[str, None] = {}
        self._labels = {run["run_id"]: {k: label(v) for k, v in run["labels"].items()} for run in runs}
        for run in runs:
            self.add(run["run_id"])

    def add(self, run_id: str) -> bool:
        """Read (again) the stored result of ``run_id``; False when it has none."""
        result = results.read_result(self.out, run_id)
        self._history_text.pop(run_id, None)
        if result is None:
            self._rows.pop(run_id, None)
            self._history.pop(run_id, None)
            return False
        labels = self._labels[run_id]
        self._rows[run_id] = {**labels, **{k: result.get(k) for k in RUN_COLUMNS}}
        self._history[run_id] = [{**labels, "run_id": run_id, **entry} for entry in result.get("history", [])]
        for entry in result.get("history", []):
            for key in entry:
                if ":" in key:
                    self._metrics.setdefault(key, None)
        return True

    @property
    def rows(self) -> list[dict]:
        """The rows of runs.csv, in grid order."""
        return [self._rows[r["run_id"]] for r in self.runs if r["run_id"] in self._rows]

    def write(self, *, history: bool = True) -> list[dict]:
        """Write runs.csv (and history.csv) atomically; returns the rows of runs.csv."""
        rows = self.rows
        results.write_csv(self.out / "runs.csv", self.label_columns + RUN_COLUMNS, rows)
        if history:
            order = {m: i for i, m in enumerate(METRIC_ORDER)}
            metrics = sorted(self._metrics, key=lambda c: order.get(c.split(":")[0], len(order)))
            columns = self.label_columns + HISTORY_COLUMNS + metrics
            if columns != self._text_columns:  # a run brought a new metric: format every run again
                self._history_text.clear()
                self._text_columns = columns
            parts = [results.csv_text(columns, [])]
            for run in self.runs:
                run_id = run["run_id"]
                if run_id in self._history and run_id not in self._history_text:
                    self._history_text[run_id] = results.csv_text(columns, self._history[run_id], header=False)
                parts.append(self._history_text.get(run_id, ""))
            results.atomic_write_text(self.out / "history.csv", "".join(parts))
        return rows


def write_tables(out: str | os.PathLike, runs: list[dict], *, history: bool = True) -> list[dict]:
    """Write runs.csv (and history.csv) from the stored results of ``runs``; returns the rows."""
    return Tables(out, runs).write(history=history)
