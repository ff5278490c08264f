"""The study runner under faults, with real signals sent to a real ``biofa run`` process: SIGKILL
and SIGTERM of the main process, a second writer, a full disk, a read-only folder, a dead worker;
tables that follow every finished run; what report.md records about the environment.

No test assumes a speed: each waits for an observable event (a run file, a printed line, the lock's
holder file) with a generous deadline, and asserts what must hold whenever the signal arrives.
"""

import csv
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _procs import processes
from biofa.cli import main
from biofa.experiment import environment, from_dict, run_study
from biofa.experiment.executors import Executor, execute

SPEC = """
[experiment]
name = "faults"
[data]
name = "digits"
n_train = {n_train}
n_test = 100
[model]
name = "mlp"
hidden = [16]
[train]
epochs = {epochs}
batch_size = 16
lr = 0.05
[metrics]
update_batch = 32
[grid]
feedback = ["bp", "fa"]
seed = {seeds}
"""
#: A hang guard, not a speed requirement: every wait is for an event that takes seconds on an idle
#: machine (a cold process imports torch) and can take minutes on a loaded one.
DEADLINE_S = 900


def write_spec(folder, n_train=300, epochs=2, seeds="[0, 1, 2]", name="faults.toml"):
    path = folder / name
    path.write_text(SPEC.format(n_train=n_train, epochs=epochs, seeds=seeds))
    return path


