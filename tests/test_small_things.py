"""What a user expects of a package: a version flag, ``python -m``, type hints that ship, a
changelog, clear messages for an int where a list belongs and for a circuit spec given to
``biofa run``, brian2 times with units."""

import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import torch

import biofa
from biofa.circuit import Circuit, FeedforwardSynapses, Population
from biofa.cli import main
from biofa.errors import ConfigError, SpecError
from biofa.experiment import spec as spec_mod
from biofa.models import MLP

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"biofa {biofa.__version__}"


def test_python_dash_m_is_the_command():
    out = subprocess.run([sys.executable, "-m", "biofa", "--version"], capture_output=True, text=True,
                         timeout=3600, cwd=ROOT)  # a hang guard
    assert out.returncode == 0 and out.stdout.strip() == f"biofa {biofa.__version__}"


@pytest.mark.parametrize("hidden", [16, "16", 16.0, [16, "a"], [True]])
def test_hidden_that_is_not_a_list_of_ints_is_a_config_error(hidden):
    with pytest.raises(ConfigError, match=r"hidden must be a list of layer widths \(positive integers\)"):
        MLP((4,), 3, hidden=hidden)


def test_hidden_int_in_a_spec_reads_like_every_other_type_error(tmp_path, capsys):
    path = tmp_path / "h.toml"
    path.write_text('[data]\nname = "digits"\n[model]\nname = "mlp"\nhidden = 16\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"biofa: error: {path}: [model] hidden must be a list of layer widths (positive "
                   "integers), e.g. [16] for one hidden layer, got 16")
    assert not (tmp_path / "out" / "runs.csv").exists()


def test_circuit_spec_given_to_run_says_what_it_is(tmp_path, capsys):
    circuit = ROOT / "circuits" / "mlp.toml"
    assert main(["run", str(circuit), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "a circuit spec ([populations], [synapses]), not an experiment spec" in err
    assert f"circuit = '{circuit}'" in err and "biofa.circuit.load(" in err
    with pytest.raises(SpecError, match="dale_mlp: a packaged circuit, not an experiment spec"):
        spec_mod.load("dale_mlp")


def test_py_typed_ships_with_the_package():
    assert (Path(biofa.__file__).parent / "py.typed").is_file()
    with open(ROOT / "pyproject.toml", "rb") as fh:
        data = tomllib.load(fh)["tool"]["setuptools"]
    assert "biofa" in data["packages"] and "py.typed" in data["package-data"]["biofa"]


def test_changelog_has_unreleased_and_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert headings[0] == "Unreleased"
    released = headings[1:]
    assert released and all(re.fullmatch(r"\d+\.\d+\.\d+", h) for h in released)
    assert biofa.__version__ in released  # the installed version is described


# -- brian2 times with units -------------------------------------------------------------------
def _small_circuit():
    g = torch.Generator().manual_seed(0)
    x, h = Population("x", 3), Population("h", 4, activation="tanh", tau=0.01, bias=0.1)
    y = Population("y", 2, activation="linear", tau=0.02)
    return Circuit([x, h, y], [FeedforwardSynapses(x, h, generator=g), FeedforwardSynapses(h, y, generator=g)],
                   input="x", output="y")


@pytest.mark.brian2
def test_brian2_simulate_accepts_times_with_units(f64):
    brian2 = pytest.importorskip("brian2")
    b2 = pytest.importorskip("biofa.brian2")
    c, x = _small_circuit(), torch.rand(2, 3)
    plain = b2.simulate(c, x, 0.002, 1e-4)
    units = b2.simulate(c, x, duration=2 * brian2.ms, dt=0.1 * brian2.ms)
    assert torch.equal(units.t, plain.t)
    for name in plain.rates:
        assert torch.equal(units.rates[name], plain.rates[name])
    mixed = b2.simulate(c, x, duration=2 * brian2.ms, dt=1e-4)  # a number is seconds
    assert torch.equal(mixed.rates["y"], plain.rates["y"])


@pytest.mark.brian2
@pytest.mark.parametrize("kw, needle", [
    ({"duration": "volt", "dt": 1e-4}, "duration must be a time, e.g. 20\\*ms"),
    ({"duration": 0.002, "dt": "hertz"}, "dt must be a time, e.g. 20\\*ms"),
    ({"duration": "array", "dt": 1e-4}, "duration must be one time"),
])
def test_brian2_times_with_wrong_dimensions_are_rejected(f64, kw, needle):
    brian2 = pytest.importorskip("brian2")
    b2 = pytest.importorskip("biofa.brian2")
    values = {"volt": 2 * brian2.mV, "hertz": 10 * brian2.Hz, "array": [1, 2] * brian2.ms}
    kw = {k: values.get(v, v) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(ConfigError, match=f"biofa.brian2.simulate: {needle}"):
        b2.simulate(_small_circuit(), torch.rand(1, 3), **kw)
    with pytest.raises(ConfigError, match=f"biofa.brian2.learn_online: {needle}"):
        b2.learn_online(_small_circuit(), torch.rand(1, 3), torch.rand(1, 2), lr=0.1, **kw)


def test_every_package_ships_in_the_wheel():
    """Each folder of biofa/ with an __init__.py is listed in pyproject's packages (setuptools
    would leave an unlisted one out of the wheel, while an editable install still finds it)."""
    root = Path(__file__).resolve().parent.parent
    with open(root / "pyproject.toml", "rb") as fh:
        listed = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "biofa").rglob("__init__.py")}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
