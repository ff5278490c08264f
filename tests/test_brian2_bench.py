"""Smoke test of benchmarks/bench_rate_dynamics.py (``--quick``): it runs and reports ratios."""

import importlib.util
import json
import pathlib

import pytest

pytest.importorskip("brian2")
pytestmark = pytest.mark.brian2

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rate_dynamics.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_rate_dynamics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_json(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "bench.json"
    result = bench.main(["--quick", "--brian2", "numpy", "--json", str(out)])
    table = capsys.readouterr().out
    assert "ratios" in table and "brian2 numpy / biofa float32" in table
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"]
    engines = {(r["task"], r["engine"]) for r in saved["rows"]}
    for task in ("dynamics N=200", "online FA N=500"):
        for engine in ("biofa float32", "biofa float64", "numpy float32", "numpy float64", "brian2 numpy"):
            assert (task, engine) in engines
    assert all(r["ms_per_step"] > 0 for r in saved["rows"])
    assert {r["ratio"] for r in saved["ratios"]} >= {"numpy float32 / biofa float32", "brian2 numpy / biofa float64"}


def test_numpy_reference_loops_agree_with_the_torch_engine():
    # the reference loops must compute the same circuit as biofa, or the ratios are meaningless
    import numpy as np
    import torch

    bench = load_script()
    c = bench.dense_ei(60, torch.float64)
    x = torch.rand(1, 30, dtype=torch.float64)
    traj = c.simulate(x, 30 * bench.DT, bench.DT)
    r1, r2 = bench.NumpyLoop(c, x, np.float64).run(30)
    assert np.allclose(r1, torch.cat([traj.rates["E1"][-1, 0], traj.rates["I1"][-1, 0]]).numpy(), rtol=1e-12)
    assert np.allclose(r2, torch.cat([traj.rates["E2"][-1, 0], traj.rates["I2"][-1, 0]]).numpy(), rtol=1e-12)
    lc = bench.learning_circuit(torch.float64)
    y = torch.rand(1, 250, dtype=torch.float64)
    xl = torch.rand(1, 250, dtype=torch.float64)
    ref = bench.NumpyFALoop(lc, xl, y, 5.0, np.float64)
    r = ref.run(20)
    trace = lc.learn_online(xl, y, 20 * bench.DT, bench.DT, 5.0, learn_bias=False)
    assert np.allclose(r["y"], trace.final_rates["y"][0].numpy(), rtol=1e-10, atol=1e-12)
    for name, w in ref.w.items():
        assert np.allclose(w, lc.synapse(name).weight.detach().numpy(), rtol=1e-10, atol=1e-12)
