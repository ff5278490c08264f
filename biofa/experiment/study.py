"""Run a whole study: check the spec's data and models once, run the grid (in this process or
over a pool of local worker processes), keep what finished, and write the tables, report and
figures.

Resuming: every finished run is stored as ``runs/<run_id>.json`` (atomically, by the process that
ran it); running the study again skips those runs and redoes only the rest. Run ids include a
hash of the run's whole configuration, so changing the spec never reuses a stale result.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ..errors import BiofaWarning, ConfigError, DataFileError, SpecError
from . import results
from .grid import expand, label
from .results import HISTORY_COLUMNS, RUN_COLUMNS
from .spec import Spec

#: Order of per-layer metric groups in history.csv.
METRIC_ORDER = ("weight_alignment", "update_alignment", "norm_ratio", "sign_agreement", "dale_violations")


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


def _label_columns(spec_or_runs) -> list[str]:
    runs = spec_or_runs
    return list(runs[0]["labels"]) if runs else []


def preflight(spec: Spec, runs: list[dict]) -> dict:
    """Load every distinct dataset and build every distinct model once, so a bad data option, a
    missing data file or a bad model option stops the study before any run starts.

    Returns the loaded datasets, ``{data key: Splits}``. Raises :class:`~biofa.errors.SpecError`
    (naming the table) or the data's :class:`~biofa.errors.DataFileError`.
    """
    import torch

    from .devices import check as check_device
    from .runner import Loss, build_model, data_key, load_data
    for device in dict.fromkeys(run["config"]["train"].get("device", "cpu") for run in runs):
        try:
            check_device(device)
        except ConfigError as err:
            raise SpecError(f"{spec.source}: {err}") from None
    seen_data, seen_models = {}, set()
    for run in runs:
        config = run["config"]
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
            loss = Loss(config["train"]["loss"], splits.task, splits.n_outputs)
            if loss.kind == "cross_entropy" and splits.task != "classification":
                raise SpecError(f"{spec.source}: [train] loss = 'cross_entropy' needs a classification "
                                f"dataset; {splits.name!r} is a regression task (use 'mse' or 'auto')")
        splits = seen_data[key]
        model_key = key + repr(sorted((k, repr(v)) for k, v in config["model"].items()))
        if model_key in seen_models:
            continue
        seen_models.add(model_key)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BiofaWarning)
                build_model(config["model"], splits, torch.Generator().manual_seed(0))
        except (ConfigError, TypeError, ValueError) as err:
            raise SpecError(f"{spec.source}: [model] {err}") from None
    return seen_data


def _work(task: dict, out: str, progress: bool = False) -> dict:
    """Run one task and store its result; returns the result without its history."""
    from .runner import run
    result = run(task, progress=progress, out=out)
    results.write_result(out, result)
    return {k: v for k, v in result.items() if k not in ("history", "config", "traceback")}


#: Datasets above this size are loaded by each worker instead of being sent to it.
_SEND_DATA_BYTES = 256 * 2**20


def _init_worker(datasets: dict) -> None:
    import torch

    from .runner import seed_data_cache
    torch.set_num_threads(1)
    warnings.simplefilter("default")
    for key, splits in datasets.items():
        seed_data_cache(key, splits)


def _nbytes(splits) -> int:
    return sum(t.numel() * t.element_size() for part in (splits.train, splits.val, splits.test)
               for t in part.tensors)


def _context():
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # workers fork from a server that has imported torch and its optimizer machinery once
        ctx.set_forkserver_preload(["biofa.experiment.runner", "torch._dynamo"])
    return ctx


def run_study(spec: Spec, out: str | os.PathLike, *, jobs: int = 1, progress: bool | None = None,
              retry_failed: bool = False) -> StudyOutcome:
    """Run every run of ``spec`` that has no stored result in ``out``; write all outputs.

    ``jobs`` > 1 runs over that many local worker processes (forkserver, or spawn where there is
    none), each with one torch thread. ``progress``: show tqdm bars (None: only on a terminal).
    ``retry_failed``: run again the runs stored as failed. Returns a :class:`StudyOutcome`.

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
    out.mkdir(parents=True, exist_ok=True)
    results.remove_stale_temporaries(out)
    results.atomic_write_text(out / "spec.toml", _resolved_toml(spec))

    stored = {rid: results.read_result(out, rid) for rid in ids}
    todo = [r for r in runs if stored[r["run_id"]] is None
            or (retry_failed and stored[r["run_id"]]["status"] != "ok")]
    n_resumed = len(runs) - len(todo)
    from tqdm.auto import tqdm
    disable = None if progress is None else not progress
    bar = tqdm(total=len(todo), desc=spec.name, unit="run", disable=disable, file=sys.stderr)
    try:
        if jobs == 1 or len(todo) <= 1:
            for task in todo:
                _work(task, str(out), progress=bool(progress) if progress is not None else sys.stderr.isatty())
                _advance(bar, out, spec, runs)
        else:
            send = {k: v for k, v in datasets.items() if _nbytes(v) <= _SEND_DATA_BYTES}
            pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=_context(),
                                       initializer=_init_worker, initargs=(send,))
            try:
                futures = {pool.submit(_work, task, str(out)): task for task in todo}
                for future in as_completed(futures):
                    try:
                        future.result()
                    except Exception as err:  # the worker itself died (killed, out of memory)
                        task = futures[future]
                        results.write_result(out, {
                            "run_id": task["run_id"], "labels": task["labels"], "config": task["config"],
                            "status": "failed", "reason": f"worker process failed: {type(err).__name__}: {err}",
                            "notes": "", "history": []})
                    _advance(bar, out, spec, runs)
            except BaseException:  # Ctrl-C: stop the workers now; unfinished runs are redone on resume
                _terminate(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    rows = write_tables(out, runs)
    from . import report
    report.write_report(out)
    n_failed = sum(1 for r in rows if r["status"] != "ok")
    return StudyOutcome(out=out, n_runs=len(runs), n_resumed=n_resumed, n_ok=len(rows) - n_failed,
                        n_failed=n_failed, rows=rows)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel queued runs and end the worker processes (their unfinished runs left no file)."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public handle on the workers
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


def _advance(bar, out, spec, runs) -> None:
    bar.update(1)
    write_tables(out, runs, history=False)


def _resolved_toml(spec: Spec) -> str:
    tree = {k: v for k, v in spec.tree.items() if k != "quick"}
    tree.setdefault("experiment", {})["name"] = spec.name
    tree["grid"] = {k: v for k, v in spec.grid.items()}
    header = f"# Resolved spec of this study (source: {spec.source}{', --quick' if spec.quick else ''})\n"
    return header + tomli_w.dumps(tree)


def write_tables(out: str | os.PathLike, runs: list[dict], *, history: bool = True) -> list[dict]:
    """Write runs.csv (and history.csv) from the stored results of ``runs``; returns the rows."""
    out = Path(out)
    label_columns = _label_columns(runs)
    rows, history_rows, metric_columns = [], [], {}
    for run in runs:
        result = results.read_result(out, run["run_id"])
        if result is None:
            continue
        labels = {k: label(v) for k, v in run["labels"].items()}
        rows.append({**labels, **{k: result.get(k) for k in RUN_COLUMNS}})
        if history:
            for entry in result.get("history", []):
                history_rows.append({**labels, "run_id": run["run_id"], **entry})
                for key in entry:
                    if ":" in key:
                        metric_columns.setdefault(key, None)
    results.write_csv(out / "runs.csv", label_columns + RUN_COLUMNS, rows)
    if history:
        order = {m: i for i, m in enumerate(METRIC_ORDER)}
        metrics = sorted(metric_columns, key=lambda c: order.get(c.split(":")[0], len(order)))
        results.write_csv(out / "history.csv", label_columns + HISTORY_COLUMNS + metrics, history_rows)
    return rows
