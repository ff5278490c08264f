"""[search] and [compare]: the spec syntax and its errors, --set and [quick] on a search key, the
candidate runs and their ids, the choice on validation (never on test), edge flags, the report
tables, and a tiny study end to end that resumes like any study."""

import csv

import pytest
import tomli_w

from biofa.errors import SpecError
from biofa.experiment import expand, from_dict, run_study
from biofa.experiment.spec import config_hash
from biofa.experiment.report import read_study, write_report
from biofa.experiment.results import RUN_COLUMNS, write_csv
from biofa.experiment.report.selection import choose, edges


def spec(**tables):
    tree = {"grid": {"feedback": ["bp", "fa"], "sign": ["free", "dale"], "seed": [0, 1]},
            "search": {"train.optimizer.lr": [0.001, 0.01, 0.1]}}
    tree.update(tables)
    return tree


def load(tree, **kw):
    return from_dict(tree, source="x.toml", **kw)


def error(tree, **kw):
    with pytest.raises(SpecError) as info:
        load(tree, **kw)
    return str(info.value)


# -- the spec -------------------------------------------------------------------------------------
def test_search_expands_every_condition_into_candidates_times_seeds():
    s = load(spec(per_rule={"fa": {"train.optimizer.momentum": 0.5}}))
    assert s.search == {"train.optimizer.lr": [0.001, 0.01, 0.1]}
    runs = expand(s)
    assert len(runs) == 2 * 2 * 3 * 2
    assert len({r["run_id"] for r in runs}) == len(runs)
    assert list(runs[0]["labels"]) == ["feedback", "sign", "train.optimizer.lr", "seed"]
    got = [(r["labels"]["feedback"], r["labels"]["sign"], r["labels"]["train.optimizer.lr"],
            r["labels"]["seed"]) for r in runs]
    assert got == [(f, g, lr, seed) for f in ("bp", "fa") for g in ("free", "dale")
                   for seed in (0, 1) for lr in (0.001, 0.01, 0.1)]
    for run in runs:
        config, labels = run["config"], run["labels"]
        assert config["train"]["optimizer"]["lr"] == labels["train.optimizer.lr"]
        assert config["train"]["optimizer"]["momentum"] == (0.5 if labels["feedback"] == "fa" else 0.0)
        stem = f"{labels['feedback']}-{labels['sign']}-lr{labels['train.optimizer.lr']}-s{labels['seed']}"
        assert run["run_id"] == f"{stem}-{config_hash(config)}"


def test_a_spec_without_search_keeps_its_run_ids():
    runs = expand(load({"grid": {"feedback": ["bp"], "seed": [3]}}))
    assert [r["run_id"] for r in runs] == [f"bp-s3-{config_hash(runs[0]['config'])}"]
    assert list(runs[0]["labels"]) == ["feedback", "seed"]


def test_several_search_keys_give_their_product():
    s = load(spec(search={"lr": [0.01, 0.1], "train": {"batch_size": [16, 32, 64]}}))
    assert s.search == {"train.optimizer.lr": [0.01, 0.1], "train.batch_size": [16, 32, 64]}
    assert len(expand(s)) == 4 * 2 * 2 * 3


def test_set_and_quick_on_a_search_key_replace_its_list():
    assert load(spec(), overrides=["lr=0.01"]).search == {"train.optimizer.lr": [0.01]}
    assert load(spec(), overrides=["train.optimizer.lr=[0.01, 0.1]"]).search == \
        {"train.optimizer.lr": [0.01, 0.1]}
    assert load(spec(), overrides=["search.lr=[0.3]"]).search == {"train.optimizer.lr": [0.3]}
    # a key not searched yet is added to the search
    added = load(spec(), overrides=["search.train.batch_size=[16, 32]"])
    assert added.search == {"train.optimizer.lr": [0.001, 0.01, 0.1], "train.batch_size": [16, 32]}
    quick = load(spec(quick={"search.train.optimizer.lr": [0.01], "grid.seed": [0]}), quick=True)
    assert quick.search == {"train.optimizer.lr": [0.01]} and len(expand(quick)) == 4
    # the quick study's runs are runs of the full study (resuming the full one keeps them)
    full_ids = {r["run_id"] for r in expand(load(spec()))}
    assert {r["run_id"] for r in expand(quick)} <= full_ids


