"""Run a conservation-laws study: the three measurements, then ``measurements.csv``, the figures
``drift.png``, ``alignment.png``, ``min_norm.png`` and ``report.md`` (a table "claim | paper |
ours"), all written atomically into the results folder.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import environment, results
from . import measure
from .report import MEASUREMENTS, TIMINGS, write_report
from .spec import KIND, ConservationSpec

#: Columns of measurements.csv (one measured value per row).
COLUMNS = ("part", "network", "rule", "method", "lr", "init_scale", "seed", "step", "time", "layer",
           "quantity", "value")


def _say(progress, text):
    if progress:
        print(text, file=sys.stderr, flush=True)


def measure_drift(settings: dict, progress: bool = False) -> list[dict]:
    """Rows of part (a): SGD at every lr and gradient flow, FA and GD (bp), every network and seed."""
    rows = []
    s = settings
    for network in s["networks"]:
        for rule in ("fa", "bp"):
            for seed in s["seeds"]:
                for lr in s["lrs"]:
                    _say(progress, f"drift: {network} {rule} lr={lr} seed={seed}")
                    for r in measure.drift_curve(s["widths"], network, rule, lr, s["time"], seed, s["samples"],
                                                 s["points"]):
                        rows.append({"part": "drift", "network": network, "rule": rule, "method": "sgd",
                                     "lr": lr, "seed": seed, **r})
                if network in s["flow"]:
                    _say(progress, f"drift: {network} {rule} gradient flow seed={seed}")
                    for r in measure.flow_drift_curve(s["widths"], network, rule, s["time"], seed, s["samples"],
                                                      s["points"], s["rtol"], s["atol"]):
                        rows.append({"part": "drift", "network": network, "rule": rule, "method": "flow",
                                     "seed": seed, **r})
    return rows


def measure_alignment(settings: dict, progress: bool = False) -> list[dict]:
    """Rows of part (b): layer-wise alignment from a small init, one curve per seed."""
    s = settings
    rows = []
    for seed in s["seeds"]:
        _say(progress, f"alignment: seed={seed}")
        for r in measure.alignment_curve(s["widths"], s["init_scale"], s["lr"], s["steps"], seed, s["samples"],
                                         s["points"]):
            rows.append({"part": "alignment", "network": "relu", "rule": "fa", "method": "sgd", "lr": s["lr"],
                         "init_scale": s["init_scale"], "seed": seed, **r})
    return rows


def measure_min_norm(settings: dict, progress: bool = False) -> list[dict]:
    """Rows of part (c): distance to Y X^+ and angle(W2, B2) at every init scale, rule and seed."""
    s = settings
    rows = []
    for rule in s["rules"]:
        for scale in s["init_scales"]:
            for seed in s["seeds"]:
                _say(progress, f"min_norm: {rule} init_scale={scale} seed={seed}")
                point = measure.min_norm_point(s["d"], s["samples"], s["hidden"], s["outputs"], rule, scale,
                                               s["lr"], s["steps"], seed)
                for quantity, value in point.items():
                    rows.append({"part": "min_norm", "network": "linear", "rule": rule, "method": "sgd",
                                 "lr": s["lr"], "init_scale": scale, "seed": seed, "step": s["steps"],
                                 "time": s["steps"] * s["lr"], "quantity": quantity, "value": value})
    return rows


@dataclass
class ConservationOutcome:
    """What a conservation-laws study measured: its folder, the rows of measurements.csv, the
    seconds each part took and the report's claims table."""

    out: Path
    rows: list
    timings: dict
    claims: list
    exit_code: int = 0


def run(spec: ConservationSpec, out, *, progress: bool = False) -> ConservationOutcome:
    """Run the three measurements of ``spec`` and write every output into ``out`` (one writer at
    a time: :class:`~biofa.experiment.results.FolderLock`)."""
    out = Path(out)
    results.make_folder(out)
    with results.FolderLock(out):
        results.remove_stale_temporaries(out)
        tree = {"experiment": {"name": spec.name, "kind": KIND, "description": spec.description},
                **spec.settings}
        results.write_spec(out, tree, source=spec.source, quick=spec.quick)
        environment.record(out, environment.capture(jobs=1))
        rows, timings = [], {}
        for part, fn in (("drift", measure_drift), ("alignment", measure_alignment),
                         ("min_norm", measure_min_norm)):
            t0 = time.perf_counter()
            rows += fn(spec.settings[part], progress)
            timings[part] = time.perf_counter() - t0
        for row in rows:
            if isinstance(row.get("value"), float) and not math.isfinite(row["value"]):
                row["value"] = math.nan
        results.write_csv(out / MEASUREMENTS, list(COLUMNS), rows)
        results.atomic_write_text(out / TIMINGS, json.dumps(timings, indent=1))
        environment.add_time(out, sum(timings.values()))
        _, table = write_report(out)
    return ConservationOutcome(out=out, rows=rows, timings=timings, claims=table)
