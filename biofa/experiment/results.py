"""Result files of a study, each written atomically (a temporary file in the same folder, then
``os.replace``), so a study killed at any moment never leaves a half-written file.

Layout of a results folder::

    runs/<run_id>.json   one per finished run (ok or failed): config, summary, per-epoch history
    runs/<run_id>/       its checkpoints best.pt, last.pt and TensorBoard logs (biofa.experiment.checkpoints)
    runs.csv             a row per run of the grid that has finished
    history.csv          a row per run and epoch (epoch 0 = before training), per-layer metrics
    report.md, *.png     written by biofa.experiment.report / figures
    spec.toml            the resolved spec the study ran with
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

_TMP_PREFIX = ".tmp-biofa-"

#: runs.csv columns after the grid labels, in order.
RUN_COLUMNS = [
    "run_id", "status", "reason", "notes", "model", "data", "epochs", "epochs_done",
    "best_epoch", "best_val_acc", "best_val_loss",
    "test_acc_at_best_val", "test_loss_at_best_val", "test_acc_final", "test_loss_final",
    "final_train_loss", "final_train_acc", "final_val_acc", "final_val_loss",
    "time_s", "started_at", "finished_at",
]
#: history.csv columns after the grid labels and before the per-layer metrics.
HISTORY_COLUMNS = ["run_id", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "time_s"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tempfile in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporary files a killed study left behind in ``folder`` and ``folder/runs``."""
    for sub in (Path(folder), Path(folder) / "runs"):
        if sub.is_dir():
            for p in sub.glob(_TMP_PREFIX + "*"):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass


def _clean(value):
    """JSON cannot hold NaN/inf portably: store them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_path(out: str | os.PathLike, run_id: str) -> Path:
    return Path(out) / "runs" / f"{run_id}.json"


def write_result(out, result: dict) -> Path:
    path = result_path(out, result["run_id"])
    atomic_write_text(path, json.dumps(_clean(result), indent=1, sort_keys=True))
    return path


def read_result(out, run_id: str) -> dict | None:
    """The stored result of ``run_id``, or None when the run has not finished."""
    path = result_path(out, run_id)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.loads(fh.read())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (dicts) under ``columns`` atomically; missing cells are empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buffer.getvalue())


def read_csv(path) -> tuple[list[str], list[dict]]:
    """Columns and rows of a CSV file; numeric cells become floats, empty cells None."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        columns = next(reader, [])
        rows = [{c: _parse(v) for c, v in zip(columns, line)} for line in reader]
    return columns, rows


def cell_text(value) -> str:
    """A cell read back by :func:`read_csv` as text again (``1.0`` → ``"1"``, None → ``""``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def condition(row: dict, keys: list[str]) -> tuple:
    """The texts of ``row``'s values under ``keys`` (a condition, a candidate)."""
    return tuple(cell_text(row.get(k)) for k in keys)


def _parse(text: str):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text