@pytest.mark.parametrize("tables, message", [
    ({"search": {"lr": 0.1}}, "x.toml: [search] lr must be a non-empty list of candidate values, got 0.1"),
    ({"search": {"lr": []}}, "x.toml: [search] lr must be a non-empty list of candidate values, got []"),
    ({"search": {"lr": [0.1, -1]}}, "x.toml: [search] lr must be a positive number, got -1"),
    ({"search": {"lr": [0.1, 0.1]}}, "x.toml: [search] lr repeats a value: [0.1, 0.1]"),
    ({"search": {"lr": [1, 1.0]}}, "x.toml: [search] lr repeats a value: [1, 1.0]"),  # one runs.csv value
    ({"search": {"train.epoks": [1]}}, "x.toml: [search] train.epoks: unknown key [train] epoks (did you "
                                      "mean 'epochs'?)"),
    ({"search": {"seed": [0, 1]}}, "x.toml: [search] cannot search seed: it defines the conditions (put it "
                                   "in [grid])"),
    ({"search": {"feedback": ["bp"]}}, "x.toml: [search] cannot search feedback: it defines the conditions "
                                       "(put it in [grid])"),
    ({"search": {"sign": ["free"]}}, "x.toml: [search] sign is also a [grid] key; keep one of them (a grid "
                                     "key is reported for every value, a search key is chosen on validation)"),
    ({"per_rule": {"fa": {"lr": 0.1}}}, "x.toml: [per_rule.fa] train.optimizer.lr is also a [search] key; "
                                        "keep one of them (remove it from [per_rule] to search it for every "
                                        "rule)"),
    ({"data": {"validation": 0}}, "x.toml: [search] chooses on the validation split, but [data] validation = "
                                  "0; set [data] validation to a fraction such as 0.1"),
    ({"search": 3}, "x.toml: search must be a table [search], got 3"),
])
def test_search_errors_name_the_key(tables, message):
    assert error(spec(**tables)) == message


def test_compare_is_checked_against_the_grid():
    s = load(spec(compare={"sign": ["free", "dale"], "feedback": ["bp", "*"]}))
    assert s.compare == {"model.sign": ("free", "dale"), "model.feedback": ("bp", "*")}
    assert s.tree["compare"] == {"model.sign": ["free", "dale"], "model.feedback": ["bp", "*"]}
    assert error(spec(compare={"norm": ["none", "const"]})) == \
        "x.toml: [compare] norm is not a [grid] key (grid keys: feedback, sign)"
    assert "runs are paired by seed" in error(spec(compare={"seed": [0, 1]}))
    assert error(spec(compare={"sign": ["free"]})).startswith("x.toml: [compare] sign must be a list of two")
    assert "two different values" in error(spec(compare={"sign": ["*", "*"]}))
    assert "two different values" in error(spec(compare={"sign": ["dale", "dale"]}))
    assert error(spec(compare={"sign": ["free", "dael"]})) == \
        "x.toml: [compare] sign: 'dael' is not in [grid] sign (free, dale)"
    # values are matched as runs.csv holds them (1.0 is read back as 1)
    numeric = load({"grid": {"lr": [0.5, 1.0]}, "compare": {"lr": [1, 0.5]}})
    assert numeric.compare == {"train.optimizer.lr": ("1", "0.5")}
    # a grid narrowed by --set keeps its declared comparisons (the report leaves out what is not run)
    narrowed = load(spec(compare={"feedback": ["bp", "*"]}), overrides=["feedback=fa"])
    assert narrowed.compare == {"model.feedback": ("bp", "*")}


# -- the choice -----------------------------------------------------------------------------------
class NoTest(dict):
    """A runs.csv row that fails the test if anything reads a test score from it."""

    def __getitem__(self, key):
        assert not key.startswith("test_"), key
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert not key.startswith("test_"), key
        return super().get(key, default)


def row(feedback, lr, seed, val, test, status="ok", **extra):
    return NoTest({"feedback": feedback, "train.optimizer.lr": lr, "seed": float(seed), "status": status,
                   "run_id": f"{feedback}-lr{lr}-s{seed}", "best_val_acc": val,
                   "best_val_loss": None if val is None else 1 - val,
                   "test_acc_at_best_val": test, "test_acc_final": test, **extra})