def env():
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture
def start():
    """Start ``biofa run ...`` in its own session (so every process it starts can be found); at the
    end of the test, whatever is left of it is killed."""
    started = []

    def start(*args):
        proc = subprocess.Popen([sys.executable, "-m", "biofa.cli", "run", *map(str, args), "--no-progress"],
                                env=env(), start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if Path("/proc").is_dir():
            for pid in session_processes(proc.pid):
                os.kill(pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=DEADLINE_S)


def cli(*args, timeout=DEADLINE_S):
    return subprocess.run([sys.executable, "-m", "biofa.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env())


def finished(out):
    """The run files in ``out`` (not the temporary files a run file is written through)."""
    runs = out / "runs"
    return sorted(p for p in runs.glob("*.json") if not p.name.startswith(".")) if runs.is_dir() else []


def wait_for(condition, what, proc=None, deadline_s=DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"biofa run ended (status {proc.returncode}) before {what}: "
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {deadline_s} s")
        time.sleep(0.05)


def session_processes(sid):
    """Live (not zombie) processes of session ``sid``: the study's main process, its workers, the
    fork server and the resource tracker all stay in the session of the process they came from."""
    return [pid for pid, (state, _, session) in processes().items() if session == sid and state not in "ZX"]


def grandchildren(pid):
    """Live processes whose parent is a child of ``pid``: the workers, children of the fork server."""
    table = processes()
    children = {p for p, (_, parent, _) in table.items() if parent == pid}
    return [p for p, (state, parent, _) in table.items() if parent in children and state not in "ZX"]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")


def table(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_tables_match_run_files(out):
    files = {p.stem: json.loads(p.read_text()) for p in finished(out)}
    runs = table(out / "runs.csv")
    assert sorted(r["run_id"] for r in runs) == sorted(files)
    history = table(out / "history.csv")
    assert len(history) == sum(len(result["history"]) for result in files.values())
    assert {h["run_id"] for h in history} == {k for k, r in files.items() if r["history"]}
    assert not list(out.rglob(".tmp-biofa-*"))


# -- signals --------------------------------------------------------------------------------------

@needs_proc
def test_sigkill_of_main_leaves_no_process_and_resume_redoes_the_rest(tmp_path, start):
    spec = write_spec(tmp_path, n_train=400, epochs=8)
    out = tmp_path / "out"
    proc = start(spec, "--out", out, "--jobs", "2")
    wait_for(lambda: finished(out), "finished run", proc)
    assert len(session_processes(proc.pid)) >= 4  # main, fork server, resource tracker, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=DEADLINE_S)
    # the workers read end-of-file on their lifeline; then the fork server and tracker go
    wait_for(lambda: not session_processes(proc.pid), "end of every study process")
    kept = {p.name: p.read_bytes() for p in finished(out)}
    assert 1 <= len(kept) < 6
    done = cli("run", spec, "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"{len(kept)} kept from before" in done.stdout
    assert {p.name: p.read_bytes() for p in finished(out) if p.name in kept} == kept
    assert len(finished(out)) == 6
    assert_tables_match_run_files(out)


@needs_proc
def test_sigterm_stops_like_ctrl_c_with_status_143(tmp_path, start):
    spec = write_spec(tmp_path, n_train=400, epochs=8)
    out = tmp_path / "out"
    proc = start(spec, "--out", out, "--jobs", "2")
    wait_for(lambda: finished(out), "finished run", proc)
    os.kill(proc.pid, signal.SIGTERM)  # the main process only, as `kill PID` does
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 143 == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == ("biofa: stopped by SIGTERM; finished runs are kept "
                                            "(run the same command again to resume)")
    assert "Traceback" not in err
    wait_for(lambda: not session_processes(proc.pid), "end of every study process")
    assert 1 <= len(finished(out)) < 6
    assert_tables_match_run_files(out)
    assert all(json.loads(p.read_text())["status"] == "ok" for p in finished(out))  # none recorded as failed


@needs_proc
def test_a_killed_worker_fails_only_its_run(tmp_path, start):
    spec = write_spec(tmp_path, n_train=400, epochs=8)
    out = tmp_path / "out"
    proc = start(spec, "--out", out, "--jobs", "2")
    wait_for(lambda: finished(out), "finished run", proc)
    workers = grandchildren(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=DEADLINE_S)
    results = [json.loads(p.read_text()) for p in finished(out)]
    failed = [r for r in results if r["status"] != "ok"]
    if proc.returncode == 0:  # the killed worker had just been told to stop: nothing was lost
        assert not failed
    else:
        assert proc.returncode == 1, err
        assert len(failed) == 1 and failed[0]["reason"] == "worker process died (killed by SIGKILL)"
    assert len(results) == 6  # the other runs went on in a new worker
    assert_tables_match_run_files(out)


# -- tables ---------------------------------------------------------------------------------------

def test_tables_follow_each_finished_run_and_a_line_is_printed(tmp_path, start):
    spec = write_spec(tmp_path, epochs=2)
    out = tmp_path / "out"
    proc = start(spec, "--out", out, "--jobs", "1")
    order, lines = None, []
    for line in proc.stdout:  # stdout is a pipe, not a terminal: one line per finished run
        if not line.startswith("["):
            continue
        lines.append(line)
        k = len(lines)
        order = order or [r["run_id"] for r in json.loads((out / "plan.json").read_text())["runs"]]
        # the line comes after both tables were rewritten; jobs = 1 finishes runs in grid order
        assert set(order[:k]) <= {h["run_id"] for h in table(out / "history.csv")}
        assert set(order[:k]) <= {r["run_id"] for r in table(out / "runs.csv")}
    proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0
    assert len(lines) == 6
    first = lines[0].split()
    assert first[0] == "[1/6]" and first[1:4] == ["bp", "seed", "0"] and first[4] == "ok"
    assert first[5:7] == ["test", "acc"] and first[7].endswith("%") and first[9] == "s"
    assert first[10] == order[0]


def test_report_on_an_unfinished_study_counts_the_missing_runs_and_rebuilds_lagging_tables(tmp_path):
    out = tmp_path / "out"
    spec = write_spec(tmp_path, epochs=1)
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    # an unfinished study whose tables lag its run files (as after SIGKILL between the two)
    removed = finished(out)[:2]
    for path in removed:
        path.unlink()
    header = (out / "runs.csv").read_text().splitlines()[0]
    (out / "runs.csv").write_text(header + "\n")
    (out / "history.csv").unlink()
    done = cli("report", out)
    assert done.returncode == 0, done.stderr
    assert "unfinished study: 2 of 6 runs have no result yet" in done.stdout
    assert_tables_match_run_files(out)
    assert len(table(out / "runs.csv")) == 4
    assert "**Unfinished study: 2 of 6 runs have no result yet**" in (out / "report.md").read_text()


# -- one writer per folder ------------------------------------------------------------------------

def test_a_second_writer_on_a_busy_folder_exits_2_naming_the_holder(tmp_path, start):
    spec = write_spec(tmp_path, n_train=400, epochs=8)
    out = tmp_path / "out"
    first = start(spec, "--out", out, "--jobs", "1")
    wait_for(lambda: (out / ".biofa.lock.json").is_file() and (out / "runs.csv").is_file(),
             "lock holder file and tables", first)
    first.send_signal(signal.SIGSTOP)  # frozen, it holds the lock for as long as this test needs
    second = cli("run", spec, "--out", out, "--no-progress")
    assert second.returncode == 2
    assert second.stderr.startswith(f"biofa: error: {out}: another biofa process is writing this "
                                    f"study folder (pid {first.pid} on ")
    assert len(second.stderr.strip().splitlines()) == 1
    report = cli("report", out)  # reading is allowed; the running study keeps the tables
    assert report.returncode == 0 and f"a study is running in {out} (pid {first.pid}" in report.stdout
    first.send_signal(signal.SIGTERM)
    first.send_signal(signal.SIGCONT)
    first.communicate(timeout=DEADLINE_S)
    assert first.returncode == 143
    assert not (out / ".biofa.lock.json").exists()  # released: the folder is free again


# -- operating-system errors ----------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (needs root and a kernel that lets us mount)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()

    def remount(options):
        subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True, capture_output=True)

    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=44k", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount, remount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_exits_2_in_one_line_and_keeps_every_finished_run(tmpfs, tmp_path):
    mount, remount = tmpfs
    spec = write_spec(tmp_path, epochs=1, seeds="[0, 1, 2, 3]")
    out = mount / "out"
    # 44 KiB of 4 KiB pages: the study's small files and a few run files fit, not eight runs
    done = cli("run", spec, "--out", out, "--no-progress")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"biofa: error: {out}") and line.endswith(": No space left on device")
    kept = {p.name: p.read_bytes() for p in finished(out)}
    assert all(json.loads(data)["status"] == "ok" for data in kept.values())  # complete files only
    remount("size=4m")
    again = cli("run", spec, "--out", out, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} kept from before" in again.stdout
    assert {p.name: p.read_bytes() for p in finished(out) if p.name in kept} == kept
    assert_tables_match_run_files(out)


def test_a_read_only_folder_exits_2_in_one_line(tmpfs, tmp_path):
    mount, remount = tmpfs
    spec = write_spec(tmp_path, epochs=1, seeds="[0]")
    remount("ro")
    for out in (mount / "new", mount):
        done = cli("run", spec, "--out", out, "--no-progress")
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"biofa: error: {out}") and line.endswith(": Read-only file system")


def test_out_that_is_a_file_exits_2_in_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path, epochs=1, seeds="[0]")
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"biofa: error: {out}: exists and is not a folder (give --out a folder)\n"
    assert out.read_text() == "not a folder"


# -- files, names, specs --------------------------------------------------------------------------

def test_files_follow_the_umask(tmp_path):
    spec = from_dict({"data": {"name": "digits", "n_train": 200, "n_test": 50}, "model": {"hidden": [8]},
                      "train": {"epochs": 1}, "metrics": {"update_alignment": False},
                      "grid": {"feedback": ["fa"]}}, source="u.toml")
    old = os.umask(0o027)
    try:
        run_study(spec, tmp_path, progress=False)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".biofa.lock"]
    assert {p.name for p in files} >= {"runs.csv", "history.csv", "report.md", "spec.toml", "plan.json",
                                       "environment.json", "learning_curves.png"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_a_spec_name_cannot_leave_the_results_folder(tmp_path, capsys):
    spec = tmp_path / "evil.toml"
    spec.write_text('[experiment]\nname = "../../x"\n[grid]\nfeedback = ["fa"]\n')
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["run", str(spec)]) == 2
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().err == (f"biofa: error: {spec}: [experiment] name must be a plain folder name "
                                       "(no '/' or '\\', not '.' or '..'), got '../../x'\n")
    assert not (tmp_path / "results").exists() and not (tmp_path.parent / "x").exists()


def test_an_empty_spec_exits_2_naming_what_is_missing(tmp_path, capsys):
    for text in ("", '[experiment]\nname = "x"\n'):
        spec = tmp_path / "empty.toml"
        spec.write_text(text)
        assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err == (f"biofa: error: {spec}: the spec says nothing to run: give at "
                                           "least one of [data], [task], [model], [grid] (`biofa run example` "
                                           "shows every table)\n")
    assert not (tmp_path / "out").exists()


def test_quick_without_a_quick_table_warns(tmp_path, capsys):
    spec = write_spec(tmp_path, epochs=1, seeds="[0]")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--quick", "--set", "feedback=fa", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().err.startswith(f"biofa: warning: {spec}: --quick, but the spec has no [quick] "
                                              "table: running the full study\n")


