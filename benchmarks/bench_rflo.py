"""Online RFLO (``learn_online(method="rflo")``) against a hand-written torch RFLO loop, BPTT and brian2.

Question: what does the generality of ``learn_online`` (synapse objects, one trace per synapse
object, per-step constraint projection, the registry of traces) cost against the loop a modeller
writes by hand for the same equations, how does online learning compare in time and memory with
BPTT on the same sequence, and how fast is brian2's online RFLO per step?

Network (Murray 2019's rate form, with Dale's law): input x (4) -> E (205), I (51), all four E/I
blocks recurrent, relu, tau = 100 ms, dt = 20 ms; linear read-out y (2) from E and I with
tau_y = dt and a fixed random feedback B (``fa``; the recurrent synapses have no feedback
pathway); T = 100 steps, batch 16, masked squared error, float32, one thread; weights updated
every step (``update="step"``), biases frozen, sign projection after every update.

Measured in this one process (medians over interleaved repeats):

* ``biofa rflo`` vs ``hand``: a plain torch loop of the same equations (one W_rec and one W_in,
  ``p.mul_(1-a).addcmul_(f'(I), r)``, ``(p * L).sum(0)`` for the update, ``clamp`` for Dale). Target ratio <= 1.5.
* ``bptt``: one ``unroll`` + backward (feedback ``bp``) on the same sequence (reported).
* ``rflo seq`` vs ``learn_seq``: the weights held for the sequence (``update="sequence"``), the
  online loop against ``learn_sequence`` (the same update summed backwards in time; reported).
* peak memory at T = 100, 1 000, 10 000 (``--mem-steps``): the growth of the process's peak
  resident set size (``ru_maxrss``) over a run, each run in a fresh subprocess, for RFLO
  (recording off) and BPTT (unroll + backward).
* brian2 (numpy target) online RFLO, seconds per step, against torch's on the same circuit
  (``--brian2-n``, default N = 64, batch 4: brian2's numpy target holds one trace per synapse per
  sample).

    python benchmarks/bench_rflo.py            # full run (about 2-3 minutes on 2 cores)
    python benchmarks/bench_rflo.py --quick    # smoke run (seconds)
    python benchmarks/bench_rflo.py --json records/benchmarks/rflo.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402

TAU, DT, LR = 0.1, 0.02, 1e-3
N_IN, N_OUT = 4, 2


def circuit(n, readout="fa", recurrent="none", seed=0, dtype=torch.float32):
    from biofa.circuit import Circuit, FeedforwardSynapses, Population

    g = torch.Generator().manual_seed(seed)
    ne = int(round(0.8 * n))
    x = Population("x", N_IN)
    e = Population("E", ne, sign="E", tau=TAU)
    i = Population("I", n - ne, sign="I", tau=TAU)
    y = Population("y", N_OUT, activation="linear", tau=DT)
    kw = {"generator": g, "feedback": recurrent}
    syns = [FeedforwardSynapses(x, e, sign="E", **kw), FeedforwardSynapses(x, i, sign="E", **kw),
            FeedforwardSynapses(e, e, **kw), FeedforwardSynapses(i, e, **kw),
            FeedforwardSynapses(e, i, **kw), FeedforwardSynapses(i, i, **kw),
            FeedforwardSynapses(e, y, generator=g, feedback=readout),
            FeedforwardSynapses(i, y, generator=g, feedback=readout)]
    c = Circuit([x, e, i, y], syns, input="x", output="y", dynamics="rate",
                recurrent_init={"rule": "gamma", "rho0": 0.8}, generator=g)
    return c.to(dtype)


class Hand:
    """RFLO written by hand for the same network (weights and B copied from the circuit)."""

    def __init__(self, c):
        w = {s.name: s.weight.detach().clone() for s in c.feedforward}
        self.ne = c.population("E").size
        self.w_rec = torch.cat([torch.cat([w["E->E"], w["I->E"]], 1), torch.cat([w["E->I"], w["I->I"]], 1)], 0)
        self.w_in = torch.cat([w["x->E"], w["x->I"]], 0)
        self.w_out = torch.cat([w["E->y"], w["I->y"]], 1)
        self.B = torch.cat([c.synapse("E->y").feedback_synapses.matrix(), c.synapse("I->y").feedback_synapses.matrix()], 1)
        n = self.w_rec.shape[0]
        self.sign = torch.cat([torch.ones(self.ne), -torch.ones(n - self.ne)]).to(self.w_rec.dtype)
        self.b = torch.cat([c.biases["E"].detach(), c.biases["I"].detach()])
        self.b_out = c.biases["y"].detach().clone()

    @torch.no_grad()
    def learn(self, u, target, mask, lr):
        a = DT / TAU
        steps, batch = u.shape[:2]
        n = self.w_rec.shape[0]
        r = u.new_zeros(batch, n)
        p_rec = u.new_zeros(batch, n, n)
        p_in = u.new_zeros(batch, n, u.shape[2])
        s = self.sign[None, :]
        for k in range(steps):
            i = r @ self.w_rec.T + u[k] @ self.w_in.T + self.b
            fp = (i > 0).to(i.dtype)
            y = r @ self.w_out.T + self.b_out  # tau_y = dt: y^{k+1} reads r^k
            err = mask[k] * (y - target[k])
            sig = (err @ self.B).unsqueeze(2)  # (batch, n, 1)
            g_rec = (p_rec * sig).sum(0)
            g_in = (p_in * sig).sum(0)
            g_out = err.T @ r
            p_rec.mul_(1 - a).addcmul_(fp.unsqueeze(2), r.unsqueeze(1), value=a)
            p_in.mul_(1 - a).addcmul_(fp.unsqueeze(2), u[k].unsqueeze(1), value=a)
            r = torch.lerp(r, torch.relu(i), a)
            self.w_rec.sub_(lr / batch * g_rec)
            self.w_rec.copy_(s * (s * self.w_rec).clamp(min=0))
            self.w_in.sub_(lr / batch * g_in).clamp_(min=0)
            self.w_out.sub_(lr / batch * g_out)
            self.w_out.copy_(s * (s * self.w_out).clamp(min=0))


def data(steps, batch, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(steps, batch, N_IN, generator=g, dtype=dtype)
    target = torch.rand(steps, batch, N_OUT, generator=g, dtype=dtype)
    mask = (torch.rand(steps, batch, generator=g) > 0.2).to(dtype)
    return u, target, mask


def engines(n, steps, batch):
    u, target, mask = data(steps, batch)
    c = circuit(n)
    hand = Hand(circuit(n))
    c_bptt = circuit(n, readout="bp", recurrent="bp")
    c_seq = circuit(n)
    opt = torch.optim.SGD(c_bptt.parameters(), lr=LR)

    def bptt():
        opt.zero_grad(set_to_none=True)
        out = c_bptt.unroll(u, dt=DT).rates["y"][1:]
        (0.5 * (mask[..., None] * (out - target) ** 2).sum() / batch).backward()
        opt.step()

    return {
        "biofa rflo": lambda: c.learn_online(u, target, dt=DT, lr=LR, method="rflo", mask=mask,
                                             record_every=None, learn_bias=False),
        "hand": lambda: hand.learn(u, target, mask[..., None], LR),
        "bptt": bptt,
        "rflo seq": lambda: c_seq.learn_online(u, target, dt=DT, lr=LR, method="rflo", mask=mask, update="sequence",
                                               record_every=None, learn_bias=False),
        "learn_seq": lambda: c_seq.learn_sequence(u, target, dt=DT, lr=LR, method="rflo", mask=mask,
                                                  learn_bias=False),
    }, (c, hand)


MEMORY = """
import resource, sys, torch
sys.path.insert(0, {here!r})
import bench_rflo as b
torch.set_num_threads(1)
which, n, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
u, target, mask = b.data(steps, batch)
c = b.circuit(n, readout="bp", recurrent="bp" if which == "bptt" else "none")
u2, t2, m2 = b.data(2, batch)  # warm up (allocator, lazy imports) before the baseline
c.learn_online(u2, t2, dt=b.DT, lr=b.LR, method="rflo", record_every=None)
(c.unroll(u2, dt=b.DT).rates["y"].sum()).backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if which == "rflo":
    c.learn_online(u, target, dt=b.DT, lr=b.LR, method="rflo", mask=mask, record_every=None, learn_bias=False)
