"""The local executor: runs in this process (``jobs = 1``) or over ``jobs`` worker processes.

Workers start from a fork server that has imported torch once (``spawn`` where there is none),
use one torch thread each and take one run at a time. Three rules keep a study's processes tied
to the main one:

- **Workers die with the main process.** Each worker holds the read end of a *lifeline* pipe
  whose only write end is in the main process; a thread in the worker blocks on it and ends the
  worker when it reads end-of-file, which the kernel delivers as soon as the main process is gone,
  however it died (SIGKILL included). With no worker left, the fork server and multiprocessing's
  resource tracker see their own pipes close and exit too.
- **Only the main process handles Ctrl-C and SIGTERM.** Workers ignore both; the main process
  ends them (SIGKILL: a run in flight keeps no state worth saving, its result file is written
  atomically or not at all) and its unfinished runs are redone on resume.
- **A worker that dies** (out of memory, killed by hand) fails only the run it held; a new
  worker takes the remaining runs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path

from ..runner.data import seed_data_cache
from . import Executor, OnResult, execute, record_lost

#: Datasets above this size are loaded by each worker instead of being sent to it.
SEND_DATA_BYTES = 256 * 2**20

#: Exit status of a worker that found its main process gone.
ORPHAN_EXIT = 75


class LocalExecutor(Executor):
    """Run tasks in this process (``jobs = 1``) or over ``jobs`` local worker processes.

    Parameters
    ----------
    jobs : number of worker processes; 1 runs every task in the calling process.
    datasets : ``{data key: Splits}`` the calling process has loaded already; workers receive the
        ones under :data:`SEND_DATA_BYTES` instead of loading them again.
    progress : per-epoch progress bars of each run (only with ``jobs = 1``).
    """

    name = "local"

    def __init__(self, jobs: int = 1, *, datasets: dict | None = None, progress: bool = False):
        self.jobs = jobs
        self.datasets = datasets or {}
        self.progress = progress

    def run(self, tasks: Sequence[dict], out: Path, on_result: OnResult) -> None:
        tasks = list(tasks)
        if self.jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                on_result(execute(task, out, progress=self.progress))
            return
        _Pool(min(self.jobs, len(tasks)), self.datasets, str(out)).run(deque(tasks), on_result)


class _Worker:
    def __init__(self, process, conn):
        self.process, self.conn, self.task = process, conn, None


class _Pool:
    """Worker processes, each with its own pipe; the main process hands out one task at a time."""

    def __init__(self, size: int, datasets: dict, out: str):
        self.size, self.out = size, out
        self.send = {k: v for k, v in datasets.items() if nbytes(v) <= SEND_DATA_BYTES}
        self.ctx = _context()
        self.workers: list[_Worker] = []

    def run(self, queue: deque, on_result: OnResult) -> None:
        # the main process keeps the lifeline's only write end: workers hold the read end
        self.lifeline, self._lifeline_w = self.ctx.Pipe(duplex=False)
        try:
            for _ in range(self.size):
                self._start()
            for worker in self.workers:
                self._give(worker, queue)
            while any(w.task is not None for w in self.workers):
                busy = [w for w in self.workers if w.task is not None]
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for worker in busy:
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._collect(worker, queue, on_result)
        except BaseException:
            self._stop(kill=True)
            raise
        self._stop(kill=False)

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_serve, args=(child, self.lifeline, self.send, self.out),
                                   name="biofa-worker", daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def _give(self, worker: _Worker, queue: deque) -> None:
        worker.task = queue.popleft() if queue else None
        try:
            worker.conn.send(worker.task)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker died: _collect records its task as lost

    def _collect(self, worker: _Worker, queue: deque, on_result: OnResult) -> None:
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):  # the worker died with its task
            worker.process.join(timeout=10)
            task, worker.task = worker.task, None
            self.workers.remove(worker)
            worker.conn.close()
            on_result(record_lost(self.out, task, f"worker process died ({_exit_text(worker.process)})"))
            if queue:
                self._give(self._start(), queue)
            return
        if kind == "oserror":
            raise payload
        if kind == "error":  # not from the run itself (execute records those): from around it
            payload = record_lost(self.out, worker.task, f"error in worker process: {payload}")
        on_result(payload)
        self._give(worker, queue)

    def _stop(self, kill: bool) -> None:
        for worker in self.workers:  # without kill, every worker was sent None by _give
            if kill and worker.process.is_alive():
                worker.process.kill()
        for worker in self.workers:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=10)
            worker.conn.close()
        self.workers.clear()
        self._lifeline_w.close()
        self.lifeline.close()


def _serve(conn, lifeline, datasets: dict, out: str) -> None:
    """A worker: run the tasks the main process sends until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(lifeline,), name="biofa-lifeline", daemon=True).start()
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("default")
    for key, splits in datasets.items():
        seed_data_cache(key, splits)
    try:
        while (task := conn.recv()) is not None:
            try:
                message = ("done", execute(task, out))
            except OSError as err:
                conn.send(("oserror", err))
                return
            except Exception as err:
                message = ("error", f"{type(err).__name__}: {err}")
            conn.send(message)
    except (EOFError, OSError):  # the main process is gone: the lifeline ends this worker too
        return


def _watch(lifeline) -> None:
    """End this worker as soon as the main process is gone (its end of the lifeline closed)."""
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(ORPHAN_EXIT)


def _exit_text(process) -> str:
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def nbytes(splits) -> int:
    return sum(t.numel() * t.element_size() for part in (splits.train, splits.val, splits.test)
               for t in part.tensors)


def _context():
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # workers fork from a server that has imported torch and its optimizer machinery once
        ctx.set_forkserver_preload(["biofa.experiment.runner", "torch._dynamo",
                                    "biofa.experiment.executors._forkserver"])
    return ctx
