"""Executors: where the runs of a study execute, and nothing else.

The study (:mod:`biofa.experiment.study`) decides *which* runs to do (it expands the grid and skips
finished ones), keeps the tables current and writes the report. An executor receives the runs
still to do and decides *where* they execute: :class:`~.local.LocalExecutor` runs them in this
process or over local worker processes. Every executor writes the same files the same way, so
resuming, ``--retry-failed`` and reports do not care which one ran a run.

The contract of :meth:`Executor.run`:

- Each task (a dict ``{"run_id", "labels", "config"}`` from :func:`biofa.experiment.expand`)
  is executed with :func:`execute`, wherever the executor puts it: it trains the run and writes
  ``runs/<run_id>.json`` atomically (:func:`biofa.experiment.results.write_result`).
- ``on_result(summary)`` is called in the calling process, once per task, as soon as the task's
  file exists. ``summary`` is the result without its history (:func:`summary`).
- A run that fails inside (diverges, raises) is a result with status ``"failed"``; :func:`execute`
  records it. A run whose process dies (killed, out of memory, a lost node) is recorded with
  :func:`record_lost`, and ``on_result`` is called for it too.
- An :class:`OSError` while writing a result (disk full, read-only folder) ends the study: the
  executor stops its other runs and raises that error in the calling process.
- On any exception in the calling process (Ctrl-C, SIGTERM turned into an exception, an error
  raised by ``on_result``) the executor stops every run in flight before it re-raises; unfinished
  runs leave no file and are redone on resume.
- Nothing it starts outlives the calling process: when that process is killed (SIGKILL), the
  executor's workers end within seconds on their own. Except on a batch system: the jobs of
  :class:`~.slurm.SlurmExecutor` belong to the cluster and keep running after the calling process
  stops (however it stops); running the study again follows them instead of starting them again.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import results
from ..runner import run

#: Called in the calling process with the :func:`summary` of each finished run.
OnResult = Callable[[dict], None]

#: Keys of a result that :func:`summary` leaves out (the bulky ones).
_BULKY = ("history", "config", "traceback")


class Executor(abc.ABC):
    """Where the runs of a study execute (see the module docstring for the contract)."""

    #: Short name, as given on the command line (``--executor``).
    name: str = ""

    def prepare(self, datasets: dict) -> None:
        """Receive ``{data key: Splits}`` the calling process has loaded (the study's preflight),
        before :meth:`run`; an executor may hand them to its workers instead of loading them again."""

    @abc.abstractmethod
    def run(self, tasks: Sequence[dict], out: Path, on_result: OnResult) -> None:
        """Execute every task of ``tasks``, writing ``out/runs/<run_id>.json`` for each, and call
        ``on_result(summary)`` in this process as each one finishes; return when all have."""


def summary(result: dict) -> dict:
    """A result without its history, configuration and traceback: what ``on_result`` receives."""
    return {k: v for k, v in result.items() if k not in _BULKY}


def execute(task: dict, out: str | Path, *, progress: bool = False) -> dict:
    """Train one task, write its result file into ``out``; return its :func:`summary`.

    Never raises for a failure inside the run (that is a ``"failed"`` result); raises
    :class:`OSError` when the result cannot be written.
    """
    result = run(task, progress=progress, out=out)  # out: where the run keeps its checkpoints
    results.write_result(out, result)
    return summary(result)


def record_lost(out: str | Path, task: dict, reason: str, **extra) -> dict:
    """Record ``task`` as failed because the process running it died; return its summary.

    ``extra``: more keys for the result file (the SLURM executor adds ``job_id`` and ``log``)."""
    result = {"run_id": task["run_id"], "labels": task["labels"], "config": task["config"],
              "status": "failed", "reason": reason, "notes": "", "history": [], **extra}
    results.write_result(out, result)
    return summary(result)


__all__ = ["Executor", "OnResult", "execute", "record_lost", "summary"]
