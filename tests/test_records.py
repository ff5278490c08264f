"""Records and the tables documents print from them: a record regenerates its study's report, its
excerpts carry the report's statistics (checked against scipy), every marked table of the README
and the docs equals what its committed record gives, and every packaged study still plans the
runs its record holds."""

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pytest
from scipy import stats as sps

from biofa.cli import main
from biofa.errors import ConfigError
from biofa.experiment import from_dict, kinds, records, run_study
from biofa.experiment.results import read_csv

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "records"


def _tool():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "tools" / "doc_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_tables"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


doc_tables = _tool()


def tiny_tree(**extra):
    tree = {"experiment": {"name": "tiny"},
            "data": {"name": "digits", "n_train": 240, "n_test": 100, "validation": 0.25},
            "model": {"name": "mlp", "hidden": [8]},
            "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam"}},
            "metrics": {"update_alignment": False},
            "grid": {"feedback": ["bp", "fa"], "sign": ["free", "dale"], "seed": [0, 1, 2]},
            "search": {"train.optimizer.lr": [0.003, 0.03]},
            "compare": {"sign": ["free", "dale"], "feedback": ["bp", "*"]}}
    tree.update(extra)
    return tree


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    out = root / "out"
    run_study(from_dict(tiny_tree(), source="tiny.toml"), out, jobs=1, progress=False)
    record = records.save(out, root / "record")
    return out, record


def test_a_record_keeps_text_and_figures_and_regenerates_the_same_report(study):
    out, record = study
    names = {p.name for p in record.iterdir()}
    assert {"spec.toml", "plan.json", "runs.csv", "history.csv", "report.md", "environment.json",
            "learning_curves.png", "intervals.png"} <= names
    assert "runs" not in names and not list(record.glob("*.pt")) and not list(record.glob(".*"))
    # history only of the chosen candidates (one lr per condition), epochs 0 (at init), 1 and 2 of each
    _, history = read_csv(record / "history.csv")
    _, runs = read_csv(record / "runs.csv")
    assert len(runs) == 24 and len({h["run_id"] for h in history}) == 12 and len(history) == 36
    assert (record / "report.md").read_text() == (out / "report.md").read_text()
    (record / "report.md").unlink()
    assert main(["report", str(record)]) == 0  # from the record alone, without touching its tables
    assert (record / "report.md").read_text() == (out / "report.md").read_text()
    assert read_csv(record / "runs.csv")[1] == runs
    for text in ("selection rows=feedback columns=sign", "comparisons", "layers metric=norm_ratio"):
        assert kinds.excerpt(record, text) == kinds.excerpt(out, text)


