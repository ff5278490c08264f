"""Studies on cognitive tasks (``[task]``): spec validation with its exit status, the song2016
``--quick`` study end to end (report, task results, figures, record), deterministic and resumable
runs, trials to criterion and its censoring, ``biofa evaluate`` on a task run."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from _interrupt import run_killed_after_epoch

import biofa.experiment as ex
from biofa.cli import main
from biofa.errors import ConfigError, SpecError
from biofa.experiment import records
from biofa.experiment.runner import checkpoints
from biofa.experiment.runner import train as runner
from biofa.experiment.runner.build import RUNNER_TASK_KEYS
from biofa.tasks.decision import PerceptualDecision

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT / "experiments" / "song2016.toml"


def task_tree(**extra):
    """A small task study: 40 trials an epoch (2 steps of 20), pycog's SGD recipe (clip, Ω), noise on."""
    tree = {
        "experiment": {"name": "tiny_task"},
        "task": {"name": "perceptual_decision", "trials_per_epoch": 40, "validation_per_condition": 2,
                 "test_per_condition": 2},
        "model": {"circuit": "song_free", "sizes": {"E": 16, "I": 4}},
        "train": {"epochs": 3, "batch_size": 20, "grad_clip": 1.0, "omega": 2.0,
                  "optimizer": {"name": "sgd", "lr": 0.01}},
        "grid": {"seed": [0]},
    }
    for key, value in extra.items():
        tree[key] = {**tree.get(key, {}), **value}
    return tree


def task_spec(**extra):
    return ex.from_dict(task_tree(**extra), source="tiny_task.toml")


def comparable(result: dict) -> str:
    """A run's result without what differs between processes (times, pid), as JSON."""
    drop = ("time_s", "started_at", "finished_at", "pid", "resumed_from_epoch")
    result = {k: v for k, v in result.items() if k not in drop}
    result["history"] = [{k: v for k, v in row.items() if k != "time_s"} for row in result["history"]]
    return json.dumps(result, sort_keys=True)


# -- spec validation and the CLI's exit status ------------------------------------------------------
TASK = '[task]\nname = "perceptual_decision"\ntrials_per_epoch = 40\n'
BAD_SPECS = {
    "no task name": ('[task]\ntrials_per_epoch = 40\n[model]\ncircuit = "song_free"\n',
                     r'\[task\] name is missing; one of the tasks `biofa list` shows'),
    "task and data": (TASK + '[data]\nname = "digits"\n[model]\ncircuit = "song_free"\n',
                      r"give either \[data\] \(a data set\) or \[task\] \(a cognitive task\), not both"),
    "model without circuit": (TASK + '[model]\nname = "mlp"\n', r"\[model\] circuit is missing"),
    "unknown task": ('[task]\nname = "perceptual_decisoin"\n[model]\ncircuit = "song_free"\n',
                     r"\[task\] Unknown task 'perceptual_decisoin' \(did you mean 'perceptual_decision'\?\)"),
    "unknown task setting": (TASK + 'coherences = [1, 2]\n[model]\ncircuit = "song_free"\n',
                             r"Unknown setting\(s\) \['coherences'\] for task 'perceptual_decision'"),
    "input size of the circuit": (TASK + '[model]\ncircuit = "ei_recurrent"\n',
                                  r"circuit 'ei_recurrent': \[populations.x\] size is 3, but task "
                                  r"'perceptual_decision' has 2 inputs; set it to 2 .*sizes.x = 2"),
    "sizes.x": (TASK + '[model]\ncircuit = "song_free"\nsizes = { x = 5 }\n',
                r"\[populations.x\] size is 5, but task 'perceptual_decision' has 2 inputs.*sizes.x = 2"),
    "dt too long": (TASK + 'dt = 0.5\n[model]\ncircuit = "song_free"\n',
                    r"dt = 0.5 s is longer than its shortest epoch \(0.1 s\)"),
    "omega without a task": ('[data]\nname = "digits"\n[train]\nomega = 2.0\n',
                             r"\[train\] omega applies to runs on a \[task\]"),
    "omega in the grid without a task": ('[data]\nname = "digits"\n[grid]\n"train.omega" = [0.0, 2.0]\n',
                                         r"\[train\] omega applies to runs on a \[task\]"),
    "rflo without a task": ('[data]\nname = "digits"\n[train]\nmethod = "rflo"\n',
                            r"\[train\] method applies to runs on a \[task\]"),
    "rflo step with adam": (TASK + '[model]\ncircuit = "song_free"\n[train]\nmethod = "rflo"\n'
                            'online_update = "step"\noptimizer = "adam"\n',
                            r"online_update = \"step\" changes the weights every step by plain gradient steps"),
    "rflo step with grad_clip": (TASK + '[model]\ncircuit = "song_free"\n[train]\nmethod = "rflo"\n'
                                 'online_update = "step"\ngrad_clip = 1.0\n', r"\[train\] grad_clip clips a whole"),
    "rflo sequence with kp": (TASK + '[model]\ncircuit = "song_free"\nfeedback = "kp"\n[train]\nmethod = "rflo"\n',
                              r"does not train the learned feedback of synapses"),
    "rflo with omega": (TASK + '[model]\ncircuit = "song_free"\n[train]\nmethod = "rflo"\nomega = 2.0\n',
                        r"\[train\] omega needs the backward pass of BPTT"),
    "grad_clip not positive": (TASK + '[model]\ncircuit = "song_free"\n[train]\ngrad_clip = 0\n',
                               r"\[train\] grad_clip must be a positive number, got 0"),
}


