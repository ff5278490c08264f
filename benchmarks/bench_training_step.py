"""Training-step time and memory of every feedback rule against native PyTorch backprop.

One training step = forward, cross-entropy backward, ``SGD.step()`` (batch 128 by default), on
an MLP 784-1000-1000-10 and a CIFAR ResNet-20 (plain torch models from ``_models.py``, converted
by :func:`biofa.nn.convert`). All configurations live in one process and are **interleaved**:
each round times one step of every configuration, in an order rotated from round to round, so
load from other processes hits all of them alike. Time is measured two ways: the CPU time of the
benchmark thread (``time.thread_time``; with one torch thread all the work runs there, and time
spent descheduled by other processes on a shared machine does not count) and wall time. Reported
per configuration: median step times and the median over rounds of (step time / native step time
in the same round); the ``ratio`` compared with the targets is the CPU-time one.

Memory is the memory a step keeps alive, counted exactly (no allocator noise):

- ``saved``: bytes of the distinct tensor storages the autograd graph saves for backward
  (activations; via ``torch.autograd.graph.saved_tensors_hooks``), not counting storages that
  are parameters or buffers;
- ``state``: parameters, their gradients, buffers (fixed B, sign masks, seeds), optimizer state,
  and tensors a feedback rule keeps between steps (brSF's per-step magnitudes and draw buffers,
  the buffer sign-concordant rules write B into in backward).

Transient temporaries inside one backward (e.g. uSF's B = c·sign(W), one layer at a time) are not
included. Targets on CPU (step-time ratio against native in the same variant, eager and
compiled): fa, usf, frsf ≤ 1.05; brsf ≤ 1.10; dfa ≤ 1.00.

Variants (``--variants``, interleaved in the same rounds, each on its own copy of the models):
``eager`` (default), ``compiled`` (the whole step under ``torch.compile``, ``--backend``, default
inductor; compilation happens in the warm-up) and ``bf16`` (eager under
``torch.autocast("cpu", dtype=torch.bfloat16)``). ``ratio`` compares with native torch in the same
variant; ``vs_eager`` is the median over rounds of (step time / the same configuration's eager step
time): compiled/eager, and bf16/float32 for ``bf16``. Memory is measured on an eager step (under
autocast for ``bf16``).

Usage: ``python benchmarks/bench_training_step.py [--quick] [--json PATH] [--rounds N]
[--variants eager,compiled,bf16]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _models  # noqa: E402
import _record  # noqa: E402

import biofa.nn as bnn  # noqa: E402

RULES = ["bp", "fa", "usf", "frsf", "brsf", "dfa", "kp", "wm"]
TARGETS = {"fa": 1.05, "usf": 1.05, "frsf": 1.05, "brsf": 1.10, "dfa": 1.00}


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def cached_feedback_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Tensors feedback rules keep as plain attributes between steps (caches, work buffers)."""
    found = []

    def walk(value):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            for v in value:
                walk(v)

    for m in model.modules():
        if isinstance(m, bnn.FeedbackLayer):
            for value in vars(m.feedback).values():
                walk(value)
    return found


