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
from biofa.nn import DANNLinear, FeedbackLayer

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


# -- Li et al. (2023): NSE at initialisation, a grid study with [metrics] spectra ----------------
LI = EXPERIMENTS / "li2023_spectra.toml"


def test_layer_nse_names_each_layer_once_and_measures_a_dann_by_its_effective_weight():
    from biofa.analysis import layer_nse, nse

    model = bm.build("mlp", input_shape=(30,), n_outputs=10, hidden=[40], sign="dale", ei="dann",
                     generator=torch.Generator().manual_seed(0))
    values = layer_nse(model)
    danns = {n: m for n, m in model.named_modules() if isinstance(m, DANNLinear)}
    assert list(values) == list(danns) and len(danns) == 2  # not their ee, ie, ei sub-layers
    for name, layer in danns.items():
        assert values[name] == nse(layer.effective_weight())


def test_li2023_design():
    spec = load(LI)
    assert spec.grid["model.ei"] == ["free", "colei", "dann"]
    assert [h[0] for h in spec.grid["model.hidden"]] == [50, 100, 200, 400]
    assert all(h[0] == h[1] for h in spec.grid["model.hidden"])  # the square hidden-to-hidden layer
    assert spec.base["metrics"]["spectra"] is True


def test_li2023_quick_records_nse_at_initialisation(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["run", str(LI), "--quick", "--out", str(out), "--no-progress"]) == 0
    _, rows = read_csv(out / "runs.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    _, history = read_csv(out / "history.csv")
    start = {r["run_id"]: r for r in history if r["epoch"] == 0}
    nse_columns = [c for c in history[0] if c.startswith("nse:")]
    assert len(nse_columns) == 3  # three layers, a DANN's sub-layers not listed apart
    square = nse_columns[1]  # the N x N hidden-to-hidden layer
    by_arch = {}
    for r in rows:
        by_arch.setdefault(str(r["model.hidden"]), {})[r["ei"]] = start[r["run_id"]][square]
    for values in by_arch.values():  # Li et al.: ColEI's singular values spread more than free ones
        assert 0 < values["colei"] < values["free"] <= 1
    report = (out / "report.md").read_text()
    assert "NSE of each layer's W at initialisation (epoch 0)" in report and (out / "nse.png").is_file()
