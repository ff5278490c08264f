"""The SLURM executor: a study's runs as one SLURM job array, submitted through submitit.

The runs still to do are cut into chunks of ``runs_per_job`` runs (grid order); each chunk is one
task of a job array. A task runs its runs one after the other with
:func:`~biofa.experiment.executors.execute`, as a local worker does, and each run writes
``runs/<run_id>.json`` atomically into the study folder, which every node must see (a shared
filesystem; :mod:`.slurmctl` says what is checked). What appears in the study folder::

    slurm/manifest.json        run id -> the jobs it was given to (the last is current), with
                               the paths of their logs; written atomically by the submitting process
    slurm/<job id>/            submitit's files of each array task: the pickled chunk, the job's
                               log (<job id>_0_log.out / .err) and its return value
    slurm/data/<hash>.pt       the datasets the submitting process loaded (those under
                               SEND_DATA_BYTES), so that tasks do not build them again

**Following.** The study folder is the source of truth: a run is done when its file exists. The
submitting process polls the folder and ``squeue`` every ``poll_s`` seconds and hands each new
result to ``on_result`` (the study rebuilds its tables). A job that has ended (or is no longer
known to the controller) for ``grace_s`` seconds while some of its runs have no file failed
them: each is recorded failed with the job id, its last state and the path of its log
(:func:`~biofa.experiment.executors.record_lost`); ``--retry-failed`` submits them again.

**Resuming.** With ``detach`` the executor submits and returns. Run again, it follows the runs
whose jobs are still pending or running (never submitting them twice), records as failed the runs
whose jobs ended without their result while nobody followed them, and submits only the runs that
are neither done nor queued (and, with ``--retry-failed``, the failed ones). The jobs belong to the
cluster: stopping the submitting process (Ctrl-C, SIGKILL) leaves them running; ``scancel`` stops
them.

**Requeue.** Each task is a :class:`submitit.helpers.Checkpointable`: when SLURM signals that
the time limit is near (``signal_delay_s`` before it) or preempts the job, submitit requeues the
same chunk, at most ``max_requeues`` times. The requeued task skips the runs that have a result
and runs the rest, each continuing from its last epoch checkpoint where the runner keeps one.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import results
from ..results import utc_now
from ..runner.checkpoints import LAST, run_folder
from ..runner.data import data_key, seed_data_cache
from . import Executor, OnResult, execute, record_lost, summary
from . import slurmctl
from .local import SEND_DATA_BYTES, nbytes

MANIFEST = Path("slurm") / "manifest.json"
DATA_FOLDER = Path("slurm") / "data"
#: submitit's folder: one sub-folder per job (``%j`` is the job id, e.g. 123_4).
JOB_FOLDER = Path("slurm") / "%j"


def submitit_parameters(settings: dict, partition: str, name: str) -> dict:
    """``SlurmExecutor.update_parameters`` keywords for an ``[executor]`` table."""
    time_min = settings["time_min"]
    delay = settings.get("signal_delay_s")
    if delay is None:  # submitit's 90 s, but at most half the time limit
        delay = min(90, 30 * time_min)
    params = {"partition": partition, "time": time_min, "cpus_per_task": settings["cpus_per_task"],
              "signal_delay_s": delay, "job_name": f"biofa-{name}"}
    if settings["gpus_per_task"]:
        params["gpus_per_task"] = settings["gpus_per_task"]
    if settings.get("mem_gb") is not None:
        mem = settings["mem_gb"]
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    if settings.get("array_parallelism") is not None:
        params["array_parallelism"] = settings["array_parallelism"]
    for key in ("account", "qos", "constraint", "setup"):
        if settings.get(key) is not None:
            params[key] = settings[key]
    if settings.get("sbatch"):
        params["additional_parameters"] = dict(settings["sbatch"])
    return params


class SlurmExecutor(Executor):
    """Run tasks as a SLURM job array (see the module docstring).

    Parameters
    ----------
    settings : the spec's ``[executor]`` table with its defaults (:attr:`Spec.executor`).
    name : the study's name (the jobs are called ``biofa-<name>``).
    detach : submit and return without waiting for the results.
    retry_failed : submit again, at once, the runs whose jobs ended without their result while
        nobody followed them (instead of recording them failed).
    poll_s : seconds between looks at the study folder and ``squeue``.
    grace_s : seconds a job must have ended before its runs without a result are failed
        (network filesystems may show a file a little after the job wrote it).

    Constructing it asks the cluster: no SLURM, or no such partition, raises
    :class:`~.slurmctl.ClusterError` before anything is submitted.
    """

    name = "slurm"

    def __init__(self, settings: dict, *, name: str = "study", detach: bool = False,
                 retry_failed: bool = False, poll_s: float = 2.0, grace_s: float = 10.0, say=None):
        self.settings = dict(settings)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise slurmctl.ClusterError("--executor slurm needs submitit: pip install 'biofa[slurm]' "
                                        "(or pip install submitit)") from None
        if self.settings.get("signal_delay_s", 0) >= 60 * self.settings["time_min"]:
            raise slurmctl.ClusterError(
                f"[executor] signal_delay_s = {self.settings['signal_delay_s']} must be shorter than the "
                f"time limit (time_min = {self.settings['time_min']} minutes)")
        self.partition = slurmctl.check_partition(self.settings.get("partition"))
        self.params = submitit_parameters(self.settings, self.partition, name)
        self.detach, self.retry_failed = detach, retry_failed
        self.poll_s, self.grace_s = poll_s, grace_s
        self.say = say or (lambda text: print(f"biofa: {text}", file=sys.stderr, flush=True))
        #: after :meth:`run`: {job id: number of runs} submitted now, and runs left in the queue
        self.submitted: dict[str, int] = {}
        self.unfinished = 0
        self.datasets: dict = {}

    def prepare(self, datasets: dict) -> None:
        self.datasets = {k: v for k, v in datasets.items() if nbytes(v) <= SEND_DATA_BYTES}

    def shared_problem(self, out: str | os.PathLike) -> str | None:
        """A sentence when the partition's nodes cannot see ``out`` (see :mod:`.slurmctl`)."""
        return slurmctl.shared_problem(out, slurmctl.nodes(self.partition))

    def run(self, tasks: Sequence[dict], out: Path, on_result: OnResult) -> None:
        out = Path(out).resolve()
        manifest = Manifest(out)
        states = slurmctl.job_states()
        if states is None:
            slurmctl.run(["squeue", "-h"])  # raises with squeue's own message
        follow, lost, submit = {}, [], []
        for task in tasks:
            job = manifest.job(task["run_id"])
            if job is not None and slurmctl.alive(states.get(job["job"])):
                follow[task["run_id"]] = (task, job)
            elif (job is not None and not self.retry_failed
                  and not results.result_path(out, task["run_id"]).exists()):
                lost.append((task, job))  # its job ended while nobody followed it
            else:
                submit.append(task)
        for task, job in lost:
            on_result(self._lost(out, task, job, states.get(job["job"])))
        if lost:
            self.say(f"{len(lost)} run(s) of SLURM jobs that ended without their results are recorded "
                     "failed; --retry-failed submits them again")
        if follow:
            jobs = sorted({job["job"] for _, job in follow.values()})
            self.say(f"{len(follow)} run(s) already queued in SLURM job(s) {_ids(jobs)}: following them, "
                     "not submitting them again")
        if submit:
            for task, job in self._submit(out, submit, manifest):
                follow[task["run_id"]] = (task, job)
        self.unfinished = len(follow)
        if self.detach or not follow:
            return
        try:
            self._follow(out, follow, on_result)
        except BaseException as err:
            if not isinstance(err, OSError):  # a write error has cancelled them
                jobs = sorted({job["job"].split("_")[0] for _, job in follow.values()})
                self.say(f"the SLURM jobs keep running (scancel {' '.join(jobs)} stops them); run the "
                         "same command again to follow them and collect their results")
            raise
        self.unfinished = 0

    # -- submitting --------------------------------------------------------------------------
    def _submit(self, out: Path, tasks: list[dict], manifest: "Manifest") -> list[tuple[dict, dict]]:
        import submitit
        size = self.settings["runs_per_job"]
        chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
        executor = submitit.SlurmExecutor(folder=out / JOB_FOLDER,
                                          max_num_timeout=self.settings["max_requeues"])
        executor.update_parameters(**self.params)
        retried = {t["run_id"]: self._unstore(out, t["run_id"]) for t in tasks}  # before any job starts
        jobs = executor.map_array(Chunk(str(out), self._data_files(out, tasks)), chunks)
        given = []
        for job, chunk in zip(jobs, chunks):
            entry = {"job": job.job_id, "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                     "submitted_at": utc_now(), "partition": self.partition}
            for task in chunk:
                replaces = retried[task["run_id"]]
                manifest.add(task["run_id"], {**entry, "replaces": replaces} if replaces else entry)
                given.append((task, entry))
            self.submitted[job.job_id] = len(chunk)
        manifest.write()
        self.say(f"submitted {len(tasks)} run(s) as SLURM job {_ids(list(self.submitted))} "
                 f"({len(chunks)} task(s) of up to {size} run(s), partition {self.partition}); logs in "
                 f"{out / 'slurm'}")
        return given

    def _data_files(self, out: Path, tasks: list[dict]) -> dict[str, str]:
        """Write the datasets these tasks use once into slurm/data/; ``{data key: file}``."""
        import hashlib

        import torch

        files = {}
        for key in {data_key(t["config"]["data"]) for t in tasks}:
            if key in self.datasets:
                path = out / DATA_FOLDER / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")
                if not path.exists():
                    buffer = io.BytesIO()
                    torch.save(self.datasets[key], buffer)
                    results.atomic_write_bytes(path, buffer.getvalue())
                files[key] = str(path)
        return files

    @staticmethod
    def _unstore(out: Path, run_id: str) -> str | None:
        """Remove the stored (failed) result of a run given to a job again, so that neither the
        job nor the follower takes it for the new one; returns what it said (its reason)."""
        stored = _read(out, run_id)
        path = results.result_path(out, run_id)
        if stored is None and not path.exists():
            return None
        path.unlink(missing_ok=True)
        return f"{(stored or {}).get('status', '?')}: {(stored or {}).get('reason', '')}"

    # -- following ---------------------------------------------------------------------------
    def _follow(self, out: Path, follow: dict, on_result: OnResult) -> None:
        ended_since: dict[str, float] = {}
        last_counts = None
        while follow:
            states = slurmctl.job_states()  # before the files: a job seen ended has written its own
            for run_id in list(follow):
                result = _read(out, run_id)
                if result is not None:
                    del follow[run_id]
                    on_result(summary(result))
            if states is None:
                time.sleep(self.poll_s)
                continue
            by_job: dict[str, list] = {}
            for task, job in follow.values():
                by_job.setdefault(job["job"], []).append((task, job))
            now = time.monotonic()
            for job_id, entries in by_job.items():
                state = states.get(job_id)
                if slurmctl.alive(state):
                    ended_since.pop(job_id, None)
                    continue
                if now - ended_since.setdefault(job_id, now) < self.grace_s:
                    continue
                self._raise_write_error(out, job_id, follow)
                for task, job in entries:
                    result = _read(out, task["run_id"])
                    del follow[task["run_id"]]
                    on_result(summary(result) if result is not None else self._lost(out, task, job, state))
            counts = _count(states, {job["job"] for _, job in follow.values()})
            if counts != last_counts and follow:
                last_counts = counts
                self.say(f"SLURM: {len(follow)} run(s) to go; jobs {counts}")
            if follow:
                time.sleep(self.poll_s)

    def _raise_write_error(self, out: Path, job_id: str, follow: dict) -> None:
        """A job that could not write a result (disk full, read-only folder) ends the study."""
        outcome = _job_return(out, job_id)
        if isinstance(outcome, dict) and "oserror" in outcome:
            number, text, filename = outcome["oserror"]
            slurmctl.cancel(sorted({job["job"] for _, job in follow.values()}))
            raise OSError(number, text, filename)

    def _lost(self, out: Path, task: dict, job: dict, state: str | None) -> dict:
        log = Path(job["stdout"])
        where = f"its log: {log}" if log.exists() else (
            f"it left no log at {log}: is the study folder on a filesystem the compute nodes share?")
        state_text = state or "no longer known to the controller"
        reason = f"SLURM job {job['job']} ended ({state_text}) before this run finished; {where}"
        return record_lost(out, task, reason, job_id=job["job"], log=str(log))


def _read(out: Path, run_id: str) -> dict | None:
    try:
        return results.read_result(out, run_id)
    except (OSError, ValueError):  # being replaced, or half-visible on a network filesystem
        return None


def _job_return(out: Path, job_id: str):
    """What a finished task returned (submitit's result pickle), or None."""
    from submitit.core.utils import JobPaths
    path = JobPaths(out / JOB_FOLDER, job_id=job_id, task_id=0).result_pickle
    try:
        with open(path, "rb") as fh:
            kind, value = pickle.load(fh)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError, TypeError):
        return None
    return value if kind == "success" else None


