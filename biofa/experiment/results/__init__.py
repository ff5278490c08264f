"""The study folder on disk: every file written atomically, one writer at a time.

:mod:`.files` writes and reads the run files, ``plan.json`` and CSV tables and holds the folder
lock; :mod:`.environment` records the machine and versions of each session in
``environment.json``. Everything above (the runner, the executors, the report) writes through
here, so no result is ever half-written.
"""

from __future__ import annotations

from .files import (HISTORY_COLUMNS, HOLDER_NAME, LOCK_NAME, PLAN_NAME, RUN_COLUMNS, SPEC_NAME, TMP_PREFIX, FolderLock,
                    atomic_write_bytes, atomic_write_text, cell_text, condition, csv_text, holder_text, make_folder,
                    parse_cell, read_csv, read_plan, read_result, read_spec, remove_stale_temporaries, result_path,
                    utc_now, write_csv, write_plan, write_result, write_spec)

__all__ = ["HISTORY_COLUMNS", "HOLDER_NAME", "LOCK_NAME", "PLAN_NAME", "RUN_COLUMNS", "TMP_PREFIX",
           "FolderLock", "atomic_write_bytes", "atomic_write_text", "cell_text", "condition", "csv_text",
           "holder_text", "make_folder", "parse_cell", "read_csv", "read_plan", "read_result", "read_spec", "remove_stale_temporaries",
           "result_path", "utc_now", "write_csv", "write_plan", "write_result", "write_spec", "SPEC_NAME"]
