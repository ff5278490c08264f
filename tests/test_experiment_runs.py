"""One run of a study on a device, checkpointed and resumable: device choice and placement, the
checkpoint layout, resuming bit-identically (in process and after a real SIGKILL), loading a
run's best model, TensorBoard logs equal to history.csv."""

import csv
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _interrupt import run_killed_after_epoch

import biofa.experiment as ex
from biofa.cli import main
from biofa.errors import ConfigError, SpecError
from biofa.experiment.runner import checkpoints, devices
from biofa.experiment.runner import train as runner

ROOT = Path(__file__).resolve().parents[1]
#: A hang guard, not a speed requirement: a cold process (fork server, `biofa run`) imports torch,
#: seconds on an idle machine, minutes on a loaded one.
HANG_S = 900


def tiny_tree(**extra):
    tree = {
        "experiment": {"name": "tiny"},
        "data": {"name": "digits", "n_train": 300, "n_test": 100, "validation": 0.2},
        "model": {"name": "mlp", "hidden": [12]},
        "train": {"epochs": 4, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01},
                  "schedule": {"name": "step", "step_size": 2, "gamma": 0.5}},
        "metrics": {"update_batch": 32},
        "grid": {"feedback": ["fa"], "seed": [0]},
    }
    for key, value in extra.items():
        tree[key] = {**tree.get(key, {}), **value}
    return tree


def tiny(**extra):
    return ex.from_dict(tiny_tree(**extra), source="tiny.toml")


def comparable(result: dict) -> str:
    """A run's result without what differs between processes (times, pid), as JSON (NaN == NaN)."""
    drop = ("time_s", "started_at", "finished_at", "pid", "resumed_from_epoch")
    result = {k: v for k, v in result.items() if k not in drop}
    result["history"] = [{k: v for k, v in row.items() if k != "time_s"} for row in result["history"]]
    return json.dumps(result, sort_keys=True)


