"""Training-step time of a DANN layer against a free-sign layer of the same width.

One training step = forward, backward, ``SGD.step()`` including the sign projection of the three
DANN matrices (after the step, by biofa's optimizer hook), rule ``bp``. The DANN side uses
:class:`biofa.nn.DANNLinear` (n_I = n_E/10 interneurons) under Dale's law; the free side
:class:`biofa.nn.Linear` of the same widths without a sign constraint. Three rows:

- ``layer``: one hidden layer n_in = n_E = 1000 whose input requires a gradient, as for every
  layer but the first; the loss is :math:`\\|h\\|^2 / 2N` (N the batch), its gradient h/N handed
  to ``h.backward`` (one scaling: neither side pays for more of a loss, so the ratio is the
  layers' own; a loss linear in h would drive :math:`W_{EI} W_{IE}` to overflow within 200
  steps). The speed target (ratio ≤ 1.3) is judged on this row.
- ``first_layer``: the same on raw input, n_in = 784 (no input gradient).
- ``network``: the two-layer network n_in-n_E-10 (ReLU between, cross-entropy; the DANN read-out
  has one interneuron), as built by :func:`biofa.nn.convert`.

Each row records its FLOP floor: the DANN's multiply-adds in matrix products over the free
layer's (forward, weight gradient, input gradient where the input needs one; elementwise work not
counted), the ratio the step would have if only the products cost time:

.. math:: \\frac{(2 + a)(n_{in} n_E + n_{in} n_I) + 3\\, n_I n_E}{(2 + a)\\, n_{in} n_E}

(a = 1 when the input needs a gradient; :math:`W_{EI}`'s input always does), 1.2 for ``layer``.
All rows live in one process and are interleaved round by round (order alternating), timed by
the thread's CPU time; reported per row: median step times and the median over rounds of the
per-round ratio DANN/free (with its range).

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
TARGET_ROW = "layer"


def linear_macs(n_in: int, n_out: int, input_grad: bool) -> int:
    """Multiply-adds per sample of a linear map's step: forward, weight gradient, input gradient."""
    return (3 if input_grad else 2) * n_in * n_out


def dann_macs(n_in: int, n_e: int, n_i: int, input_grad: bool) -> int:
    """``ee`` and ``ie`` read the layer's input; ``ei`` reads the interneurons, which need a gradient."""
    return linear_macs(n_in, n_e, input_grad) + linear_macs(n_in, n_i, input_grad) + linear_macs(n_i, n_e, True)


class Row:
    """One comparison: the free and the DANN model, their optimizers and one step of each."""

    def __init__(self, name: str, n_in: int, width: int, batch: int, input_grad: bool, network: bool):
        self.name, self.network = name, network
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, n_in, generator=gen).requires_grad_(input_grad)
        if network:
            plain = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, 10))
            options = {"feedback": "bp", "generator": torch.Generator().manual_seed(0)}
            self.models = {"free": bnn.convert(plain, **options),
                           "dann": bnn.convert(plain, sign="dale", ei="dann", **options)}
            self.labels = torch.randint(0, 10, (batch,), generator=gen)
            layers = (self.models["dann"][0], self.models["dann"][2])
        else:
            options = {"feedback": "bp", "generator": torch.Generator().manual_seed(0)}
            self.models = {"free": bnn.Linear(n_in, width, **options), "dann": bnn.DANNLinear(n_in, width, **options)}
            layers = (self.models["dann"],)
        self.opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in self.models.items()}
        self.info = {"row": name, "n_in": n_in, "n_E": width, "n_I": layers[0].n_inhibitory, "batch": batch,
                     "rule": "bp", "input_grad": input_grad,
                     "loss": "cross-entropy" if network else "||h||^2 / 2N"}
        free_macs = linear_macs(n_in, width, input_grad)
        macs = dann_macs(n_in, width, layers[0].n_inhibitory, input_grad)
        if network:  # the read-out's input (the hidden layer) needs a gradient
            free_macs += linear_macs(width, 10, True)
            macs += dann_macs(width, 10, layers[1].n_inhibitory, True)
        self.info["flop_floor"] = macs / free_macs

    def step(self, name: str) -> None:
        self.opts[name].zero_grad(set_to_none=True)
        self.x.grad = None
        out = self.models[name](self.x)
        if self.network:
            F.cross_entropy(out, self.labels).backward()
        else:
            out.backward(out.detach() / len(out))  # the gradient of ||h||^2 / 2N
        self.opts[name].step()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds (a smoke test)")
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    started = _record.start()
    torch.set_num_threads(1)
    if args.quick:
        n_in, first_in, width, batch, steps = 100, 64, 100, 32, 2
    else:
        n_in, first_in, width, batch, steps = 1000, 784, 1000, 128, 10
    rounds = args.rounds or (3 if args.quick else 30)
    rows = [Row("layer", n_in, width, batch, True, False), Row("first_layer", first_in, width, batch, False, False),
            Row("network", first_in, width, batch, False, True)]
    times = {(row.name, k): [] for row in rows for k in ("free", "dann")}
    for row in rows:  # warm-up
        for name in ("free", "dann"):
            row.step(name)
    for r in range(rounds):
        for row in rows:
            for name in (("free", "dann") if r % 2 == 0 else ("dann", "free")):
                t0 = time.thread_time()
                for _ in range(steps):
                    row.step(name)
                times[row.name, name].append((time.thread_time() - t0) / steps)
    out = []
    for row in rows:
        free, dann = times[row.name, "free"], times[row.name, "dann"]
        ratios = [d / f for d, f in zip(dann, free)]
        result = {**row.info, "median_free_s": statistics.median(free), "median_dann_s": statistics.median(dann),
                  "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
        out.append(result)
        shape = f"{result['n_in']}-{result['n_E']}" + ("-10" if row.network else "")
        print(f"{row.name:11s} DANN {shape} (n_I={result['n_I']}) vs free-sign, batch {batch}, rule bp: "
              f"free {result['median_free_s'] * 1e3:.2f} ms, dann {result['median_dann_s'] * 1e3:.2f} ms, "
              f"ratio {result['ratio']:.3f} (per round {result['ratio_min']:.2f}-{result['ratio_max']:.2f}; "
              f"FLOP floor {result['flop_floor']:.3f})")
    print(f"target: ratio <= {TARGET} on row '{TARGET_ROW}' ({rounds} interleaved rounds of {steps} steps)")
    meta = {"threads": 1, "rounds": rounds, "steps_per_round": steps, "quick": args.quick, "target": TARGET,
            "target_row": TARGET_ROW}
    return _record.write(args.json, {"meta": meta, "rows": out}, started)


if __name__ == "__main__":
    main()
