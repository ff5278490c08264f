"""``biofa run --executor slurm`` against a real SLURM cluster (tools/slurm-cluster.sh).

The tests marked ``slurm`` need the cluster. Every one of them runs the ``biofa`` command in a subprocess, as a user does, on a study folder of its
own, and waits for observable events (a log line, a result file, a job state) with generous
timeouts, never for a fixed time. Run them with ``make test-slurm`` (starts the cluster first).
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "slurm-cluster.sh"
#: Columns that depend on the clock, not on the math.
TIMING = ("time_s", "started_at", "finished_at")
#: Generous: a loaded machine starts torch in a job in tens of seconds.
WAIT_S = 900

START = re.compile(r"^biofa: run (\S+) (starts|resumes)", re.M)


@pytest.fixture(scope="session")
def cluster():
    """The one-node cluster of tools/slurm-cluster.sh. Used when it answers; started when it does
    not and BIOFA_SLURM_START=1 (``make test-slurm``); else the tests skip, saying why."""
    up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    if not up and os.environ.get("BIOFA_SLURM_START") != "1":
        pytest.skip("no SLURM cluster answers (sinfo); `make test-slurm` starts one with tools/slurm-cluster.sh")
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("no SLURM cluster: tools/slurm-cluster.sh start did not finish within 900 s")
    if done.returncode != 0:
        pytest.skip(f"no SLURM cluster: tools/slurm-cluster.sh start failed: {(done.stderr or done.stdout).strip()}")
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    return partition[0].rstrip("*")


def write_spec(folder: Path, epochs: int = 2, seeds=(0, 1), executor: str = "runs_per_job = 3",
               feedback=("bp", "fa", "brsf", "wm")) -> tuple[Path, str]:
    """A small study on the bundled digits data; a unique name (the jobs are called biofa-<name>)."""
    name = f"slurm_{uuid.uuid4().hex[:8]}"
    text = f"""
[experiment]
name = "{name}"
[data]
name = "digits"
n_train = 300
n_test = 100
validation = 0.2
[model]
name = "mlp"
hidden = [12]
[train]
epochs = {epochs}
batch_size = 32
[train.optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
[metrics]
update_batch = 32
[grid]
feedback = {list(feedback)}
seed = {list(seeds)}
[executor]
{executor}
"""
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path, name


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def biofa(*args, timeout=WAIT_S, **kwargs):
    """Run the biofa command to its end; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "biofa.cli", "run", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=timeout, env=kwargs.pop("env", env()),
                          cwd=ROOT, **kwargs)


def start_biofa(*args, environ=None):
    """Start the biofa command (in ``environ``, default :func:`env`); the Popen (output in files
    beside the study)."""
    return subprocess.Popen([sys.executable, "-m", "biofa.cli", "run", *map(str, args), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env() if environ is None else environ, cwd=ROOT)


def stop(*processes):
    """Kill what is still running of ``processes`` and close their pipes."""
    for process in processes:
        process.kill()
        process.wait(timeout=WAIT_S)
        if process.stdout is not None:
            process.stdout.close()


def wait_for(predicate, what: str, timeout: float = WAIT_S, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"waited {timeout} s for {what}")


def starts(out: Path) -> list[tuple[str, str]]:
    """(run id, "starts" or "resumes") for every start of a run logged by any job of the study."""
    found = []
    for log in sorted((out / "slurm").glob("*/*_log.out")):
        found += START.findall(log.read_text(errors="replace"))
    return found


def squeue(name: str) -> list[list[str]]:
    """[job id, state] of the jobs called biofa-<name> still queued or running."""
    text = subprocess.run(["squeue", "-h", "-r", "-n", f"biofa-{name}", "-o", "%i %T"],
                          capture_output=True, text=True, check=True).stdout
    return [line.split() for line in text.splitlines() if line.strip()]


def table(path: Path, drop=TIMING) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    key = "epoch" if "epoch" in rows[0] else None
    return {(r["run_id"], r[key] if key else ""): {k: v for k, v in r.items() if k not in drop}
            for r in rows}


def result(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / f"{run_id}.json").read_text())