def _has_checkpoint(out: str, run_id: str) -> bool:
    """Whether the run left an epoch checkpoint to continue from."""
    return (run_folder(out, run_id) / LAST).is_file()


def _count(states: dict, jobs: set) -> str:
    seen: dict[str, int] = {}
    for job in jobs:
        state = (states.get(job) or "GONE").lower()
        seen[state] = seen.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(seen.items()))


def _ids(jobs: list[str]) -> str:
    arrays = sorted({j.split("_")[0] for j in jobs}, key=lambda j: (len(j), j))
    return ", ".join(arrays)


class Manifest:
    """``slurm/manifest.json``: for each run, the jobs it was given to (the last is current)."""

    def __init__(self, out: Path):
        self.path = Path(out) / MANIFEST
        self.runs: dict[str, list[dict]] = {}
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.runs = json.load(fh).get("runs", {})
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as err:
            raise OSError(getattr(err, "errno", None) or 22, f"unreadable manifest ({err})",
                          str(self.path)) from None

    def job(self, run_id: str) -> dict | None:
        jobs = self.runs.get(run_id)
        return jobs[-1] if jobs else None

    def add(self, run_id: str, entry: dict) -> None:
        self.runs.setdefault(run_id, []).append(entry)

    def write(self) -> None:
        results.atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=1, sort_keys=True))


