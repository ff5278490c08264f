"""Run a whole study: check the spec's data and models once, skip the runs already finished,
hand the rest to an executor (:mod:`biofa.experiment.executors`: where runs execute), keep the
tables current as runs finish, and write the report and figures.

Resuming: every finished run is stored as ``runs/<run_id>.json`` (atomically, by the process that
ran it); running the study again skips those runs and redoes only the rest. Run ids include a
hash of the run's whole configuration, so changing the spec never reuses a stale result.
One process at a time writes a study folder (:class:`~biofa.experiment.results.FolderLock`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import BiofaWarning, ConfigError, DataFileError, SpecError
from . import environment, results
from .executors import Executor
from .executors.local import LocalExecutor
from .report import Tables, write_report
from .runner import Loss, build_model, check_loss, data_key, load_data
from .runner.build import build_task_model, load_task
from .runner.devices import check as check_device
from .runner.metrics import check_metrics
from .spec import Spec, expand, label


@dataclass
class StudyOutcome:
    """What a study did: counts and the rows of runs.csv."""

    out: Path
    n_runs: int
    n_resumed: int
    n_ok: int
    n_failed: int
    rows: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failed else 0


def preflight(spec: Spec, runs: list[dict]) -> dict:
    """Load every distinct dataset and build every distinct model once, so a bad data option, a
    missing data file or a bad model option stops the study before any run starts.

    Returns the loaded datasets, ``{data key: Splits}``. Raises :class:`~biofa.errors.SpecError`
    (naming the table) or the data's :class:`~biofa.errors.DataFileError`.
    """
    for device in dict.fromkeys(run["config"]["train"].get("device", "cpu") for run in runs):
        try:
            check_device(device)
        except ConfigError as err:
            raise SpecError(f"{spec.source}: {err}") from None
    seen_data, seen_models = {}, set()
    for run in runs:
        config = run["config"]
        if "task" in config:
            _preflight_task(spec, config, seen_models)
            continue
        key = data_key(config["data"])
        if key not in seen_data:
            try:
                seen_data[key] = load_data(config["data"])
            except SpecError:
                raise
            except DataFileError as err:
                raise DataFileError(f"{spec.source}: [data] {err}") from None
            except (ConfigError, TypeError) as err:
                raise SpecError(f"{spec.source}: [data] {err}") from None
            splits = seen_data[key]
            try:
                check_loss(Loss(config["train"]["loss"], splits.task, splits.n_outputs), splits)
            except SpecError as err:
                raise SpecError(f"{spec.source}: {err}") from None
        splits = seen_data[key]
        model_key = key + repr(sorted((k, repr(v)) for k, v in config["model"].items()))
        if model_key in seen_models:
            continue
        seen_models.add(model_key)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BiofaWarning)
                model = build_model(config["model"], splits, torch.Generator().manual_seed(0))
        except (ConfigError, TypeError, ValueError) as err:
            raise SpecError(f"{spec.source}: [model] {err}") from None
        try:
            check_metrics(config["metrics"], model, splits)
        except ConfigError as err:
            raise SpecError(f"{spec.source}: {err}") from None
    return seen_data


def _preflight_task(spec: Spec, config: dict, seen: set) -> None:
    """A task run's task (its name and settings, its dt) and circuit build, and fit each other."""
    key = repr(sorted((k, repr(v)) for k, v in config["task"].items())) + repr(
        sorted((k, repr(v)) for k, v in config["model"].items()))
    if key in seen:
        return
    seen.add(key)
    try:
        task, dt = load_task(config["task"])
        task.trials(1, dt=dt, generator=torch.Generator().manual_seed(0))
    except (ConfigError, TypeError, ValueError) as err:
        raise SpecError(f"{spec.source}: [task] {err}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BiofaWarning)
            model = build_task_model(config["model"], task, 0)
    except (ConfigError, TypeError, ValueError) as err:
        raise SpecError(f"{spec.source}: [model] {err}") from None
    train = config["train"]
    if train.get("method", "bptt") != "bptt":
        learned = [s.name for s in model.feedforward if s.has_feedback and s.layer.feedback.learned]
        if learned and train.get("online_update", "sequence") == "sequence":
            raise SpecError(f"{spec.source}: [train] method {train['method']!r} with online_update = \"sequence\" "
                            f"hands its gradient to the optimizer, which does not train the learned feedback of "
                            f"synapses {learned}; use online_update = \"step\" (B moves with W there) or a "
                            "fixed-B rule")
    if config["train"].get("omega") and model.cycle is None:
        raise SpecError(f"{spec.source}: [train] omega regularises the gradient through a recurrent block, but "
                        f"circuit {config['model']['circuit']!r} has no cycle; remove omega or use a recurrent circuit")


def run_study(spec: Spec, out: str | os.PathLike, *, jobs: int = 1, progress: bool | None = None,
              retry_failed: bool = False, executor: Executor | None = None,
              on_result: Callable[[dict, int, int], None] | None = None) -> StudyOutcome:
    """Run every run of ``spec`` that has no stored result in ``out``; write all outputs.

    ``jobs`` > 1 runs over that many local worker processes (forkserver, or spawn where there is
    none), each with one torch thread; ``executor`` runs them elsewhere instead
    (:mod:`biofa.experiment.executors`). ``progress``: show tqdm bars (None: only on a terminal).
    ``retry_failed``: run again the runs stored as failed. ``on_result(summary, n_done, n_runs)``
    is called as each run finishes (``summary``: its result without the history).
    Returns a :class:`StudyOutcome`.

    One process at a time writes a study folder: a second one raises
    :class:`~biofa.errors.FolderBusyError` naming the first. runs.csv and history.csv are
    rewritten as each run finishes, so they always match the run files, also after an interrupt.

    With ``jobs`` > 1 the workers import the calling script like :mod:`multiprocessing` does:
    call this from under ``if __name__ == "__main__":`` in a script (the ``biofa`` command does).
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"run_study: jobs must be a positive integer, got {jobs!r}")
    out = Path(out)
    runs = expand(spec)
    ids = [r["run_id"] for r in runs]
    if len(set(ids)) != len(ids):
        raise SpecError(f"{spec.source}: [grid] produces identical runs (a value repeated in a grid list?)")
    datasets = preflight(spec, runs)
    started = time.perf_counter()
    results.make_folder(out)
    with results.FolderLock(out):
        results.remove_stale_temporaries(out)
        results.write_spec(out, _resolved_tree(spec), source=spec.source, quick=spec.quick)
        results.write_plan(out, runs)
        environment.record(out, environment.capture(jobs=jobs))
        tables = Tables(out, runs)
        stored = {row["run_id"]: row for row in tables.rows}
        todo = [r for r in runs if r["run_id"] not in stored
                or (retry_failed and stored[r["run_id"]]["status"] != "ok")]
        n_resumed = len(runs) - len(todo)
        tables.write()
        disable = None if progress is None else not progress
        bar = tqdm(total=len(todo), desc=spec.name, unit="run", disable=disable, file=sys.stderr)
        if executor is None:
            run_bars = bool(progress) if progress is not None else sys.stderr.isatty()
            executor = LocalExecutor(jobs, datasets=datasets, progress=run_bars)
        else:
            executor.prepare(datasets)
        done = [n_resumed]

        def finished(summary: dict) -> None:
            tables.add(summary["run_id"])
            tables.write()
            done[0] += 1
            bar.update(1)
            if on_result is not None:
                on_result(summary, done[0], len(runs))

        try:
            executor.run(todo, out, finished)
        except BaseException:
            # the executor has stopped its runs: drop the files they were writing, make the
            # tables match the run files on disk
            with contextlib.suppress(Exception):
                results.remove_stale_temporaries(out)
                Tables(out, runs).write()
            raise
        finally:
            bar.close()
            with contextlib.suppress(Exception):
                environment.add_time(out, time.perf_counter() - started, done[0] - n_resumed)
        rows = tables.write()
        write_report(out)
    n_failed = sum(1 for r in rows if r["status"] != "ok")
    return StudyOutcome(out=out, n_runs=len(runs), n_resumed=n_resumed, n_ok=len(rows) - n_failed,
                        n_failed=n_failed, rows=rows)


def rebuild_tables(out: str | os.PathLike) -> list[dict] | None:
    """Rewrite runs.csv and history.csv of ``out`` from its run files (None: no plan.json)."""
    runs = results.read_plan(out)
    return None if runs is None else Tables(out, runs).write()


def run_line(summary: dict, n_done: int, n_runs: int) -> str:
    """One line about a finished run: ``[3/16] fa/dale seed 0  ok  test acc 71.2%  4.1 s  <id>``."""
    labels = dict(summary.get("labels") or {})
    seed = labels.pop("seed", None)
    cond = "/".join(label(v) for v in labels.values()) or "run"
    if seed is not None:
        cond += f" seed {label(seed)}"
    status = summary.get("status", "?")
    if status == "ok":
        acc, loss = summary.get("test_acc_at_best_val"), summary.get("test_loss_at_best_val")
        score = (f"test acc {100 * acc:.1f}%" if isinstance(acc, (int, float))
                 else f"test loss {loss:.4g}" if isinstance(loss, (int, float)) else "")
    else:
        score = str(summary.get("reason") or "")[:80]
    seconds = summary.get("time_s")
    took = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "– s"
    width = len(str(n_runs))
    return f"[{n_done:>{width}}/{n_runs}] {cond}  {status}  {score}  {took}  {summary.get('run_id', '')}"


def _resolved_tree(spec: Spec) -> dict:
    """The spec as run: every override applied, the grid as expanded, no ``[quick]``."""
    tree = {k: v for k, v in spec.tree.items() if k != "quick"}
    tree.setdefault("experiment", {})["name"] = spec.name
    tree["grid"] = {k: v for k, v in spec.grid.items()}
    return tree