else:
    out = c.unroll(u, dt=b.DT).rates["y"][1:]
    (0.5 * (mask[..., None] * (out - target) ** 2).sum() / batch).backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def peak_memory(which, n, steps, batch) -> float:
    """MiB by which the peak RSS of a fresh process grows over one run."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", MEMORY.format(here=here), which, str(n), str(steps), str(batch)],
                         capture_output=True, text=True, env=env, check=True)
    return int(res.stdout.split()[-1]) / 1024


def brian2_rows(n, steps, batch):
    """brian2 (numpy target) online RFLO against torch's on the same float64 circuit: s/step."""
    try:
        import biofa.brian2 as b2
    except ImportError:  # pragma: no cover - brian2 is a dependency, but keep the bench usable
        return None
    u, target, mask = data(steps, batch, dtype=torch.float64)
    c = circuit(n, dtype=torch.float64)
    c_t = circuit(n, dtype=torch.float64)
    t0 = time.perf_counter()
    c_t.learn_online(u, target, dt=DT, lr=LR, method="rflo", record_every=None, learn_bias=False)
    t_torch = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    learned = b2.learn_online(c, u, target, dt=DT, lr=LR, method="rflo", learn_bias=False)
    t_b2 = (time.perf_counter() - t0) / steps
    gap = max(float((learned.weights[s.name] - s.weight.detach()).abs().max()) for s in c_t.feedforward)
    return {"n": n, "batch": batch, "steps": steps, "torch_s_per_step": t_torch, "brian2_s_per_step": t_b2,
            "ratio_brian2_vs_torch": t_b2 / t_torch, "max_weight_gap": gap}


