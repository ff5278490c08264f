"""Overhead of a study against a bare torch loop: per run, and fixed per study.

**Per run.** The runner side is :func:`biofa.experiment.runner.run`, the entry point a study's
worker calls, with per-layer metrics off and a results folder (so it checkpoints as a study
does): it builds the model, trains, evaluates the validation split every epoch, keeps the best
epoch's weights and evaluates the test split at the end. The bare side is the loop a user would
write: the same model (built with the same seed), the same optimizer and the same batches in the
same order (``randperm`` per epoch from a generator seeded with the run's seed), forward, loss,
backward, step, and an evaluation of the validation and the test split after every epoch. A
third side is the runner checkpointing after every epoch (``[train] checkpoint_s = 0``) instead
of every 10 s (the default), to show what the checkpoints cost.
Both sides train quickstart-sized runs (MLP 40-100-100-10 on MNIST-1D, 40 epochs, batch 64, Adam)
in one process, **interleaved**: each round times the runs through the runner and through the
bare loop, in alternating order, and the reported ratios are the medians over rounds of (runner
time / bare time) in the same round, in wall time (which counts checkpoint writes waiting on the
disk) and in the process's CPU time (one torch thread). Target: wall ratio <= 1.15.

**Per study.** ``biofa run`` of the same two runs (``--jobs 1``) in a fresh process, ``--rounds``
times: the fixed cost is the command's wall time less the runs' own ``time_s`` (process start,
imports, the spec, the preflight, the tables, the report and its figures). Target: median <= 3 s;
the load average before and after is reported (these machines are shared), and so is the wall
time of a process that does nothing but ``import torch``, the floor under any command.

Usage: ``python benchmarks/bench_runner_overhead.py [--quick] [--json PATH] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402
from biofa.experiment import expand, from_dict
from biofa.experiment import runner

TARGET = 1.15            # runner / bare loop, wall time
FIXED_TARGET_S = 3.0     # a study's fixed cost, median


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
    return runner.run(task, out=folder)  # a results folder: the run checkpoints as in a study


def every_epoch(task: dict) -> dict:
    """``task`` checkpointing after every epoch (``[train] checkpoint_s = 0``), for comparison."""
    task = copy.deepcopy(task)
    task["config"]["train"]["checkpoint_s"] = 0
    return task


def bare_loop(task: dict) -> float:
    """Train like ``runner.run`` does with nothing but the training steps and an evaluation of the
    validation and test splits after each epoch; returns the last validation loss."""
    config = task["config"]
    seed, train = int(config["seed"]), config["train"]
    torch.manual_seed(seed)
    splits = runner.load_data(config["data"])
    model = runner.build_model(config["model"], splits, torch.Generator().manual_seed(seed), seed)
    optimizer = runner.make_optimizer(model.parameters(), train["optimizer"])
    x, y = splits.train.tensors
    gen = torch.Generator().manual_seed(seed)
    batch = train["batch_size"]
    for _ in range(train["epochs"]):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch):
            index = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            losses = [torch.nn.functional.cross_entropy(model(part.tensors[0]), part.tensors[1])
                      for part in (splits.val, splits.test)]
    return float(losses[0])


def study_spec(folder: str, epochs: int, n_train: int | None, feedback) -> str:
    """The per-run comparison's study as a spec file (returns its path)."""
    data = f"n_train = {n_train}\n" if n_train else ""
    text = (f'[data]\nname = "mnist1d"\n{data}[model]\nname = "mlp"\nhidden = [100, 100]\n'
            f'[train]\nepochs = {epochs}\nbatch_size = 64\n[train.optimizer]\nname = "adam"\nlr = 0.01\n'
            f'[metrics]\nalignment = false\nupdate_alignment = false\n'
            f'[grid]\nfeedback = {json.dumps(list(feedback))}\nseed = [0]\n')
    path = os.path.join(folder, "study.toml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def fixed_cost(spec: str, folder: str) -> dict:
    """One ``biofa run`` in a fresh process: its wall time and its runs' own time; and, just
    before it, the wall time of a process that only imports torch (the floor of any command)."""
    out = tempfile.mkdtemp(dir=folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True)
    floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "biofa.cli", "run", spec, "--out", out, "--jobs", "1",
                    "--no-progress"], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "runs.csv"), newline="") as fh:
        runs = sum(float(row["time_s"]) for row in csv.DictReader(fh))
    return {"study_wall_s": wall, "runs_s": runs, "fixed_s": wall - runs, "import_torch_s": floor}


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
    started = _record.start()
    load_before = started["loadavg_1min_before"]
    with tempfile.TemporaryDirectory() as folder:
        for task in tasks:  # warm-up: data cache, allocator, lazy init
            assert through_runner(task, folder)["status"] == "ok"
            bare_loop(task)
        rows = []
        sides_in_order = ("runner", "bare", "every_epoch")
        for r in range(rounds):
            sides = {}
            for side in sides_in_order[r % 3:] + sides_in_order[:r % 3]:  # rotate the order
                cpu = wall = 0.0
                for task in tasks:
                    with tempfile.TemporaryDirectory(dir=folder) as run_folder:
                        if side == "bare":
                            c, w, _ = timed(bare_loop, task)
                        else:
                            c, w, _ = timed(through_runner, every_epoch(task) if side == "every_epoch" else task,
                                            run_folder)
                    cpu, wall = cpu + c, wall + w
                sides[side] = (cpu, wall)
            rows.append({"round": r, "runner_cpu_s": sides["runner"][0], "bare_cpu_s": sides["bare"][0],
                         "runner_wall_s": sides["runner"][1], "bare_wall_s": sides["bare"][1],
                         "every_epoch_wall_s": sides["every_epoch"][1],
                         "ratio": sides["runner"][0] / sides["bare"][0],
                         "wall_ratio": sides["runner"][1] / sides["bare"][1],
                         "every_epoch_wall_ratio": sides["every_epoch"][1] / sides["bare"][1]})
            print(f"round {r}: runner {sides['runner'][0]:.2f} s cpu / {sides['runner'][1]:.2f} s wall, "
                  f"bare {sides['bare'][0]:.2f} s cpu / {sides['bare'][1]:.2f} s wall, checkpointing every "
                  f"epoch {sides['every_epoch'][1]:.2f} s wall", flush=True)
        studies = [fixed_cost(study_spec(folder, epochs, 1000 if args.quick else None, args.feedback.split(",")),
                              folder) for _ in range(rounds)]
    ratio = statistics.median(row["ratio"] for row in rows)
    wall_ratio = statistics.median(row["wall_ratio"] for row in rows)
    every_epoch_ratio = statistics.median(row["every_epoch_wall_ratio"] for row in rows)
    fixed = statistics.median(row["fixed_s"] for row in studies)
    floor = statistics.median(row["import_torch_s"] for row in studies)
    meta = {"runs": len(tasks), "epochs": epochs, "rounds": rounds, "quick": args.quick,
            "torch": torch.__version__, "cpus": os.cpu_count(),
            "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]}
    print(f"{len(tasks)} runs x {epochs} epochs, {rounds} rounds, torch {torch.__version__}, load average "
          f"{load_before:.2f} -> {meta['loadavg_1min_after']:.2f} on {meta['cpus']} CPUs")
    print(f"runner / bare loop: wall ratio {wall_ratio:.3f} (target <= {TARGET}: "
          f"{'yes' if wall_ratio <= TARGET else 'NO'}), cpu ratio {ratio:.3f}; checkpointing every epoch "
          f"instead: wall ratio {every_epoch_ratio:.3f}")
    each = ", ".join(f"{r['fixed_s']:.2f}" for r in studies)
    print(f"study fixed cost: median {fixed:.2f} s over {rounds} fresh `biofa run` processes "
          f"({each} s; target <= {FIXED_TARGET_S} s: "
          f"{'yes' if fixed <= FIXED_TARGET_S else 'NO'}); a process that only imports torch: median {floor:.2f} s")
    out = {"meta": meta, "rows": rows, "ratio": ratio, "wall_ratio": wall_ratio, "target": TARGET,
           "every_epoch_wall_ratio": every_epoch_ratio,
           "studies": studies, "fixed_s": fixed, "import_torch_s": floor, "fixed_target_s": FIXED_TARGET_S}
    return _record.write(args.json, out, started)


if __name__ == "__main__":
    main()
