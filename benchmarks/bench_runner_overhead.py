"""Overhead of a study run against a bare torch loop over the same batches.

The runner side is :func:`biofa.experiment.runner.run`, the entry point a study's worker calls,
with per-layer metrics off and a results folder (so it checkpoints every epoch as a study does):
it builds the model, trains, evaluates the validation split every epoch, keeps the best epoch's
weights and evaluates the test split at the end. The bare side is the loop a user would write:
the same model (built with the same seed), the same optimizer and the same batches in the same
order (``randperm`` per epoch from a generator seeded with the run's seed), forward, loss,
backward, step, and nothing else. Both sides train quickstart-sized runs (MLP 40-100-100-10 on
MNIST-1D, 40 epochs, batch 64, Adam) in one process, **interleaved**: each round times the runs
through the runner and through the bare loop, in alternating order, and the reported ratio is
the median over rounds of (runner time / bare time) in the same round. Time is the process's CPU
time (one torch thread; descheduling by other processes does not count) and wall time (which
also counts checkpoint writes waiting on the disk). Target: ratio <= 1.25.

Usage: ``python benchmarks/bench_runner_overhead.py [--quick] [--json PATH] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import tempfile
import time

import torch

from biofa.experiment import expand, from_dict
from biofa.experiment import runner

TARGET = 1.25


def make_tasks(epochs: int, n_train: int | None, feedback) -> list[dict]:
    data = {"name": "mnist1d", "validation": 0.1, "seed": 0}
    if n_train:
        data["n_train"] = n_train
    spec = from_dict({
        "data": data, "model": {"name": "mlp", "hidden": [100, 100]},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        "metrics": {"alignment": False, "update_alignment": False},
        "grid": {"feedback": list(feedback), "seed": [0]}}, source="bench")
    return expand(spec)


def through_runner(task: dict, folder: str) -> dict:
    if "out" in inspect.signature(runner.run).parameters:  # checkpointing runners write there
        return runner.run(task, out=folder)
    return runner.run(task)


def bare_loop(task: dict) -> float:
    """Train like ``runner.run`` does, with nothing but the training steps; returns the last loss."""
    config = task["config"]
    seed, train = int(config["seed"]), config["train"]
    torch.manual_seed(seed)
    splits = runner.load_data(config["data"])
    model = runner.build_model(config["model"], splits, torch.Generator().manual_seed(seed), seed)
    optimizer = runner.make_optimizer(model.parameters(), train["optimizer"])
    x, y = splits.train.tensors
    gen = torch.Generator().manual_seed(seed)
    batch = train["batch_size"]
    model.train()
    for _ in range(train["epochs"]):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch):
            index = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
    return float(loss.detach())


def timed(fn, *args):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return time.process_time() - c0, time.perf_counter() - w0, out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 1000 examples, 2 rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 5)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--feedback", default="bp,fa", help="one run per feedback rule (default bp,fa)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    epochs = 2 if args.quick else args.epochs
    rounds = args.rounds or (2 if args.quick else 5)
    tasks = make_tasks(epochs, 1000 if args.quick else None, args.feedback.split(","))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for task in tasks:  # warm-up: data cache, allocator, lazy init
            assert through_runner(task, folder)["status"] == "ok"
            bare_loop(task)
        rows = []
        for r in range(rounds):
            sides = {}
            for side in (("runner", "bare") if r % 2 == 0 else ("bare", "runner")):
                cpu = wall = 0.0
                for task in tasks:
                    with tempfile.TemporaryDirectory(dir=folder) as run_folder:
                        fn, fargs = (through_runner, (task, run_folder)) if side == "runner" else (bare_loop, (task,))
                        c, w, _ = timed(fn, *fargs)
                    cpu, wall = cpu + c, wall + w
                sides[side] = (cpu, wall)
            rows.append({"round": r, "runner_cpu_s": sides["runner"][0], "bare_cpu_s": sides["bare"][0],
                         "runner_wall_s": sides["runner"][1], "bare_wall_s": sides["bare"][1],
                         "ratio": sides["runner"][0] / sides["bare"][0],
                         "wall_ratio": sides["runner"][1] / sides["bare"][1]})
            print(f"round {r}: runner {sides['runner'][0]:.2f} s cpu / {sides['runner'][1]:.2f} s wall, "
                  f"bare {sides['bare'][0]:.2f} s cpu / {sides['bare'][1]:.2f} s wall", flush=True)
    ratio = statistics.median(row["ratio"] for row in rows)
    wall_ratio = statistics.median(row["wall_ratio"] for row in rows)
    meta = {"runs": len(tasks), "epochs": epochs, "rounds": rounds, "quick": args.quick,
            "torch": torch.__version__, "cpus": os.cpu_count(),
            "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]}
    print(f"{len(tasks)} runs x {epochs} epochs, {rounds} rounds, torch {torch.__version__}, load average "
          f"{load_before:.2f} -> {meta['loadavg_1min_after']:.2f} on {meta['cpus']} CPUs")
    print(f"runner / bare loop: cpu ratio {ratio:.3f}, wall ratio {wall_ratio:.3f} "
          f"(target <= {TARGET}: {'yes' if ratio <= TARGET else 'NO'})")
    out = {"meta": meta, "rows": rows, "ratio": ratio, "wall_ratio": wall_ratio, "target": TARGET}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
