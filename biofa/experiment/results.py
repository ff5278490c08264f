"""Result files of a study, each written atomically (a temporary file in the same folder, then
``os.replace``), so a study killed at any moment never leaves a half-written file.

Layout of a results folder::

    runs/<run_id>.json   one per finished run (ok or failed): config, summary, per-epoch history
    runs/<run_id>/       its checkpoints best.pt, last.pt and TensorBoard logs (biofa.experiment.run.checkpoints)
    runs.csv             a row per run of the grid that has finished
    history.csv          a row per run and epoch (epoch 0 = before training), per-layer metrics
    report.md, *.png     written by biofa.experiment.report
    spec.toml            the resolved spec the study ran with
    plan.json            every run of the grid (id and labels), so a report can tell what is missing
    environment.json     versions, platform and threads of each session that ran the study
    .biofa.lock          held by the one process writing the folder (its details: .biofa.lock.json)

Files follow the user's umask (``0o666 & ~umask``), like files any other program writes. An
:class:`OSError` raised while writing names the file it was writing.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import socket
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ..errors import ConfigError, FolderBusyError

TMP_PREFIX = ".tmp-biofa-"
LOCK_NAME = ".biofa.lock"
HOLDER_NAME = ".biofa.lock.json"
PLAN_NAME = "plan.json"
#: The folder of per-run result files and checkpoints (a record has none).
RUNS_DIR = "runs"

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


def utc_now() -> str:
    """The time now, UTC, to the second, as ISO 8601 text (the timestamps of result files)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tempfile in the same folder + ``os.replace``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    except OSError as err:
        raise _naming(err, path.parent) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise


def _naming(err: OSError, path) -> OSError:
    """``err`` with ``path`` as its file name (``fh.write`` raises ENOSPC without one)."""
    if err.errno is None or err.filename is not None:
        return err
    return OSError(err.errno, err.strerror, str(path))  # the matching subclass, e.g. PermissionError


def _umask() -> int:
    """The process's umask: from /proc on Linux, else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


#: The resolved spec a study ran with, at the top of its folder.
SPEC_NAME = "spec.toml"


def write_spec(out: str | os.PathLike, tree: dict, *, source: str, quick: bool) -> None:
    """Write ``spec.toml``: the resolved spec ``tree`` (what the study ran with, every override
    applied), under a comment naming its source file and whether ``--quick`` was given."""
    header = f"# Resolved spec of this study (source: {source}{', --quick' if quick else ''})\n"
    atomic_write_text(Path(out) / SPEC_NAME, header + tomli_w.dumps(tree))


def read_spec(out: str | os.PathLike) -> tuple[dict, bool]:
    """``(tree, quick)`` of a study folder's ``spec.toml`` (``({}, False)`` without one)."""
    path = Path(out) / SPEC_NAME
    if not path.is_file():
        return {}, False
    text = path.read_text()
    quick = text.split("\n", 1)[0].endswith(", --quick)")
    try:
        return tomllib.loads(text), quick
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def make_folder(out: Path) -> None:
    """Create the results folder ``out`` (and its parents); an :class:`OSError` names it."""
    if out.exists() and not out.is_dir():
        raise OSError(errno.ENOTDIR, "exists and is not a folder (give --out a folder)", str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise err if err.filename else OSError(err.errno, err.strerror, str(out)) from None


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporary files a killed study left behind in ``folder``, ``folder/runs`` and the
    runs' checkpoint folders (``runs/<id>/``: this module's and :func:`biofa.save_checkpoint`'s)."""
    runs = Path(folder) / RUNS_DIR
    stale = [p for sub in (Path(folder), runs) if sub.is_dir() for p in sub.glob(TMP_PREFIX + "*")]
    if runs.is_dir():
        for run_folder in (p for p in runs.iterdir() if p.is_dir()):
            stale += list(run_folder.glob(TMP_PREFIX + "*")) + list(run_folder.glob(".*.pt.*.tmp"))
    for p in stale:
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
    return Path(out) / RUNS_DIR / f"{run_id}.json"


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


def write_plan(out, runs: list[dict]) -> None:
    """Record the planned runs of a study (ids and labels, grid order) in ``out/plan.json``."""
    plan = [{"run_id": r["run_id"], "labels": r["labels"]} for r in runs]
    atomic_write_text(Path(out) / PLAN_NAME, json.dumps({"runs": plan}, indent=1))


def read_plan(out) -> list[dict] | None:
    """The planned runs recorded in ``out/plan.json``; None when there is no (readable) plan."""
    try:
        with open(Path(out) / PLAN_NAME, encoding="utf-8") as fh:
            runs = json.load(fh)["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return runs if isinstance(runs, list) else None


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_text(columns: list[str], rows: list[dict], *, header: bool = True) -> str:
    """``rows`` (dicts) under ``columns`` as CSV text; missing cells are empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def write_csv(path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (dicts) under ``columns`` atomically; missing cells are empty."""
    atomic_write_text(path, csv_text(columns, rows))


def read_csv(path) -> tuple[list[str], list[dict]]:
    """Columns and rows of a CSV file; numeric cells become floats, empty cells None."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        columns = next(reader, [])
        rows = [{c: parse_cell(v) for c, v in zip(columns, line)} for line in reader]
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


def parse_cell(text: str):
    """A CSV cell as :func:`read_csv` reads it: ``""`` → None, a number → float, else the text."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


class FolderLock:
    """One writer per study folder: an exclusive :mod:`filelock` lock on ``out/.biofa.lock``.

    The holder writes its pid, host, start time and command to ``out/.biofa.lock.json`` so that a
    second process can name it. The operating system releases the lock when the holder exits,
    however it exits (a stale ``.biofa.lock.json`` is simply overwritten).
    """

    def __init__(self, out: str | os.PathLike):
        import filelock
        self.out = Path(out)
        self._lock = filelock.FileLock(str(self.out / LOCK_NAME), timeout=0)

    def acquire(self) -> "FolderLock":
        """Take the lock now or raise :class:`~biofa.errors.FolderBusyError` naming the holder."""
        import filelock
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise FolderBusyError(f"{self.out}: another biofa process is writing this study folder "
                                  f"({holder_text(self.out)}); wait for it to finish, or stop it and "
                                  "run again to resume") from None
        except OSError as err:
            raise _naming(err, self.out / LOCK_NAME) from None
        try:
            atomic_write_text(self.out / HOLDER_NAME, json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(),
                "since": utc_now(),
                "command": " ".join(sys.argv)}, indent=1))
        except BaseException:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                os.unlink(self.out / HOLDER_NAME)
            except OSError:
                pass
            self._lock.release()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_text(out: str | os.PathLike) -> str:
    """Who holds the lock of ``out``, from its ``.biofa.lock.json``: ``"pid 12 on host, since ..."``."""
    try:
        with open(Path(out) / HOLDER_NAME, encoding="utf-8") as fh:
            info = json.load(fh)
        text = f"pid {info['pid']} on {info['host']} since {info['since']}"
        return text + (f": {info['command']}" if info.get("command") else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "its details are not written yet"
