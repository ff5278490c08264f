"""The software and machine a study ran on, recorded in ``environment.json`` of its folder.

Numbers can differ between machines (other package versions, another CPU, more threads); the
report names the environment so a reader can tell why. Each ``biofa run`` on a folder records
its session; a session identical to the last one (apart from the time) is not recorded again, so
a study resumed elsewhere lists both environments.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from datetime import datetime, timezone
from pathlib import Path

from . import results

FILE_NAME = "environment.json"
#: The lock file of exact dependency versions, relative to the source checkout.
LOCK_FILE = Path("requirements") / "lock.txt"
_GIT_TIMEOUT_S = 5


def source_root() -> Path | None:
    """The source checkout biofa is imported from (None when it is an installed package)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "biofa").is_dir() else None


def _git(root: Path, *args: str) -> str | None:
    if not (root / ".git").exists():  # not a checkout of its own: git would find an enclosing one
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: Libraries whose versions a study's numbers can depend on (read from package metadata: nothing
#: is imported for it).
LIBRARIES = ("scipy", "matplotlib", "mnist1d", "scikit-learn", "brian2", "submitit")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def command_line(argv: list[str] | None = None) -> str:
    """The command this process runs, as a shell would type it (``biofa run ...``)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = Path(argv[0]).name or argv[0]
    if program == "__main__.py":  # python -m biofa
        return " ".join(["python -m biofa", *map(shlex.quote, argv[1:])])
    return shlex.join([program, *argv[1:]])


def capture(jobs: int | None = None) -> dict:
    """The environment of this process: versions, git commit, platform, threads, lock file hash,
    and the command line."""
    import numpy
    import torch

    from .. import __version__
    root = source_root()
    commit = _git(root, "rev-parse", "HEAD") if root else None
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    lock = root / LOCK_FILE if root else None
    return {
        "biofa": __version__,
        "git_commit": commit or "unknown",
        "git_modified": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **{name: _version(name) for name in LIBRARIES},
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "jobs": jobs,
        "lock_file_sha256": (_sha256(lock) if lock and lock.is_file() else None),
        "command": command_line(),
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read(out: str | os.PathLike) -> list[dict]:
    """The sessions recorded in ``out/environment.json`` (oldest first); [] when there is none."""
    try:
        with open(Path(out) / FILE_NAME, encoding="utf-8") as fh:
            sessions = json.load(fh).get("sessions", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [s for s in sessions if isinstance(s, dict)]


#: Keys that differ between two sessions of one environment.
_PER_SESSION = ("recorded_at", "wall_s", "runs_run")


def _same(a: dict, b: dict) -> bool:
    return ({k: v for k, v in a.items() if k not in _PER_SESSION}
            == {k: v for k, v in b.items() if k not in _PER_SESSION})


def _write(out, sessions: list[dict]) -> None:
    results.atomic_write_text(Path(out) / FILE_NAME, json.dumps({"sessions": sessions}, indent=1))


def record(out: str | os.PathLike, env: dict) -> None:
    """Add ``env`` to ``out/environment.json`` unless it equals the last session there."""
    sessions = read(out)
    if not (sessions and _same(sessions[-1], env)):
        sessions.append(env)
        _write(out, sessions)


def add_time(out: str | os.PathLike, wall_s: float, runs_run: int | None = None) -> None:
    """Add a finished session's wall time (and the number of runs it ran) to the last session
    of ``out/environment.json``: a study resumed in the same environment sums its sessions."""
    sessions = read(out)
    if not sessions:
        return
    last = sessions[-1]
    last["wall_s"] = round(float(last.get("wall_s") or 0.0) + wall_s, 3)
    if runs_run is not None:
        last["runs_run"] = int(last.get("runs_run") or 0) + runs_run
    _write(out, sessions)


def markdown(sessions: list[dict]) -> str:
    """The sessions as a Markdown table, one column per session."""
    rows = [("biofa", "biofa"), ("git commit", "git_commit"), ("Python", "python"), ("torch", "torch"),
            ("numpy", "numpy"), *((name, name) for name in LIBRARIES), ("platform", "platform"),
            ("CPU", "cpu"), ("CPUs", "cpus"),
            ("torch threads", "torch_threads"), ("OMP_NUM_THREADS", "OMP_NUM_THREADS"),
            ("--jobs", "jobs"), ("lock file sha256", "lock_file_sha256"), ("command", "command"),
            ("recorded", "recorded_at"), ("wall time (s)", "wall_s"), ("runs run", "runs_run")]

    def cell(session, key):
        value = session.get(key)
        if key == "git_commit" and session.get("git_modified"):
            value = f"{value} (with local changes)"
        if key == "wall_s" and value is not None:
            value = f"{float(value):.1f}"
        if key == "lock_file_sha256" and value is None:
            value = f"no {LOCK_FILE.as_posix()}"
        return "–" if value is None else str(value).replace("|", "/")

    header = ["", *(f"session {i + 1}" for i in range(len(sessions)))] if len(sessions) > 1 else ["", "this study"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join([title, *(cell(s, key) for s in sessions)]) + " |" for title, key in rows]
    return "\n".join(lines)
