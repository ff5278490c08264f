"""experiments/cornford2021.toml and experiments/dale_architectures.toml: their designs and their
--quick runs through the CLI; ei = "free", the architecture comparisons' baseline."""

import itertools
from pathlib import Path

import pytest
import torch

import biofa.models as bm
from biofa.cli import main
from biofa.constraints import Dale
from biofa.experiment import load
from biofa.experiment.results import read_csv
from biofa.experiment.spec import expand, label
from biofa.nn import FeedbackLayer

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CORNFORD, ARCHITECTURES = EXPERIMENTS / "cornford2021.toml", EXPERIMENTS / "dale_architectures.toml"
RULES = ["bp", "fa", "usf", "frsf", "brsf", "dfa", "kp", "wm"]


def test_ei_free_lifts_the_sign_constraint_whatever_sign_says():
    model = bm.build("mlp", input_shape=(40,), n_outputs=10, hidden=[20], sign="dale", ei="free",
                     inputs="on_off", generator=torch.Generator().manual_seed(0))
    layers = [m for m in model.modules() if isinstance(m, FeedbackLayer)]
    assert layers and all(layer.sign is None for layer in layers)
    dale = bm.build("mlp", input_shape=(40,), n_outputs=10, hidden=[20], sign="dale",
                    inputs="on_off", generator=torch.Generator().manual_seed(0))
    assert all(isinstance(m.sign, Dale) for m in dale.modules() if isinstance(m, FeedbackLayer))
    # same draws: the free network's weights are the projection network's before S∘|W|
    for free, signed in zip(model.parameters(), dale.parameters()):
        assert torch.equal(free.detach().abs(), signed.detach().abs())


def test_cornford_design():
    spec = load(CORNFORD)
    assert [label(v) for v in spec.grid["model.ei"]] == ["free", "projection", "colei", "dann", "dann-corrected"]
    assert spec.grid["model.ei"][-1] == {"rule": "dann", "corrected": True, "label": "dann-corrected"}
    assert spec.base["model"]["sign"] == "dale" and spec.base["model"]["inputs"] == "on_off"
    assert len(spec.grid["seed"]) == 5 and len(spec.search["train.optimizer.lr"]) >= 4
    assert spec.compare == {"model.ei": ("free", "*")}
    assert len(expand(spec)) == 5 * 5 * 5


def test_dale_architectures_design():
    spec = load(ARCHITECTURES)
    assert [label(v) for v in spec.grid["model.feedback"]] == RULES
    assert spec.grid["model.ei"] == ["free", "projection", "colei", "dann"]
    assert spec.compare == {"model.ei": ("free", "*")}
    assert len(spec.grid["seed"]) == 5
    assert len(expand(spec)) == 8 * 4 * 4 * 5


@pytest.mark.parametrize("path,conditions", [
    (CORNFORD, [("free",), ("projection",), ("colei",), ("dann",), ("dann-corrected",)]),
    (ARCHITECTURES, list(itertools.product(RULES, ["free", "projection", "colei", "dann"]))),
])
def test_quick_runs_every_condition_through_the_cli(path, conditions, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["run", str(path), "--quick", "--out", str(out), "--no-progress"]) == 0
    _, rows = read_csv(out / "runs.csv")
    assert all(r["status"] == "ok" for r in rows)
    keys = ["feedback", "ei"] if path == ARCHITECTURES else ["ei"]
    assert sorted(tuple(str(r[k]) for k in keys) for r in rows) == sorted(conditions)
    if path == ARCHITECTURES:  # uSF under a Dale architecture: marked degenerate in the report
        for r in rows:
            degenerate = r["feedback"] == "usf" and r["ei"] != "free"
            assert ("DegenerateFeedbackWarning" in str(r["notes"] or "")) == degenerate, (r["feedback"], r["ei"])
    assert (out / "report.md").is_file()