@pytest.mark.parametrize("text, message", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_a_bad_task_spec_exits_2_naming_the_key(text, message, tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('[experiment]\nname = "bad"\n' + text)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"biofa: error: {spec}") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()  # found before anything runs


def test_a_grid_over_task_names_alone_makes_a_task_study():
    tree = task_tree(grid={"task.name": ["perceptual_decision", "context_decision"]})
    del tree["task"]["name"]
    spec = ex.from_dict(tree, source="t.toml")
    assert "data" not in spec.base and spec.base["task"]["trials_per_epoch"] == 40
    del tree["task"]  # no [task] table at all: the defaults
    runs = ex.expand(ex.from_dict(tree, source="t.toml"))
    assert [r["config"]["task"]["name"] for r in runs] == ["perceptual_decision", "context_decision"]
    assert all("data" not in r["config"] and r["config"]["task"]["trials_per_epoch"] == 10000 for r in runs)


def test_the_runner_keys_are_the_task_tables_schema():
    from biofa.experiment.spec.schema import SCHEMA

    assert set(RUNNER_TASK_KEYS) == set(SCHEMA["task"])


# -- song2016 --quick end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """experiments/song2016.toml --quick on one task (song_ei and song_free, 40 trials each)."""
    root = tmp_path_factory.mktemp("song")
    out = root / "out"
    code = main(["run", str(SONG), "--quick", "--out", str(out), "--no-progress",
                 "--set", 'grid.task.name=["perceptual_decision"]', "--set", "task.trials_per_epoch=40"])
    assert code == 0
    return out, root


def test_song2016_quick_runs_end_to_end(song):
    out, _ = song
    with open(out / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["model.circuit"] for r in rows) == ["song_ei", "song_free"]
    assert all(r["status"] == "ok" and r["task.name"] == "perceptual_decision" for r in rows)
    report = (out / "report.md").read_text()
    section = report.split("## Tasks: criteria, trials to criterion, psychometric fits")[1].split("\n## ")[0]
    for circuit in ("song_ei", "song_free"):  # never met in 40 trials: censored at the budget
        assert f"| perceptual_decision | {circuit} | 0/1 | >40 |" in section
    assert "mean of the last 5 validations > 85 % correct" in section
    results = json.loads((out / "task_results.json").read_text())
    assert sorted(r["labels"]["model.circuit"] for r in results) == ["song_ei", "song_free"]
    for r in results:
        assert r["criterion_met"] is False and r["trials_to_criterion"] == 40 == r["trials"]
        assert r["scores"]["n_scored"] == 50 and "psychometric" in r["scores"]  # 10 conditions x 5
        activity = r["activity"]  # the first seed's; (coherence, choice) pairs, units by preference
        assert activity["keys"] == ["coh", "choice"] and len(activity["conditions"]) == 10
        assert sorted(activity["groups"]) == ["E pref 0", "E pref 1", "I pref 0", "I pref 1"]
    assert (out / "psychometric.png").stat().st_size > 0 and (out / "activity.png").stat().st_size > 0
    for row in rows:  # the spec's recipe reached the runs
        config = json.loads((out / "runs" / f"{row['run_id']}.json").read_text())["config"]
        assert config["train"]["omega"] == 2.0 and config["train"]["grad_clip"] == 1.0
        assert "data" not in config and config["task"]["name"] == "perceptual_decision"


def test_evaluate_on_a_task_run_gives_its_test_score(song, capsys):
    out, _ = song
    for result in (json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))):
        scores = ex.evaluate_run(out, result["run_id"])
        assert scores["acc"] == result["test_acc_at_best_val"] and scores["loss"] == result["test_loss_at_best_val"]
        assert scores["n"] == 55 and scores["split"] == "test"  # (10 conditions + catch) x 5
        val = ex.evaluate_run(out, result["run_id"], split="val")
        assert val["acc"] == result["best_val_acc"] and val["loss"] == result["best_val_loss"]
    run_id = result["run_id"]
    assert main(["evaluate", str(out), run_id[:-4]]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{run_id} (best weights, epoch {result['best_epoch']}) on test (55 trials): "
                              f"accuracy {result['test_acc_at_best_val']:.4f}, loss ")
    with pytest.raises(ConfigError, match="last.pt is deleted when a run finishes unless"):
        ex.evaluate_run(out, run_id, which="last")


