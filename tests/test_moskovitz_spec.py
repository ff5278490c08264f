"""experiments/moskovitz_signs_norms.toml: its grid and comparisons, its --quick run, and the
CIFAR-10 command documented in its header (parsed from the header itself, run on tiny CIFAR files)."""

import shlex
from pathlib import Path

import pytest
from _datafiles import write_cifar

from biofa.cli import main
from biofa.errors import SpecError
from biofa.experiment import from_dict, load
from biofa.experiment.spec import expand, label
from biofa.experiment.results import read_csv

SPEC = Path(__file__).resolve().parents[1] / "experiments" / "moskovitz_signs_norms.toml"
RULES = ["bp", "fa", "usf-init", "usf-sn", "frsf", "dfa", "densefa"]


def cifar_command() -> list[str]:
    """The arguments after ``biofa`` of the CIFAR-10 command in the spec's header."""
    lines = SPEC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "biofa run" in line and "cifar10" in line)
    text = ""
    for line in lines[start:]:
        text += line.lstrip("#").strip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            break
    args = shlex.split(text)
    assert args[:2] == ["biofa", "run"]
    return args[1:]


def test_the_design():
    spec = load(SPEC)
    assert [label(v) for v in spec.grid["model.feedback"]] == RULES
    assert spec.grid["model.sign"] == ["free", "fixed", "dale"] and spec.grid["model.norm"] == ["none", "const"]
    assert len(spec.grid["seed"]) >= 3 and len(spec.search["train.optimizer.lr"]) >= 3
    assert spec.compare == {"model.sign": ("free", "*"), "model.norm": ("none", "const")}
    assert spec.base["model"]["free_norm"] == [-1] and spec.base["data"]["validation"] > 0
    runs = expand(spec)
    assert len(runs) == 7 * 3 * 2 * len(spec.grid["seed"]) * len(spec.search["train.optimizer.lr"])
    usf_sn = next(r for r in runs if label(r["labels"]["feedback"]) == "usf-sn")
    assert usf_sn["run_id"].startswith("usf-sn-free-none-lr")  # readable names, the label not in the config
    assert usf_sn["config"]["model"]["feedback"] == {"rule": "usf", "scale": "sn"}
    assert len(expand(load(SPEC, quick=True))) == 42


def test_grid_labels_are_checked():
    with pytest.raises(SpecError, match="two values named alike"):
        from_dict({"grid": {"feedback": [{"rule": "usf", "label": "x"}, {"rule": "frsf", "label": "x"}]}})
    with pytest.raises(SpecError, match="'label' names a \\[grid\\] value"):
        from_dict({"grid": {"feedback": [{"rule": "usf", "label": ""}]}})
    with pytest.raises(SpecError, match="'label' names a \\[grid\\] value"):
        from_dict({"per_rule": {"usf": {"norm": {"rule": "const", "label": "c"}}}})


def test_cifar_command_parses_and_runs_on_tiny_cifar_files(tmp_path, capsys):
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n=60, seed=3)  # 300 training images
    args = cifar_command()
    args[args.index("data.root=/path/to/cifar")] = f"data.root={tmp_path / 'cifar'}"
    spec = load(SPEC, quick=True, overrides=[a for a, b in zip(args[1:], args[:-1]) if b == "--set"])
    assert spec.base["model"]["name"] == "cifar_convnet" and spec.base["data"]["augment"] == {"size": 24, "flip": True}
    assert spec.base["train"]["epochs"] == 100  # --set comes after [quick]
    out = tmp_path / "out"
    narrow = ["--set", "train.epochs=1", "--set", "train.schedule.milestones=[1]", "--set", "data.validation=20",
              "--set", 'feedback=[{rule="usf", scale="sn", label="usf-sn"}]', "--set", "sign=[\"fixed\"]",
              "--set", "train.batch_size=50", "--set", "metrics.alignment=false"]
    args[args.index("--jobs") + 1] = "1"
    argv = args + ["--quick", "--out", str(out)] + narrow
    assert main(argv) == 0, capsys.readouterr().err
    _, runs = read_csv(out / "runs.csv")
    assert sorted(r["norm"] for r in runs) == ["const", "none"]
    assert all(r["status"] == "ok" and r["feedback"] == "usf-sn" for r in runs), [r.get("reason") for r in runs]


@pytest.mark.slow
def test_quick_runs_through_the_cli(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(SPEC), "--quick", "--out", str(out), "--jobs", "1"]) == 0, capsys.readouterr().err
    _, runs = read_csv(out / "runs.csv")
    assert len(runs) == 42 and all(r["status"] == "ok" for r in runs), [r.get("reason") for r in runs]
    report = (out / "report.md").read_text()
    assert "usf-sn" in report
