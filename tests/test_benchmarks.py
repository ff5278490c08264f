"""Smoke test: the benchmark scripts run end to end in --quick mode and write their JSON."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# A hang guard, not a speed requirement: a few seconds on a quiet machine, but minutes when the
# CPUs are shared (these failed at 120 s under a load of 9 on 2 cores).
HANG_S = 3600


# biofa's channel-form DFA feedback of ResNet-18 (benchmarks/_models.py): one float32 (n_classes, C)
# block per convolution (C its input channels) and a dense (n_classes, n_in) block per Linear,
# counted by hand from the architecture, not read from the benchmark:
#   stem conv 3; stage 1 (64): 2 blocks x 2 convs of 64; stages 2-4 (c = 128, 256, 512): the first
#   block's conv1 and 1x1 shortcut read c/2, its conv2 and the second block's two convs read c;
#   fc reads 512.
RESNET18_INPUT_WIDTHS = (3 + 4 * 64 + sum(2 * (c // 2) + 3 * c for c in (128, 256, 512)) + 512)
RESNET18_DFA_FEEDBACK_BYTES = 4 * 1000 * RESNET18_INPUT_WIDTHS  # float32 x 1000 classes x 4355


def run(script, tmp_path, *extra):
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--json", str(out), *extra],
                          capture_output=True, text=True, timeout=HANG_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.timeout(HANG_S + 60)
def test_bench_training_step_quick(tmp_path):
    stdout, data = run("bench_training_step.py", tmp_path)
    assert "ratio" in stdout and "native" in stdout
    rows = [row for res in data["results"] for row in res["rows"]]
    assert {r["model"] for r in rows} == {"mlp", "resnet20"}
    assert {r["config"] for r in rows} == {"native", "bp", "fa", "usf", "frsf", "brsf", "dfa", "kp", "wm"}
    for r in rows:
        assert r["median_step_s"] > 0 and r["ratio"] > 0 and r["saved_bytes"] > 0 and r["state_bytes"] > 0
        if r["config"] == "native":
            assert r["ratio"] == 1.0 and r["memory_ratio"] == 1.0
    fa = next(r for r in rows if r["model"] == "mlp" and r["config"] == "fa")
    native = next(r for r in rows if r["model"] == "mlp" and r["config"] == "native")
    # FA holds one fixed B per layer, the size of the weight it stands in for
    weights = 4 * (784 * 1000 + 1000 * 1000 + 1000 * 10)
    assert fa["state_bytes"] - native["state_bytes"] == weights


@pytest.mark.timeout(HANG_S + 60)
def test_bench_dfa_memory_quick(tmp_path):
    stdout, data = run("bench_dfa_memory.py", tmp_path)
    assert "naive" in stdout
    rows = {r["input"]: r for r in data["rows"]}
    assert set(rows) == {224, 32}
    for r in rows.values():
        assert r["biofa_over_forward"] < 1  # the target: less feedback memory than the forward weights
        assert r["biofa_bytes"] == RESNET18_DFA_FEEDBACK_BYTES
    assert rows[224]["naive_dense_bytes"] > 40 * rows[32]["naive_dense_bytes"]
    assert rows[224]["biofa_bytes"] == rows[32]["biofa_bytes"]


@pytest.mark.timeout(HANG_S + 60)
def test_bench_runner_overhead_quick(tmp_path):
    stdout, data = run("bench_runner_overhead.py", tmp_path)
    assert "runner / bare loop" in stdout and "study fixed cost" in stdout
    assert data["meta"]["runs"] == 2 and data["meta"]["epochs"] == 2 and len(data["rows"]) == data["meta"]["rounds"]
    for row in data["rows"]:
        assert row["runner_cpu_s"] > 0 and row["bare_cpu_s"] > 0
        assert row["ratio"] == row["runner_cpu_s"] / row["bare_cpu_s"]
        assert row["wall_ratio"] == row["runner_wall_s"] / row["bare_wall_s"]
        assert row["every_epoch_wall_ratio"] == row["every_epoch_wall_s"] / row["bare_wall_s"]
    assert data["wall_ratio"] == statistics.median(r["wall_ratio"] for r in data["rows"])
    assert data["ratio"] == statistics.median(r["ratio"] for r in data["rows"])
    assert data["target"] == 1.15 and data["fixed_target_s"] == 3.0
    assert len(data["studies"]) == data["meta"]["rounds"]
    for study in data["studies"]:  # the fixed cost is what the command took beyond its runs
        assert study["fixed_s"] == study["study_wall_s"] - study["runs_s"] and study["runs_s"] > 0
    assert data["fixed_s"] == statistics.median(s["fixed_s"] for s in data["studies"])


def assert_environment(data, script):
    """benchmarks/_record.py: the JSON names its command, commit, machine and load."""
    env = data["environment"]
    assert env["command"].startswith(f"python benchmarks/{script} --quick --json ")
    for key in ("git_commit", "torch", "cpu", "cpus", "loadavg_1min_before", "loadavg_1min_after", "wall_s"):
        assert key in env, key


@pytest.mark.timeout(HANG_S + 60)
def test_bench_forward_projection_quick(tmp_path):
    stdout, data = run("bench_forward_projection.py", tmp_path)
    assert "projection" in stdout
    assert len(data["rows"]) == 6 and data["meta"]["rounds"] == 2
    for row in data["rows"]:
        assert row["ratio"] == row["median_projection_s"] / row["median_forward_s"] > 0
    assert_environment(data, "bench_forward_projection.py")


@pytest.mark.timeout(HANG_S + 60)
def test_bench_ddp_buffers_quick(tmp_path):
    stdout, data = run("bench_ddp_buffers.py", tmp_path)
    rows = {row["config"]: row for row in data["rows"]}
    assert set(rows) == {"default", "prepare_ddp"}
    # FA's three fixed B, as large as the weights, go out at every forward unless prepared
    assert rows["default"]["bytes_per_forward"] == 4 * (784 * 1000 + 1000 * 1000 + 1000 * 10)
    assert rows["prepare_ddp"]["bytes_per_forward"] == 0
    for row in rows.values():
        assert len(row["step_s"]) == 2 and row["median_step_s"] == statistics.median(row["step_s"])
    assert_environment(data, "bench_ddp_buffers.py")


@pytest.mark.timeout(HANG_S + 60)
def test_bench_recurrent_bptt_quick(tmp_path):
    stdout, data = run("bench_recurrent_bptt.py", tmp_path)
    assert "ratio vs hand" in stdout
    # the same network and weights: the first training step computes the same loss
    first = data["meta"]["first_loss"]
    assert first["biofa bp"] == pytest.approx(first["hand"], rel=1e-4)
    rows = {r["engine"]: r for r in data["rows"]}
    assert set(rows) == {"biofa bp", "biofa fa", "hand"}
    for r in rows.values():
        assert r["ratio_vs_hand"] == r["median_s"] / rows["hand"]["median_s"]


@pytest.mark.brian2
@pytest.mark.timeout(HANG_S + 60)
def test_bench_rflo_quick(tmp_path):
    stdout, data = run("bench_rflo.py", tmp_path)
    assert "ratio vs hand" in stdout
    assert data["meta"]["weight_gap_vs_hand"] < 1e-4  # the hand loop computes the same equations
    assert {r["engine"] for r in data["rows"]} == {"biofa rflo", "hand", "bptt", "rflo seq", "learn_seq"}
    assert "learn_sequence takes" in stdout
    assert [r["steps"] for r in data["memory"]] == [20, 200]
    assert data["brian2"]["max_weight_gap"] < 1e-9


@pytest.mark.brian2
@pytest.mark.timeout(HANG_S + 60)
def test_bench_recurrent_simulate_quick(tmp_path):
    pytest.importorskip("brian2")
    stdout, data = run("bench_recurrent_simulate.py", tmp_path)
    assert "brian2/engine" in stdout
    assert {(r["circuit"], r["engine"]) for r in data["rows"]} >= {("recurrent", "biofa float64"),
                                                                   ("feedforward", "biofa float64")}


@pytest.mark.timeout(HANG_S + 60)
def test_bench_dann_quick(tmp_path):
    stdout, data = run("bench_dann.py", tmp_path)
    assert "ratio" in stdout and "FLOP floor" in stdout
    rows = {r["row"]: r for r in data["rows"]}
    assert list(rows) == ["layer", "first_layer", "network"] and data["meta"]["rounds"] == 3
    assert data["meta"]["target_row"] == "layer" and data["meta"]["target"] == 1.3
    for r in rows.values():
        assert r["n_I"] == 10 and r["ratio"] > 0 and r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
    assert rows["layer"]["input_grad"] and not rows["first_layer"]["input_grad"]
    # the floors, by hand (multiply-adds per sample; quick sizes: n_in 100 or 64, n_E 100, n_I 10)
    assert rows["layer"]["flop_floor"] == pytest.approx(1.2)
    first = 2 * 64 * 100 + 2 * 64 * 10 + 3 * 10 * 100
    assert rows["first_layer"]["flop_floor"] == pytest.approx(first / (2 * 64 * 100))
    readout = 3 * 100 * 10 + 3 * 100 * 1 + 3 * 1 * 10  # n_E = 10, one interneuron
    assert rows["network"]["flop_floor"] == pytest.approx((first + readout) / (2 * 64 * 100 + 3 * 100 * 10))
    assert_environment(data, "bench_dann.py")
