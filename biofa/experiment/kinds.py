"""The kinds of study, and the one loader and runner that dispatch on ``[experiment] kind``.

A spec file is read once (:func:`~biofa.experiment.spec.loader.read_tree`); its
``[experiment] kind`` (default ``"grid"``) picks a :class:`StudyKind` from :data:`KINDS`, which
validates the tree, runs the study into its folder and writes its report. The command line and
:func:`biofa.experiment.run` go through here for every kind, so ``--quick``, ``--set``, ``--out``
and ``biofa report`` mean the same thing whatever the study.

A new kind of study is a :class:`StudyKind` added to :data:`KINDS`: a spec parser built from
:mod:`biofa.experiment.spec`'s values, paths and overrides, a ``run`` that writes through
:mod:`biofa.experiment.results`, and a report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SpecError
from . import conservation
from .conservation.report import excerpt as conservation_excerpt
from .conservation.report import table_markdown
from .report import read_study, results_table
from .report.excerpts import Excerpt
from .report.excerpts import excerpt as grid_excerpt
from .report import write_report as write_grid_report
from .results import read_spec
from .spec import grid
from .spec.loader import read_tree
from .study import StudyOutcome, run_study


@dataclass(frozen=True)
class StudyKind:
    """One kind of study.

    ``from_tree(tree, *, source, quick, overrides, default_name)`` validates a spec file's tree;
    ``run(spec, out, **options)`` runs the study into ``out`` and returns an outcome with an
    ``exit_code``; ``write_report(out)`` regenerates the report from the folder's files;
    ``summary(spec, outcome, wall_s, where)`` is the text the command prints at the end;
    ``excerpt(out, text)`` is the table ``text`` names (:mod:`biofa.experiment.report.excerpts`),
    which documents print and ``tools/doc_tables.py`` checks.
    """

    name: str
    spec_type: type
    from_tree: Callable
    run: Callable
    write_report: Callable[[Path], Path]
    summary: Callable[..., str]
    excerpt: Callable[[Path, str], Excerpt]


def _grid_summary(spec, outcome: StudyOutcome, wall_s: float, where: str, queued: int = 0) -> str:
    done = outcome.n_runs - outcome.n_resumed - queued
    lines = [results_table(read_study(outcome.out)), "",
             f"{spec.name}: {outcome.n_runs} runs ({done} run now, {outcome.n_resumed} kept from before"
             f"{f', {queued} queued' if queued else ''}), {outcome.n_ok} ok, {outcome.n_failed} failed, "
             f"{wall_s:.1f} s with {where}",
             f"wrote {outcome.out}/runs.csv, history.csv, report.md and figures"]
    if queued:
        lines.append(f"{queued} runs are queued or running in SLURM jobs: run the same command again to "
                     "follow them and collect their results")
    return "\n".join(lines)


def _conservation_run(spec, out, *, progress=None, executor=None, **_options):
    """A conservation-laws study runs in this process (``jobs`` and ``retry_failed`` do not apply)."""
    if executor is not None:
        raise ConfigError(f"{spec.source}: a {conservation.KIND} study runs in this process; "
                          f"--executor {executor.name} is for grid studies")
    return conservation.run(spec, out, progress=bool(progress))


def _conservation_summary(spec, outcome, wall_s: float, where: str, queued: int = 0) -> str:
    return (f"{table_markdown(outcome.claims)}\n\n{spec.name}: {wall_s:.1f} s; wrote "
            f"{outcome.out}/measurements.csv, drift.png, alignment.png, min_norm.png and report.md")


def _conservation_report(out) -> Path:
    return conservation.write_report(out)[0]


#: Every kind of study, by its ``[experiment] kind``.
KINDS: dict[str, StudyKind] = {
    grid.KIND: StudyKind(grid.KIND, grid.Spec, grid.from_file_tree, run_study, write_grid_report, _grid_summary,
                          grid_excerpt),
    conservation.KIND: StudyKind(conservation.KIND, conservation.ConservationSpec, conservation.from_dict,
                                 _conservation_run, _conservation_report, _conservation_summary,
                                 conservation_excerpt),
}


def kind_of(tree: dict, source: str) -> StudyKind:
    """The :class:`StudyKind` a spec tree asks for (``[experiment] kind``, default ``"grid"``)."""
    experiment = tree.get("experiment")
    name = experiment.get("kind", grid.KIND) if isinstance(experiment, dict) else grid.KIND
    if not isinstance(name, str) or name not in KINDS:
        raise SpecError(f"{source}: [experiment] kind must be one of {', '.join(repr(k) for k in KINDS)}, "
                        f"got {name!r}")
    return KINDS[name]


def kind_of_spec(spec) -> StudyKind:
    """The :class:`StudyKind` of a validated spec."""
    for kind in KINDS.values():
        if isinstance(spec, kind.spec_type):
            return kind
    raise ConfigError(f"not a validated study spec: {spec!r} (biofa.experiment.load reads one)")


def load(spec: str | os.PathLike, *, quick: bool = False, overrides=None, logs=()):
    """Read a spec file (a path or a packaged experiment's name) once, and validate it as the kind
    of study its ``[experiment] kind`` names: a :class:`~biofa.experiment.spec.Spec` for a grid
    study, a :class:`~biofa.experiment.conservation.ConservationSpec` for ``conservation_laws``.

    ``quick`` applies the spec's ``[quick]`` table; ``overrides`` (``["key=value", ...]`` or
    ``{key: value}``) come after it, as ``--set`` does. ``logs``: live logs to write
    (``["tensorboard"]``, a grid study's ``[log]`` table, as ``--log`` does).
    """
    tree, source, stem = read_tree(spec)
    kind = kind_of(tree, source)
    if logs:
        if kind.name != grid.KIND:
            raise SpecError(f"{source}: --log {logs[0]}: a {kind.name} study writes no per-run logs "
                            "(live logs are for grid studies)")
        overrides = list(overrides.items() if isinstance(overrides, dict) else overrides or [])
        overrides += [f"log.{name}=true" for name in logs]
    return kind.from_tree(tree, source=source, quick=quick, overrides=overrides,
                                           default_name=stem)


def default_out(spec) -> Path:
    """Where a study writes unless told: ``results/<name>``, ``results/<name>_quick`` with ``--quick``."""
    return Path("results") / (spec.name + ("_quick" if spec.quick else ""))


def run(spec, out=None, *, quick: bool = False, overrides=None, jobs: int = 1, progress: bool | None = None,
        retry_failed: bool = False, executor=None, on_result=None):
    """Load ``spec`` (a path or packaged name, unless already loaded), run the study into ``out``
    (default :func:`default_out`) and write every output; returns the kind's outcome (a
    :class:`~biofa.experiment.StudyOutcome` for a grid study).

    ``jobs``, ``retry_failed``, ``executor`` and ``on_result`` apply to grid studies (see
    :func:`~biofa.experiment.run_study`).
    """
    loaded = spec if any(isinstance(spec, k.spec_type) for k in KINDS.values()) else \
        load(spec, quick=quick, overrides=overrides)
    out = default_out(loaded) if out is None else out
    return kind_of_spec(loaded).run(loaded, out, jobs=jobs, progress=progress, retry_failed=retry_failed,
                                    executor=executor, on_result=on_result)


def write_report(out: str | os.PathLike) -> Path:
    """Regenerate the report (and figures) of the study in ``out``, whatever its kind (read from
    its ``spec.toml``); returns the report's path."""
    tree, _ = read_spec(out)
    return kind_of(tree, str(Path(out) / "spec.toml")).write_report(Path(out))


def excerpt(out: str | os.PathLike, text: str) -> Excerpt:
    """The table ``text`` names (e.g. ``"selection rows=feedback columns=sign"``) of the study or
    record in ``out``, whatever its kind."""
    tree, _ = read_spec(out)
    if not tree:
        raise ConfigError(f"{out}: no spec.toml here; give a folder a study wrote, or a record")
    return kind_of(tree, str(Path(out) / "spec.toml")).excerpt(Path(out), text)
