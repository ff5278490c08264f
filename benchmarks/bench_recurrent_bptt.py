"""Speed of a BPTT training step through ``circuit.unroll`` against a hand-written torch loop.

Question: what does biofa's generality (synapse objects, per-synapse feedback matrices, the
time convention) cost when training a recurrent E/I network through time, compared with the
loop a modeller writes by hand for the same equations?

Network (pycog's current form): input x (4) -> E (205), I (51), all four E/I blocks recurrent,
Dale's law from E/I, relu, tau = 100 ms, dt = 20 ms, read-out y (2, linear) from E with
tau_y = dt (the instantaneous read-out of r^n), T = 100 steps, batch 64, masked squared error,
float32, one core. One training step = unroll + loss + backward + SGD step (+ sign projection).

Engines, measured in this one process, interleaved over repeats (medians):
``biofa bp`` (every synapse's feedback ``bp``: exact BPTT) and ``biofa fa`` (fixed random B on
every synapse) against ``hand`` — a plain torch loop:
``x += a * (-x + r @ W_rec.T + u[n] @ W_in.T + b); r = relu(x)`` with the read-out computed
after the loop in one matmul, autograd's BPTT, ``W.clamp_`` for Dale's law after the step.
The ratio biofa / hand is the number (target <= 1.15 for bp).

    python benchmarks/bench_recurrent_bptt.py            # full run (a few minutes)
    python benchmarks/bench_recurrent_bptt.py --quick    # smoke run (seconds)
    python benchmarks/bench_recurrent_bptt.py --json records/benchmarks/recurrent_bptt.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402

TAU, DT = 0.1, 0.02
N_IN, N_OUT = 4, 2


def circuit(n, feedback, seed=0):
    from biofa.circuit import Circuit, FeedforwardSynapses, Population

    g = torch.Generator().manual_seed(seed)
    ne = int(round(0.8 * n))
    x = Population("x", N_IN)
    e = Population("E", ne, sign="E", tau=TAU)
    i = Population("I", n - ne, sign="I", tau=TAU)
    y = Population("y", N_OUT, activation="linear", tau=DT, dynamics="rate")
    kw = {"generator": g, "feedback": feedback}
    syns = [FeedforwardSynapses(x, e, sign="E", **kw), FeedforwardSynapses(x, i, sign="E", **kw),
            FeedforwardSynapses(e, e, **kw), FeedforwardSynapses(i, e, **kw),
            FeedforwardSynapses(e, i, **kw), FeedforwardSynapses(i, i, **kw), FeedforwardSynapses(e, y, **kw)]
    return Circuit([x, e, i, y], syns, input="x", output="y", dynamics="current", readout="E",
                   recurrent_init="gamma", generator=g)


class Hand(torch.nn.Module):
    """The same network written by hand, initialised from the circuit's weights."""

    def __init__(self, c):
        super().__init__()
        w = {s.name: s.weight.detach().clone() for s in c.feedforward}
        ne = c.population("E").size
        self.ne = ne
        rec = torch.cat([torch.cat([w["E->E"], w["I->E"]], 1), torch.cat([w["E->I"], w["I->I"]], 1)], 0)
        self.w_rec = torch.nn.Parameter(rec)
        self.w_in = torch.nn.Parameter(torch.cat([w["x->E"], w["x->I"]], 0))
        self.w_out = torch.nn.Parameter(w["E->y"])
        self.b = torch.nn.Parameter(torch.zeros(rec.shape[0]))
        self.b_out = torch.nn.Parameter(torch.zeros(N_OUT))
        self.register_buffer("sign", torch.cat([torch.ones(ne), -torch.ones(rec.shape[0] - ne)]))

    def forward(self, u):
        a = DT / TAU
        x = torch.zeros(u.shape[1], self.w_rec.shape[0])
        r = torch.relu(x)
        rs = []
        for n in range(u.shape[0]):
            x = x + a * (-x + r @ self.w_rec.T + u[n] @ self.w_in.T + self.b)
            rs.append(r)  # r^n: what the read-out after step n sees
            r = torch.relu(x)
        return torch.stack(rs)[..., :self.ne] @ self.w_out.T + self.b_out

    @torch.no_grad()
    def project(self):  # Dale's law: column signs of W_rec, non-negative input and read-out
        s = self.sign[None, :]
        self.w_rec.copy_(s * (s * self.w_rec).clamp(min=0))
        self.w_in.clamp_(min=0)
        self.w_out.clamp_(min=0)


def make_step(model, forward, project=None):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(u, target, mask):
        opt.zero_grad(set_to_none=True)
        out = forward(u)
        loss = 0.5 * (mask[..., None] * (out - target) ** 2).sum() / u.shape[1]
        loss.backward()
        opt.step()
        if project is not None:
            project()
        return float(loss.detach())
    return step


def run(args) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, steps, batch = (64, 20, 8) if args.quick else (args.n, args.steps, args.batch)
    g = torch.Generator().manual_seed(1)
    u = torch.rand(steps, batch, N_IN, generator=g)
    target = torch.rand(steps, batch, N_OUT, generator=g)
    mask = (torch.rand(steps, batch, generator=g) > 0.2).float()
    engines = {}
    c_bp = circuit(n, "bp")
    engines["biofa bp"] = make_step(c_bp, lambda v: c_bp.unroll(v, dt=DT).rates["y"][1:])
    c_fa = circuit(n, "fa")
    engines["biofa fa"] = make_step(c_fa, lambda v: c_fa.unroll(v, dt=DT).rates["y"][1:])
    hand = Hand(circuit(n, "bp"))
    engines["hand"] = make_step(hand, hand.forward, hand.project)
    # the first step of biofa bp and of the hand loop compute the same loss (same weights)
    first = {name: engines[name](u, target, mask) for name in ("biofa bp", "hand")}
    for name in ("biofa fa",):
        engines[name](u, target, mask)
    times = {name: [] for name in engines}
    for _ in range(args.repeats if not args.quick else 1):
        for name, step in engines.items():
            t0 = time.perf_counter()
            for _ in range(args.inner if not args.quick else 1):
                step(u, target, mask)
            times[name].append((time.perf_counter() - t0) / (args.inner if not args.quick else 1))
    med = {name: statistics.median(v) for name, v in times.items()}
    rows = [{"engine": name, "median_s": med[name], "times_s": times[name], "ratio_vs_hand": med[name] / med["hand"]}
            for name in engines]
    return {
        "meta": {"quick": args.quick, "n": n, "steps": steps, "batch": batch, "dtype": "float32", "dt": DT,
                 "tau": TAU, "repeats": args.repeats, "inner": args.inner,
                 "first_loss": first, "target_ratio_bp": 1.15},
        "rows": rows,
    }


def report(result) -> str:
    m = result["meta"]
    lines = [f"BPTT training step, recurrent E/I N={m['n']}, T={m['steps']}, batch {m['batch']}, Dale, float32",
             f"first-step loss biofa bp {m['first_loss']['biofa bp']:.6g} vs hand {m['first_loss']['hand']:.6g}",
             f"{'engine':<10} {'ms/step':>9} {'ratio vs hand':>14}"]
    for r in result["rows"]:
        lines.append(f"{r['engine']:<10} {1e3 * r['median_s']:>9.1f} {r['ratio_vs_hand']:>14.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (N=64, T=20, batch 8)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=3)
    args = parser.parse_args(argv)
    started = _record.start()
    result = run(args)
    print(report(result))
    _record.write(args.json, result, started)
    return 0

if __name__ == "__main__":
    sys.exit(main())
