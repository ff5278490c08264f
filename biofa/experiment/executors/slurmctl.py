"""What the SLURM executor asks the cluster and the filesystem: is SLURM reachable, which
partitions and nodes exist, which jobs are alive, and is the study folder shared.

Everything goes through SLURM's own commands (``sinfo``, ``squeue``), so it works wherever those
work and needs no accounting database (``sacct`` is not used).

**The shared-filesystem check.** Jobs on compute nodes write their results into the study folder,
so every node of the partition must see it. A folder is *local to this machine* when it lies on a
memory filesystem (tmpfs, ramfs) or under ``/tmp``, ``/var/tmp`` or ``/dev/shm`` (node-local on
every cluster we know). That is a problem only when the partition has a node other than this
machine; on a one-node cluster that is this machine, any folder works. A folder on a local disk
elsewhere (say ``/scratch`` on a workstation) cannot be told apart from a shared one without a job
on another node; such a job fails to start and its runs are recorded failed, naming the missing log.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from pathlib import Path

from ...errors import ConfigError

#: Memory filesystems: what is written there exists on one machine only.
MEMORY_FS = ("tmpfs", "ramfs", "devtmpfs")
#: Folders that are node-local on clusters (each node has its own).
LOCAL_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")
#: Job states after which a job runs no more (``squeue -t all`` shows them for MinJobAge seconds).
ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "SPECIAL_EXIT", "TIMEOUT", "REVOKED")
#: Seconds a SLURM command may take before the cluster counts as unreachable.
TIMEOUT_S = 60


class ClusterError(ConfigError):
    """SLURM is not reachable, or the cluster has no such partition (the CLI exits with 2)."""


def run(args: list[str]) -> str:
    """Run a SLURM command; its standard output, or :class:`ClusterError` naming what failed."""
    if shutil.which(args[0]) is None:
        raise ClusterError(f"--executor slurm: {args[0]!r} is not on PATH: no SLURM is reachable from "
                           "this machine (run biofa on a login node of the cluster, or load its "
                           "slurm module)")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"--executor slurm: `{' '.join(args)}` did not answer within {TIMEOUT_S} s: "
                           "is the SLURM controller up?") from None
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
        raise ClusterError(f"--executor slurm: `{' '.join(args)}` failed: {said}")
    return done.stdout


def partitions() -> tuple[list[str], str | None]:
    """The cluster's partitions and its default one (None when it has none); raises
    :class:`ClusterError` when SLURM does not answer."""
    for command in ("sinfo", "sbatch", "squeue", "scancel"):
        if shutil.which(command) is None:
            run([command])  # raises, naming the command
    names, default = [], None
    for line in run(["sinfo", "-h", "-o", "%P"]).split():
        name = line.rstrip("*")
        if line.endswith("*"):
            default = name
        if name not in names:
            names.append(name)
    if not names:
        raise ClusterError("--executor slurm: sinfo lists no partition: the cluster has no nodes")
    return names, default


def check_partition(name: str | None) -> str:
    """The partition jobs go to: ``name``, or the cluster's default; raises :class:`ClusterError`
    for a partition the cluster does not have."""
    names, default = partitions()
    if name is None:
        if default is None:
            raise ClusterError("--executor slurm: the cluster has no default partition: set [executor] "
                               f"partition to one of {', '.join(names)}")
        return default
    if name not in names:
        raise ClusterError(f"[executor] partition {name!r}: no such partition on this cluster "
                           f"(sinfo lists {', '.join(names)})")
    return name


def nodes(partition: str) -> list[str]:
    """The node names of ``partition``."""
    return sorted(set(run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N"]).split()))


def job_states() -> dict[str, str] | None:
    """``{job id: state}`` of this user's jobs, one entry per array task (``"123_4"``) or plain
    job (``"123"``), ended ones included while the controller remembers them; None when squeue
    fails (the controller is busy or restarting: ask again later)."""
    try:
        text = run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i %T"])
    except ClusterError:
        return None
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def alive(state: str | None) -> bool:
    """Whether a job in ``state`` (None: unknown to the controller) may still run."""
    return state is not None and state not in ENDED


def cancel(job_ids: list[str]) -> None:
    """``scancel`` these jobs (errors ignored: a job may have ended meanwhile)."""
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=TIMEOUT_S, check=False)


def filesystem(path: str | os.PathLike) -> tuple[str, str]:
    """``(mount point, filesystem type)`` of ``path`` (from /proc/mounts; ``("", "")`` elsewhere)."""
    target = os.path.realpath(path)
    best = ("", "")
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, fields[2])
    except OSError:
        pass
    return best


def local_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` is local to this machine (see the module docstring), or None."""
    target = os.path.realpath(path)
    mount, fstype = filesystem(target)
    if fstype in MEMORY_FS:
        return f"it is on a {fstype} filesystem ({mount})"
    for folder in LOCAL_FOLDERS:
        if target == folder or target.startswith(folder + "/"):
            return f"it is under {folder}, which is local to each node"
    return None


def shared_problem(out: str | os.PathLike, partition_nodes: list[str]) -> str | None:
    """A sentence when jobs on ``partition_nodes`` cannot write into ``out``, else None."""
    reason = local_reason(out)
    here = {socket.gethostname(), socket.gethostname().split(".")[0]}
    if reason is None or set(partition_nodes) <= here:
        return None
    others = [n for n in partition_nodes if n not in here]
    return (f"the study folder {Path(out).resolve()} is not on a shared filesystem ({reason}), but the "
            f"partition's jobs run on other nodes ({', '.join(others[:4])}"
            f"{' ...' if len(others) > 4 else ''}) that cannot see it: give --out a folder every node "
            "mounts (a home or project folder)")