def test_selection_excerpt_is_the_t_interval_and_the_holm_adjusted_paired_test(study):
    out, record = study
    table = kinds.excerpt(record, "selection rows=feedback columns=sign")
    assert table.header == ["feedback", "free: lr", "free: test % [95% CI]", "dale: lr",
                            "dale: test % [95% CI]", "dale − free, points [95% CI]", "dale − free: p (Holm)"]
    _, runs = read_csv(record / "runs.csv")

    def chosen(rule, sign):  # the candidate with the best mean validation accuracy (ties: first)
        by_lr = {}
        for r in runs:
            if r["feedback"] == rule and r["sign"] == sign:
                by_lr.setdefault(r["train.optimizer.lr"], []).append(r)
        lr = max(by_lr, key=lambda v: (sum(r["best_val_acc"] for r in by_lr[v]) / len(by_lr[v]),
                                       -list(by_lr).index(v)))
        return lr, {r["seed"]: 100 * r["test_acc_at_best_val"] for r in by_lr[lr]}

    # the family of every declared comparison (sign: 2 rules; feedback: 2 signs), Holm over 4
    pvals, diffs = {}, {}
    for rule in ("bp", "fa"):
        a, b = chosen(rule, "free")[1], chosen(rule, "dale")[1]
        d = [b[s] - a[s] for s in sorted(a)]
        diffs[rule] = d
        pvals[("sign", rule)] = sps.ttest_rel([b[s] for s in sorted(a)], [a[s] for s in sorted(a)]).pvalue
    for sign in ("free", "dale"):
        a, b = chosen("bp", sign)[1], chosen("fa", sign)[1]
        pvals[("feedback", sign)] = sps.ttest_rel([b[s] for s in sorted(a)], [a[s] for s in sorted(a)]).pvalue
    order = sorted(pvals, key=pvals.get)
    holm, running = {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvals[key]))
        holm[key] = running

    def interval(values):
        m, s = sum(values) / len(values), math.sqrt(sum((v - sum(values) / len(values)) ** 2 for v in values) / 2)
        h = sps.t.ppf(0.975, len(values) - 1) * s / math.sqrt(len(values))
        return f"{m:.1f} [{m - h:.1f}, {m + h:.1f}]"

    for row in table.rows:
        rule = row[0]
        lr_free, free = chosen(rule, "free")
        lr_dale, dale = chosen(rule, "dale")
        assert row[1] == f"{lr_free:g}" and row[3] == f"{lr_dale:g}"
        assert row[2].rstrip("*") == interval(list(free.values()))
        assert row[4].rstrip("*") == interval(list(dale.values()))
        assert row[5] == interval(diffs[rule])
        p = holm[("sign", rule)]
        assert row[6] == (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def test_an_unfinished_study_is_not_recorded(study, tmp_path):
    out, _ = study
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    next((partial / "runs").glob("*.json")).unlink()
    assert main(["report", str(partial)]) == 0  # rebuilds the tables from the run files
    with pytest.raises(ConfigError, match="unfinished study \\(23 of 24 runs"):
        records.save(partial, tmp_path / "rec")
    assert main(["record", str(partial), str(tmp_path / "rec")]) == 2
    assert not (tmp_path / "rec").exists()
    assert main(["record", str(tmp_path / "nothing"), str(tmp_path / "rec")]) == 2


def test_a_record_replaces_the_previous_one_as_a_whole(study, tmp_path):
    out, _ = study
    dest = tmp_path / "rec"
    dest.mkdir()
    (dest / "stale.txt").write_text("from an older record")
    assert main(["record", str(out), str(dest)]) == 0
    assert not (dest / "stale.txt").exists() and (dest / "runs.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-biofa-")]


def test_spec_differences_name_what_changed(study, tmp_path):
    _, record = study
    same = tmp_path / "tiny.toml"
    _write_toml(same, tiny_tree())
    assert records.spec_differences(record, same) == []
    changed = tmp_path / "changed.toml"
    _write_toml(changed, tiny_tree(train={"epochs": 3, "batch_size": 32, "optimizer": {"name": "adam"}}))
    problems = records.spec_differences(record, changed)
    assert len(problems) == 2 and "not in the record" in problems[0] and "no longer plans" in problems[1]


def _write_toml(path, tree):
    import json

    def table(prefix, d):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        text = f"[{prefix}]\n" if prefix else ""
        text += "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                text += table(f"{prefix}.{k}" if prefix else k, v)
        return text
    path.write_text(table("", tree))


def test_doc_tables_write_then_check_and_name_the_cell_that_drifted(study, tmp_path):
    _, record = study
    doc = tmp_path / "doc.md"
    doc.write_text(f"Intro.\n\n<!-- biofa-table: {record} selection rows=feedback columns=sign -->\n"
                   "<!-- /biofa-table -->\n\nAfter.\n")
    rst = tmp_path / "doc.rst"
    rst.write_text(f"Title\n=====\n\n  .. biofa-table: {record} comparisons key=sign widths=20,20,10,20,10,20\n\n"
                   "  .. /biofa-table\n")
    assert doc_tables.write([doc, rst], root=tmp_path) == [doc, rst]
    assert doc_tables.check([doc, rst], root=tmp_path) == []
    assert "| bp |" in doc.read_text() and "     - sign=" not in rst.read_text()
    assert "  .. list-table::\n     :header-rows: 1\n     :widths: 20 20 10 20 10 20" in rst.read_text()
    lines = doc.read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith("| fa |"))
    cells = lines[i].split(" | ")
    cells[2] = "99.9 [99.0, 99.9]"
    lines[i] = " | ".join(cells)
    doc.write_text("\n".join(lines))
    (problem,) = doc_tables.check([doc], root=tmp_path)
    assert "selection rows=feedback columns=sign" in problem and "row 2 ('fa')" in problem
    assert "column 'free: test % [95% CI]'" in problem and "'99.9 [99.0, 99.9]'" in problem
    doc.write_text(doc.read_text() + "\n| rule | score |\n| --- | --- |\n| fa | 53.0 [50.4, 55.6] |\n")
    assert any("without a biofa-table marker" in p for p in doc_tables.check([doc], root=tmp_path))



