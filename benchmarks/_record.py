"""What every benchmark's ``--json PATH`` output records besides its measurements.

A benchmark calls :func:`start` before it measures and :func:`write` at the end; the JSON then has
an ``environment`` entry: :func:`biofa.experiment.environment.capture` (biofa version and git
commit, library versions, Python, platform, CPU model, CPU count, torch threads), the exact
command line (``command``, as typed from the repository root), the 1-minute load average before
and after the measurement (these machines are shared: the ratios are taken within one process, the
load says how busy the machine was) and the benchmark's wall time.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command_line(argv: list[str] | None = None) -> str:
    """``python benchmarks/bench_X.py ARGS``: the script relative to the repository root when it
    lies inside it."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        script_text = script.relative_to(ROOT).as_posix()
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *argv[1:]])


def start() -> dict:
    """The state before measuring: the load average and the clock."""
    return {"loadavg_1min_before": os.getloadavg()[0], "started": time.perf_counter()}


def environment(started: dict) -> dict:
    """The environment of this process, the command, the load before and after, the wall time."""
    from biofa.experiment.environment import capture
    env = capture()
    env["command"] = command_line()
    env["loadavg_1min_before"] = started["loadavg_1min_before"]
    env["loadavg_1min_after"] = os.getloadavg()[0]
    env["wall_s"] = round(time.perf_counter() - started["started"], 1)
    return env


def write(path: str | os.PathLike | None, result: dict, started: dict) -> dict:
    """``result`` with its ``environment`` added, written as JSON to ``path`` (when given)."""
    result = {**result, "environment": environment(started)}
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