def weights(path) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    return blob["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
        assert same, key


# -- devices ---------------------------------------------------------------------------------------
def fake_cuda(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_device_names_resolve(monkeypatch):
    fake_cuda(monkeypatch, 0)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve("auto") == torch.device("mps")
    fake_cuda(monkeypatch, 1)
    assert devices.resolve("auto") == torch.device("cuda", 0)  # CUDA before MPS
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", 0, None):
        assert not devices.valid_name(bad)
        with pytest.raises(ConfigError, match="must be one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"):
            devices.resolve(bad)


def test_workers_are_placed_round_robin_over_the_gpus(monkeypatch):
    fake_cuda(monkeypatch, 3)
    assert [devices.resolve("cuda", slot=k).index for k in range(8)] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert [devices.resolve("auto", slot=k).index for k in range(4)] == [0, 1, 2, 0]
    assert {devices.resolve("cuda:2", slot=k) for k in range(5)} == {torch.device("cuda", 2)}
    with pytest.raises(ConfigError, match=r"device = 'cuda:3' but this machine has 3 CUDA device\(s\) "
                                          r"\(cuda:0 to cuda:2\)"):
        devices.resolve("cuda:3")
    # N workers on G GPUs: no GPU gets more than ceil(N / G) of them
    for n_workers in range(1, 10):
        load = [0, 0, 0]
        for k in range(n_workers):
            load[devices.resolve("cuda", slot=k).index] += 1
        assert max(load) == math.ceil(n_workers / 3) and max(load) - min(load) <= 1


def _report_slot(queue):
    queue.put(devices.worker_slot())


def test_worker_slots_count_the_processes_a_study_starts():
    from biofa.experiment.executors.local import _context
    assert devices.worker_slot() == 0  # the main process
    ctx = _context()
    queue = ctx.Queue()
    slots = []
    for _ in range(2):
        process = ctx.Process(target=_report_slot, args=(queue,))
        process.start()
        slots.append(queue.get(timeout=HANG_S))  # a cold fork server imports torch: seconds to minutes
        process.join(timeout=HANG_S)
    assert slots[1] == slots[0] + 1  # consecutive workers land on consecutive GPUs


def test_cuda_without_cuda_is_a_clear_error_before_any_run(monkeypatch, tmp_path, capsys):
    fake_cuda(monkeypatch, 0)
    with pytest.raises(ConfigError, match=r"\[train\] device = 'cuda' but torch.cuda.is_available\(\) is False"):
        devices.check("cuda")
    with pytest.raises(SpecError, match=r"tiny.toml: \[train\] device = 'cuda:1' but torch.cuda.is_available"):
        ex.run_study(tiny(train={"device": "cuda:1"}), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    spec = tmp_path / "s.toml"
    spec.write_text('[data]\nname = "digits"\n[train]\nepochs = 1\n')
    code = main(["run", str(spec), "--out", str(tmp_path / "cli"), "--no-progress", "--set", "train.device=cuda"])
    assert code == 2
    err = capsys.readouterr().err
    assert "biofa: error: " in err and "[train] device = 'cuda' but torch.cuda.is_available() is False" in err
    assert not (tmp_path / "cli").exists()


def test_device_keys_are_checked_and_do_not_change_run_ids():
    with pytest.raises(SpecError, match=r"tiny.toml: \[train\] device must be one of 'auto', 'cpu', 'cuda', "
                                        r"'cuda:N', 'mps', got 'gpu'"):
        tiny(train={"device": "gpu"})
    with pytest.raises(SpecError, match=r"\[train\] threads must be a positive integer, got 0"):
        tiny(train={"threads": 0})
    with pytest.raises(SpecError, match=r"\[log\] tensorboard must be true or false, got 'yes'"):
        tiny(log={"tensorboard": "yes"})
    base = ex.expand(tiny())
    assert base[0]["config"]["train"]["device"] == "cpu" and base[0]["config"]["train"]["threads"] == 1
    other = ex.expand(tiny(train={"device": "auto", "threads": 2, "keep_last": True}, log={"tensorboard": True}))
    assert [r["run_id"] for r in other] == [r["run_id"] for r in base]
    assert ex.expand(tiny(train={"epochs": 5}))[0]["run_id"] != base[0]["run_id"]


def test_threads_apply_during_the_run_only(monkeypatch):
    seen = []
    real = runner._train
    monkeypatch.setattr(runner, "_train", lambda *a: (seen.append(torch.get_num_threads()), real(*a)))
    before = torch.get_num_threads()
    (task,) = ex.expand(tiny(train={"threads": 2, "epochs": 1}))
    assert runner.run(task)["status"] == "ok"
    assert seen == [2] and torch.get_num_threads() == before


# -- checkpoints and resuming ----------------------------------------------------------------------
@pytest.mark.parametrize("feedback", ["bp", "fa", "usf", "frsf", "brsf", "dfa", "kp", "wm"])
@pytest.mark.parametrize("sign", ["free", "dale"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_ends(feedback, sign, tmp_path, monkeypatch):
    (task,) = ex.expand(tiny(train={"keep_last": True}, grid={"feedback": [feedback], "sign": [sign]}))
    whole = runner.run(task, out=tmp_path / "a")
    assert whole["status"] == "ok" and whole["epochs_done"] == 4
    run_killed_after_epoch(task, tmp_path / "b", 2, monkeypatch)
    resumed = runner.run(task, out=tmp_path / "b")
    assert resumed["resumed_from_epoch"] == 2 and "resumed_from_epoch" not in whole
    assert comparable(resumed) == comparable(whole)
    a, b = (checkpoints.run_folder(tmp_path / side, task["run_id"]) for side in "ab")
    assert_same_weights(weights(a / "last.pt"), weights(b / "last.pt"))  # final weights
    assert_same_weights(weights(a / "best.pt"), weights(b / "best.pt"))


def test_checkpoint_layout_and_keep_last(tmp_path):
    outcome = ex.run_study(tiny(grid={"feedback": ["fa", "bp"]}), tmp_path, progress=False)
    assert outcome.n_ok == 2
    for run_id in (r["run_id"] for r in outcome.rows):
        folder = tmp_path / "runs" / run_id
        assert (tmp_path / "runs" / f"{run_id}.json").is_file()
        assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]  # last.pt: deleted by default
        info = checkpoints.checkpoint_info(tmp_path, run_id)
        row = next(r for r in outcome.rows if r["run_id"] == run_id)
        assert info["epoch"] == row["best_epoch"] and info["val_acc"] == row["best_val_acc"]
        assert info["data"] == {"name": "digits", "input_shape": [64], "n_outputs": 10, "task": "classification"}
    with pytest.raises(ConfigError, match="last.pt is deleted when a run finishes unless"):
        ex.load_model(tmp_path, outcome.rows[0]["run_id"], which="last")


def test_load_model_and_evaluate_give_the_reported_test_scores(tmp_path, capsys):
    spec = tiny(train={"keep_last": True, "epochs": 5}, grid={"feedback": ["fa", "brsf"]})
    outcome = ex.run_study(spec, tmp_path, progress=False)
    splits = runner.load_data(spec.base["data"])
    x, y = splits.test.tensors
    for row in outcome.rows:
        for which, column in (("best", "test_acc_at_best_val"), ("last", "test_acc_final")):
            model = ex.load_model(tmp_path, row["run_id"], which=which)
            assert not model.training
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).double().mean().item()
            assert acc == pytest.approx(row[column], abs=1e-12)
            scores = ex.evaluate_run(tmp_path, row["run_id"], which=which)
            assert scores["acc"] == row[column] and scores["n"] == len(y)
            assert scores["loss"] == row[column.replace("acc", "loss")]
    run_id = outcome.rows[0]["run_id"]
    assert main(["evaluate", str(tmp_path), run_id[:6]]) == 0  # a unique prefix is enough
    printed = capsys.readouterr().out
    assert printed.startswith(f"{run_id} (best weights, epoch {outcome.rows[0]['best_epoch']}) on test "
                              f"(100 examples): accuracy {outcome.rows[0]['test_acc_at_best_val']:.4f}, loss ")
    assert main(["evaluate", str(tmp_path), run_id, "--split", "val", "--which", "last"]) == 0
    assert "(last weights, epoch 5) on val (60 examples)" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path), "nope"]) == 2
    err = capsys.readouterr().err
    assert "runs/nope/best.pt: no such checkpoint; runs with checkpoints in" in err and run_id in err
    assert main(["evaluate", str(tmp_path / "missing"), "x"]) == 2
    assert "no runs/ folder here" in capsys.readouterr().err