@pytest.mark.slurm
def test_slurm_study_equals_local(cluster, tmp_path):
    spec, name = write_spec(tmp_path)
    t0 = time.perf_counter()
    slurm = biofa(spec, "--executor", "slurm", "--out", tmp_path / "slurm")
    t_slurm = time.perf_counter() - t0
    assert slurm.returncode == 0, slurm.stdout + slurm.stderr
    t0 = time.perf_counter()
    local = biofa(spec, "--out", tmp_path / "local")
    t_local = time.perf_counter() - t0
    assert local.returncode == 0, local.stdout + local.stderr
    print(f"8 runs: {t_slurm:.1f} s through SLURM, {t_local:.1f} s local")
    for name_ in ("runs.csv", "history.csv"):
        assert table(tmp_path / "slurm" / name_) == table(tmp_path / "local" / name_), name_
    out = tmp_path / "slurm"
    manifest = json.loads((out / "slurm" / "manifest.json").read_text())["runs"]
    ids = [r["run_id"] for r in json.loads((out / "plan.json").read_text())["runs"]]
    assert sorted(manifest) == sorted(ids)
    jobs = Counter(entries[-1]["job"] for entries in manifest.values())
    assert sorted(jobs.values()) == [2, 3, 3]  # 8 runs in chunks of 3: one array of 3 tasks
    assert len({job.split("_")[0] for job in jobs}) == 1
    assert Counter(run for run, _ in starts(out)) == Counter(ids)
    assert slurm.stdout.count(" ok ") >= 8  # a line per run as it finished (not a terminal)
    assert squeue(name) == []


@pytest.mark.slurm
def test_scancel_fails_the_jobs_runs_and_retry_finishes_them(cluster, tmp_path):
    # The jobs wait in their setup line for a file the test creates after the scancel, so the
    # cancelled job is certainly running and unfinished, however fast the machine trains.
    go = tmp_path / "go"
    spec, name = write_spec(tmp_path, executor=f'runs_per_job = 4\nsetup = ["while [ ! -e {go} ]; do sleep 0.2; done"]')
    out = tmp_path / "study"
    follower = start_biofa(spec, "--executor", "slurm", "--out", out)
    try:
        running = wait_for(lambda: [j for j, state in squeue(name) if state == "RUNNING"],
                           "a job of the study to run")
        job = running[0]
        manifest = json.loads((out / "slurm" / "manifest.json").read_text())["runs"]
        run_id = next(r for r, entries in manifest.items() if entries[-1]["job"] == job)
        subprocess.run(["scancel", job], check=True)
        wait_for(lambda: job not in [j for j, _ in squeue(name)], "the cancelled job to leave the queue")
        go.touch()
        output, _ = follower.communicate(timeout=WAIT_S)
    finally:
        go.touch()
        stop(follower)
    assert follower.returncode == 1, output  # some runs failed
    chunk = [r for r, entries in manifest.items() if entries[-1]["job"] == job]
    failed = [r for r in chunk if result(out, r)["status"] == "failed"]
    assert failed == chunk and run_id in failed  # every run of the cancelled job
    for r in failed:
        stored = result(out, r)
        assert stored["job_id"] == job and job in stored["reason"]
        assert stored["log"] == manifest[r][-1]["stdout"] and stored["log"] in stored["reason"]
        assert Path(stored["log"]).is_file()
    others = [r for r in manifest if r not in chunk]
    assert all(result(out, r)["status"] == "ok" for r in others)
    with open(out / "runs.csv", newline="") as fh:
        assert sorted(row["run_id"] for row in csv.DictReader(fh) if row["status"] == "failed") == sorted(failed)

    retry = biofa(spec, "--executor", "slurm", "--out", out, "--retry-failed")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert all(result(out, r)["status"] == "ok" for r in manifest)
    after = json.loads((out / "slurm" / "manifest.json").read_text())["runs"]
    assert all(len(after[r]) == 2 and after[r][-1]["job"] != job for r in failed)
    assert all(len(after[r]) == 1 for r in manifest if r not in failed)
    assert squeue(name) == []


