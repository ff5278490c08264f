"""Records: the part of a finished study that goes into version control, so that every number a
document prints can be traced to files anyone can read and regenerate.

A study folder holds run files and checkpoints (megabytes per run); its record holds text and
figures only:

- ``spec.toml`` (the spec as run), ``plan.json`` (every planned run), ``environment.json``
  (versions, CPU, threads, command line, wall time);
- ``runs.csv`` (every run's scores) and ``history.csv`` restricted to the runs the report shows
  (with ``[search]``: each condition's chosen candidate), which is all the per-epoch data the
  report's tables and figures read;
- ``report.md`` regenerated from those files, and the figures;
- for a conservation-laws study: ``measurements.csv`` and ``timings.json``.

``biofa report RECORD`` regenerates the report from a record, ``biofa report RECORD --table ...``
prints the tables a document shows (:mod:`biofa.experiment.report.excerpts`), and
:func:`matches_spec` tells whether a spec would still run exactly the record's runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..errors import ConfigError
from . import environment, results
from .kinds import kind_of, load
from .kinds import write_report as write_any_report
from .report import read_study
from .report.excerpts import selection_cells
from .report.tasks import FILE_NAME as TASK_RESULTS
from .report.summary import analyse, reported
from .spec.expand import expand
from .spec.grid import Spec

#: Files a record keeps from a study folder, besides ``history.csv`` and the figures.
KEPT = (results.SPEC_NAME, results.PLAN_NAME, environment.FILE_NAME, "runs.csv",
        "measurements.csv", "timings.json", TASK_RESULTS)


def save(study_dir: str | os.PathLike, record_dir: str | os.PathLike) -> Path:
    """Write the record of the finished study in ``study_dir`` to ``record_dir`` (replacing a
    previous record there as a whole: a half-written record is never left); returns its path.

    Raises :class:`~biofa.errors.ConfigError` when ``study_dir`` holds no study or an unfinished
    one (a record is of a finished study).
    """
    src, dest = Path(study_dir), Path(record_dir)
    tree, _ = results.read_spec(src)
    if not tree:
        raise ConfigError(f"{src}: no spec.toml here; give the folder a study wrote")
    if src.resolve() == dest.resolve():
        raise ConfigError(f"{dest}: the record must go to another folder than the study's")
    grid_study = (src / "runs.csv").is_file()
    if grid_study:
        study = read_study(src)
        planned, done = study["n_planned"], len(study["runs"])
        if planned is None or done < planned:
            raise ConfigError(f"{src}: unfinished study ({done} of {planned} runs have a result); "
                              "finish it (run the same biofa run command again) before recording it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f"{results.TMP_PREFIX}{dest.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name in KEPT:
            if (src / name).is_file():
                shutil.copy2(src / name, staging / name)
        if grid_study:
            shown = {r["run_id"] for r in reported(study, analyse(study))["runs"]}
            columns, rows = results.read_csv(src / "history.csv")
            results.write_csv(staging / "history.csv", columns, [r for r in rows if r.get("run_id") in shown])
        write_any_report(staging)  # report.md and figures, from the record's own files
        old = dest.parent / f"{results.TMP_PREFIX}old-{dest.name}"
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return dest


def planned_runs(record_dir: str | os.PathLike) -> list[str]:
    """The run ids a record's study planned (each ends in a hash of the run's whole configuration)."""
    plan = results.read_plan(record_dir)
    if plan is None:
        raise ConfigError(f"{record_dir}: no plan.json; not the record of a grid study")
    return [r["run_id"] for r in plan]


def spec_differences(record_dir: str | os.PathLike, spec: str | os.PathLike) -> list[str]:
    """How the runs ``spec`` (a file or a packaged name) would run differ from the record's:
    [] when they are the same runs with the same configurations.

    For a grid study the run ids are compared (each carries a hash of its configuration, so any
    change that reaches a run shows); for another kind of study, its settings.
    """
    loaded = load(spec)
    if results.read_spec(record_dir)[1]:
        return ["the record is of a --quick study"]
    if isinstance(loaded, Spec):
        wanted = [r["run_id"] for r in expand(loaded)]
        have = planned_runs(record_dir)
        missing = [r for r in wanted if r not in set(have)]
        extra = [r for r in have if r not in set(wanted)]
        out = []
        if missing:
            out.append(f"{len(missing)} run(s) the spec plans are not in the record, e.g. {missing[0]}")
        if extra:
            out.append(f"{len(extra)} run(s) of the record the spec no longer plans, e.g. {extra[0]}")
        return out
    tree, _ = results.read_spec(record_dir)
    recorded = kind_of(tree, str(Path(record_dir) / results.SPEC_NAME)).from_tree(
        tree, source=str(Path(record_dir) / results.SPEC_NAME), quick=False, overrides=None,
        default_name=Path(record_dir).name)
    if recorded.settings == loaded.settings:
        return []
    return [f"[{part}] differs: record {recorded.settings.get(part)!r}, spec {loaded.settings.get(part)!r}"
            for part in sorted(set(recorded.settings) | set(loaded.settings))
            if recorded.settings.get(part) != loaded.settings.get(part)]


#: The columns two runs of one configuration must agree on to be "the same run" (all of a run's
#: scores; its timing and dates differ).
SAME_RUN_COLUMNS = ("status", "epochs_done", "best_epoch", "best_val_acc", "best_val_loss",
                    "test_acc_at_best_val", "test_loss_at_best_val", "test_acc_final", "test_loss_final",
                    "final_train_loss", "final_train_acc", "final_val_acc", "final_val_loss")


def compare(study_dir: str | os.PathLike, record_dir: str | os.PathLike) -> str:
    """A re-run (or part of one) against the record of the same study, as Markdown text.

    Runs of the same id have the same configuration; they are compared on every score
    (:data:`SAME_RUN_COLUMNS`): on the machine and library versions of the record they agree bit
    for bit. Then each condition's reported score beside the record's (each chosen on its own
    validation runs, so a re-run with fewer seeds may choose another candidate).
    """
    mine, theirs = read_study(study_dir), read_study(record_dir)
    recorded = {r["run_id"]: r for r in theirs["runs"]}
    both = [r for r in mine["runs"] if r["run_id"] in recorded]
    differ = [r["run_id"] for r in both
              if any(results.cell_text(r.get(c)) != results.cell_text(recorded[r["run_id"]].get(c))
                     for c in SAME_RUN_COLUMNS)]
    lines = [f"{len(both)} of this study's {len(mine['runs'])} runs are in the record {record_dir} "
             f"(same run id: same configuration); {len(both) - len(differ)} agree with it bit for bit "
             f"on every score, {len(differ)} differ"
             + (f" (e.g. {differ[0]}: another machine or library version can change the last digits, "
                "and then the training path)" if differ else "") + ".", ""]
    if mine["conditions"] != theirs["conditions"]:
        return "\n".join(lines)
    mine["summary"], theirs["summary"] = analyse(mine), analyse(theirs)
    header, rows = selection_cells(mine, theirs)
    lines += ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