SEARCH = {"train.optimizer.lr": [0.001, 0.01, 0.1]}


def test_the_choice_follows_validation_and_never_reads_test():
    rows = [row("bp", lr, s, val, test) for s in (0, 1)
            for lr, val, test in ((0.001, 0.60, 0.95), (0.01, 0.80, 0.10), (0.1, 0.70, 0.50))]
    choice = choose(rows, ["feedback"], SEARCH)[("bp",)]
    assert choice.selected.values == {"train.optimizer.lr": "0.01"}
    assert [c.score for c in choice.candidates] == pytest.approx([0.60, 0.80, 0.70])
    assert choice.edges == []
    # swapping every test score for its opposite leaves the choice alone
    flipped = [row(r["feedback"], r["train.optimizer.lr"], int(r["seed"]), r["best_val_acc"],
                   1 - dict.get(r, "test_acc_at_best_val")) for r in rows]
    assert choose(flipped, ["feedback"], SEARCH)[("bp",)].selected.values == choice.selected.values


def test_the_choice_is_per_condition_and_lower_loss_wins_for_regression():
    rows = [row(f, lr, 0, val, 0.5) for f, lr, val in
            (("bp", 0.001, 0.9), ("bp", 0.1, 0.8), ("fa", 0.001, 0.7), ("fa", 0.1, 0.75))]
    got = {c[0]: ch.selected.values["train.optimizer.lr"] for c, ch in choose(rows, ["feedback"], SEARCH).items()}
    assert got == {"bp": "0.001", "fa": "0.1"}
    for r in rows:
        r["best_val_acc"] = None  # regression: the best validation loss (1 - val above) decides
    got = {c[0]: ch.selected.values["train.optimizer.lr"] for c, ch in choose(rows, ["feedback"], SEARCH).items()}
    assert got == {"bp": "0.001", "fa": "0.1"}
    assert choose(rows, ["feedback"], SEARCH)[("fa",)].higher_is_better is False


def test_failed_runs_lose_and_ties_go_to_the_first_listed():
    rows = [row("bp", 0.001, 0, 0.70, 0.5), row("bp", 0.001, 1, 0.70, 0.5),
            row("bp", 0.1, 0, 0.95, 0.5), row("bp", 0.1, 1, None, None, status="failed")]
    choice = choose(rows, ["feedback"], SEARCH)[("bp",)]
    assert choice.selected.values["train.optimizer.lr"] == "0.001"  # 0.1 diverged on seed 1
    assert [(c.n_ok, c.n_failed) for c in choice.candidates] == [(2, 0), (0, 0), (1, 1)]
    assert not choice.candidates[1].eligible  # 0.01 never ran
    # the same accuracies in another order tie (their float sums may differ in the last bit)
    tie = [row("bp", 0.1, 0, 0.1, 0), row("bp", 0.1, 1, 0.7, 0), row("bp", 0.1, 2, 0.2, 0),
           row("bp", 0.01, 0, 0.7, 0), row("bp", 0.01, 1, 0.2, 0), row("bp", 0.01, 2, 0.1, 0)]
    assert choose(tie, ["feedback"], SEARCH)[("bp",)].selected.values["train.optimizer.lr"] == "0.01"
    reordered = {"train.optimizer.lr": [0.1, 0.01, 0.001]}
    assert choose(tie, ["feedback"], reordered)[("bp",)].selected.values["train.optimizer.lr"] == "0.1"
    # nothing finished: no choice
    dead = [row("bp", 0.1, 0, None, None, status="failed")]
    assert choose(dead, ["feedback"], SEARCH)[("bp",)].selected is None


def test_edges_of_the_searched_range():
    search = {"train.optimizer.lr": [0.01, 1e-05, 0.001], "model.act": ["relu", "tanh"],
              "train.batch_size": [32], "train.epochs": [1, 2]}
    chosen = {"train.optimizer.lr": "1e-05", "model.act": "relu", "train.batch_size": "32", "train.epochs": "2"}
    assert edges(chosen, search) == ["lr=1e-05 is the smallest value searched",
                                     "epochs=2 is the largest value searched"]
    assert edges({**chosen, "train.optimizer.lr": "0.001", "train.epochs": "1"}, search) == \
        ["epochs=1 is the smallest value searched"]
    assert edges({"train.optimizer.lr": "0.01"}, {"train.optimizer.lr": [0.001, 0.01, 0.1]}) == []


