"""Run every benchmark and keep its JSON in results/benchmarks/ (``make bench``).

Each benchmark measures ratios against a reference run in the same process (interleaved
repeats, medians), so the numbers mean something on a noisy, shared machine.
Usage: ``python benchmarks/run_all.py [--quick]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_training_step.py", "bench_dfa_memory.py", "bench_forward_projection.py",
              "bench_ddp_buffers.py", "bench_rate_dynamics.py", "bench_runner_overhead.py",
              "bench_recurrent_bptt.py", "bench_recurrent_simulate.py", "bench_dann.py", "bench_rflo.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--out", default="results/benchmarks", help="folder for the JSON files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for script in BENCHMARKS:
        cmd = [sys.executable, str(HERE / script), "--json", str(out / script.replace(".py", ".json"))]
        if args.quick:
            cmd.append("--quick")
        print(f"\n=== {script} ===", flush=True)
        if subprocess.call(cmd) != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nJSON results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