def cached_feedback_bytes(model: torch.nn.Module) -> int:
    """Bytes of :func:`cached_feedback_tensors` (distinct storages)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in cached_feedback_tensors(model)}
    return sum(storages.values())


class Config:
    """One model under one rule, with its optimizer and a fixed batch."""

    def __init__(self, name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 variant: str = "eager", backend: str = "inductor"):
        self.name, self.model, self.x, self.y, self.variant = name, model, x, y, variant
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.times: list[float] = []  # CPU time of this thread per step
        self.walls: list[float] = []
        self.step = torch.compile(self._step, backend=backend) if variant == "compiled" else self._step

    def _step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant == "bf16"):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def timed_step(self) -> tuple[float, float]:
        w0, t0 = time.perf_counter(), time.thread_time()
        self.step()
        dt, dw = time.thread_time() - t0, time.perf_counter() - w0
        self.times.append(dt)
        self.walls.append(dw)
        return dt, dw

    def memory(self) -> dict:
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        self.opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant == "bf16"):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        params = list(self.model.parameters())
        persistent = {t.untyped_storage().data_ptr()
                      for t in [*params, *self.model.buffers(), *cached_feedback_tensors(self.model)]}
        saved = sum(n for ptr, n in storages.items() if ptr not in persistent)
        state = sum(tensor_bytes(p) for p in params)
        state += sum(tensor_bytes(p.grad) for p in params if p.grad is not None)
        state += sum(tensor_bytes(b) for b in self.model.buffers())
        state += sum(tensor_bytes(v) for s in self.opt.state.values() for v in s.values()
                     if isinstance(v, torch.Tensor))
        state += cached_feedback_bytes(self.model)
        return {"saved_bytes": saved, "state_bytes": state}


def build(model_name: str, batch: int, quick: bool, rules, variants=("eager",), backend="inductor") -> list[Config]:
    gen = torch.Generator().manual_seed(0)
    if model_name == "mlp":
        native = _models.mlp((784, 1000, 1000, 10))
        x = torch.randn(batch, 784, generator=gen)
    else:
        native = _models.resnet20(10)
        x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    models = [("native", native)] + [(rule, bnn.convert(native, feedback=rule, generator=gen)) for rule in rules]
    return [Config(name, model if variant == variants[0] else copy.deepcopy(model), x, y, variant, backend)
            for variant in variants for name, model in models]


def run_model(model_name: str, args) -> dict:
    batch = args.batch if not args.quick else (32 if model_name == "mlp" else 8)
    configs = build(model_name, batch, args.quick, args.rules, args.variants, args.backend)
    for c in configs:  # warm-up: allocator, caches, lazy init, compilation
        for _ in range(2 if not args.quick else 1):
            c.step()
    rounds = args.rounds or (3 if args.quick else (40 if model_name == "mlp" else 12))
    key = lambda c: (c.name, c.variant)  # noqa: E731
    ratios = {key(c): [] for c in configs}
    wall_ratios = {key(c): [] for c in configs}
    vs_eager = {key(c): [] for c in configs}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        times = {key(c): c.timed_step() for c in order}
        for (name, variant), (t, w) in times.items():
            ratios[name, variant].append(t / times["native", variant][0])
            wall_ratios[name, variant].append(w / times["native", variant][1])
            if (name, "eager") in times:
                vs_eager[name, variant].append(t / times[name, "eager"][0])
    native_mem = {}
    rows = []
    for c in configs:
        mem = c.memory()
        total = mem["saved_bytes"] + mem["state_bytes"]
        native_mem.setdefault(c.variant, total)
        rows.append({
            "model": model_name, "config": c.name, "variant": c.variant, "batch": batch, "rounds": rounds,
            "median_step_s": statistics.median(c.times),
            "median_wall_s": statistics.median(c.walls),
            "ratio": statistics.median(ratios[key(c)]),
            "wall_ratio": statistics.median(wall_ratios[key(c)]),
            "vs_eager": statistics.median(vs_eager[key(c)]) if vs_eager[key(c)] else None,
            "ratio_rounds": ratios[key(c)],  # per round, in round order: the spread of the median
            "vs_eager_rounds": vs_eager[key(c)],
            "target": TARGETS.get(c.name) if c.variant in ("eager", "compiled") else None,
            **mem, "memory_ratio": total / native_mem[c.variant],
        })
    return {"model": model_name, "rows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: small batches, 3 rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 40 MLP, 12 ResNet-20)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--models", default="mlp,resnet20")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--variants", default="eager", help="comma-separated: eager, compiled, bf16")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend for 'compiled'")
    args = parser.parse_args(argv)
    args.rules = [r for r in args.rules.split(",") if r]
    args.variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(args.variants) - {"eager", "compiled", "bf16"}
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from eager, compiled, bf16")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if "compiled" in args.variants:  # one compiled step per configuration: each is its own model
        torch._dynamo.config.recompile_limit = 64  # and optimizer, guarded by identity
        torch._dynamo.config.accumulated_recompile_limit = 1024
    started = _record.start()
    load_before = started["loadavg_1min_before"]
    results = [run_model(m, args) for m in args.models.split(",") if m]
    meta = {"threads": args.threads, "quick": args.quick, "torch": torch.__version__,
            "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
            "cpus": os.cpu_count()}
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {load_before:.2f} -> "
          f"{meta['loadavg_1min_after']:.2f} on {meta['cpus']} CPUs")
    header = f"{'model':9} {'config':7} {'variant':8} {'batch':>5} {'cpu ms':>8} {'ratio':>6} {'target':>6} {'ok':>3}" \
             f" {'vs eager':>8} {'wall ms':>8} {'wall ratio':>10} {'saved MB':>9} {'state MB':>9} {'mem ratio':>9}"
    print(header)
    print("-" * len(header))
    for res in results:
        for row in res["rows"]:
            target = row["target"]
            ok = "" if target is None else ("yes" if row["ratio"] <= target else "NO")
            vs = row["vs_eager"]
            print(f"{row['model']:9} {row['config']:7} {row['variant']:8} {row['batch']:5d} "
                  f"{1e3 * row['median_step_s']:8.2f} "
                  f"{row['ratio']:6.3f} {'' if target is None else f'{target:.2f}':>6} {ok:>3} "
                  f"{'' if vs is None else f'{vs:.3f}':>8} "
                  f"{1e3 * row['median_wall_s']:8.2f} {row['wall_ratio']:10.3f} "
                  f"{row['saved_bytes'] / 1e6:9.2f} {row['state_bytes'] / 1e6:9.2f} {row['memory_ratio']:9.3f}")
    return _record.write(args.json, {"meta": meta, "results": results}, started)


if __name__ == "__main__":
    main()