# -- the report -----------------------------------------------------------------------------------
def write_study(out, rows, search, compare):
    labels = ["feedback", "sign", "train.optimizer.lr", "seed"]
    write_csv(out / "runs.csv", labels + RUN_COLUMNS, [dict(r) for r in rows])
    tree = {"experiment": {"name": "synthetic"}, "grid": {"feedback": ["bp", "fa"], "sign": ["free", "dale"]},
            "search": search, "compare": compare}
    (out / "spec.toml").write_text(tomli_w.dumps(tree))


def synthetic_rows():
    """bp, fa x free, dale x lr 0.001, 0.01 x seeds 0-2. Validation prefers lr 0.001 everywhere
    but test prefers 0.01; fa/dale seed 1 failed at 0.001."""
    out = []
    for f in ("bp", "fa"):
        for g in ("free", "dale"):
            for seed in range(3):
                base = 0.8 - 0.1 * (g == "dale") - 0.05 * (f == "fa") + 0.01 * seed
                for lr, val, test in ((0.001, base, base - 0.2), (0.01, base - 0.1, base + 0.1)):
                    failed = (f, g, lr, seed) == ("fa", "dale", 0.001, 1)
                    r = row(f, lr, seed, None if failed else val, None if failed else test,
                            status="failed" if failed else "ok", sign=g,
                            reason="diverged: nan" if failed else "")
                    r["run_id"] = f"{f}-{g}-lr{lr}-s{seed}"
                    out.append(r)
    return out


def test_report_shows_test_at_the_choice_every_candidate_and_the_comparisons(tmp_path):
    rows = synthetic_rows()
    write_study(tmp_path, rows, {"train.optimizer.lr": [0.001, 0.01]},
                {"model.sign": ["free", "dale"], "model.feedback": ["bp", "*"]})
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    study = read_study(tmp_path)
    assert study["conditions"] == ["feedback", "sign"] and list(study["search"]) == ["train.optimizer.lr"]
    assert "## Results: test at the validation-selected train.optimizer.lr" in report
    assert "Seeds 0, 1, 2: n = 3 finished per condition" in report
    # fa/dale: 0.001 failed on seed 1, so 0.01 (no failure) is chosen; the others take 0.001
    line = {tuple(c.strip() for c in ln.split("|")[1:4]): ln for ln in report.splitlines()
            if ln.startswith("| bp |") or ln.startswith("| fa |")}
    for (f, g), lr in {("bp", "free"): "0.001", ("bp", "dale"): "0.001", ("fa", "free"): "0.001",
                       ("fa", "dale"): "0.01"}.items():
        assert (f, g, lr) in line, (f, g, lr)
    # test at the choice: bp/free at 0.001 has test 0.6, 0.61, 0.62 -> 61.0 [58.5, 63.5]
    assert "| bp | free | 0.001 | 3/3 | 61.0 [58.5, 63.5] |" in report
    assert "edge: lr=0.001 is the smallest value searched" in report
    assert "edge: lr=0.01 is the largest value searched" in report
    # every candidate listed with its validation score, the choice marked
    assert "## Search: every candidate's validation score" in report
    assert "| bp | free | 0.001 | 3/3 | 81.0 [78.5, 83.5] | selected |" in report
    assert "| bp | free | 0.01 | 3/3 | 71.0 [68.5, 73.5] |  |" in report
    assert "| fa | dale | 0.001 | 2/3 |" in report
    # comparisons: bp dale - free at the chosen lr = -10 points each seed (zero sd: p = 0)
    assert "| sign: dale − free | feedback=bp | 3 | -10.0 [-10.0, -10.0] | – | 0 | 0 |  |" in report
    assert "| feedback: fa − bp | sign=free | 3 | -5.0 [-5.0, -5.0] |" in report
    assert "(pairs)" in report and "Holm" in report
    for name in ("intervals.png", "comparisons.png", "learning_curves.png"):
        assert f"({name})" in report or name == "learning_curves.png"
    assert (tmp_path / "intervals.png").is_file() and (tmp_path / "comparisons.png").is_file()


