"""The ``biofa`` command.

::

    biofa run SPEC [--quick] [--jobs N] [--out DIR] [--set key=value ...] [--retry-failed]
                   [--executor local|slurm] [--detach]
    biofa list [rules|constraints|models|datasets|tasks|circuits|experiments]
    biofa report RESULTS_DIR [--table TEXT ...] [--format md|rst]
    biofa evaluate RESULTS_DIR RUN_ID [--split test|val|train] [--which best|last]
    biofa record RESULTS_DIR RECORD_DIR
    biofa compare RESULTS_DIR RECORD_DIR

``SPEC`` is a TOML file or the name of a packaged experiment (``biofa list experiments``).

Exit status: 0 everything ran; 1 some runs failed (every output was still written); 2 bad input
(a bad spec, key or value, a missing data file, a missing results folder, no SLURM reachable or
no such partition with ``--executor slurm``), a results folder that
another ``biofa run`` is writing, or an operating-system error (disk full, read-only folder,
permission denied), reported in one line naming the path; 128 + the signal's number when stopped
by a signal: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP. Finished runs are kept in every case.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .errors import BiofaError, BiofaWarning

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Signals that stop a study like Ctrl-C does; the exit status is 128 + the signal's number.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


class Stopped(BaseException):
    """A stop signal (SIGTERM, SIGHUP) arrived; raised in the main thread like KeyboardInterrupt.

    A BaseException, so no ``except Exception`` inside a run records it as the run's failure.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)