def test_a_record_keeps_the_task_results_and_regenerates_the_tasks_section(song):
    out, root = song
    record = records.save(out, root / "record")
    assert (record / "task_results.json").read_text() == (out / "task_results.json").read_text()
    assert not (record / "runs").exists() and (record / "psychometric.png").is_file()
    (record / "report.md").unlink()
    assert main(["report", str(record)]) == 0  # from task_results.json, without the run files
    regenerated = (record / "report.md").read_text()
    assert "## Tasks: criteria, trials to criterion, psychometric fits" in regenerated
    assert regenerated == (out / "report.md").read_text()


# -- determinism, resuming, trials to criterion ---------------------------------------------------------
def test_the_same_task_run_twice_gives_the_same_history():
    tree = task_tree(train={"epochs": 2})
    del tree["train"]["omega"], tree["train"]["grad_clip"]  # neither: plain BPTT
    (task,) = ex.expand(ex.from_dict(tree, source="t.toml"))
    assert "omega" not in task["config"]["train"] and "grad_clip" not in task["config"]["train"]
    first, second = runner.run(task), runner.run(task)
    assert first["status"] == "ok" and first["epochs_done"] == 2
    assert comparable(first) == comparable(second)
    losses = [h["train_loss"] for h in first["history"]]
    other = runner.run(ex.expand(task_spec(train={"epochs": 2}, grid={"seed": [1]}))[0])
    assert [h["train_loss"] for h in other["history"]] != losses
    tree["train"]["omega"] = 2.0  # the regulariser reaches the weights: from the second step on
    regularised = runner.run(ex.expand(ex.from_dict(tree, source="t.toml"))[0])
    assert regularised["history"][0] == first["history"][0] | {"time_s": regularised["history"][0]["time_s"]}
    assert regularised["history"][1]["train_loss"] != losses[1]