@pytest.mark.slurm
def test_sigkill_of_the_submitter_then_the_same_command_computes_no_run_twice(cluster, tmp_path):
    # One array task at a time; once a run has finished and another is in flight, the test
    # creates a file that every task started later waits on in its setup line, until the second
    # command has said it follows the queued jobs: they are certainly still queued when the
    # submitter dies and when the second command starts, however fast the machine trains.
    hold = tmp_path / "hold"
    executor = f"runs_per_job = 2\narray_parallelism = 1\nsetup = ['while [ -e {hold} ]; do sleep 0.2; done']"
    spec, name = write_spec(tmp_path, epochs=10, executor=executor)
    out = tmp_path / "study"
    command = (spec, "--executor", "slurm", "--out", out)
    follower = start_biofa(*command)
    again_log = tmp_path / "again.log"
    again = None
    try:
        def one_done_one_running():
            done = {p.stem for p in (out / "runs").glob("*.json")}
            running = [r for r, _ in starts(out) if r not in done]
            return done and running
        wait_for(one_done_one_running, "a finished run and a run in flight")
        hold.touch()
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=WAIT_S)
        before = json.loads((out / "slurm" / "manifest.json").read_text())["runs"]
        assert squeue(name)  # the jobs outlive the submitting process
        with open(again_log, "w") as log:
            again = subprocess.Popen([sys.executable, "-m", "biofa.cli", "run", *map(str, command), "--no-progress"],
                                     stdout=log, stderr=subprocess.STDOUT, text=True, env=env(), cwd=ROOT)
        wait_for(lambda: "already queued" in again_log.read_text(), "the second command to follow the jobs")
        hold.unlink()
        again.wait(timeout=WAIT_S)
    finally:
        hold.unlink(missing_ok=True)
        stop(follower, *([again] if again is not None else []))
    said = again_log.read_text()
    assert again.returncode == 0, said
    assert "already queued" in said and "not submitting them again" in said
    assert "submitted" not in said
    after = json.loads((out / "slurm" / "manifest.json").read_text())["runs"]
    assert after == before  # nothing submitted again
    ids = [r["run_id"] for r in json.loads((out / "plan.json").read_text())["runs"]]
    assert Counter(run for run, _ in starts(out)) == Counter(ids)  # each run started exactly once
    assert all(result(out, r)["status"] == "ok" for r in ids)
    with open(out / "runs.csv", newline="") as fh:
        assert sorted(row["run_id"] for row in csv.DictReader(fh)) == sorted(ids)