LIST_TOPICS = ("rules", "constraints", "models", "datasets", "tasks", "circuits", "experiments")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biofa", description="Biologically constrained learning: "
                                     "run studies from TOML specs.")
    parser.add_argument("--version", action="version", version=f"biofa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study from an experiment spec")
    run.add_argument("spec", help="TOML file, or the name of a packaged experiment")
    run.add_argument("--quick", action="store_true", help="apply the spec's [quick] table")
    run.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--out", "-o", help="results folder (default results/<name>[_quick])")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key, e.g. --set train.epochs=3 (repeatable)")
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    run.add_argument("--log", choices=["tensorboard"], action="append", default=[],
                     help="also write live logs: tensorboard (event files in OUT/runs/<run_id>/tb)")
    run.add_argument("--executor", choices=("local", "slurm"), default="local",
                     help="where runs execute: local processes (default) or SLURM jobs, set up by "
                          "the spec's [executor] table")
    run.add_argument("--detach", action="store_true",
                     help="with --executor slurm: submit and return; the same command again "
                          "collects the results")
    bars = run.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="always show progress bars")
    bars.add_argument("--no-progress", dest="progress", action="store_false",
                      help="never show progress bars (default: only on a terminal)")
    lst = sub.add_parser("list", help="show feedback rules, constraints, models, datasets, tasks, circuits, experiments")
    lst.add_argument("topic", nargs="?", choices=LIST_TOPICS, help="show only this registry")
    rep = sub.add_parser("report", help="regenerate report.md and figures from a results folder or a record")
    rep.add_argument("results_dir")
    rep.add_argument("--table", action="append", metavar="TEXT",
                     help='print one table instead (repeatable), e.g. "selection rows=feedback '
                          'columns=sign", "comparisons key=sign", "layers metric=weight_alignment", '
                          '"claims" (see biofa.experiment.report.excerpts)')
    rep.add_argument("--format", choices=["md", "rst"], default="md",
                     help="--table as Markdown (default) or as an RST list-table")
    rec = sub.add_parser("record", help="copy a finished study's text and figures (no run files or "
                                        "checkpoints) into a folder to commit: its record")
    rec.add_argument("results_dir")
    rec.add_argument("record_dir")
    cmp = sub.add_parser("compare", help="a study (or part of one) against the record of the same study: "
                                         "runs equal bit for bit, and each condition's score beside the record's")
    cmp.add_argument("results_dir")
    cmp.add_argument("record_dir")
    ev = sub.add_parser("evaluate", help="loss and accuracy of a run's stored best (or last) model")
    ev.add_argument("results_dir")
    ev.add_argument("run_id", help="a run id of runs.csv (a unique prefix is enough)")
    ev.add_argument("--split", choices=["test", "val", "train"], default="test")
    ev.add_argument("--which", choices=["best", "last"], default="best",
                    help="best-validation weights (default) or the last finished epoch's")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``biofa`` command; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2)
        return int(stop.code or 0)
    previous = {}
    try:
        if args.command == "run":
            previous = _catch_stop_signals()
            return _run(args)
        if args.command == "list":
            try:
                print(list_text(args.topic))
            except BrokenPipeError:  # biofa list | head
                sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            return EXIT_OK
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "record":
            return _record(args)
        if args.command == "compare":
            from .experiment import records
            print(records.compare(args.results_dir, args.record_dir))
            return EXIT_OK
        return _report(args)
    except BiofaError as err:
        print(f"biofa: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # disk full, read-only folder, permission denied, --out is a file
        print(f"biofa: error: {_os_error_text(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("biofa: interrupted; finished runs are kept (run the same command again to resume)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        print(f"biofa: stopped by {name}; finished runs are kept (run the same command again to resume)",
              file=sys.stderr)
        return 128 + stop.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _catch_stop_signals() -> dict:
    """Turn SIGTERM and SIGHUP into :class:`Stopped` (main thread only); returns the old handlers."""
    import threading
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, _raise_stopped)
    return previous


def _os_error_text(err: OSError) -> str:
    """``"PATH: cause"`` in one line (``"cause"`` alone when the error names no file)."""
    cause = err.strerror or str(err) or type(err).__name__
    return f"{err.filename}: {cause}" if err.filename else cause


def _run(args) -> int:
    from . import experiment
    from .experiment.study import run_line
    if args.jobs < 1:
        print(f"biofa: error: --jobs must be a positive integer, got {args.jobs}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BiofaWarning)
        spec = experiment.load(args.spec, quick=args.quick, overrides=args.overrides, logs=args.log)
    for warning in caught:
        print(f"biofa: warning: {warning.message}", file=sys.stderr)
    out = Path(args.out) if args.out else experiment.default_out(spec)
    executor = _executor(args, spec, out)
    log = None
    if not sys.stdout.isatty():  # a log file: a line per finished run instead of progress bars
        def log(summary, n_done, n_runs):
            print(run_line(summary, n_done, n_runs), flush=True)
    t0 = time.perf_counter()
    outcome = experiment.run(spec, out, jobs=args.jobs, progress=args.progress,
                             retry_failed=args.retry_failed, on_result=log, executor=executor)
    wall = time.perf_counter() - t0
    where = f"--jobs {args.jobs}" if executor is None else f"--executor {executor.name}"
    kind = experiment.kinds.kind_of_spec(spec)
    print(kind.summary(spec, outcome, wall, where, queued=getattr(executor, "unfinished", 0)))
    return outcome.exit_code


def _executor(args, spec, out: Path):
    """None for the local pool; a :class:`SlurmExecutor` (the cluster checked) for ``slurm``."""
    if args.executor == "local":
        if args.detach:
            raise BiofaError("--detach needs --executor slurm (local runs end with this process)")
        return None
    from .experiment import kinds
    from .experiment.spec import Spec
    if not isinstance(spec, Spec):
        raise BiofaError(f"--executor {args.executor} runs grid studies; {spec.source} is a "
                         f"{kinds.kind_of_spec(spec).name} study, which runs in this process")
    if args.jobs != 1:
        raise BiofaError("--jobs is for --executor local; with --executor slurm set how many jobs run "
                         "at once with [executor] array_parallelism")
    from .experiment.executors.slurm import SlurmExecutor
    executor = SlurmExecutor(spec.executor, name=spec.name, detach=args.detach,
                             retry_failed=args.retry_failed)
    problem = executor.shared_problem(out)
    if problem:
        print(f"biofa: warning: {problem}", file=sys.stderr)
    return executor


def _report(args) -> int:
    from .errors import FolderBusyError
    from .experiment import kinds, results
    from .experiment.report import missing_runs, read_study
    from .experiment.study import rebuild_tables
    out = Path(args.results_dir)
    if not out.is_dir():
        print(f"biofa: error: {out}: no such results folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.table:
        for text in args.table:
            table = kinds.excerpt(out, text)
            print(table.markdown() if args.format == "md" else table.rst())
            print(*table.notes, sep="\n")
            print()
        return EXIT_OK
    # A record (no run files, nobody writing) has only its tables: keep them. A study whose first
    # run is still going has no run files either, but its lock holder says it is running.
    if not (out / results.RUNS_DIR).is_dir() and not (out / results.HOLDER_NAME).exists():
        print(f"wrote {kinds.write_report(out)} and figures")
        return EXIT_OK
    try:
        with results.FolderLock(out):
            rebuild_tables(out)  # from the run files: the tables may lag them after a crash
            path = kinds.write_report(out)
    except FolderBusyError:  # a study is running here and keeps its tables current
        print(f"biofa: a study is running in {out} ({results.holder_text(out)})")
        path = kinds.write_report(out)
    print(f"wrote {path} and figures")
    if not (out / "runs.csv").is_file():  # not a grid study: nothing is planned run by run
        return EXIT_OK
    study = read_study(out)
    missing = missing_runs(study)
    if missing:
        print(f"unfinished study: {missing} of {study['n_planned']} runs have no result yet "
              "(run the same biofa run command again to finish them)")
    return EXIT_OK


def _record(args) -> int:
    from .experiment import records
    path = records.save(args.results_dir, args.record_dir)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    print(f"wrote the record {path} ({size / 1e6:.2f} MB): "
          + ", ".join(sorted(p.name for p in path.iterdir())))
    return EXIT_OK


def _evaluate(args) -> int:
    from .experiment import evaluate_run
    r = evaluate_run(args.results_dir, args.run_id, which=args.which, split=args.split)
    acc = "" if r["acc"] is None else f"accuracy {r['acc']:.4f}, "
    print(f"{r['run_id']} ({r['which']} weights, epoch {r['epoch']}) on {r['split']} ({r['n']} {'trials' if 'n_scored' in r else 'examples'}): "
          f"{acc}loss {r['loss']:.4f}")
    return EXIT_OK


_LATEX = {r"\circ": "∘", r"\ge": "≥", r"\le": "≤", r"\sum": "Σ", r"\cdot": "·", r"\,": " "}


def _first_line(obj) -> str:
    """First line of a docstring as plain text: no reST roles, backquotes or LaTeX commands."""
    if isinstance(obj, functools.partial):
        args = ", ".join(map(str, obj.args))
        doc = (obj.func.__doc__ or "").strip()
        line = doc.splitlines()[0].rstrip(".") if doc else ""
        line = f"{line} [{obj.func.__name__}({args})]" if args else line
    else:
        doc = (getattr(obj, "__doc__", None) or "").strip()
        line = doc.splitlines()[0].rstrip(".") if doc else ""
    line = re.sub(r":\w+:`([^`]*)`", r"\1", line).replace("``", "").replace("`", "")
    line = re.sub(r"\\math(?:rm|bf|it)\{([^}]*)\}", r"\1", line)
    for command, text in _LATEX.items():
        line = line.replace(command + " ", text + " ").replace(command, text)
    return line


def _spec_description(path: Path, top: bool = False) -> str:
    from .experiment.spec.paths import tomllib
    try:
        with open(path, "rb") as fh:
            tree = tomllib.load(fh)
        text = tree.get("description", "") if top else tree.get("experiment", {}).get("description", "")
    except (OSError, tomllib.TOMLDecodeError):
        return "(unreadable spec)"
    text = " ".join(str(text).split())
    return text if len(text) <= 100 else text[:97] + "..."


def list_text(topic: str | None = None) -> str:
    """The registries as text (what ``biofa list`` prints)."""
    from . import constraints, data, feedback, models
    from ._resources import packaged_dir
    sections = []

    def section(title, items):
        width = max([14] + [len(name) for name, _ in items])
        lines = [f"{title}:"] + [f"  {name:<{width}} {text}".rstrip() for name, text in items]
        if len(lines) == 1:
            lines.append("  (none)")
        sections.append("\n".join(lines))

    if topic in (None, "rules"):
        order = ["bp", "fa", "densefa", "usf", "frsf", "brsf", "dfa", "kp", "wm"]
        names = sorted(feedback.RULES, key=lambda n: (order.index(n) if n in order else len(order), n))
        section("feedback rules (feedback = ...)", [(n, _first_line(feedback.RULES[n])) for n in names])
    if topic in (None, "constraints"):
        section("sign constraints (sign = ...)", [("free", "no constraint")] +
                [(n, _first_line(c)) for n, c in sorted(constraints.SIGNS.items())])
        section("norm constraints (norm = ...)", [("none", "no constraint")] +
                [(n, _first_line(c)) for n, c in sorted(constraints.NORMS.items())])
    if topic in (None, "models"):
        section("models", [(n, _first_line(models.MODELS[n].factory)) for n in models.available()])
    if topic in (None, "datasets"):
        registry = getattr(data, "DATASETS", {})
        section("datasets", [(n, getattr(registry.get(n), "description", "")) for n in data.available()])
    if topic in (None, "tasks"):
        from . import tasks
        section("tasks (biofa.tasks.load)", [(n, tasks.registry.description(n)) for n in tasks.available()])
    if topic in (None, "circuits"):
        section("circuits", _circuits())
    if topic in (None, "experiments"):
        folder = packaged_dir("experiments")
        section(f"experiments ({folder})",
                [(p.stem, _spec_description(p)) for p in sorted(folder.glob("*.toml"))])
    return "\n\n".join(sections)


def _circuits():
    from . import circuit
    from ._resources import packaged_dir
    names = circuit.available() if hasattr(circuit, "available") else \
        [p.stem for p in sorted(packaged_dir("circuits").glob("*.toml"))]
    return [(name, _spec_description(packaged_dir("circuits") / f"{name}.toml", top=True)) for name in names]


if __name__ == "__main__":
    sys.exit(main())
