"""Experiment specs: defaults, overrides, grid expansion and the exact validation messages."""

import pytest

from biofa.errors import SpecError
from biofa.experiment import expand, from_dict, load
from biofa.experiment.spec import label
from biofa.experiment.spec import canonical, parse_value, resolve_path

SRC = "experiments/x.toml"


def spec(tree, **kw):
    return from_dict(tree, source=SRC, **kw)


def error(tree, **kw) -> str:
    with pytest.raises(SpecError) as info:
        spec(tree, **kw)
    return str(info.value)


def test_defaults_are_filled_in():
    s = spec({})
    assert s.base["data"] == {"name": "mnist1d", "validation": 0.1, "normalize": True, "seed": 0}
    assert s.base["model"] == {"name": "mlp", "feedback": "bp", "sign": "free", "norm": "none",
                               "batch_manhattan": False}
    assert s.base["train"]["epochs"] == 10 and s.base["train"]["optimizer"]["name"] == "sgd"
    assert s.base["train"]["schedule"] == {"name": "none", "gamma": 0.1}
    assert s.grid == {"seed": [0]}
    assert s.name == "experiment"


def test_open_tables_pass_options_and_train_shorthands_move_to_optimizer():
    s = spec({"data": {"name": "digits", "n_train": 500}, "model": {"hidden": [8]},
              "train": {"lr": 0.3, "momentum": 0.5, "optimizer": "adam", "schedule": "cosine"}})
    assert s.base["data"]["n_train"] == 500 and s.base["model"]["hidden"] == [8]
    opt = s.base["train"]["optimizer"]
    assert (opt["name"], opt["lr"], opt["momentum"]) == ("adam", 0.3, 0.5)
    assert s.base["train"]["schedule"]["name"] == "cosine"


def test_grid_is_a_cartesian_product_with_aliases_and_per_rule_overrides():
    tree = {"grid": {"feedback": ["bp", "dfa"], "sign": ["free", "dale"], "seed": [0, 1, 2],
                     "train.lr": [0.1, 0.2]},
            "per_rule": {"dfa": {"train": {"momentum": 0.5}, "model.hidden": [4]}}}
    s = spec(tree)
    assert list(s.grid) == ["model.feedback", "model.sign", "seed", "train.optimizer.lr"]
    runs = expand(s)
    assert len(runs) == 2 * 2 * 3 * 2
    assert len({r["run_id"] for r in runs}) == len(runs)
    first = runs[0]
    assert first["labels"] == {"feedback": "bp", "sign": "free", "seed": 0, "train.optimizer.lr": 0.1}
    assert first["config"]["seed"] == 0 and first["config"]["train"]["optimizer"]["lr"] == 0.1
    for run in runs:
        dfa = run["labels"]["feedback"] == "dfa"
        assert run["config"]["train"]["optimizer"]["momentum"] == (0.5 if dfa else 0.0)
        assert ("hidden" in run["config"]["model"]) == dfa
    # ids depend only on the configuration: expanding again gives the same ids
    assert [r["run_id"] for r in expand(spec(tree))] == [r["run_id"] for r in runs]
    assert runs[0]["run_id"].startswith("bp-free-0.1-s0-")


def test_quick_then_set_overrides():
    tree = {"train": {"epochs": 30}, "grid": {"feedback": ["bp", "fa"], "seed": [0, 1, 2]},
            "quick": {"train.epochs": 2, "grid": {"seed": [0]}}}
    assert spec(tree).base["train"]["epochs"] == 30
    quick = spec(tree, quick=True)
    assert quick.base["train"]["epochs"] == 2 and quick.grid["seed"] == [0]
    both = spec(tree, quick=True, overrides=["train.epochs=5", "feedback=fa", "lr=0.5",
                                             "data.name=digits", "grid.seed=[3, 4]"])
    assert both.base["train"]["epochs"] == 5
    assert both.grid["model.feedback"] == ["fa"]  # --set on a grid key narrows the dimension
    assert both.grid["seed"] == [3, 4]
    assert both.base["train"]["optimizer"]["lr"] == 0.5
    assert both.base["data"]["name"] == "digits"
    assert spec({}, overrides=["seed=4"]).grid["seed"] == [4]
    assert spec({"grid": {"seed": [0, 1]}}, overrides=["seed=[2, 3]"]).grid["seed"] == [2, 3]


def test_parse_value_and_canonical_and_label():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True and parse_value("digits") == "digits"
    assert parse_value('"x y"') == "x y"
    assert canonical("train.lr") == "train.optimizer.lr" and canonical("sign") == "model.sign"
    assert label({"rule": "usf", "scale": "sn"}) == "usf(scale=sn)" and label(True) == "true"


