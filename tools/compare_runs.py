"""Compare a study folder with a recorded baseline, cell by cell, apart from timings.

    python tools/compare_runs.py BASELINE_DIR RESULTS_DIR

Both folders hold some of ``runs.csv``, ``history.csv`` and ``measurements.csv``; every file the
baseline has must be in the results with the same rows (keyed by ``run_id`` and ``epoch``, or by
position for ``measurements.csv``) and the same text in every cell, except the columns that time
or date a run. ``--strip DIR OUT`` writes a baseline: the three files less those columns.

Used to show that a restructuring changed no run id and no number (tools/baselines/ holds the
quick studies of the commit before the study layer was reorganised).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

FILES = ("runs.csv", "history.csv", "measurements.csv")
#: Columns that time or date a run, or say which process ran it: they differ between two runs.
VOLATILE = ("time_s", "started_at", "finished_at", "pid")


def read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: v for k, v in row.items() if k not in VOLATILE} for row in reader]
        return [c for c in reader.fieldnames if c not in VOLATILE], rows


def key(name: str, row: dict, index: int):
    if name == "measurements.csv":
        return index
    return (row.get("run_id"), row.get("epoch"))


def compare(baseline: Path, results: Path) -> list[str]:
    problems = []
    for name in FILES:
        if not (baseline / name).is_file():
            continue
        if not (results / name).is_file():
            problems.append(f"{results / name}: missing")
            continue
        columns_a, rows_a = read(baseline / name)
        columns_b, rows_b = read(results / name)
        if columns_a != columns_b:
            problems.append(f"{name}: columns differ: {columns_a} != {columns_b}")
        a = {key(name, r, i): r for i, r in enumerate(rows_a)}
        b = {key(name, r, i): r for i, r in enumerate(rows_b)}
        for k in sorted(set(a) | set(b), key=str):
            if k not in b or k not in a:
                problems.append(f"{name}: row {k} only in {'the baseline' if k in a else 'the results'}")
                continue
            for column in columns_a:
                if a[k].get(column) != b[k].get(column):
                    problems.append(f"{name}: row {k}, {column}: {a[k].get(column)!r} != {b[k].get(column)!r}")
        print(f"{name}: {len(rows_a)} baseline rows, {len(rows_b)} result rows compared")
    return problems


def strip(results: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (results / name).is_file():
            columns, rows = read(results / name)
            with open(out / name, "w", newline="") as fh:
                writer = csv.DictWriter(fh, columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--strip":
        strip(Path(argv[1]), Path(argv[2]))
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = compare(Path(argv[0]), Path(argv[1]))
    for line in problems[:50]:
        print(line)
    print("identical apart from timings" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
