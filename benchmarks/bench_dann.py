"""Training-step time of a DANN layer against a free-sign layer of the same width.

One training step = forward, cross-entropy backward through a two-layer network
n_in-n_E-10 (ReLU between), ``SGD.step()`` including the sign projection of the three DANN
matrices, rule ``bp``. The DANN network has :class:`biofa.nn.DANNLinear` layers (n_I = n_E/10
interneurons; the read-out has one) under Dale's law; the free network has
:class:`biofa.nn.Linear` layers of the same widths without a sign constraint. Both live in one
process and are interleaved round by round (order alternating), timed by the thread's CPU time;
reported: median step times and the median over rounds of the per-round ratio DANN/free.
Target: ratio ≤ 1.3.

Usage: ``python benchmarks/bench_dann.py [--quick] [--json PATH] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402

import biofa.nn as bnn  # noqa: E402

TARGET = 1.3


def network(ei: str | None, n_in: int, width: int) -> nn.Module:
    plain = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, 10))
    if ei is None:
        return bnn.convert(plain, feedback="bp", generator=torch.Generator().manual_seed(0))
    return bnn.convert(plain, feedback="bp", sign="dale", ei=ei, generator=torch.Generator().manual_seed(0))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds (a smoke test)")
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    started = _record.start()
    torch.set_num_threads(1)
    n_in, width, batch, steps = (64, 100, 32, 2) if args.quick else (784, 1000, 128, 10)
    rounds = args.rounds or (3 if args.quick else 15)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, n_in, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    configs = {"free": network(None, n_in, width), "dann": network("dann", n_in, width)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in configs.items()}

    def step(name):
        opts[name].zero_grad(set_to_none=True)
        F.cross_entropy(configs[name](x), y).backward()
        opts[name].step()

    times = {k: [] for k in configs}
    for name in configs:  # warm-up
        step(name)
    for r in range(rounds):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for name in order:
            t0 = time.thread_time()
            for _ in range(steps):
                step(name)
            times[name].append((time.thread_time() - t0) / steps)
    ratios = [d / f for d, f in zip(times["dann"], times["free"])]
    row = {"n_in": n_in, "n_E": width, "n_I": configs["dann"][0].n_inhibitory, "batch": batch, "rule": "bp",
           "median_free_s": statistics.median(times["free"]), "median_dann_s": statistics.median(times["dann"]),
           "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios), "target": TARGET}
    print(f"DANN {n_in}-{width}-10 (n_I={row['n_I']}) vs free-sign, batch {batch}, rule bp, {rounds} rounds: "
          f"free {row['median_free_s'] * 1e3:.2f} ms, dann {row['median_dann_s'] * 1e3:.2f} ms, "
          f"ratio {row['ratio']:.3f} (per round {row['ratio_min']:.2f}-{row['ratio_max']:.2f}; target <= {TARGET})")
    return _record.write(args.json, {"meta": {"threads": 1, "rounds": rounds, "steps_per_round": steps,
                                              "quick": args.quick}, "rows": [row]}, started)


if __name__ == "__main__":
    main()
