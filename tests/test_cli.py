"""The ``biofa`` command: exit statuses and messages, list, report, and resuming after SIGKILL."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _procs import session_alive
from biofa.cli import main
from biofa.feedback import RULES

TINY = """
[experiment]
name = "tiny"
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
seed = [0, 1, 2]
"""


def write_spec(folder, name="tiny.toml", **fields):
    values = {"n_train": 300, "epochs": 1, **fields}
    path = folder / name
    path.write_text(TINY.format(**values))
    return path


#: A hang guard, not a speed requirement: a cold `python -m biofa.cli` imports torch, which takes
#: seconds on an idle machine and minutes on a loaded one; only a hang should ever reach it.
HANG_S = 900


def cli(*args, timeout=HANG_S):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "biofa.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_bad_spec_exits_2_and_names_the_key(tmp_path, capsys):
    spec = write_spec(tmp_path, epochs=-1)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"biofa: error: {spec}: [train] epochs must be a positive integer, got -1\n"
    assert not out.exists()
    good = write_spec(tmp_path, "good.toml")
    assert main(["run", str(good), "--out", str(out), "--set", "train.batch_size=0"]) == 2
    assert "good.toml (--set): [train] batch_size must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "no such experiment spec file" in capsys.readouterr().err
    assert main(["run", str(good), "--jobs", "0"]) == 2
    assert main(["run"]) == 2  # usage error from argparse
    assert not out.exists()


def test_bad_spec_exits_2_in_a_subprocess(tmp_path):
    spec = write_spec(tmp_path, epochs=-1)
    done = cli("run", spec, "--out", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.strip() == f"biofa: error: {spec}: [train] epochs must be a positive integer, got -1"
    assert not (tmp_path / "out").exists()


def test_missing_data_file_exits_2_with_the_data_message(tmp_path, capsys):
    spec = tmp_path / "mnist.toml"
    spec.write_text(f'[data]\nname = "mnist"\nroot = "{tmp_path / "nodata"}"\n[grid]\nfeedback = ["fa"]\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"biofa: error: {spec}: [data] MNIST needs the files train-images-idx3-ubyte")
    assert "pass root=" in err
    assert not (tmp_path / "out").exists()


def test_list_shows_every_registry(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in [*RULES, "dale", "fixed", "const", "mlp", "lenet", "mnist1d", "digits", "quickstart",
                 "example", "circuits:"]:
        assert name in text, name
    assert main(["list", "rules"]) == 0
    rules = capsys.readouterr().out
    assert rules.startswith("feedback rules (feedback = ...):") and "datasets" not in rules


def test_report_of_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # a folder without runs.csv
    assert "no runs.csv here" in capsys.readouterr().err


def _finished(out):  # the run files, not the temporary files they are written through
    runs = out / "runs"
    return sorted(p for p in runs.glob("*.json") if not p.name.startswith(".")) if runs.is_dir() else []


def test_sigkill_then_resume_redoes_only_unfinished_runs(tmp_path, capsys):
    spec = write_spec(tmp_path, n_train=400, epochs=10)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "biofa.cli", "run", str(spec), "--out", str(out),
                             "--jobs", "1", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + HANG_S  # a hang guard, not a speed requirement: waits on the first run file
        while not _finished(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=HANG_S)
    before = {p.name: p.read_bytes() for p in _finished(out)}
    assert 1 <= len(before) < 6, "the study should have been killed part-way"
    assert proc.returncode == -signal.SIGKILL
    for data in before.values():
        assert json.loads(data)["status"] == "ok"  # complete files only
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(before)} kept from before" in printed and "| bp | 3/3 |" in printed
    after = {p.name: p.read_bytes() for p in _finished(out)}
    assert len(after) == 6
    assert {k: after[k] for k in before} == before  # finished runs were not redone
    with open(out / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == 6 and {r["status"] for r in runs} == {"ok"}
    with open(out / "history.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6 * 11
    assert not list(out.rglob(".tmp-biofa-*"))
    # biofa report regenerates report.md and the figures from the CSV files
    for name in ("report.md", "learning_curves.png"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "learning_curves.png").is_file()


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help_exits_0(argv, capsys):
    assert main(argv) == 0
    assert "usage: biofa" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_stops_parallel_workers_at_once(tmp_path):
    spec = write_spec(tmp_path, n_train=600, epochs=30)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "biofa.cli", "run", str(spec), "--out", str(out),
                             "--jobs", "2", "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_S  # a hang guard: waits on the first run file
    while not _finished(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _finished(out) and proc.poll() is None, "the study should be running with a finished run"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130
    assert "interrupted; finished runs are kept" in err
    n = len(_finished(out))
    # not a fixed sleep: wait (hang guard) until no process of the study's session is left, so a
    # worker that went on with the queue would certainly have written its run file by then
    deadline = time.monotonic() + HANG_S
    while session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not session_alive(proc.pid), "study processes outlived the interrupted main process"
    assert len(_finished(out)) == n < 6  # no worker goes on running the queue