def run(args) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, steps, batch = (64, 20, 4) if args.quick else (args.n, args.steps, args.batch)
    fns, (c, hand) = engines(n, steps, batch)
    for fn in fns.values():
        fn()  # warm up
    # same equations: after one sequence from the same weights, biofa's W equals the hand loop's
    ne = hand.ne
    w = {s.name: s.weight.detach() for s in c.feedforward}
    ours = torch.cat([torch.cat([w["E->E"], w["I->E"]], 1), torch.cat([w["E->I"], w["I->I"]], 1)], 0)
    gap = float((ours - hand.w_rec).abs().max() / hand.w_rec.abs().max())
    gap = max(gap, float((torch.cat([w["E->y"], w["I->y"]], 1) - hand.w_out).abs().max() / hand.w_out.abs().max()))
    assert ne == c.population("E").size
    times = {name: [] for name in fns}
    for _ in range(1 if args.quick else args.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    rows = [{"engine": name, "median_s": med[name], "times_s": times[name], "ratio_vs_hand": med[name] / med["hand"]}
            for name in fns]
    mem_steps = [20, 200] if args.quick else args.mem_steps
    memory = [{"steps": t, "rflo_mib": peak_memory("rflo", n, t, batch),
               "bptt_mib": peak_memory("bptt", n, t, batch)} for t in mem_steps]
    b2 = None if args.no_brian2 else brian2_rows(16 if args.quick else args.brian2_n, 10 if args.quick else 50,
                                                  2 if args.quick else 4)
    return {
        "meta": {"quick": args.quick, "n": n, "steps": steps, "batch": batch, "dtype": "float32", "dt": DT,
                 "tau": TAU, "repeats": args.repeats, "target_ratio": 1.5, "weight_gap_vs_hand": gap,
                 "memory": "growth of peak RSS (ru_maxrss) over one run in a fresh subprocess, MiB"},
        "rows": rows, "memory": memory, "brian2": b2,
    }


def report(result) -> str:
    m = result["meta"]
    lines = [f"online RFLO, recurrent E/I N={m['n']}, T={m['steps']}, batch {m['batch']}, Dale, float32",
             f"after one sequence biofa's W equals the hand loop's to {m['weight_gap_vs_hand']:.1e} (relative)",
             f"{'engine':<11} {'ms/seq':>9} {'ratio vs hand':>14}"]
    for r in result["rows"]:
        lines.append(f"{r['engine']:<11} {1e3 * r['median_s']:>9.1f} {r['ratio_vs_hand']:>14.3f}")
    by = {r["engine"]: r["median_s"] for r in result["rows"]}
    if "learn_seq" in by:
        lines.append(f"update='sequence': learn_sequence takes {by['learn_seq'] / by['rflo seq']:.3f}x the online loop's time")
    lines.append(f"peak memory growth ({m['memory']})")
    lines.append(f"{'T':>7} {'rflo MiB':>9} {'bptt MiB':>9}")
    for r in result["memory"]:
        lines.append(f"{r['steps']:>7} {r['rflo_mib']:>9.1f} {r['bptt_mib']:>9.1f}")
    b2 = result["brian2"]
    if b2:
        lines.append(f"brian2 (numpy) online RFLO N={b2['n']} batch {b2['batch']}: "
                     f"{1e3 * b2['brian2_s_per_step']:.2f} ms/step vs torch {1e3 * b2['torch_s_per_step']:.2f} ms/step "
                     f"({b2['ratio_brian2_vs_torch']:.1f}x), weights agree to {b2['max_weight_gap']:.1e}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (N=64, T=20, batch 4)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mem-steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--brian2-n", type=int, default=64)
    parser.add_argument("--no-brian2", action="store_true")
    args = parser.parse_args(argv)
    started = _record.start()
    result = run(args)
    print(report(result))
    _record.write(args.json, result, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
