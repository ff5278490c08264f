"""Studies end to end on a tiny digits problem: outputs, determinism across processes, divergence,
the degenerate uSF-under-Dale combination, resuming, reports and figures."""

import csv
import json
import math
import os
import shutil

import pytest

from biofa.experiment import from_dict, run_study, write_report
from biofa.experiment.results import (HISTORY_COLUMNS, RUN_COLUMNS, atomic_write_text, read_csv,
                                      remove_stale_temporaries)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny(**extra):
    tree = {
        "experiment": {"name": "tiny", "description": "a tiny study"},
        "data": {"name": "digits", "n_train": 300, "n_test": 100, "validation": 0.2},
        "model": {"name": "mlp", "hidden": [12]},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}},
        "metrics": {"update_batch": 32},
        "grid": {"feedback": ["bp", "fa", "brsf", "wm"], "seed": [0, 1]},
    }
    for key, value in extra.items():
        tree[key] = {**tree.get(key, {}), **value}
    return from_dict(tree, source="tiny.toml")


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def metrics_of(out):
    """Every number a run produced (per epoch and final), by run id."""
    out_rows = {r["run_id"]: {k: r[k] for k in r if k.startswith(("best_", "test_", "final_"))}
                for r in rows(out / "runs.csv")}
    for r in rows(out / "history.csv"):
        out_rows[r["run_id"]][r["epoch"]] = {k: v for k, v in r.items() if k != "time_s"}
    return out_rows


