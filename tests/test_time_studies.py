"""experiments/murray2019.toml and experiments/song2016_rules.toml: their designs (which
conditions the grid's keys make) and their --quick runs through the CLI."""

import json
from pathlib import Path

import pytest

from biofa.cli import main
from biofa.experiment import load
from biofa.experiment.results import read_csv
from biofa.experiment.spec import expand

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_murray_design():
    runs = expand(load(EXPERIMENTS / "murray2019.toml"))
    assert len(runs) == 2 * 3 * 2 * 9
    conditions = {(r["config"]["task"]["period"], r["config"]["model"]["circuit"], r["config"]["train"]["method"])
                  for r in runs}
    assert conditions == {(p, c, m) for p in (200, 1600) for c in ("murray_rnn_symmetric", "murray_rnn", "murray_ei")
                          for m in ("bptt", "rflo")}
    assert all(r["config"]["train"]["optimizer"]["name"] == "sgd" and r["config"]["train"]["batch_size"] == 1
               for r in runs)


def test_song_rules_design():
    spec = load(EXPERIMENTS / "song2016_rules.toml")
    runs = expand(spec)
    assert len(runs) == 4 * 2 * 2 * 3 * 5 * 2
    # every method hands its gradient to the same optimizer and clipping; no regulariser
    trains = [r["config"]["train"] for r in runs]
    assert all(t["optimizer"]["name"] == "adam" and t["grad_clip"] == 1.0 and "omega" not in t for t in trains)
    assert all(t["online_update"] == "sequence" and t["epochs"] == 6 for t in trains)
    assert {t["optimizer"]["lr"] for t in trains} == {0.001, 0.003}


@pytest.mark.parametrize("name, n_runs", [("murray2019", 12), ("song2016_rules", 12)])
def test_quick_runs_through_the_cli(name, n_runs, tmp_path, capsys):
    out = tmp_path / name
    assert main(["run", str(EXPERIMENTS / f"{name}.toml"), "--quick", "--out", str(out), "--no-progress"]) == 0
    _, rows = read_csv(out / "runs.csv")
    assert len(rows) == n_runs and all(r["status"] == "ok" for r in rows)
    results = json.loads((out / "task_results.json").read_text())
    assert len(results) == n_runs
    # a task scored by its error gets the median loss curves; a choice task does not
    assert (out / "loss_curves.png").exists() == (name == "murray2019")
    if name == "song2016_rules":  # the local rules' error reaches no I unit of song_ei: named, not hidden
        notes = {r["train.method"]: r["notes"] for r in rows if r["model.circuit"] == "song_ei"}
        assert "no error reaches populations ['I']" in notes["rflo"] and not notes["bptt"]


def test_song_rules_record_reports_the_chosen_candidate_only():
    """With [search], the Tasks table counts the seeds of each condition's chosen learning rate
    (5), not every candidate's runs (10), like the Results table."""
    import re

    from biofa.experiment.report.excerpts import excerpt

    record = EXPERIMENTS.parent / "records" / "song2016_rules"
    table = excerpt(record, "tasks")
    met = [row[table.header.index("criterion met")] for row in table.rows]
    bp = [row for row in table.rows if row[table.header.index("feedback")] == "bp"]
    assert len(bp) == 4 * 2 * 3  # every bp condition finished (fa ones without a finished run have no row)
    assert all(int(re.fullmatch(r"(\d+)/(\d+)", m).group(2)) <= 5 for m in met), met
