"""Speed of ``circuit.simulate`` on a recurrent E/I circuit against brian2's cython target.

Question: does the time engine keep, on a recurrent circuit with an input that changes every
step, the speed-up over brian2 that it has on feed-forward circuits?

Circuits (N = 1000 dynamic neurons, relu, Dale's law from E/I, tau_E = 10 ms, tau_I = 5 ms,
dt = 0.1 ms): *recurrent* — input x (N/2) -> E (0.8 N), I (0.2 N), all four E/I blocks
recurrent, a new input row every step (x of shape (T, 1, N/2)); *feed-forward* — the dense E/I
circuit of ``bench_rate_dynamics.py`` (x -> E1, I1 -> E2, I2) with a constant input, measured
here too so that both ratios come from the same process and machine state.

Engines, interleaved over repeats (medians): biofa ``simulate`` in float64 and float32, brian2
through :mod:`biofa.brian2` with the cython target (network built once, not timed; no
monitors; the first compile is not timed). Times are ms per Euler step; the number is the
ratio brian2-cython / biofa per circuit (higher: biofa faster).

    python benchmarks/bench_recurrent_simulate.py            # full run (a few minutes)
    python benchmarks/bench_recurrent_simulate.py --quick    # smoke run (numpy target, seconds)
    python benchmarks/bench_recurrent_simulate.py --json records/benchmarks/recurrent_simulate.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _record  # noqa: E402
from bench_rate_dynamics import dense_ei  # noqa: E402  (the feed-forward circuit, unchanged)

DT = 1e-4
TAU_E, TAU_I = 0.01, 0.005


def recurrent_ei(n: int, dtype, seed: int = 0):
    from biofa.circuit import Circuit, FeedforwardSynapses, Population

    g = torch.Generator().manual_seed(seed)
    ne, nx = int(0.8 * n), n // 2
    x = Population("x", nx)
    e = Population("E", ne, sign="E", tau=TAU_E, bias=0.1)
    i = Population("I", n - ne, sign="I", tau=TAU_I)
    syns = [FeedforwardSynapses(pre, post, feedback="none", generator=g, dtype=dtype)
            for pre, post in [(x, e), (x, i), (e, e), (i, e), (e, i), (i, i)]]
    return Circuit([x, e, i], syns, input="x", recurrent_init={"rule": "balanced", "rho0": 0.9}, generator=g)


def brian2_run(circuit, x, steps, backend):
    """Build (not timed) and run ``steps`` steps; returns the run's seconds."""
    import biofa.brian2 as bb

    with bb.brian2_target(backend):
        model = bb.build_network(circuit, x.double(), dt=DT, record=False, name="benchrec")
        t0 = time.perf_counter()
        model.run(steps)
        return time.perf_counter() - t0


def run(args) -> dict:
    torch.set_num_threads(1)
    n = 200 if args.quick else args.n
    steps = 50 if args.quick else args.steps
    backend = "numpy" if args.quick else "cython"
    g = torch.Generator().manual_seed(1)
    circuits = {
        "recurrent": (recurrent_ei(n, torch.float64), torch.rand(steps, 1, n // 2, generator=g, dtype=torch.float64)),
        "feedforward": (dense_ei(n, torch.float64), torch.rand(1, n // 2, generator=g, dtype=torch.float64)),
    }
    c32 = {k: (recurrent_ei(n, torch.float32) if k == "recurrent" else dense_ei(n, torch.float32)) for k in circuits}
    engines = {}
    for kind, (c, x) in circuits.items():
        duration = None if x.dim() == 3 else steps * DT
        engines[(kind, "biofa float64")] = (lambda c=c, x=x, d=duration: c.simulate(x, d, DT))
        engines[(kind, "biofa float32")] = (lambda c=c32[kind], x=x.float(), d=duration: c.simulate(x, d, DT))
        engines[(kind, f"brian2 {backend}")] = (lambda c=c, x=x: brian2_run(c, x, steps, backend))
    for fn in engines.values():  # warm-up: cython compiles here (not timed)
        fn()
    times = {k: [] for k in engines}
    for _ in range(1 if args.quick else args.repeats):
        for key, fn in engines.items():
            t0 = time.perf_counter()
            out = fn()
            elapsed = out if isinstance(out, float) else time.perf_counter() - t0
            times[key].append(elapsed / steps)
    rows = []
    for (kind, engine), v in times.items():
        med = statistics.median(v)
        ref = statistics.median(times[(kind, f"brian2 {backend}")])
        rows.append({"circuit": kind, "engine": engine, "ms_per_step": 1e3 * med, "times_s_per_step": v,
                     "brian2_over_engine": ref / med})
    return {"meta": {"quick": args.quick, "n": n, "steps": steps, "dt": DT, "backend": backend,
                     "repeats": args.repeats},
            "rows": rows}


def report(result) -> str:
    m = result["meta"]
    lines = [f"simulate, N={m['n']}, {m['steps']} steps of dt={m['dt']}, brian2 {m['backend']}, one core",
             f"{'circuit':<12} {'engine':<16} {'ms/step':>9} {'brian2/engine':>14}"]
    for r in result["rows"]:
        lines.append(f"{r['circuit']:<12} {r['engine']:<16} {r['ms_per_step']:>9.3f} {r['brian2_over_engine']:>14.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (N=200, 50 steps, numpy target)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    started = _record.start()
    result = run(args)
    print(report(result))
    _record.write(args.json, result, started)
    return 0

if __name__ == "__main__":
    sys.exit(main())
