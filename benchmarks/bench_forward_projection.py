"""Cost of the forward-time constraint projection against the forward it precedes.

Every forward of a constrained layer (``enforce="project"``) applies its projection out of place
(:func:`biofa.constraints.functional.hold_signs`, :func:`~biofa.constraints.functional.hold_norm`).
This times, with one torch thread and CPU time of the benchmark thread (``time.thread_time``,
which time spent descheduled by other processes does not inflate), the projections of all
layers alone and the whole forward without them (``torch.no_grad``), interleaved round by round;
reported: medians and their ratio. Models: MLP 784-1000-1000-10 and one Conv2d 64->64 3x3 on
16x16 maps, batch 128.

Usage: ``python benchmarks/bench_forward_projection.py [--rounds N] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402

import biofa.nn as bnn  # noqa: E402

CONSTRAINTS = [("dale", None), (None, "const"), ("dale", "const")]


def _cpu_time(fn, inner=3):
    t = time.thread_time()
    for _ in range(inner):
        fn()
    return (time.thread_time() - t) / inner


def measure(model, x, rounds):
    layers = [m for m in model.modules() if isinstance(m, bnn.FeedbackLayer)]
    plain = bnn.FeedbackLayer._weight_for_forward

    def projection():
        with torch.no_grad():
            for layer in layers:
                plain(layer)

    def forward():
        with torch.no_grad():
            model(x)

    proj, fwd = [], []
    bnn.FeedbackLayer._weight_for_forward = lambda self: self.weight  # the forward without it
    try:
        for _ in range(rounds):
            proj.append(_cpu_time(projection))
            fwd.append(_cpu_time(forward))
    finally:
        bnn.FeedbackLayer._weight_for_forward = plain
    return statistics.median(proj), statistics.median(fwd)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    started = _record.start()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for sign, norm in CONSTRAINTS:
        mlp = bnn.convert(nn.Sequential(nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(),
                                        nn.Linear(1000, 10)), feedback="fa", sign=sign, norm=norm)
        conv = nn.Sequential(bnn.Conv2d(64, 64, 3, padding=1, feedback="fa", sign=sign, norm=norm))
        for name, model, x in (("MLP 784-1000-1000-10", mlp, torch.randn(128, 784)),
                               ("Conv2d 64-64 3x3 16x16", conv, torch.randn(128, 64, 16, 16))):
            p, f = measure(model, x, rounds)
            rows.append({"model": name, "sign": sign, "norm": norm, "rounds": rounds,
                         "median_projection_s": p, "median_forward_s": f, "ratio": p / f})
            print(f"{name:24s} sign={sign!s:5s} norm={norm!s:6s} projection {p * 1e3:7.3f} ms  "
                  f"forward {f * 1e3:8.2f} ms  ratio {p / f:.4f}", flush=True)
    return _record.write(args.json, {"meta": {"threads": 1, "rounds": rounds, "quick": args.quick},
                                     "rows": rows}, started)


if __name__ == "__main__":
    main()