def read_manifest(out: str | os.PathLike) -> dict[str, list[dict]]:
    """``{run id: [jobs it was given to, oldest first]}`` of the study in ``out``."""
    return Manifest(Path(out)).runs


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # submitit is needed only to submit; this module imports without it
    _Checkpointable = object


class Chunk(_Checkpointable):
    """What one array task runs: its runs, one after the other, as a local worker does.

    Runs that already have a result are skipped, so a requeued task goes on where it stopped.
    Each start is logged in the job's log: ``biofa: run <id> starts in job <job id> on <host>``,
    or ``resumes from its checkpoint`` for a run that continues an interrupted one.
    """

    def __init__(self, out: str, data_files: dict[str, str] | None = None):
        self.out, self.data_files = out, data_files or {}

    def __call__(self, tasks: list[dict]):
        import torch

        for key, path in self.data_files.items():
            try:
                seed_data_cache(key, torch.load(path, weights_only=False))
            except OSError:
                pass  # gone (the folder was cleaned): each run loads its data itself
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ.get("SLURM_JOB_ID", "?")
        host = socket.gethostname()
        done = []
        for task in tasks:
            run_id = task["run_id"]
            if results.result_path(self.out, run_id).exists():
                continue
            verb = "resumes from its checkpoint" if _has_checkpoint(self.out, run_id) else "starts"
            print(f"biofa: run {run_id} {verb} in job {job} on {host} at {utc_now()}", flush=True)
            try:
                outcome = execute(task, self.out)
            except OSError as err:  # the study folder cannot take results: the study ends
                print(f"biofa: run {run_id}: cannot write its result: {err}", flush=True)
                return {"oserror": (err.errno, err.strerror, err.filename), "done": done}
            print(f"biofa: run {run_id} {outcome['status']} in {outcome.get('time_s', 0):.1f} s", flush=True)
            done.append(run_id)
        return {"done": done}


__all__ = ["SlurmExecutor", "Chunk", "Manifest", "read_manifest", "submitit_parameters"]
