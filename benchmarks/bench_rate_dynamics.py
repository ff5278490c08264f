"""Speed of biofa's rate-dynamics engine against brian2 and a plain numpy Euler loop.

Question: how fast does ``circuit.simulate`` (and online learning) integrate a dense E/I rate
circuit, compared with brian2 on the same circuit and with the memory-bandwidth bound of a
plain numpy matrix-vector Euler loop?

Circuit (N = number of dynamic neurons): input x (N/2, clamped) -> E1 (0.4 N), I1 (0.1 N)
-> E2 (0.4 N), I2 (0.1 N), all-to-all, Dale's law from E/I, relu, tau_E = 10 ms,
tau_I = 5 ms: 0.5 N^2 synapses. 1 s of model time at dt = 0.1 ms (10,000 Euler steps).
Online learning: x (250) -> E (200), I (50) -> y (250, linear), FA feedback, dt = 0.1 ms.

Engines, all measured in this one run, interleaved over repeats (medians reported):
biofa ``circuit.simulate`` / ``circuit.learn_online`` in float32 and float64; brian2 through
:mod:`biofa.brian2` with the numpy, cython and cpp_standalone targets (no monitors; the
compile/build cost is measured separately: first build in a fresh cache/folder vs cached);
a plain numpy float32/float64 loop (preallocated, in-place ``np.dot(..., out=)``; like biofa it
computes the current of the layer fed by the clamped input once).
Times are ms per Euler step; a target run for less model time than 1 s is scaled per step
and marked in the table. Ratios are what matter on a shared machine.

    python benchmarks/bench_rate_dynamics.py            # full run (several minutes)
    python benchmarks/bench_rate_dynamics.py --quick    # smoke run (seconds)
    python benchmarks/bench_rate_dynamics.py --json results/bench_rate_dynamics.json
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402

DT = 1e-4
TAU_E, TAU_I = 0.01, 0.005


# -- circuits ------------------------------------------------------------------------------------
def dense_ei(n: int, dtype, seed: int = 0):
    from biofa.circuit import Circuit, FeedforwardSynapses, Population

    g = torch.Generator().manual_seed(seed)
    ne, ni, nx = int(0.4 * n), n // 2 - int(0.4 * n), n // 2
    x = Population("x", nx)
    pops = [x, Population("E1", ne, sign="E", tau=TAU_E, bias=0.1), Population("I1", ni, sign="I", tau=TAU_I),
            Population("E2", ne, sign="E", tau=TAU_E, bias=0.1), Population("I2", ni, sign="I", tau=TAU_I)]
    syn = [FeedforwardSynapses(pre, post, feedback="none", generator=g, dtype=dtype)
           for pre, post in [(x, pops[1]), (x, pops[2]), (pops[1], pops[3]), (pops[1], pops[4]),
                             (pops[2], pops[3]), (pops[2], pops[4])]]
    return Circuit(pops, syn, input="x")


def learning_circuit(dtype, seed: int = 0):
    from biofa.circuit import Circuit, FeedforwardSynapses, Population

    g = torch.Generator().manual_seed(seed)
    x = Population("x", 250)
    e = Population("E", 200, sign="E", tau=TAU_E, learn_bias=False)
    i = Population("I", 50, sign="I", tau=TAU_I, learn_bias=False)
    y = Population("y", 250, activation="linear", tau=TAU_E, learn_bias=False)
    syn = [FeedforwardSynapses(x, e, generator=g, dtype=dtype), FeedforwardSynapses(x, i, generator=g, dtype=dtype),
           FeedforwardSynapses(e, y, generator=g, dtype=dtype), FeedforwardSynapses(i, y, generator=g, dtype=dtype)]
    return Circuit([x, e, i, y], syn, input="x", output="y")


# -- the plain numpy reference -------------------------------------------------------------------
class NumpyLoop:
    """Synchronous Euler on the two fused layer matrices W1 (h1 x x), W2 (h2 x h1), in place."""

    def __init__(self, circuit, x, dtype):
        def block(pres, posts):
            return np.block([[circuit.synapse(f"{a}->{b}").weight.detach().double().numpy() for a in pres]
                             for b in posts]).astype(dtype)

        self.w1 = block(["x"], ["E1", "I1"])
        self.w2 = block(["E1", "I1"], ["E2", "I2"])
        self.b1 = np.concatenate([circuit.bias(n).detach().double().numpy() for n in ("E1", "I1")]).astype(dtype)
        self.b2 = np.concatenate([circuit.bias(n).detach().double().numpy() for n in ("E2", "I2")]).astype(dtype)
        k = lambda a, b: np.concatenate([np.full(circuit.population(a).size, DT / circuit.population(a).tau),  # noqa: E731
                                         np.full(circuit.population(b).size, DT / circuit.population(b).tau)]).astype(dtype)
        self.k1, self.k2 = k("E1", "I1"), k("E2", "I2")
        self.x = x.detach().double().numpy().ravel().astype(dtype)
        self.dtype = dtype

    def run(self, steps):
        r1 = np.zeros(self.w1.shape[0], self.dtype)
        r2 = np.zeros(self.w2.shape[0], self.dtype)
        # the input is clamped: f(W1 x + b1) is the same at every step (biofa hoists it too)
        f1 = np.maximum(self.w1 @ self.x + self.b1, 0).astype(self.dtype)
        d1, i2 = np.empty_like(r1), np.empty_like(r2)
        for _ in range(steps):
            np.dot(self.w2, r1, out=i2)  # from the old r1: synchronous step
            np.subtract(f1, r1, out=d1)
            d1 *= self.k1
            i2 += self.b2
            np.maximum(i2, 0, out=i2)
            i2 -= r2
            i2 *= self.k2
            r2 += i2
            r1 += d1
        return r1, r2


class NumpyFALoop:
    """Online FA learning in plain numpy (same step order as the contract), batch of one."""

    def __init__(self, circuit, x, target, lr, dtype):
        self.c, self.dtype, self.lr = circuit, dtype, lr
        w = lambda n: circuit.synapse(n).weight.detach().double().numpy().astype(dtype).copy()  # noqa: E731
        bm = lambda n: circuit.synapse(n).feedback_synapses.matrix().double().numpy().astype(dtype)  # noqa: E731
        self.w = {n: w(n) for n in ("x->E", "x->I", "E->y", "I->y")}
        self.b = {n: bm(n) for n in ("E->y", "I->y")}
        self.x = x.double().numpy().ravel().astype(dtype)
        self.y = target.double().numpy().ravel().astype(dtype)

    def run(self, steps):
        w, x, c, a = self.w, self.x, self.c, self.lr * DT
        r = {n: np.zeros(c.population(n).size, self.dtype) for n in ("E", "I", "y")}
        bias = {n: c.bias(n).detach().double().numpy().astype(self.dtype) for n in r}
        k = {n: self.dtype(DT / c.population(n).tau) for n in r}
        for _ in range(steps):
            ie = w["x->E"] @ x + bias["E"]
            ii = w["x->I"] @ x + bias["I"]
            iy = w["E->y"] @ r["E"] + w["I->y"] @ r["I"] + bias["y"]
            dy = r["y"] - self.y
            de = (ie > 0) * (dy @ self.b["E->y"])
            di = (ii > 0) * (dy @ self.b["I->y"])
            for name, d, pre in (("x->E", de, x), ("x->I", di, x), ("E->y", dy, r["E"]), ("I->y", dy, r["I"])):
                wn = w[name]
                wn -= a * np.outer(d, pre)
            np.maximum(w["E->y"], 0, out=w["E->y"])  # Dale: E synapses >= 0, I synapses <= 0
            np.minimum(w["I->y"], 0, out=w["I->y"])
            for n, i in (("E", ie), ("I", ii), ("y", iy)):
                f = i if n == "y" else np.maximum(i, 0)
                r[n] += k[n] * (f - r[n])
        return r


# -- timing helpers ------------------------------------------------------------------------------
def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def brian2_dyn(circuit, x, steps, backend, directory=None):
    """Build (not timed) and run ``steps`` steps; returns (run seconds, build+run seconds)."""
    import brian2 as b2

    import biofa.brian2 as bb

    t0 = time.perf_counter()
    with bb.brian2_target(backend, directory):
        model = bb.build_network(circuit, x.double(), dt=DT, record=False, name="bench")
        t1 = time.perf_counter()
        model.run(steps)
        t2 = time.perf_counter()
        if backend == "cpp_standalone":
            run_s = float(getattr(b2.device, "_last_run_time", t2 - t1))
        else:
            run_s = t2 - t1
    return run_s, t2 - t0


def brian2_learn(circuit, x, y, steps, lr, backend, directory=None):
    import brian2 as b2

    import biofa.brian2 as bb

    t0 = time.perf_counter()
    with bb.brian2_target(backend, directory):
        model = bb.build_network(circuit, x.double(), dt=DT, target=y.double(), lr=lr, record=False,
                                 name="benchlearn")
        t1 = time.perf_counter()
        model.run(steps)
        t2 = time.perf_counter()
        run_s = float(getattr(b2.device, "_last_run_time", t2 - t1)) if backend == "cpp_standalone" else t2 - t1
    return run_s, t2 - t0


def cython_cache(path):
    import brian2 as b2

    old = b2.prefs.codegen.runtime.cython.cache_dir
    b2.prefs.codegen.runtime.cython.cache_dir = path
    return old


# -- the benchmark -------------------------------------------------------------------------------
def run(args) -> dict:
    torch.set_num_threads(1)
    sizes = [200] if args.quick else args.sizes
    duration = 0.005 if args.quick else 1.0
    steps = int(round(duration / DT))
    repeats = 1 if args.quick else args.repeats
    targets = [t for t in args.brian2 if t in ("numpy", "cython", "cpp_standalone")]
    rows, compile_rows = [], []
    tmp = tempfile.TemporaryDirectory(prefix="bench_rate_")

    # brian2 model time per target: numpy is ~50x slower than compiled code; shortened and scaled
    def b2_steps(target, n):
        if args.quick:
            return steps
        if target == "numpy":
            return max(50, int(steps * (0.05 if n <= 1000 else 0.01)))
        return steps if n <= 1000 else max(100, steps // 4)

    for n in sizes:
        c64 = dense_ei(n, torch.float64)
        c32 = copy.deepcopy(c64).to(torch.float32)
        x64 = torch.rand(1, n // 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x32 = x64.float()
        engines = {
            "biofa float32": lambda: timed(lambda: c32.simulate(x32, duration, DT))[0] / steps,
            "biofa float64": lambda: timed(lambda: c64.simulate(x64, duration, DT))[0] / steps,
            "numpy float32": lambda: timed(lambda: NumpyLoop(c64, x64, np.float32).run(steps))[0] / steps,
            "numpy float64": lambda: timed(lambda: NumpyLoop(c64, x64, np.float64).run(steps))[0] / steps,
        }
        # compile costs (first build in a fresh cache / folder, then cached), then the runs
        b2_runs = {}
        for target in targets:
            s = b2_steps(target, n)
            if target == "cython":
                old = cython_cache(os.path.join(tmp.name, f"cython_{n}"))
                try:
                    _, first = brian2_dyn(c64, x64, 1, "cython")
                    _, cached = brian2_dyn(c64, x64, 1, "cython")
                finally:
                    cython_cache(old)
                compile_rows.append({"N": n, "target": "cython", "first_build_s": first, "cached_build_s": cached})
                b2_runs[f"brian2 {target}"] = (lambda s=s: brian2_dyn(c64, x64, s, "cython")[0] / s, s)
            elif target == "cpp_standalone":
                folder = os.path.join(tmp.name, f"standalone_{n}")
                run_first, first = brian2_dyn(c64, x64, 1, "cpp_standalone", folder)
                run_cached, cached = brian2_dyn(c64, x64, 1, "cpp_standalone", folder)
                compile_rows.append({"N": n, "target": "cpp_standalone", "first_build_s": first - run_first,
                                     "cached_build_s": cached - run_cached})
                b2_runs[f"brian2 {target}"] = (lambda s=s, f=folder: brian2_dyn(c64, x64, s, "cpp_standalone", f)[0] / s, s)
            else:
                b2_runs[f"brian2 {target}"] = (lambda s=s: brian2_dyn(c64, x64, s, "numpy")[0] / s, s)
        times = {k: [] for k in list(engines) + list(b2_runs)}
        for rep in range(repeats):
            for name, fn in engines.items():
                times[name].append(fn())
            for name, (fn, s) in b2_runs.items():
                if rep == 0 or n <= 1000 or "numpy" not in name:
                    times[name].append(fn())
        for name, values in times.items():
            s = b2_runs[name][1] if name in b2_runs else steps
            rows.append({"task": f"dynamics N={n}", "engine": name, "ms_per_step": 1e3 * statistics.median(values),
                     "repeats": len(values), "model_time_s": s * DT, "shortened": s < steps})
        print_progress(rows[-len(times):])

    # online FA learning, N = 500
    learn_s = 0.005 if args.quick else 0.5
    lsteps = int(round(learn_s / DT))
    lr = 5.0
    base = learning_circuit(torch.float64)
    gx = torch.Generator().manual_seed(2)
    x = torch.rand(1, 250, generator=gx, dtype=torch.float64)
    y = torch.rand(1, 250, generator=gx, dtype=torch.float64)

    def biofa_learn(dtype):
        c = copy.deepcopy(base).to(dtype)
        return timed(lambda: c.learn_online(x.to(dtype), y.to(dtype), lsteps * DT, DT, lr,
                                            record_every=lsteps, learn_bias=False))[0] / lsteps

    engines = {"biofa float32": lambda: biofa_learn(torch.float32),
               "biofa float64": lambda: biofa_learn(torch.float64),
               "numpy float32": lambda: timed(lambda: NumpyFALoop(base, x, y, lr, np.float32).run(lsteps))[0] / lsteps,
               "numpy float64": lambda: timed(lambda: NumpyFALoop(base, x, y, lr, np.float64).run(lsteps))[0] / lsteps}
    b2l = {}
    for target in targets:
        s = max(50, lsteps // 10) if (target == "numpy" and not args.quick) else lsteps
        folder = os.path.join(tmp.name, "standalone_learn") if target == "cpp_standalone" else None
        if target == "cython":
            first = brian2_learn(base, x, y, 1, lr, "cython")[1]
            compile_rows.append({"N": 500, "target": "cython (learning, shared cache)", "first_build_s": first,
                                 "cached_build_s": brian2_learn(base, x, y, 1, lr, "cython")[1]})
        if target == "cpp_standalone":
            r1, f1 = brian2_learn(base, x, y, 1, lr, target, folder)
            r2, f2 = brian2_learn(base, x, y, 1, lr, target, folder)
            compile_rows.append({"N": 500, "target": "cpp_standalone (learning)", "first_build_s": f1 - r1,
                                 "cached_build_s": f2 - r2})
        b2l[f"brian2 {target}"] = (lambda s=s, t=target, f=folder: brian2_learn(base, x, y, s, lr, t, f)[0] / s, s)
    times = {k: [] for k in list(engines) + list(b2l)}
    for rep in range(repeats):
        for name, fn in engines.items():
            times[name].append(fn())
        for name, (fn, s) in b2l.items():
            times[name].append(fn())
    for name, values in times.items():
        s = b2l[name][1] if name in b2l else lsteps
        rows.append({"task": "online FA N=500", "engine": name, "ms_per_step": 1e3 * statistics.median(values),
                     "repeats": len(values), "model_time_s": s * DT, "shortened": s < lsteps})
    tmp.cleanup()
    return {"rows": rows, "compile": compile_rows, "ratios": ratios(rows),
            "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                        "platform": platform.platform(), "threads": torch.get_num_threads(),
                        "quick": bool(args.quick)}}


def ratios(rows) -> list:
    out = []
    by = {(r["task"], r["engine"]): r["ms_per_step"] for r in rows}
    for task in dict.fromkeys(r["task"] for r in rows):
        dense = task.startswith("dynamics")  # the targets are set for the dense dynamics
        for mine in ("biofa float32", "biofa float64"):
            for other, target in (("brian2 cython", 5.0 if dense else None), ("brian2 cpp_standalone", None),
                                  ("brian2 numpy", None), ("numpy " + mine.split()[1], 0.5 if dense else None)):
                if (task, mine) in by and (task, other) in by:
                    speedup = by[(task, other)] / by[(task, mine)]
                    out.append({"task": task, "ratio": f"{other} / {mine}", "value": speedup,
                                "target": target})
    return out


def print_progress(rows):
    for r in rows:
        print(f"  {r['task']:<18} {r['engine']:<24} {r['ms_per_step']:9.3f} ms/step", file=sys.stderr)


def report(result) -> str:
    lines = ["", "ms per Euler step (median of interleaved repeats; '*' = this engine ran a shorter model time than the others, scaled per step)",
             f"{'task':<18} {'engine':<24} {'ms/step':>10} {'reps':>5} {'model s':>8}"]
    for r in result["rows"]:
        mark = "*" if r["shortened"] else " "
        lines.append(f"{r['task']:<18} {r['engine']:<24} {r['ms_per_step']:10.4f} {r['repeats']:5d} "
                     f"{r['model_time_s']:7.3f}{mark}")
    lines += ["", "ratios (> 1: biofa faster); targets (dense dynamics): >= 5 vs brian2-cython, >= 0.5 vs plain numpy",
              f"{'task':<18} {'ratio':<40} {'value':>8}  target"]
    for r in result["ratios"]:
        tgt = "" if r["target"] is None else (f">= {r['target']:g}  " + ("met" if r["value"] >= r["target"] else "MISSED"))
        lines.append(f"{r['task']:<18} {r['ratio']:<40} {r['value']:8.2f}  {tgt}")
    lines += ["", "brian2 build cost (s): first build in a fresh cache/folder vs cached",
              f"{'N':>5} {'target':<34} {'first':>8} {'cached':>8}"]
    for r in result["compile"]:
        lines.append(f"{r['N']:>5} {r['target']:<34} {r['first_build_s']:8.2f} {r['cached_build_s']:8.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (N=200, 5 ms, one repeat)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--brian2", nargs="*", default=["numpy", "cython", "cpp_standalone"],
                        help="brian2 targets to run (none: skip brian2)")
    args = parser.parse_args(argv)
    started = _record.start()
    result = run(args)
    print(report(result))
    return _record.write(args.json, result, started)


if __name__ == "__main__":
    main()
