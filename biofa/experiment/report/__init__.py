"""From a study's run files to what a reader sees: ``runs.csv``, ``history.csv``, ``report.md``,
figures.

- :mod:`.tables` writes ``runs.csv`` and ``history.csv`` from the run files as runs finish;
- :mod:`.selection` chooses each condition's ``[search]`` candidate on validation only;
- :mod:`.stats` gives t intervals, paired tests and Holm's adjustment; :mod:`.comparisons` applies
  them to the ``[compare]`` entries;
- :mod:`.summary` puts selection, intervals and comparisons together per condition;
- :mod:`.figures` draws the PNG figures and :mod:`.render` writes ``report.md``.

Everything here reads the CSV files back, so ``biofa report DIR`` regenerates the report of any
finished or partial study. A new metric's column lands in ``history.csv`` by itself; a new table
goes in :mod:`.render`, a new figure in :mod:`.figures`.
"""

from __future__ import annotations

from .render import missing_runs, read_study, render, results_table, write_report
from .tables import Tables, write_tables

__all__ = ["write_report", "read_study", "missing_runs", "render", "results_table", "Tables", "write_tables"]