@pytest.mark.slurm
def test_detach_submits_and_returns_and_the_same_command_collects(cluster, tmp_path):
    spec, name = write_spec(tmp_path, epochs=5, executor="runs_per_job = 4")
    out = tmp_path / "study"
    command = (spec, "--executor", "slurm", "--out", out)
    detached = biofa(*command, "--detach")
    assert detached.returncode == 0, detached.stdout + detached.stderr
    assert "8 queued" in detached.stdout and "run the same command again" in detached.stdout
    manifest = json.loads((out / "slurm" / "manifest.json").read_text())["runs"]
    assert len(manifest) == 8 and all(len(entries) == 1 for entries in manifest.values())
    assert (out / "runs.csv").is_file()  # the tables exist (header only) while the jobs run
    again = biofa(*command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "submitted" not in again.stderr
    assert json.loads((out / "slurm" / "manifest.json").read_text())["runs"] == manifest
    with open(out / "runs.csv", newline="") as fh:
        assert sorted(row["status"] for row in csv.DictReader(fh)) == ["ok"] * 8
    assert Counter(run for run, _ in starts(out)) == Counter({run: 1 for run in manifest})
    assert squeue(name) == []


#: sitecustomize.py of a folder put on PYTHONPATH by test_time_limit_requeues_...: registers the
#: model "held_mlp", biofa's MLP behind a layer that, in a training forward, waits while a file
#: matching $BIOFA_TEST_HOLD_GLOB (the study's runs/*/last.pt) exists and $BIOFA_TEST_GO does not.
#: So once a run has checkpointed an epoch it cannot go on, let alone end, until the test says so.
#: The wait changes no number: the run computes exactly what the plain MLP computes.
HOLD_HOOK = """
import os

if os.environ.get("BIOFA_TEST_HOLD_GLOB"):
    import glob
    import time

    import torch
    from torch import nn

    from biofa.models.mlp import MLP
    from biofa.models.registry import register_model

    class _Hold(nn.Module):
        def forward(self, x):
            pattern, go = os.environ["BIOFA_TEST_HOLD_GLOB"], os.environ["BIOFA_TEST_GO"]
            if self.training and torch.is_grad_enabled():
                while glob.glob(pattern) and not os.path.exists(go):
                    time.sleep(0.2)
            return x

    def held_mlp(input_shape, n_outputs, hidden=(100, 100), activation="relu", bias=True):
        return nn.Sequential(_Hold(), MLP(input_shape, n_outputs, hidden, activation, bias))

    register_model("held_mlp", held_mlp)
"""


@pytest.mark.slurm
def test_time_limit_requeues_and_the_run_ends_as_an_uninterrupted_one(cluster, tmp_path):
    # One run whose model waits, once the run has checkpointed an epoch, on a file the test creates
    # (HOLD_HOOK): it cannot end before its time limit, however fast the machine trains. Its time
    # limit is then cut to end within two minutes, inside the signal delay: SLURM signals the job at
    # its next check, submitit requeues it, and the same chunk runs again; the run continues from
    # its last epoch checkpoint and must end exactly as a run never interrupted (run meanwhile,
    # held the same way on its own checkpoint, released by the same file).
    hook, go = tmp_path / "hook", tmp_path / "go"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_HOOK)
    out, local_out = tmp_path / "study", tmp_path / "local"
    path = f"{hook}{os.pathsep}{ROOT}"
    setup = [f"export PYTHONPATH={path}:${{PYTHONPATH:-}}", f"export BIOFA_TEST_HOLD_GLOB='{out}/runs/*/last.pt'",
             f"export BIOFA_TEST_GO='{go}'"]
    spec, name = write_spec(tmp_path, epochs=3, seeds=(0,), feedback=("fa",),
                            executor=f"time_min = 10\nsignal_delay_s = 150\nmax_requeues = 5\nsetup = {json.dumps(setup)}")
    spec.write_text(spec.read_text().replace('name = "mlp"', 'name = "held_mlp"'))

    def held(study):
        return {**env(), "PYTHONPATH": path + os.pathsep + env()["PYTHONPATH"],
                "BIOFA_TEST_HOLD_GLOB": f"{study}/runs/*/last.pt", "BIOFA_TEST_GO": str(go)}

    follower = start_biofa(spec, "--executor", "slurm", "--out", out, environ=held(out))
    local = start_biofa(spec, "--out", local_out, environ=held(local_out))  # the uninterrupted run
    try:
        run_id = wait_for(lambda: starts(out), "the run to start")[0][0]
        wait_for((out / "runs" / run_id / "last.pt").is_file, "the run's first epoch checkpoint")
        job = json.loads((out / "slurm" / "manifest.json").read_text())["runs"][run_id][-1]["job"]
        assert not (out / "runs" / f"{run_id}.json").exists()  # held: it cannot have ended
        elapsed = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={_minutes(elapsed) + 2}"], check=True)
        err = Path(json.loads((out / "slurm" / "manifest.json").read_text())["runs"][run_id][-1]["stderr"])
        wait_for(lambda: [s for j, s in squeue(name) if j == job and s != "RUNNING"]
                 or f"Requeued job {job}" in err.read_text(), "the job to be requeued")
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
        go.touch()  # release both runs
        output, _ = follower.communicate(timeout=WAIT_S)
        local_output, _ = local.communicate(timeout=WAIT_S)
    finally:
        go.touch()
        stop(follower, local)
    assert follower.returncode == 0, output
    assert local.returncode == 0, local_output
    log = Path(json.loads((out / "slurm" / "manifest.json").read_text())["runs"][run_id][-1]["stdout"])
    assert f"Requeued job {job}" in log.with_suffix(".err").read_text() + log.read_text()
    kinds = [kind for _, kind in starts(out)]
    assert kinds == ["starts", "resumes"], kinds  # the runner keeps epoch checkpoints: it resumes
    assert result(out, run_id)["epochs_done"] == 3
    for name_ in ("runs.csv", "history.csv"):
        assert table(out / name_) == table(local_out / name_), name_


