"""benchmarks/tables.py: the README's speed and memory tables, computed from a benchmark's JSON.

Each kind is checked on a small synthetic record whose medians, quartiles and ratios are worked
out by hand below; a record without the fields a table needs, or an unknown kind, is a ConfigError
that says which.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from biofa.errors import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("benchmark_tables_under_test", BENCH / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ENVIRONMENT = {"command": "python benchmarks/bench_x.py --json x.json", "git_commit": "0123456789abcdef",
               "git_modified": False, "cpu": "Test CPU", "cpus": 2, "torch": "2.0",
               "loadavg_1min_before": 2.04, "loadavg_1min_after": 2.96, "wall_s": 12.5}
PROVENANCE = ("Recorded with ``python benchmarks/bench_x.py --json x.json`` at commit 012345678: Test CPU, "
              "2 CPUs, torch 2.0, load average (1 min) 2.0 before and 3.0 after, 12.5 s.")

# Five rounds: the median is the third value, the inclusive quartiles the second and the fourth.
ROUNDS = [1.20, 1.00, 1.30, 1.04, 1.10]          # sorted 1.00 1.04 1.10 1.20 1.30
ROUNDS_TEXT = "1.10 (1.04–1.20)"
FAST = [0.90, 0.95, 1.00, 1.01, 0.97]            # sorted 0.90 0.95 0.97 1.00 1.01
FAST_TEXT = "0.97 (0.95–1.00)"
ONES = [1.0] * 5


def write(tmp_path, name, data):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**data, "environment": ENVIRONMENT}))
    return path


def step_row(config, variant, ratios, vs_eager, target):
    return {"model": "mlp", "config": config, "variant": variant, "batch": 128, "rounds": 5,
            "ratio": sorted(ratios)[2], "ratio_rounds": ratios, "vs_eager_rounds": vs_eager, "target": target}


@pytest.fixture
def training_record(tmp_path):
    rows = [step_row("native", "eager", ONES, ONES, None), step_row("fa", "eager", ROUNDS, ONES, 1.05),
            step_row("native", "compiled", ONES, FAST, None), step_row("fa", "compiled", FAST, FAST, 1.05),
            step_row("native", "bf16", ONES, [7.0, 7.2, 7.1, 6.9, 7.3], None),
            step_row("fa", "bf16", [1.03] * 5, [6.5] * 5, None)]
    return write(tmp_path, "training_step", {"meta": {"threads": 1}, "results": [{"model": "mlp", "rows": rows}]})


def test_training_step_table_is_the_median_and_quartiles_of_the_per_round_ratios(tables, training_record):
    table = tables.excerpt(training_record, "training_step variants=eager,compiled")
    assert table.header == ["rule", "eager", "compiled", "target", "met (eager)", "met (compiled)"]
    # eager: median 1.10 > 1.05, missed, but the first quartile 1.04 is within: across;
    # compiled: median 0.97 <= 1.05, met, and so is the third quartile 1.00: within
    assert table.rows == [["FA", ROUNDS_TEXT, FAST_TEXT, "≤ 1.05", "no, IQR across", "yes, IQR within"]]
    assert table.notes[-1] == PROVENANCE
    assert "5 interleaved rounds" in table.notes[0]


def test_training_step_vs_eager_is_each_configurations_own_ratio(tables, training_record):
    table = tables.excerpt(training_record, "training_step_vs_eager variants=compiled,bf16")
    assert table.header == ["configuration", "compiled / eager", "bf16 autocast / float32"]
    # native bf16: sorted 6.9 7.0 7.1 7.2 7.3 -> 7.10 (7.00–7.20)
    assert table.rows == [["native torch", FAST_TEXT, "7.10 (7.00–7.20)"],
                          ["FA", FAST_TEXT, "6.50 (6.50–6.50)"]]


def test_forward_projection_table_is_the_ratio_of_the_medians(tables, tmp_path):
    rows = [{"model": "MLP", "sign": "dale", "norm": None, "rounds": 15,
             "median_projection_s": 0.002, "median_forward_s": 0.010},
            {"model": "Conv", "sign": "dale", "norm": None, "rounds": 15,
             "median_projection_s": 0.0005, "median_forward_s": 0.100},
            {"model": "MLP", "sign": "dale", "norm": "const", "rounds": 15,
             "median_projection_s": 0.004, "median_forward_s": 0.010}]
    table = tables.excerpt(write(tmp_path, "fp", {"rows": rows}), "forward_projection")
    assert table.header == ["constraint", "MLP: projection / forward", "Conv: projection / forward"]
    assert table.rows == [["sign=dale", "0.200 (2.00 / 10.00 ms)", "0.005 (0.50 / 100.00 ms)"],
                          ["sign=dale, norm=const", "0.400 (4.00 / 10.00 ms)", "–"]]


def test_ddp_table_pairs_each_round_with_the_default_configuration(tables, tmp_path):
    default = [0.200, 0.250, 0.220, 0.240, 0.210]
    prepared = [d * r for d, r in zip(default, FAST)]
    rows = [{"rule": "fa", "config": "default", "bytes_per_forward": 7176000, "step_s": default},
            {"rule": "fa", "config": "prepare_ddp", "bytes_per_forward": 0, "step_s": prepared}]
    table = tables.excerpt(write(tmp_path, "ddp", {"meta": {}, "rows": rows}), "ddp_buffers")
    # default sorted 0.200 0.210 0.220 0.240 0.250 -> 220.0 ms; prepared (default x FAST) sorted
    # 0.1800 0.2037 0.2200 0.2375 0.2424 -> 220.0 ms; per round prepared / default is FAST
    assert table.rows == [["FA, default", "7,176,000", "220.0", "1.00 (1.00–1.00)"],
                          ["FA, prepare_ddp", "0", "220.0", FAST_TEXT]]


def test_dfa_memory_table(tables, tmp_path):
    rows = [{"input": 224, "naive_dense_bytes": 8_130_600_000, "biofa_bytes": 17_420_000,
             "forward_weight_bytes": 46_720_000}]
    table = tables.excerpt(write(tmp_path, "dfa", {"model": "resnet18", "n_classes": 1000, "rows": rows}),
                           "dfa_memory")
    # 17.42 / 46.72 = 0.373; 8130.6 / 46.72 = 174.03
    assert table.rows == [["224×224", "8,130.6", "17.4", "46.7", "0.37", "174.0", "met"]]


@pytest.fixture
def rate_record(tmp_path):
    def row(task, engine, ms, shortened=False):
        return {"task": task, "engine": engine, "ms_per_step": ms, "repeats": 3, "shortened": shortened}
    rows = [row("dynamics N=1000", "biofa float32", 0.04), row("dynamics N=1000", "numpy float32", 0.016),
            row("dynamics N=1000", "brian2 cython", 2.0, True), row("online FA N=500", "biofa float32", 0.5),
            row("online FA N=500", "brian2 cython", 1.0)]
    ratios = [{"task": "dynamics N=1000", "ratio": "brian2 cython / biofa float32", "value": 50.0, "target": 5.0},
              {"task": "dynamics N=1000", "ratio": "numpy float32 / biofa float32", "value": 0.4, "target": 0.5},
              {"task": "online FA N=500", "ratio": "brian2 cython / biofa float32", "value": 2.0, "target": None}]
    compile_rows = [{"N": 1000, "target": "cython", "first_build_s": 61.234, "cached_build_s": 0.8},
                    {"N": 500, "target": "cython (learning)", "first_build_s": 50.0, "cached_build_s": 0.5}]
    return write(tmp_path, "rate", {"rows": rows, "ratios": ratios, "compile": compile_rows})


def test_rate_dynamics_tables(tables, rate_record):
    table = tables.excerpt(rate_record, "rate_dynamics")
    assert table.header == ["engine", "dynamics N=1000 (ms/step)", "online FA N=500 (ms/step)"]
    assert table.rows == [["biofa float32", "0.0400", "0.500"], ["numpy float32", "0.0160", "–"],
                          ["brian2 cython", "2.00*", "1.00"]]
    only = tables.excerpt(rate_record, "rate_dynamics tasks=dynamics")
    assert only.header == ["engine", "dynamics N=1000 (ms/step)"]
    ratios = tables.excerpt(rate_record, "rate_dynamics_ratios")
    # 2.0 / 0.04 = 50 >= 5; 0.016 / 0.04 = 0.4 < 0.5; 1.0 / 0.5 = 2, no target
    assert ratios.rows == [["dynamics N=1000", "brian2 cython / biofa float32", "50.00", "≥ 5", "met"],
                           ["dynamics N=1000", "numpy float32 / biofa float32", "0.40", "≥ 0.5", "missed"],
                           ["online FA N=500", "brian2 cython / biofa float32", "2.00", "–", "–"]]
    assert tables.excerpt(rate_record, "rate_dynamics_build").rows == [["1000", "cython", "61.2", "0.80"],
                                                                       ["500", "cython (learning)", "50.0", "0.50"]]
    assert tables.excerpt(rate_record, "rate_dynamics_build sizes=1000").rows == [["1000", "cython", "61.2", "0.80"]]
    targeted = tables.excerpt(rate_record, "rate_dynamics_ratios targets=only")
    assert [r[1] for r in targeted.rows] == ["brian2 cython / biofa float32", "numpy float32 / biofa float32"]
    with pytest.raises(ConfigError, match="expected all or only"):
        tables.excerpt(rate_record, "rate_dynamics_ratios targets=some")


def test_runner_overhead_table(tables, tmp_path):
    rounds = [{"wall_ratio": w, "ratio": c, "every_epoch_wall_ratio": e}
              for w, c, e in zip(ROUNDS, FAST, ROUNDS)]
    studies = [{"fixed_s": f, "study_wall_s": 10.0 + f, "import_torch_s": 2.0}
               for f in (4.0, 3.0, 2.0, 5.0, 2.5)]   # sorted 2.0 2.5 3.0 4.0 5.0
    data = {"meta": {"runs": 2, "epochs": 40}, "rows": rounds, "studies": studies,
            "target": 1.15, "fixed_target_s": 3.0}
    table = tables.excerpt(write(tmp_path, "runner", data), "runner_overhead")
    assert table.rows == [
        ["runner / bare loop, wall time", ROUNDS_TEXT, "≤ 1.15", "yes, IQR across"],
        ["runner / bare loop, CPU time", FAST_TEXT, "–", "–"],
        ["runner checkpointing every epoch / bare loop, wall time", ROUNDS_TEXT, "–", "–"],
        ["a two-run study's fixed cost (s)", "3.00 (2.50–4.00)", "≤ 3", "yes, IQR across"],
        ["a two-run study's wall time (s)", "13.0 (12.5–14.0)", "–", "–"],
        ["a process that only imports torch (s)", "2.00 (2.00–2.00)", "–", "–"]]


def test_met_says_where_the_interquartile_range_lies(tables):
    assert tables.met_spread(FAST, 1.05) == "yes, IQR within"      # quartiles 0.95, 1.00
    assert tables.met_spread(FAST, 0.98) == "yes, IQR across"      # median 0.97 <= 0.98 < 1.00
    assert tables.met_spread(FAST, 0.96) == "no, IQR across"       # 0.95 <= 0.96 < median 0.97
    assert tables.met_spread(FAST, 0.94) == "no, IQR outside"      # below the first quartile 0.95


def test_a_record_without_its_environment_names_the_command_that_writes_it_again(tables, tmp_path):
    rows = [{"input": 32, "naive_dense_bytes": 4, "biofa_bytes": 1, "forward_weight_bytes": 2}]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"meta": {"torch": "2.0", "cpus": 2, "loadavg_1min_before": 1.0,
                                         "loadavg_1min_after": 2.0}, "rows": rows}))
    (note,) = tables.excerpt(path, "dfa_memory").notes[-1:]
    assert note.startswith("Recorded before benchmarks recorded their environment: torch 2.0, 2 CPUs; load")
    assert note.endswith(f"``python benchmarks/bench_dfa_memory.py --json {path.as_posix()}`` writes it again.")


def test_doc_tables_fills_and_checks_benchmark_tables(tables, tmp_path, training_record):
    spec = importlib.util.spec_from_file_location("doc_tables_for_benchmarks",
                                                  BENCH.parent / "tools" / "doc_tables.py")
    doc_tables = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = doc_tables
    spec.loader.exec_module(doc_tables)
    name = training_record.relative_to(tmp_path).as_posix()
    md, rst = tmp_path / "doc.md", tmp_path / "doc.rst"
    md.write_text(f"Speed.\n\n<!-- biofa-table: {name} benchmark training_step variants=eager,compiled -->\n"
                  "<!-- /biofa-table -->\n")
    rst.write_text(f"Speed\n=====\n\n.. biofa-table: {name} benchmark training_step_vs_eager widths=40,30,30\n\n"
                   ".. /biofa-table\n")
    assert doc_tables.write([md, rst], root=tmp_path) == [md, rst]
    assert doc_tables.check([md, rst], root=tmp_path) == []
    assert f"| FA | {ROUNDS_TEXT} | {FAST_TEXT} | ≤ 1.05 | no, IQR across | yes, IQR within |" in md.read_text()
    assert "   :widths: 40 30 30" in rst.read_text() and "     - 7.10 (7.00–7.20)" in rst.read_text()
    md.write_text(md.read_text().replace(FAST_TEXT, "0.90 (0.85–0.95)", 1))
    (problem,) = doc_tables.check([md], root=tmp_path)
    assert "row 1 ('FA'), column 'compiled'" in problem and "'0.90 (0.85–0.95)'" in problem
    # a hand-typed table of medians outside any marker is a number without its record
    md.write_text(md.read_text() + "\n| rule | eager |\n| --- | --- |\n| FA | 1.02 (1.00–1.05) |\n")
    assert any("without a biofa-table marker" in p for p in doc_tables.check([md], root=tmp_path))


def test_a_bad_record_or_table_is_a_clear_error(tables, tmp_path, training_record):
    with pytest.raises(ConfigError, match="unknown kind 'speed'"):
        tables.excerpt(training_record, "speed")
    with pytest.raises(ConfigError, match="unknown option"):
        tables.excerpt(training_record, "dfa_memory rows=x")
    with pytest.raises(ConfigError, match="needs the field 'rows'"):
        tables.excerpt(training_record, "dfa_memory")
    with pytest.raises(ConfigError, match="no results for model 'resnet20'"):
        tables.excerpt(training_record, "training_step model=resnet20")
    incomplete = write(tmp_path, "incomplete", {"rows": [{"input": 32, "biofa_bytes": 1}]})
    with pytest.raises(ConfigError, match="needs the field 'naive_dense_bytes'"):
        tables.excerpt(incomplete, "dfa_memory")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        tables.excerpt(tmp_path / "broken.json", "dfa_memory")
    with pytest.raises(ConfigError, match="cannot be read"):
        tables.excerpt(tmp_path / "missing.json", "dfa_memory")