# -- the executor interface and the environment ---------------------------------------------------

class Reversed(Executor):
    """An executor of our own: in this process, last run first."""

    name = "reversed"

    def __init__(self):
        self.seen = []

    def run(self, tasks, out, on_result):
        for task in reversed(list(tasks)):
            summary = execute(task, out)
            self.seen.append(summary)
            on_result(summary)


def test_any_executor_writes_the_same_study(tmp_path):
    spec = from_dict({"data": {"name": "digits", "n_train": 200, "n_test": 50}, "model": {"hidden": [8]},
                      "train": {"epochs": 1}, "metrics": {"update_alignment": False},
                      "grid": {"feedback": ["bp", "fa"], "seed": [0, 1]}}, source="e.toml")
    executor, calls = Reversed(), []
    outcome = run_study(spec, tmp_path / "mine", executor=executor, on_result=lambda *a: calls.append(a))
    assert outcome.n_ok == 4 and [c[1:] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [s["run_id"] for s in executor.seen] == [c[0]["run_id"] for c in calls]
    assert all("history" not in s and s["status"] == "ok" for s in executor.seen)
    run_study(spec, tmp_path / "local", progress=False)
    mine, local = table(tmp_path / "mine" / "runs.csv"), table(tmp_path / "local" / "runs.csv")
    keep = ("run_id", "status", "best_epoch", "test_acc_final", "test_loss_final", "best_val_acc")
    assert [{k: r[k] for k in keep} for r in mine] == [{k: r[k] for k in keep} for r in local]  # grid order


def test_report_records_the_environment(tmp_path, monkeypatch):
    import numpy
    import platform
    import scipy
    import torch
    root = tmp_path / "checkout"
    (root / "requirements").mkdir(parents=True)
    (root / "requirements" / "lock.txt").write_text("torch==2.13.0\n")
    monkeypatch.setattr(environment, "source_root", lambda: root)  # not a git checkout: commit unknown
    spec = from_dict({"data": {"name": "digits", "n_train": 200, "n_test": 50}, "model": {"hidden": [8]},
                      "train": {"epochs": 1}, "metrics": {"update_alignment": False},
                      "grid": {"feedback": ["fa"]}}, source="env.toml")
    out = tmp_path / "out"
    run_study(spec, out, jobs=1, progress=False)
    (session,) = environment.read(out)
    assert session["python"] == platform.python_version() and session["torch"] == torch.__version__
    assert session["numpy"] == numpy.__version__ and session["git_commit"] == "unknown"
    assert session["lock_file_sha256"] == hashlib.sha256(b"torch==2.13.0\n").hexdigest()
    assert session["jobs"] == 1 and session["torch_threads"] == torch.get_num_threads()
    assert session["scipy"] == scipy.__version__ and session["command"] == environment.command_line()
    first_wall = session["wall_s"]
    assert first_wall > 0 and session["runs_run"] == 1
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0  # later, from the folder alone
    report = (out / "report.md").read_text()
    assert "## Environment" in report
    for text in (f"| Python | {platform.python_version()} |", f"| torch | {torch.__version__} |",
                 f"| lock file sha256 | {session['lock_file_sha256']} |", "| git commit | unknown |"):
        assert text in report
    run_study(spec, out, jobs=1, progress=False)  # the same environment is not recorded twice,
    (session,) = environment.read(out)            # its sessions' wall times add up
    assert session["wall_s"] >= first_wall and session["runs_run"] == 1


def test_command_line_is_what_a_shell_would_type():
    assert environment.command_line(["/x/bin/biofa", "run", "a b.toml", "--set", "lr=0.1"]) == \
        "biofa run 'a b.toml' --set lr=0.1"
    assert environment.command_line(["/x/biofa/__main__.py", "run", "q"]) == "python -m biofa run q"


def test_git_commit_of_this_checkout():
    root = environment.source_root()
    if root is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=DEADLINE_S, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is not usable here")
    assert environment.capture()["git_commit"] == head


def test_a_write_error_without_root_exits_2_naming_the_file(tmp_path, capsys, monkeypatch):
    # where no tmpfs can be mounted: the disk is "full" at the first fsync
    import errno

    from biofa.experiment import results

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    spec = write_spec(tmp_path, epochs=1, seeds="[0]")
    out = tmp_path / "out"
    monkeypatch.setattr(results.os, "fsync", full)
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"biofa: error: {out / '.biofa.lock.json'}: No space left on device\n"
    assert not list(out.rglob(".tmp-biofa-*"))