def test_an_interval_quoted_in_prose_must_be_in_a_records_report(tmp_path):
    (tmp_path / "records" / "s").mkdir(parents=True)
    (tmp_path / "records" / "s" / "report.md").write_text("| fa | -11.4 [-12.9, -9.8] |\n")
    doc = tmp_path / "doc.rst"
    doc.write_text("FA loses \u221211.4 [\u221212.9, \u22129.8] points.\n\n"
                   ".. list-table::\n\n   * - claim\n     - fa costs \u221211.4 [\u221212.9, \u22129.8]\n")
    assert doc_tables.check([doc], root=tmp_path) == []  # prose and prose cells may quote it
    doc.write_text(doc.read_text().replace("9.8]", "9.7]", 1))
    (problem,) = doc_tables.check([doc], root=tmp_path)
    assert "doc.rst:1: the interval '-11.4 [-12.9, -9.7]' is in no record's report" in problem
    doc.write_text("   * - fa\n     - 53.0 [50.4, 55.6]\n")  # a results table: generate it
    assert any("without a biofa-table marker" in p for p in doc_tables.check([doc], root=tmp_path))

def test_every_marked_table_in_the_docs_equals_its_record():
    problems = doc_tables.check()
    assert not problems, "\n".join(problems) + "\n(python tools/doc_tables.py --write regenerates them)"


def test_every_packaged_study_still_plans_its_records_runs():
    checked = 0
    for record in sorted(p for p in RECORDS.iterdir() if (p / "spec.toml").is_file()):
        spec = ROOT / "experiments" / f"{record.name}.toml"
        assert spec.is_file(), f"{record}: no experiments/{record.name}.toml produced it"
        if (record / "STANDS.md").is_file():  # says why the old numbers still stand
            continue
        problems = records.spec_differences(record, spec)
        assert not problems, (f"experiments/{record.name}.toml no longer matches {record}: "
                              + "; ".join(problems) + ". Re-run the study and record it again "
                              f"(biofa record results/{record.name} records/{record.name}), or say in "
                              f"{record}/STANDS.md why the old numbers still stand")
        checked += 1
    assert checked >= 1


def test_compare_finds_the_same_runs_bit_for_bit_and_names_one_that_differs(study, tmp_path, capsys):
    out, record = study
    rerun = tmp_path / "rerun"
    run_study(from_dict(tiny_tree(grid={"feedback": ["bp", "fa"], "sign": ["free", "dale"], "seed": [1]}),
                        source="tiny.toml"), rerun, jobs=1, progress=False)
    assert main(["compare", str(rerun), str(record)]) == 0
    text = capsys.readouterr().out
    assert "8 of this study's 8 runs are in the record" in text and "8 agree with it bit for bit" in text
    assert "| bp | free |" in text and "record: test % [95% CI]" in text
    changed = tmp_path / "changed"
    shutil.copytree(record, changed)
    columns, runs = read_csv(changed / "runs.csv")
    next(r for r in runs if r["seed"] == 1)["final_train_loss"] += 1e-12
    from biofa.experiment.results import write_csv
    write_csv(changed / "runs.csv", columns, runs)
    text = records.compare(rerun, changed)
    assert "7 agree with it bit for bit on every score, 1 differ" in text


def test_records_readme_names_every_record():
    """records/README.md is the index a reader starts from: every study record and benchmark
    record is in it."""
    index = (RECORDS / "README.md").read_text()
    names = [f"`{p.name}/`" for p in RECORDS.iterdir() if p.is_dir() and p.name != "benchmarks"]
    names += [f"`{p.name}`" for p in (RECORDS / "benchmarks").glob("*.json")]
    missing = [n for n in sorted(names) if n not in index]
    assert not missing, f"records/README.md does not name {', '.join(missing)}"



def test_records_readme_states_the_folders_size():
    """The size records/README.md states is the folder's, to 0.1 MB: a record that grows shows."""
    import re
    stated = float(re.search(r"takes ([0-9.]+) MB", (RECORDS / "README.md").read_text()).group(1))
    actual = sum(p.stat().st_size for p in RECORDS.rglob("*") if p.is_file()) / 1e6
    assert abs(actual - stated) <= 0.1, f"records/ holds {actual:.1f} MB; records/README.md says {stated} MB"
