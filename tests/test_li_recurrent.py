"""Li et al. (2023)'s recurrent networks as circuits (li_rnn, li_colei, li_dann): they build, keep
Dale's law through SGD on the sequence task, ColEI's recurrent NSE sits below the free RNN's; li_dann's
DANN synapses start as their code starts them; the 'dann' recurrent init of an interneuron
population and the interneuron-eliminated recurrence; the two specs' --quick runs."""

import json
from pathlib import Path

import pytest
import torch

import biofa.circuit as bc
from biofa.analysis import nse
from biofa.circuit.recurrent_init import effective_recurrent_matrix, recurrent_matrix
from biofa.cli import main
from biofa.experiment import load
from biofa.experiment.results import read_csv
from biofa.experiment.runner.build import build_task_model
from biofa.experiment.spec import expand
from biofa.tasks import load as load_task

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
CIRCUITS = ("li_rnn", "li_colei", "li_dann")


@pytest.fixture(scope="module")
def task():
    return load_task("sequence", dataset="digits", mode="rows")


def build(name, task, seed=0):
    return build_task_model({"circuit": name}, task, seed=seed)


def signs_hold(circuit) -> bool:
    for s in circuit.feedforward:
        if isinstance(s, bc.DANNSynapses):  # Dale's law holds for the factors; W itself is signed
            if any(bool((f.detach() < 0).any()) for f in s.factors()):
                return False
            continue
        pre = s.pre.sign
        w = s.weight.detach()
        if pre == "I" and bool((w > 0).any()):
            return False
        if (pre == "E" or (pre is None and s.pre.name == circuit.input and s.layer.sign is not None)) \
                and bool((w < 0).any()):
            return False
    return True


