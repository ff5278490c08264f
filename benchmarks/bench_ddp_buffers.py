"""Bytes DDP broadcasts at every forward, and the training-step time, with and without
:func:`biofa.distributed.prepare_ddp`, on 2 gloo processes (CPU).

Model: MLP 784-1000-1000-10 converted to a rule (default FA, whose B is as large as W), global
batch 128 (64 per process), SGD. ``bytes/forward`` is the size of the buffers DDP's forward
broadcasts from rank 0 (``DistributedDataParallel.modules_buffers``); step time is wall time of
forward + backward (with the gradient all-reduce) + step, median over rounds in which the two
configurations alternate.

Usage: ``python benchmarks/bench_ddp_buffers.py [--rule fa] [--rounds 20] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402

import biofa.distributed as bd  # noqa: E402
import biofa.nn as bnn  # noqa: E402


def _model(rule):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
    return bnn.convert(mlp, feedback=rule)


def _worker(rank, init_file, rule, rounds, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    runs = {}
    for name, prepare in (("default", False), ("prepare_ddp", True)):
        model = _model(rule)
        if prepare:
            bd.prepare_ddp(model)
        ddp = DDP(model)
        runs[name] = (ddp, torch.optim.SGD(ddp.parameters(), lr=0.01))
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    times = {name: [] for name in runs}
    for r in range(rounds + 2):
        for name, (ddp, opt) in (runs.items() if r % 2 else reversed(runs.items())):
            dist.barrier()
            t = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
            if r >= 2:
                times[name].append(time.perf_counter() - t)
    if rank == 0:
        rows = []
        for name, (ddp, _) in runs.items():
            rows.append({"rule": rule, "config": name, "rounds": rounds,
                         "bytes_per_forward": sum(b.numel() * b.element_size() for b in ddp.modules_buffers),
                         "median_step_s": statistics.median(times[name]), "min_step_s": min(times[name]),
                         "step_s": times[name]})
        with open(out, "w") as f:
            json.dump(rows, f)
    runs.clear()  # free the DDP reducers while the group lives, then wait for gloo's threads
    dist.barrier()  # gloo's destructor can otherwise deadlock on the GIL (torch issue 56297)
    dist.destroy_process_group()
    os._exit(0)  # the same deadlock can strike in any destructor at exit: the result is on disk


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="fa")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    started = _record.start()
    folder = tempfile.mkdtemp()
    out = os.path.join(folder, "result.json")
    mp.spawn(_worker, args=(os.path.join(folder, "init"), args.rule, rounds, out), nprocs=2)
    with open(out) as f:
        rows = json.load(f)
    for row in rows:
        print(f"{row['rule']} {row['config']:12s} bytes/forward {row['bytes_per_forward']:>10,d}  "
              f"step median {row['median_step_s'] * 1e3:7.2f} ms  min {row['min_step_s'] * 1e3:7.2f} ms")
    meta = {"processes": 2, "backend": "gloo", "global_batch": 128, "threads_per_process": 1,
            "rounds": rounds, "quick": args.quick}
    return _record.write(args.json, {"meta": meta, "rows": rows}, started)


if __name__ == "__main__":
    main()