def test_report_pairs_by_seed_and_lists_failed_seeds(tmp_path):
    rows = [r for r in synthetic_rows() if r["train.optimizer.lr"] == 0.001]
    write_study(tmp_path, rows, {"train.optimizer.lr": [0.001]}, {"model.sign": ["free", "dale"]})
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| sign: dale − free | feedback=fa | 2 |" in report
    assert "seed 1: failed in b |" in report
    assert "edge:" not in report  # one value searched: no range, no edge


def test_a_condition_whose_every_candidate_failed_counts_all_its_runs(tmp_path):
    rows = synthetic_rows()
    for r in rows:
        if (r["feedback"], r["sign"]) == ("fa", "dale"):
            r.update(status="failed", reason="diverged: nan", best_val_acc=None, test_acc_at_best_val=None)
    write_study(tmp_path, rows, {"train.optimizer.lr": [0.001, 0.01]}, {"model.sign": ["free", "dale"]})
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    (line,) = [ln for ln in report.splitlines() if ln.startswith("| fa | dale | – |")]
    assert "| 0/6 |" in line and "no candidate finished" in line  # 2 candidates x 3 seeds


# -- end to end -----------------------------------------------------------------------------------
def tiny_search(**overrides):
    tree = {"experiment": {"name": "tiny_search"},
            "data": {"name": "digits", "n_train": 300, "n_test": 100, "validation": 0.2},
            "model": {"name": "mlp", "hidden": [12]},
            "train": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "sgd", "momentum": 0.9}},
            "metrics": {"update_alignment": False},
            "grid": {"feedback": ["bp", "fa"], "seed": [0, 1]},
            "search": {"lr": [0.02, 0.2]},
            "compare": {"feedback": ["bp", "*"]}}
    return from_dict(tree, source="tiny.toml", overrides=overrides)


def test_a_study_with_search_runs_reports_and_resumes(tmp_path):
    outcome = run_study(tiny_search(), tmp_path, jobs=1, progress=False)
    assert (outcome.n_runs, outcome.n_ok) == (8, 8)
    with open(tmp_path / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    assert list(runs[0])[:4] == ["feedback", "train.optimizer.lr", "seed", "run_id"]
    report = (tmp_path / "report.md").read_text()
    for f in ("bp", "fa"):  # the reported lr is the one with the best mean validation accuracy
        means = {lr: sum(float(r["best_val_acc"]) for r in runs
                         if (r["feedback"], r["train.optimizer.lr"]) == (f, lr)) / 2
                 for lr in ("0.02", "0.2")}
        best = max(means, key=lambda lr: (round(means[lr], 10), lr == "0.02"))
        assert f"| {f} | {best} | 2/2 |" in report
    assert "| feedback: fa − bp | all | 2 |" in report
    # a narrowed search reuses the finished candidates: nothing runs again
    again = run_study(tiny_search(lr=0.2), tmp_path, jobs=1, progress=False)
    assert (again.n_runs, again.n_resumed) == (4, 4)


def test_report_of_a_regression_search_chooses_the_lowest_validation_loss(tmp_path):
    rows = []
    for seed in range(2):
        for lr, val_loss, test_loss in ((0.001, 0.30, 0.9), (0.01, 0.20, 1.5)):
            r = row("bp", lr, seed, None, None, sign="free")
            r.update(best_val_loss=val_loss + 0.01 * seed, test_loss_at_best_val=test_loss + 0.01 * seed,
                     test_loss_final=test_loss, run_id=f"bp-lr{lr}-s{seed}")
            rows.append(r)
    write_study(tmp_path, rows, {"train.optimizer.lr": [0.001, 0.01]}, {})
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| feedback | sign | selected lr | runs ok | test loss @ best val |" in report
    assert "| bp | free | 0.01 | 2/2 | 1.5050 [1.4415, 1.5685] |" in report  # 1.505 +- 12.706 * 0.005
    assert "| bp | free | 0.001 | 2/2 | 0.3050 [0.2415, 0.3685] |  |" in report
    assert "best val loss mean [95% CI]" in report and "Comparisons" not in report