@pytest.mark.parametrize("name", CIRCUITS)
def test_circuits_build_for_the_task_and_keep_dale_through_sgd(name, task):
    c = build(name, task)
    assert c.population(c.input).size == 8 and c.population(c.output).size == 10
    assert len(c.recurrent_components) == 1
    dale = name != "li_rnn"
    assert all((s.layer.sign is not None) == dale for s in c.feedforward)
    opt = torch.optim.SGD(c.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        trials = task.trials(16, generator=g)
        out = c.unroll(trials.inputs, dt=task.dt).rates[c.output][1:]
        loss = ((trials.mask * (out - trials.targets)) ** 2).sum() / len(trials)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dale:
        assert signs_hold(c)
    assert all(torch.isfinite(p).all() for p in c.parameters())


def test_colei_recurrent_nse_below_the_free_rnn_over_seeds(task):
    for seed in range(5):
        free = build("li_rnn", task, seed)
        colei = build("li_colei", task, seed)
        dann = build("li_dann", task, seed)
        values = {n: nse(effective_recurrent_matrix(c, c.recurrent_components[0])[1])
                  for n, c in (("free", free), ("colei", colei), ("dann", dann))}
        assert values["colei"] < values["free"] - 0.05, values
        assert values["colei"] < values["dann"] - 0.05, values


def test_li_dann_starts_as_their_code(task):
    c = build("li_dann", task, seed=3)
    assert all(isinstance(s, bc.DANNSynapses) for s in c.feedforward)
    assert [s.interneurons for s in c.feedforward] == [10, 10, 1]
    rec = c.synapse("E->E")
    ee, ei, ie = (f.detach().to(torch.float64) for f in rec.factors())
    assert bool((ee >= 0).all()) and bool((ei >= 0).all()) and bool((ie >= 0).all())
    assert torch.allclose(ei.sum(1), torch.ones(100, dtype=torch.float64), atol=1e-6)  # rows sum to 1
    assert torch.allclose(ie, ee.mean(0, keepdim=True).expand(10, 100), atol=1e-6)  # W_IE: mean row
    names, eff = effective_recurrent_matrix(c, c.recurrent_components[0])
    assert names == ["E"] and torch.allclose(eff.to(torch.float64), ee - ei @ ie, atol=1e-6)
    assert float(eff.sum(0).abs().max()) < 1e-4  # columns centred: W_EE - W_EI W_IE


DANN_POPULATIONS = {  # a recurrent DANN with an interneuron population (one step late), for the init rule
    "input": "x", "output": "y", "seed": 0, "dynamics": "rate", "readout": "E", "recurrent_init": {"rule": "dann"},
    "populations": {"x": {"size": 8, "tau": 0.02}, "E": {"size": 100, "sign": "E", "activation": "relu", "tau": 0.02},
                    "I": {"size": 10, "sign": "I", "activation": "linear", "tau": 0.02},
                    "y": {"size": 10, "activation": "linear", "tau": 0.02}},
    "synapses": [{"pre": "x", "post": "E", "sign": "E"}, {"pre": "x", "post": "I", "sign": "E"},
                 {"pre": "E", "post": "E"}, {"pre": "E", "post": "I"}, {"pre": "I", "post": "E"},
                 {"pre": "E", "post": "y"}]}


def test_dann_recurrent_init_and_its_effective_recurrence(task):
    c = bc.from_spec(dict(DANN_POPULATIONS, seed=3))
    comp = c.recurrent_components[0]
    m = recurrent_matrix(c, comp).to(torch.float64)
    ee, ei, ie = m[:100, :100], m[:100, 100:], m[100:, :100]
    assert bool((ee >= 0).all()) and bool((ei <= 0).all()) and bool((ie >= 0).all())
    assert torch.allclose(-ei.sum(1), torch.ones(100, dtype=torch.float64), atol=1e-5)  # rows sum to 1
    assert torch.allclose(ie, ee.mean(0, keepdim=True).expand(10, 100), atol=1e-6)  # W_IE: mean row
    names, eff = effective_recurrent_matrix(c, comp)
    assert names == ["E"] and torch.allclose(eff.to(torch.float64), ee + ei @ ie, atol=1e-6)
    assert float(eff.sum(0).abs().max()) < 1e-4  # columns centred: W_EE - W_EI W_IE
    colei = build("li_colei", task)
    names, eff = effective_recurrent_matrix(colei, colei.recurrent_components[0])
    assert names == ["E", "I"] and torch.equal(eff, recurrent_matrix(colei, colei.recurrent_components[0]))


def test_dann_init_validates():
    from biofa.circuit.recurrent_init import parse
    from biofa.errors import ConfigError
    assert parse("dann")["rho0"] is None and parse({"rule": "dann", "rho0": 0.9})["rho0"] == 0.9
    with pytest.raises(ConfigError, match="k is the gamma shape"):
        parse({"rule": "dann", "k": 2})


def test_colei_inhibitory_fraction_sets_the_share_of_inhibitory_inputs():
    import biofa.models as bm
    from biofa.errors import ConfigError
    m = bm.build("mlp", input_shape=(40,), n_outputs=10, hidden=[100, 100], sign="dale",
                 ei={"rule": "colei", "inhibitory_fraction": 0.3}, inputs="on_off",
                 generator=torch.Generator().manual_seed(0))
    layers = [mod for mod in m.modules() if isinstance(mod, torch.nn.Module) and hasattr(mod, "sign")
              and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2]
    negative_columns = [int((l.weight.detach() < 0).any(0).sum()) for l in layers]
    assert negative_columns[0] == 0 and negative_columns[1] == 30  # on/off inputs stay excitatory
    with pytest.raises(ConfigError, match="inhibitory_fraction"):
        bm.build("mlp", input_shape=(40,), n_outputs=10, hidden=[100], sign="dale",
                 ei={"rule": "colei", "inhibitory_fraction": 1.5})


def test_sequential_design():
    runs = expand(load(EXPERIMENTS / "li2023_sequential.toml"))
    assert len(runs) == 9
    assert {r["config"]["model"]["circuit"] for r in runs} == set(CIRCUITS)
    assert all(r["config"]["train"]["optimizer"]["name"] == "sgd" and r["config"]["train"]["grad_clip"] == 10
               and r["config"]["task"]["name"] == "sequence" for r in runs)


def test_fraction_design_keeps_li2023_spectra_apart():
    runs = expand(load(EXPERIMENTS / "li2023_spectra_fraction.toml"))
    assert len(runs) == 27
    labels = {r["run_id"].rsplit("-s", 1)[0] for r in runs}
    assert labels == {"free"} | {f"{a}-{f}" for a in ("colei", "dann") for f in (0.05, 0.1, 0.2, 0.3)}
    assert all(r["config"]["model"]["hidden"] == [200, 200] for r in runs)


def _quick(name: str, out, n_runs: int):
    """``biofa run experiments/<name>.toml --quick`` into ``out``: its runs (all ok) and history."""
    assert main(["run", str(EXPERIMENTS / f"{name}.toml"), "--quick", "--out", str(out), "--no-progress"]) == 0
    _, rows = read_csv(out / "runs.csv")
    assert len(rows) == n_runs and all(r["status"] == "ok" for r in rows)
    _, history = read_csv(out / "history.csv")
    return rows, history


def test_sequential_quick_records_recurrent_nse(tmp_path, capsys):
    out = tmp_path / "seq"
    rows, history = _quick("li2023_sequential", out, 3)
    start = {r["run_id"]: r["nse:recurrent"] for r in history if r["epoch"] == 0}
    by = {r["model.circuit"]: start[r["run_id"]] for r in rows}
    assert by["li_colei"] < by["li_rnn"] and by["li_colei"] < by["li_dann"]
    assert "NSE of each layer's W at initialisation" in (out / "report.md").read_text()
    assert len(json.loads((out / "task_results.json").read_text())) == 3


def test_fraction_quick_colei_nse_rises_with_inhibition(tmp_path, capsys):
    rows, history = _quick("li2023_spectra_fraction", tmp_path / "frac", 9)
    square = [c for c in history[0] if c.startswith("nse:")][1]  # the 200 x 200 layer
    start = {r["run_id"]: r[square] for r in history if r["epoch"] == 0}
    colei = [start[r["run_id"]] for r in rows if str(r["ei"]).startswith("colei")]
    assert colei == sorted(colei)  # 5 % to 30 % inhibitory: the spectrum spreads less