def _minutes(elapsed: str) -> int:
    """Whole minutes (rounded up) of squeue's elapsed time ``[D-][H:]M:S``."""
    days, _, clock = elapsed.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    seconds = (int(days or 0) * 24 + parts[0]) * 3600 + parts[1] * 60 + parts[2]
    return -(-seconds // 60)


@pytest.mark.slurm
@pytest.mark.parametrize("case", ["unknown key", "unknown partition", "no slurm"])
def test_bad_executor_settings_exit_2_before_anything_is_submitted(cluster, tmp_path, case):
    executor = {"unknown key": "runs_per_jobs = 2", "unknown partition": 'partition = "nosuchpart"',
                "no slurm": ""}[case]
    spec, name = write_spec(tmp_path, executor=executor)
    out = tmp_path / "study"
    environ = env()
    if case == "no slurm":  # a PATH without SLURM's commands
        environ["PATH"] = str(Path(sys.executable).parent)
    done = biofa(spec, "--executor", "slurm", "--out", out, env=environ)
    assert done.returncode == 2, done.stdout + done.stderr
    said = {"unknown key": "runs_per_jobs", "unknown partition": "nosuchpart", "no slurm": "sinfo"}[case]
    assert said in done.stderr and done.stderr.startswith("biofa: error:")
    assert squeue(name) == []
    assert not (out / "slurm").exists()


# -- without a cluster: the [executor] table, submitit's parameters, the shared-folder check -------
def _guide_spec() -> str:
    text = (ROOT / "docs" / "guide" / "cluster.rst").read_text()
    block = text.split(".. code-block:: toml\n\n", 1)[1].split("\n\n.. code-block:: console", 1)[0]
    return "\n".join(line[3:] for line in block.splitlines())


def test_the_guides_spec_is_valid_and_its_executor_table_changes_no_run_id():
    from biofa.experiment import expand, from_dict
    from biofa.experiment.spec import tomllib
    tree = tomllib.loads(_guide_spec())
    spec = from_dict(tree)
    assert spec.executor == {**spec.executor, "partition": "gpu", "time_min": 240, "gpus_per_task": 1,
                             "runs_per_job": 2, "array_parallelism": 40, "mem_gb": 16}
    assert len(expand(spec)) == 6 * 3 * 5 * 5
    bare = from_dict({k: v for k, v in tree.items() if k != "executor"})
    assert bare.executor == {"time_min": 60, "cpus_per_task": 1, "gpus_per_task": 0,
                             "runs_per_job": 1, "max_requeues": 3}
    assert [r["run_id"] for r in expand(spec)] == [r["run_id"] for r in expand(bare)]


@pytest.mark.parametrize("key, value, said", [
    ("runs_per_jobs", 2, "unknown key [executor] runs_per_jobs (did you mean 'runs_per_job'?)"),
    ("time_min", 0, "[executor] time_min must be a positive integer, got 0"),
    ("setup", "module load x", "[executor] setup must be a list of strings"),
    ("sbatch", {"exclude": 1.5}, "[executor] sbatch must be a table of sbatch option = value"),
])
def test_bad_executor_keys_name_the_key(key, value, said):
    from biofa.errors import SpecError
    from biofa.experiment import from_dict
    with pytest.raises(SpecError) as err:
        from_dict({"grid": {"feedback": ["bp"]}, "executor": {key: value}}, source="s.toml")
    assert said in str(err.value)


def test_submitit_parameters_of_an_executor_table():
    from biofa.experiment import from_dict
    from biofa.experiment.executors.slurm import submitit_parameters
    spec = from_dict({"executor": {"time_min": 1, "mem_gb": 1.5, "gpus_per_task": 2, "qos": "high",
                                   "sbatch": {"exclude": "node3", "exclusive": True}}, "grid": {}})
    params = submitit_parameters(spec.executor, "debug", "x")
    assert params == {"partition": "debug", "time": 1, "cpus_per_task": 1, "signal_delay_s": 30,
                      "job_name": "biofa-x", "gpus_per_task": 2, "mem": "1536MB", "qos": "high",
                      "additional_parameters": {"exclude": "node3", "exclusive": True}}
    long = from_dict({"executor": {"time_min": 240, "signal_delay_s": 300}, "grid": {}}).executor
    assert submitit_parameters(long, "p", "x")["signal_delay_s"] == 300
    assert submitit_parameters({**long, "signal_delay_s": None}, "p", "x")["signal_delay_s"] == 90


def test_the_shared_folder_check(tmp_path):
    import socket

    from biofa.experiment.executors import slurmctl
    here = socket.gethostname()
    assert "local to each node" in slurmctl.local_reason("/tmp/study") or \
        "filesystem" in slurmctl.local_reason("/tmp/study")
    assert slurmctl.local_reason("/dev/shm/study") is not None
    assert slurmctl.shared_problem("/tmp/study", [here]) is None  # one node, this machine: fine
    problem = slurmctl.shared_problem("/tmp/study", [here, "node7"])
    assert "not on a shared filesystem" in problem and "node7" in problem
    mount, fstype = slurmctl.filesystem(ROOT)
    if fstype not in slurmctl.MEMORY_FS and not str(ROOT.resolve()).startswith(slurmctl.LOCAL_FOLDERS):
        assert slurmctl.shared_problem(ROOT / "results" / "x", [here, "node7"]) is None
