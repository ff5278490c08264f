"""[metrics] invariants / min_norm: conservation-law columns in history.csv during any study."""

import pytest
import torch
from _interrupt import run_killed_after_epoch

from biofa import analysis
from biofa.cli import main
from biofa.errors import SpecError
from biofa import experiment as ex
from biofa.experiment import from_dict, run_study, runner
from biofa.experiment.results import read_csv
from biofa.experiment.runner import build_model, load_data


def _tree(**model):
    return {"experiment": {"name": "inv"},
            "data": {"name": "linear_teacher", "n_train": 12, "n_test": 8, "in_dim": 30, "out_dim": 2,
                     "validation": 0},
            "model": {"hidden": [16], "activation": "linear", "bias": False, "feedback": "fa", **model},
            "train": {"epochs": 3, "batch_size": 12, "dtype": "float64", "lr": 0.05},
            "metrics": {"alignment": False, "update_alignment": False, "invariants": True, "min_norm": True},
            "grid": {"seed": [0, 1]}}


@pytest.mark.filterwarnings("ignore::biofa.errors.BiofaWarning")  # no validation split
def test_columns_equal_the_analysis_functions(tmp_path, f64):
    spec = from_dict(_tree())
    outcome = run_study(spec, tmp_path, progress=False)
    assert outcome.n_failed == 0
    columns, rows = read_csv(tmp_path / "history.csv")
    splits = load_data(spec.base["data"])
    name = analysis.feedback_layers(build_model(spec.base["model"], splits))[0][0]  # the hidden layer's W
    assert {f"invariant_sum:{name}", f"invariant_drift:{name}", "min_norm_distance:model"} <= set(columns)
    X = splits.train.tensors[0].to(torch.float64).T
    Y = splits.train.tensors[1].to(torch.float64).T
    for seed in (0, 1):
        mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["epoch"])
        assert [r["epoch"] for r in mine] == [0, 1, 2, 3]
        # epoch 0: the model the runner built from Generator(seed), measured independently
        model = build_model(spec.base["model"], splits, torch.Generator().manual_seed(seed))
        c = analysis.relu_invariants(model)
        assert mine[0][f"invariant_sum:{name}"] == pytest.approx(float(c[0].sum()), rel=1e-12, abs=1e-12)
        assert mine[0][f"invariant_drift:{name}"] == 0.0
        expect = analysis.distance_to_min_norm(analysis.effective_weight(model), X, Y)
        assert mine[0]["min_norm_distance:model"] == pytest.approx(expect, rel=1e-12)
        # SGD changes c by lr^2 * |grad|^2 per step: it moves, and only upwards
        sums = [r[f"invariant_sum:{name}"] for r in mine]
        assert all(b > a for a, b in zip(sums, sums[1:]))
        assert all(r[f"invariant_drift:{name}"] > 0 for r in mine[1:])


@pytest.mark.filterwarnings("ignore::biofa.errors.BiofaWarning")  # no validation split
def test_a_resumed_run_measures_drift_from_the_initial_invariants(tmp_path, monkeypatch, f64):
    """The drift column is relative to c_l(0) of the run, also after a resume from a checkpoint
    (not to the invariants of the first weights the resuming process sees)."""
    tree = _tree()
    tree["train"].update(epochs=4, keep_last=True)
    tree["grid"] = {"seed": [0]}
    (task,) = ex.expand(from_dict(tree))
    whole = runner.run(task, out=tmp_path / "a")
    run_killed_after_epoch(task, tmp_path / "b", 2, monkeypatch)
    resumed = runner.run(task, out=tmp_path / "b")
    assert resumed["resumed_from_epoch"] == 2
    drift = [[v for k, v in row.items() if k.startswith("invariant_drift:")] for row in resumed["history"]]
    assert drift[3][0] > 0  # epoch 3, the first after the resume: measured from epoch 0, not 2
    assert drift == [[v for k, v in row.items() if k.startswith("invariant_drift:")] for row in whole["history"]]


@pytest.mark.parametrize("model, data, needle", [
    ({"activation": "relu"}, {}, "not linear"),
    ({"bias": True}, {}, "without biases"),
    ({"hidden": [8, 8]}, {}, "has 3 layers"),
    ({"feedback": "dfa"}, {}, "DFA"),
    ({}, {"name": "digits"}, "needs a regression task"),
])
def test_min_norm_errors_name_the_key(tmp_path, model, data, needle):
    tree = _tree(**model)
    tree["data"] = {"name": "digits", "validation": 0.1} if data else tree["data"]
    with pytest.raises(SpecError, match=r"\[metrics\] (min_norm|invariants) = true") as err:
        run_study(from_dict(tree), tmp_path, progress=False)
    assert needle in str(err.value)


def test_invariants_error_for_conv_exits_2(tmp_path, capsys):
    spec = tmp_path / "conv.toml"
    spec.write_text('[data]\nname = "digits"\n[model]\nname = "cnn1d"\n[metrics]\ninvariants = true\n'
                    '[train]\nepochs = 1\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "[metrics] invariants = true" in err and "Conv" in err