@pytest.mark.parametrize("tree, message", [
    ({"train": {"epochs": -1}}, "experiments/x.toml: [train] epochs must be a positive integer, got -1"),
    ({"train": {"epochs": 2.5}}, "experiments/x.toml: [train] epochs must be a positive integer, got 2.5"),
    ({"train": {"batch_size": True}}, "experiments/x.toml: [train] batch_size must be a positive integer, got True"),
    ({"train": {"optimizer": {"lr": 0}}},
     "experiments/x.toml: [train.optimizer] lr must be a positive number, got 0"),
    ({"train": {"optimizer": {"name": "lbfgs"}}},
     "experiments/x.toml: [train.optimizer] name must be one of 'sgd', 'adam', 'adamw', 'rmsprop', got 'lbfgs'"),
    ({"data": {"validation": 1.5}},
     "experiments/x.toml: [data] validation must be a fraction in [0, 1) or a whole number of examples, got 1.5"),
    ({"metrics": {"alignment": "yes"}}, "experiments/x.toml: [metrics] alignment must be true or false, got 'yes'"),
    ({"train": {"epoch": 3}},
     "experiments/x.toml: unknown key [train] epoch (did you mean 'epochs'?); expected some of "
     "epochs, batch_size, loss, dtype, eval_batch_size, device, threads, keep_last, checkpoint_s, grad_clip, omega, method, online_update"),
    ({"trian": {}}, "experiments/x.toml: unknown table [trian] (did you mean 'train'?); expected some of "
                    "[experiment], [data], [task], [model], [train], [metrics], [log], [grid], [per_rule], [per_task], [quick], "
                    "[search], [compare], [executor], [published]"),
    ({"grid": {"feedback": "fa"}}, "experiments/x.toml: [grid] feedback must be a non-empty list of values, got 'fa'"),
    ({"grid": {"seed": []}}, "experiments/x.toml: [grid] seed must be a non-empty list of values, got []"),
    ({"grid": {"seed": [0, -1]}}, "experiments/x.toml: [grid] seed values must be non-negative integers, got -1"),
    ({"grid": {"train.epochs": [1, 0]}}, "experiments/x.toml: [grid] train.epochs must be a positive integer, got 0"),
    ({"grid": {"sign": ["free", "dael"]}},
     "experiments/x.toml: [grid] sign must be one of 'free', 'none', 'dale', 'fixed', got 'dael'"),
    ({"grid": {"train.epoks": [1]}}, "experiments/x.toml: [grid] train.epoks: unknown key [train] epoks "
                                     "(did you mean 'epochs'?)"),
    ({"per_rule": {"fx": {"train.lr": 0.1}}},
     "experiments/x.toml: [per_rule.fx]: 'fx' is not a feedback rule; expected one of bp, brsf, densefa, dfa, fa, "
     "frsf, kp, usf, wm"),
    ({"grid": {"lr": [0.1, 0.2]}, "per_rule": {"dfa": {"train.lr": 0.01}}},
     "experiments/x.toml: [per_rule.dfa] train.lr is also a [grid] key; keep one of them"),
    ({"per_rule": {"dfa": {"train.lr": -1}}},
     "experiments/x.toml: [per_rule.dfa] train.lr must be a positive number, got -1"),
    ({"model": {"name": "mlp", "circuit": "x"}}, "experiments/x.toml: [model] give either name or circuit, not both"),
    ({"train": {"schedule": {"name": "multistep"}}},
     "experiments/x.toml: [train.schedule] milestones must be given for name = 'multistep'"),
    ({"train": {"schedule": {"name": "multistep", "milestones": [5, 2]}}},
     "experiments/x.toml: [train.schedule] milestones must be an increasing list of positive integers, got [5, 2]"),
])
def test_validation_messages_name_the_key(tree, message):
    assert error(tree) == message


def test_override_errors_say_where_the_value_came_from():
    assert error({}, overrides=["train.epochs=-1"]) == \
        "experiments/x.toml (--set): [train] epochs must be a positive integer, got -1"
    assert error({"quick": {"train.epochs": 0}}, quick=True) == \
        "experiments/x.toml ([quick]): [train] epochs must be a positive integer, got 0"
    assert "unknown key 'bogus'" in error({}, overrides=["bogus=1"])
    assert error({}, overrides=["train.epochs"]) == \
        "--set train.epochs: expected key=value, e.g. --set train.epochs=3"


def test_feedback_rule_is_checked_everywhere():
    msg = error({"grid": {"feedback": ["bp", "usf2"]}})
    assert msg.startswith("experiments/x.toml: [grid] feedback must be a feedback rule, one of bp, brsf")
    assert msg.endswith("got 'usf2'")
    assert "[model] feedback must be a feedback rule" in error({"model": {"feedback": {"rule": "nope"}}})


def test_load_reads_files_and_packaged_names(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[train]\nepochs = 3\n[grid]\nfeedback = ["fa"]\n')
    s = load(path)
    assert s.name == "s" and s.base["train"]["epochs"] == 3 and s.source == str(path)
    assert resolve_path("quickstart").name == "quickstart.toml"
    quick = load("quickstart", quick=True)
    assert quick.name == "quickstart" and quick.quick
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(SpecError, match=r"bad.toml: not valid TOML"):
        load(bad)
    with pytest.raises(SpecError, match=r"no such experiment spec file"):
        load(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["quickstart", "example", "mnist1d_baseline"])
def test_packaged_experiments_are_valid(name):
    s = load(name)
    assert len(expand(s)) >= 2