# -- SIGKILL in the middle of a real `biofa run` ---------------------------------------------------
def _biofa(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "biofa.cli", *args], env


def _table(path, drop=("time_s", "started_at", "finished_at")):
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.timeout(4 * HANG_S)
def test_biofa_run_killed_with_sigkill_resumes_to_the_same_end(tmp_path):
    tree = tiny_tree(train={"epochs": 30, "keep_last": True}, grid={"feedback": ["brsf"], "seed": [0]})
    tree["train"]["schedule"] = {"name": "cosine"}
    spec = tmp_path / "s.toml"
    import tomli_w
    spec.write_text(tomli_w.dumps(tree))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    cmd, env = _biofa("run", str(spec), "--no-progress", "--out", str(whole))
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=HANG_S).returncode == 0
    (run_id,) = [p.name for p in (whole / "runs").iterdir() if p.is_dir()]
    last = killed / "runs" / run_id / "last.pt"
    cmd, env = _biofa("run", str(spec), "--no-progress", "--out", str(killed))
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + HANG_S
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # wait on the file: the first finished epoch's checkpoint
        assert last.exists(), "no checkpoint appeared"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=HANG_S)
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "runs" / f"{run_id}.json").exists()  # killed mid-run, not after it
    done = torch.load(last, weights_only=False)["extra"]["epoch"]
    assert 1 <= done < 30
    cmd, env = _biofa("run", str(spec), "--no-progress", "--out", str(killed))
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=HANG_S).returncode == 0
    result = json.loads((killed / "runs" / f"{run_id}.json").read_text())
    assert result["resumed_from_epoch"] >= done
    assert _table(killed / "runs.csv") == _table(whole / "runs.csv")
    assert _table(killed / "history.csv") == _table(whole / "history.csv")
    for name in ("last.pt", "best.pt"):
        assert_same_weights(weights(whole / "runs" / run_id / name), weights(killed / "runs" / run_id / name))


# -- TensorBoard -----------------------------------------------------------------------------------
def read_events(folder: Path) -> list:
    """Every Event record of the event files under ``folder`` (TFRecord framing, tensorboardX's protos)."""
    from tensorboardX.proto import event_pb2
    events = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            offset += 12  # length, its CRC
            event = event_pb2.Event()
            event.ParseFromString(data[offset:offset + length])
            offset += length + 4  # data, its CRC
            events.append((path, event))
    return events