@pytest.fixture(scope="module")
def study_jobs1(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs1")
    return out, run_study(tiny(), out, jobs=1, progress=False)


def test_study_writes_every_file_with_the_right_columns(study_jobs1):
    out, outcome = study_jobs1
    assert (outcome.n_runs, outcome.n_ok, outcome.n_failed, outcome.exit_code) == (8, 8, 0, 0)
    for name in ("runs.csv", "history.csv", "report.md", "spec.toml", "learning_curves.png",
                 "alignment.png", "norm_ratio.png", "update_alignment.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob(".tmp-biofa-*")]
    runs = rows(out / "runs.csv")
    assert list(runs[0]) == ["feedback", "seed"] + RUN_COLUMNS
    assert [(r["feedback"], r["seed"]) for r in runs] == [(f, s) for f in ("bp", "fa", "brsf", "wm") for s in "01"]
    for r in runs:
        assert r["status"] == "ok" and r["reason"] == "" and r["epochs_done"] == "1"
        assert 0 <= float(r["test_acc_at_best_val"]) <= 1 and 0 <= float(r["test_acc_final"]) <= 1
        assert r["best_epoch"] == "1"
    history = rows(out / "history.csv")
    columns = list(history[0])
    assert columns[:2 + len(HISTORY_COLUMNS)] == ["feedback", "seed"] + HISTORY_COLUMNS
    per_layer = columns[2 + len(HISTORY_COLUMNS):]
    assert "weight_alignment:1" in per_layer and "update_alignment:1" in per_layer
    assert "norm_ratio:3" in per_layer and "sign_agreement:3" in per_layer
    assert len(history) == 8 * 2  # epochs 0 and 1 per run
    bp = [h for h in history if h["feedback"] == "bp"]
    # B = W: both angles vanish (up to float32 rounding in arccos)
    assert all(float(h["weight_alignment:1"]) < 1e-3 and float(h["update_alignment:1"]) < 1e-3 for h in bp)
    fa0 = [h for h in history if h["feedback"] == "fa" and h["epoch"] == "0"]
    # Layer 1 is W of shape 12 x 64 (digits' 64 features, hidden 12): d = 768 entries. At epoch 0, B
    # is drawn independently of W, both zero-mean with i.i.d. entries, so cos(W, B) = <W, B> / (|W| |B|)
    # has mean 0 and variance E[<W,B>^2] / (|W|^2 |B|^2) ~ d E[w^2] E[b^2] / (d E[w^2] d E[b^2]) = 1/d
    # (near-Gaussian by the CLT). |cos| < 6 / sqrt(d) then holds but for a ~2e-9 tail per run:
    # the angle lies within 90 -+ asin(6 / sqrt(768)) = 90 -+ 12.5 degrees.
    half_width = math.degrees(math.asin(6 / math.sqrt(12 * 64)))
    assert len(fa0) == 2
    assert all(abs(float(h["weight_alignment:1"]) - 90) < half_width for h in fa0)
    assert all(h["train_loss"] == "" for h in history if h["epoch"] == "0")
    report = (out / "report.md").read_text()
    assert "# tiny" in report and "a tiny study" in report
    assert "test acc @ best val (%)" in report and "test acc @ final (%)" in report
    assert "validation split only" in report
    assert "| bp | 2/2 |" in report and "| fa | 2/2 |" in report
    assert "![learning_curves](learning_curves.png)" in report


def test_figures_are_valid_pngs(study_jobs1):
    import matplotlib.image
    out, _ = study_jobs1
    for name in ("learning_curves.png", "alignment.png", "norm_ratio.png", "update_alignment.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_parallel_workers_give_identical_results(study_jobs1, tmp_path):
    # brSF's redraws and the weight mirror's noise are seeded too: same numbers in any process
    out1, _ = study_jobs1
    outcome = run_study(tiny(), tmp_path, jobs=2, progress=False)
    assert outcome.n_ok == 8
    assert metrics_of(tmp_path) == metrics_of(out1)
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "runs").glob("*.json")}
    assert os.getpid() not in pids  # ran in worker processes


def test_run_again_keeps_finished_runs(study_jobs1, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(study_jobs1[0], out)
    before = {p.name: p.read_text() for p in (out / "runs").glob("*.json")}
    outcome = run_study(tiny(), out, jobs=1, progress=False)
    assert (outcome.n_resumed, outcome.n_ok) == (8, 8)
    assert {p.name: p.read_text() for p in (out / "runs").glob("*.json")} == before
    # a changed spec is a different set of runs: nothing stale is reused
    changed = run_study(tiny(train={"epochs": 2}), out, jobs=1, progress=False)
    assert changed.n_resumed == 0 and len(rows(out / "runs.csv")) == 8
    assert {r["epochs_done"] for r in rows(out / "runs.csv")} == {"2"}


def test_same_seed_same_numbers_and_report_regenerates(study_jobs1, tmp_path):
    out1, _ = study_jobs1
    run_study(tiny(grid={"feedback": ["fa"], "seed": [1]}), tmp_path, jobs=1, progress=False)
    mine = metrics_of(tmp_path)
    (run_id,) = mine
    assert mine[run_id] == metrics_of(out1)[run_id]
    for name in ("report.md", "learning_curves.png", "alignment.png"):
        (tmp_path / name).unlink()
    write_report(tmp_path)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "alignment.png").read_bytes().startswith(PNG_MAGIC)


def test_a_diverging_run_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    spec = tiny(train={"epochs": 2}, per_rule={"fa": {"train.lr": 1e12}},
                metrics={"update_alignment": False}, grid={"feedback": ["bp", "fa"]})
    outcome = run_study(spec, tmp_path, jobs=1, progress=False)
    assert (outcome.n_ok, outcome.n_failed, outcome.exit_code) == (2, 2, 1)
    runs = {r["feedback"] + r["seed"]: r for r in rows(tmp_path / "runs.csv")}
    for key in ("fa0", "fa1"):
        assert runs[key]["status"] == "failed"
        assert runs[key]["reason"].startswith("diverged: non-finite")
    assert runs["bp0"]["status"] == "ok" and runs["bp1"]["status"] == "ok"
    report = (tmp_path / "report.md").read_text()
    assert "## Failed runs" in report and "| fa | 0/2 |" in report


def test_degenerate_usf_under_dale_is_noted_not_raised(tmp_path):
    # pytest turns warnings into errors: a warning escaping the runner would fail this test
    spec = tiny(grid={"feedback": ["usf"], "sign": ["dale"], "seed": [0]})
    outcome = run_study(spec, tmp_path, jobs=1, progress=False)
    assert outcome.n_ok == 1
    (row,) = rows(tmp_path / "runs.csv")
    assert row["status"] == "ok"
    assert row["notes"].startswith("DegenerateFeedbackWarning: ")
    assert "uniform sign-concordant feedback ('usf') under Dale's law is degenerate" in row["notes"]
    assert row["notes"].count("DegenerateFeedbackWarning") == 1
    report = (tmp_path / "report.md").read_text()
    assert "## Notes" in report and "- usf/dale: DegenerateFeedbackWarning: " in report
    (hist,) = [h for h in rows(tmp_path / "history.csv") if h["epoch"] == "1"]
    assert hist["dale_violations:1"] == "0" and hist["dale_violations:3"] == "0"
    assert float(hist["sign_agreement:3"]) == 1.0  # B = c sign(W)


def test_regression_task_uses_loss_for_selection(tmp_path):
    spec = from_dict({"data": {"name": "linear_teacher", "n_train": 200, "n_test": 50},
                      "model": {"hidden": [8]}, "train": {"epochs": 2, "lr": 0.01},
                      "metrics": {"update_batch": 16}, "grid": {"feedback": ["fa"]}}, source="r.toml")
    outcome = run_study(spec, tmp_path, jobs=1, progress=False)
    assert outcome.n_ok == 1
    (row,) = rows(tmp_path / "runs.csv")
    assert row["test_acc_final"] == "" and float(row["test_loss_final"]) >= 0
    assert "test loss @ best val" in (tmp_path / "report.md").read_text()


def test_atomic_writes_leave_no_temporaries(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    (tmp_path / ".tmp-biofa-x.csv").write_text("half")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert read_csv(_csv(tmp_path)) == (["a", "b"], [{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}])


def _csv(folder):
    path = folder / "t.csv"
    path.write_text("a,b\n1,x\n,y\n")
    return path


def test_a_circuit_as_the_model(tmp_path):
    spec = from_dict({"data": {"name": "mnist1d", "n_train": 200, "n_test": 50},
                      "model": {"circuit": "mlp"}, "train": {"epochs": 1, "lr": 0.05},
                      "metrics": {"update_alignment": False}, "grid": {"feedback": ["fa", "usf"]}},
                     source="c.toml")
    assert "sign" not in spec.base["model"]  # the circuit keeps its own constraints
    outcome = run_study(spec, tmp_path, jobs=1, progress=False)
    assert outcome.n_ok == 2
    history = rows(tmp_path / "history.csv")
    usf = [h for h in history if h["feedback"] == "usf" and h["epoch"] == "0"][0]
    fa = [h for h in history if h["feedback"] == "fa" and h["epoch"] == "0"][0]
    layers = [c.split(":", 1)[1] for c in usf if c.startswith("weight_alignment:")]
    assert len(layers) == 3  # the circuit's three feedforward synapse objects
    assert all(float(usf[f"sign_agreement:{name}"]) == 1.0 for name in layers)
    # FA at epoch 0: B is drawn independently of W (circuits/mlp.toml: free signs, both symmetric
    # about 0), so each of the d entries agrees in sign with probability 1/2, independently: the
    # agreement is Binomial(d, 1/2) / d, mean 0.5 and sd 0.5 / sqrt(d). Within 6 sd but for a ~2e-9 tail.
    # post x pre of circuits/mlp.toml's synapses x->h1, h1->h2, h2->y, in synapse order
    sizes = {"feedforward.0.layer": 100 * 40, "feedforward.1.layer": 100 * 100, "feedforward.2.layer": 10 * 100}
    assert sorted(layers) == sorted(sizes)
    for name in layers:
        assert abs(float(fa[f"sign_agreement:{name}"]) - 0.5) < 6 * 0.5 / math.sqrt(sizes[name]), name


def test_circuit_options_are_checked_before_any_run(tmp_path):
    from biofa.errors import SpecError
    spec = from_dict({"data": {"name": "digits"}, "model": {"circuit": "mlp"}}, source="c.toml")
    with pytest.raises(SpecError, match=r"c.toml: \[model\] circuit 'mlp': its input population has 40 "
                                        r"neurons and its output 10, but dataset 'digits' has 64 features"):
        run_study(spec, tmp_path / "out", jobs=1, progress=False)
    spec = from_dict({"data": {"name": "mnist1d"}, "model": {"circuit": "mlp", "feedback": "dfa"}},
                     source="c.toml")
    with pytest.raises(SpecError, match=r"feedback = 'dfa' needs direct \[\[feedback\]\] tables"):
        run_study(spec, tmp_path / "out", jobs=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_without_a_validation_split_the_final_epoch_is_reported(tmp_path):
    spec = tiny(data={"validation": 0}, train={"epochs": 2}, grid={"feedback": ["fa"], "seed": [0]})
    assert run_study(spec, tmp_path, jobs=1, progress=False).n_ok == 1
    (row,) = rows(tmp_path / "runs.csv")
    assert row["best_epoch"] == "2" and row["test_acc_at_best_val"] == row["test_acc_final"]
    assert row["notes"].startswith("BiofaWarning: no validation split")