def test_a_resumed_task_run_ends_exactly_where_an_uninterrupted_one_ends(tmp_path, monkeypatch):
    (task,) = ex.expand(task_spec(train={"keep_last": True}))
    whole = runner.run(task, out=tmp_path / "a")
    assert whole["status"] == "ok" and whole["epochs_done"] == 3
    run_killed_after_epoch(task, tmp_path / "b", 1, monkeypatch)
    resumed = runner.run(task, out=tmp_path / "b")
    assert resumed["resumed_from_epoch"] == 1 and "resumed_from_epoch" not in whole
    assert comparable(resumed) == comparable(whole)  # the trial and noise generators were in last.pt
    a, b = (checkpoints.run_folder(tmp_path / side, task["run_id"]) for side in "ab")
    for name in ("last.pt", "best.pt"):
        wa, wb = (torch.load(f / name, map_location="cpu", weights_only=False)["model"] for f in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    last = ex.evaluate_run(tmp_path / "b", task["run_id"], which="last")  # keep_last: the final weights
    assert last["acc"] == whole["test_acc_final"] and last["loss"] == whole["test_loss_final"]
    assert last["epoch"] == 3


def _criterion_after(monkeypatch, validations: int):
    """Make perceptual decision's criterion hold once ``validations`` validations are in."""
    monkeypatch.setattr(PerceptualDecision, "criterion", lambda self, history: len(history) >= validations)


def test_trials_to_criterion_and_stopping(monkeypatch):
    _criterion_after(monkeypatch, 3)  # epoch 0 (before training), 1, 2: met at epoch 2, after 80 trials
    stop = runner.run(ex.expand(task_spec(train={"epochs": 5}))[0])
    assert stop["criterion_met"] is True and stop["trials_to_criterion"] == 80
    assert stop["epochs_done"] == 2 and stop["trials"] == 80
    assert [h["criterion"] for h in stop["history"]] == [False, False, True]
    go_on = runner.run(ex.expand(task_spec(train={"epochs": 4}, task={"stop_at_criterion": False}))[0])
    assert go_on["criterion_met"] is True and go_on["trials_to_criterion"] == 80
    assert go_on["epochs_done"] == 4 and go_on["trials"] == 160
    _criterion_after(monkeypatch, 1)  # met before training: counts from the first trained epoch
    early = runner.run(ex.expand(task_spec(train={"epochs": 2}))[0])
    assert early["trials_to_criterion"] == 40 and early["epochs_done"] == 1
    _criterion_after(monkeypatch, 99)  # never: censored at the budget, epochs x trials per epoch
    never = runner.run(ex.expand(task_spec(train={"epochs": 2}))[0])
    assert never["criterion_met"] is False and never["trials_to_criterion"] == 80 == never["trials"]


def test_per_task_settings_apply_to_their_task_only():
    tree = task_tree(grid={"task.name": ["perceptual_decision", "working_memory"], "seed": [0]},
                     per_task={"working_memory": {"train.epochs": 1}})
    runs = ex.expand(ex.from_dict(tree, source="tiny_task.toml"))
    epochs = {r["config"]["task"]["name"]: r["config"]["train"]["epochs"] for r in runs}
    assert epochs == {"perceptual_decision": 3, "working_memory": 1}
    bad = task_tree(per_task={"working_memroy": {"train.epochs": 1}})
    with pytest.raises(SpecError, match=r"\[per_task.working_memroy\]: 'working_memroy' is not a task "
                                           r"\(did you mean 'working_memory'\?\)"):
        ex.from_dict(bad, source="tiny_task.toml")
    with pytest.raises(SpecError, match=r"\[per_task.working_memory\] cannot set task.name"):
        ex.from_dict(task_tree(per_task={"working_memory": {"task.name": "periodic"}}), source="tiny_task.toml")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rflo_and_bptt_share_the_learning_rate_of_the_readout(optimizer):
    """The read-out learns by the exact delta rule under RFLO: one update on one sequence
    (weights held, noise off, float64) moves W_out exactly as one step of BPTT with the same
    optimizer at the same lr on the same masked mean squared error, so the two methods share a
    learning-rate grid (Adam's first step depends on each weight's own gradient alone)."""
    from biofa.experiment.runner.trials import TaskTraining

    moved = {}
    for method in ("bptt", "rflo"):
        tree = {"experiment": {"name": "murray_tiny"},
                "task": {"name": "periodic", "period": 40, "trials_per_epoch": 1, "validation_per_condition": 1,
                         "test_per_condition": 1, "stop_at_criterion": False},
                "model": {"circuit": "murray_rnn", "sizes": {"h": 8}},
                "train": {"epochs": 1, "batch_size": 1, "dtype": "float64", "method": method,
                          "optimizer": {"name": optimizer, "lr": 0.05}}}
        run = ex.expand(ex.from_dict(tree, source="murray_tiny.toml"))[0]
        result = {"history": []}
        training = TaskTraining(run["config"], result, 0)
        before = training.model.synapse("h->y").weight.detach().clone()
        training.epoch(1)
        moved[method] = training.model.synapse("h->y").weight.detach() - before
    assert moved["bptt"].abs().max() > 0
    torch.testing.assert_close(moved["rflo"], moved["bptt"], rtol=1e-10, atol=1e-14)
