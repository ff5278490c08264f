"""experiments/dale_circuits.toml end to end with --quick through the CLI: one finished run per
(circuit, rule) with finite metrics, Dale's law kept in the E/I circuit, uSF flagged there."""

import csv
import itertools
import math
from pathlib import Path

from biofa.cli import main

SPEC = Path(__file__).resolve().parents[1] / "experiments" / "dale_circuits.toml"
CIRCUITS = ["mlp", "dale_mlp"]
RULES = ["bp", "fa", "usf", "frsf", "brsf", "kp", "wm"]
METRICS = ["best_val_acc", "best_val_loss", "test_acc_at_best_val", "test_loss_at_best_val",
           "test_acc_final", "test_loss_final", "final_train_loss", "final_train_acc"]


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_dale_circuits_quick_runs_every_circuit_and_rule(tmp_path, capsys):
    out = tmp_path / "dale"
    assert main(["run", str(SPEC), "--quick", "--out", str(out), "--no-progress"]) == 0
    runs = rows(out / "runs.csv")
    got = sorted((r["model.circuit"], r["feedback"]) for r in runs)
    assert got == sorted(itertools.product(CIRCUITS, RULES))  # one seed under --quick
    for r in runs:
        assert r["status"] == "ok", (r["run_id"], r["reason"])
        assert r["epochs_done"] == r["epochs"] == "2"
        for key in METRICS:
            assert math.isfinite(float(r[key])), (r["run_id"], key, r[key])
        for key in ("best_val_acc", "test_acc_at_best_val", "test_acc_final"):
            assert 0.0 <= float(r[key]) <= 1.0
        degenerate = "DegenerateFeedbackWarning" in r["notes"]
        assert degenerate == (r["model.circuit"] == "dale_mlp" and r["feedback"] == "usf"), r["run_id"]
    history = rows(out / "history.csv")
    dale = [h for h in history if h["model.circuit"] == "dale_mlp"]
    columns = [c for c in history[0] if c.startswith("dale_violations:")]
    assert len(columns) == 9  # 3 synapses per E/I layer: E->E, E->I, I->E
    measured = [float(h[c]) for h in dale for c in columns if h[c] != ""]
    assert measured and all(v == 0 for v in measured)