def test_tensorboard_scalars_equal_history_and_hparams_are_logged(tmp_path):
    import numpy as np
    spec = tiny(log={"tensorboard": True}, grid={"feedback": ["fa"]})
    outcome = ex.run_study(spec, tmp_path, progress=False)
    (row,) = outcome.rows
    tb = tmp_path / "runs" / row["run_id"] / "tb"
    scalars, plugins = {}, set()
    for _, event in read_events(tb):
        for value in event.summary.value:
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                plugins.add(value.metadata.plugin_data.plugin_name)
            if value.WhichOneof("value") == "simple_value":
                scalars[(value.tag, event.step)] = value.simple_value
    history = _table(tmp_path / "history.csv", drop=())
    columns = [c for c in history[0] if c not in ("feedback", "seed", "run_id", "epoch")]
    checked = 0
    for entry in history:
        for column in columns:
            if entry[column] in ("", "nan"):
                continue
            stored = scalars[(runner_tag(column), int(entry["epoch"]))]
            assert stored == np.float32(float(entry[column])), (column, entry["epoch"])  # stored as float32
            checked += 1
    assert checked >= 5 * 8 and any(c.startswith("weight_alignment:") for c in columns)
    assert scalars[("accuracy/test_at_best_val", 4)] == np.float32(row["test_acc_at_best_val"])
    assert scalars[("loss/test_final", 4)] == np.float32(row["test_loss_final"])
    assert "hparams" in plugins


def runner_tag(column):
    from biofa.experiment.runner.tblog import tag
    return tag(column)


def test_log_tensorboard_on_the_command_line(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[data]\nname = "digits"\nn_train = 200\nn_test = 50\n[model]\nhidden = [8]\n'
                    '[train]\nepochs = 1\n[metrics]\nupdate_batch = 16\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress", "--log", "tensorboard"]) == 0
    (folder,) = [p for p in (tmp_path / "o" / "runs").iterdir() if p.is_dir()]
    tags = {v.tag for _, e in read_events(folder / "tb") for v in e.summary.value}
    assert {"loss/train", "loss/val", "accuracy/val", "lr"} <= tags


# -- image data: augmentation and lazily decoded folders -------------------------------------------
def write_cifar100(folder, n_train, n_test, seed=0):
    import pickle

    import numpy as np
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                 b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"f"] * 100,
                                                b"coarse_label_names": [b"c"] * 20}, protocol=2))


def write_image_folder(root, n_train=6, n_val=2, size=(20, 18)):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("val", n_val)):
        for name in ("a", "b", "c"):
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"{i}.png")


def interrupted_and_whole(task, tmp_path, monkeypatch, stop_after=1):
    whole = runner.run(task, out=tmp_path / "a")
    run_killed_after_epoch(task, tmp_path / "b", stop_after, monkeypatch)
    return whole, runner.run(task, out=tmp_path / "b")


def with_data(data: dict, **extra):
    """The tiny spec on other data (its [data] table replaced, not merged)."""
    tree = tiny_tree(model={"hidden": [8]}, **extra)
    tree["data"] = data
    return ex.from_dict(tree, source="tiny.toml")


def test_augmentation_trains_seeded_and_resumes_exactly(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "cifar-100-python", n_train=40, n_test=10)
    data = {"name": "cifar100", "root": str(tmp_path), "validation": 8}
    plain = with_data(data, train={"epochs": 3}, metrics={"update_alignment": False})
    augmented = with_data({**data, "augment": {"crop": 4, "flip": True}}, train={"epochs": 3},
                          metrics={"update_alignment": False})
    (task,) = ex.expand(augmented)
    whole, resumed = interrupted_and_whole(task, tmp_path, monkeypatch)
    assert whole["status"] == "ok", whole["reason"]
    assert comparable(resumed) == comparable(whole)
    (plain_task,) = ex.expand(plain)
    assert plain_task["run_id"] != task["run_id"]
    without = runner.run(plain_task)
    # the same first epoch's batches, augmented or not: different training losses, same epoch 0
    assert without["history"][0]["val_loss"] == whole["history"][0]["val_loss"]
    assert without["history"][1]["train_loss"] != whole["history"][1]["train_loss"]
    with pytest.raises(SpecError, match=r"tiny.toml: \[data\] augment: crop must be the padding in pixels"):
        ex.run_study(with_data({**data, "augment": {"crop": -1}}), tmp_path / "bad", progress=False)
    with pytest.raises(SpecError, match=r"tiny.toml: \[data\] augment needs image data \(C, H, W\); dataset 'digits'"):
        ex.run_study(tiny(data={"augment": ["flip"]}), tmp_path / "bad", progress=False)


def test_lazily_decoded_image_folders_train_and_resume_exactly(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "images")
    spec = with_data({"name": "imagefolder", "root": str(tmp_path / "images"), "image_size": 16, "validation": 3},
                     train={"epochs": 3, "batch_size": 4}, metrics={"update_batch": 4})
    (task,) = ex.expand(spec)
    whole, resumed = interrupted_and_whole(task, tmp_path, monkeypatch)
    assert whole["status"] == "ok", whole["reason"]
    assert comparable(resumed) == comparable(whole)
