"""``report.md`` from a results folder's CSV files: tables of mean ± sd over seeds.

Everything is read back from ``runs.csv``, ``history.csv``, ``spec.toml``, ``plan.json`` and
``environment.json``, so ``biofa report DIR`` regenerates the report and the figures of any
finished (or partial) study; the report of a partial one says how many runs are missing.
A *condition* is one combination of the grid values other than the seed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ConfigError
from . import environment, results

SELECTION_NOTE = (
    "Model selection uses the validation split only: *test @ best val* is the test score of the "
    "weights from the epoch with the best validation accuracy (lowest validation loss for "
    "regression); *test @ final* is the test score after the last epoch."
)


def read_study(out: str | Path) -> dict:
    """The CSV tables of a results folder and the study's name and labels."""
    out = Path(out)
    runs_csv = out / "runs.csv"
    if not runs_csv.is_file():
        raise ConfigError(f"{out}: no runs.csv here; give the folder a study wrote (biofa run ... --out DIR)")
    columns, runs = results.read_csv(runs_csv)
    labels = columns[:columns.index("run_id")] if "run_id" in columns else []
    history = results.read_csv(out / "history.csv")[1] if (out / "history.csv").is_file() else []
    meta = {"name": out.name, "description": ""}
    if (out / "spec.toml").is_file():
        with open(out / "spec.toml", "rb") as fh:
            meta.update(tomllib.load(fh).get("experiment", {}))
    plan = results.read_plan(out)
    return {"out": out, "runs": runs, "history": history, "labels": labels, "meta": meta,
            "conditions": [c for c in labels if c != "seed"],
            "n_planned": len(plan) if plan is not None else None,
            "environment": environment.read(out)}


def missing_runs(study: dict) -> int | None:
    """How many planned runs have no result yet (None when the folder has no plan.json)."""
    planned = study.get("n_planned")
    return None if planned is None else max(planned - len(study["runs"]), 0)


def condition(row: dict, keys: list[str]) -> tuple:
    return tuple(_text(row.get(k)) for k in keys)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def mean_sd(values, scale: float = 1.0, digits: int = 1) -> str:
    """``"68.2 ± 1.3"`` (sample sd, n - 1) of the finite values; ``"68.2"`` for one; ``"–"`` for none."""
    vals = [v * scale for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _groups(rows, keys):
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(condition(row, keys), []).append(row)
    return groups


def _short_notes(rows) -> str:
    notes = []
    for row in rows:
        for note in str(row.get("notes") or "").split("; "):
            if note and note not in notes:
                notes.append(note)
    text = "; ".join(n if len(n) <= 90 else n[:87] + "..." for n in notes)
    return text


def _full_notes(study: dict) -> dict[str, list[str]]:
    """Each distinct run note (warnings caught during the run), with the conditions it came from."""
    keys = study["conditions"]
    out: dict[str, list[str]] = {}
    for row in study["runs"]:
        cond = "/".join(condition(row, keys)) or "all runs"
        for note in str(row.get("notes") or "").split("; "):
            if note and cond not in out.setdefault(note, []):
                out[note].append(cond)
    return out


def results_table(study: dict) -> str:
    """The main table: one row per condition, scores as mean ± sd over the seeds that finished."""
    keys = study["conditions"]
    runs = study["runs"]
    classification = any(r.get("test_acc_final") is not None for r in runs)
    if classification:
        header = keys + ["runs ok", "test acc @ best val (%)", "test acc @ final (%)",
                         "best val acc (%)", "best epoch", "notes"]
    else:
        header = keys + ["runs ok", "test loss @ best val", "test loss @ final", "best val loss",
                         "best epoch", "notes"]
    rows = []
    for cond, group in _groups(runs, keys).items():
        ok = [r for r in group if r.get("status") == "ok"]
        failed = [r for r in group if r.get("status") != "ok"]
        notes = _short_notes(group)
        if failed:
            reasons = sorted({str(r.get("reason") or "")[:60] for r in failed})
            notes = "; ".join(filter(None, [f"{len(failed)} failed ({', '.join(reasons)})", notes]))
        if classification:
            cells = [mean_sd([r.get("test_acc_at_best_val") for r in ok], 100),
                     mean_sd([r.get("test_acc_final") for r in ok], 100),
                     mean_sd([r.get("best_val_acc") for r in ok], 100)]
        else:
            cells = [mean_sd([r.get("test_loss_at_best_val") for r in ok], digits=4),
                     mean_sd([r.get("test_loss_final") for r in ok], digits=4),
                     mean_sd([r.get("best_val_loss") for r in ok], digits=4)]
        rows.append(list(cond) + [f"{len(ok)}/{len(group)}"] + cells +
                    [mean_sd([r.get("best_epoch") for r in ok], digits=1), notes])
    return _table(header or ["runs"], rows)


def final_layer_values(study: dict, metric: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Layers measured for ``metric`` and, per run id, its value at the last epoch that has one."""
    layers, per_run = [], {}
    prefix = metric + ":"
    for row in study["history"]:
        for key, value in row.items():
            if key.startswith(prefix) and isinstance(value, float):
                layer = key[len(prefix):]
                if layer not in layers:
                    layers.append(layer)
                per_run.setdefault(row["run_id"], {})[layer] = value
    return layers, per_run


def layer_table(study: dict, metric: str, digits: int = 1) -> str | None:
    """Mean ± sd over seeds of ``metric`` per layer at the final epoch, or None if not measured."""
    layers, per_run = final_layer_values(study, metric)
    if not layers:
        return None
    keys = study["conditions"]
    rows = []
    for cond, group in _groups([r for r in study["runs"] if r.get("status") == "ok"], keys).items():
        rows.append(list(cond) + [mean_sd([per_run.get(r["run_id"], {}).get(layer) for r in group],
                                          digits=digits) for layer in layers])
    return _table(keys + [f"layer {x}" if x.isdigit() else x for x in layers], rows)


def render(study: dict, figures: list[str]) -> str:
    meta, runs = study["meta"], study["runs"]
    n_ok = sum(1 for r in runs if r.get("status") == "ok")
    parts = [f"# {meta['name']}", ""]
    if meta.get("description"):
        parts += [meta["description"].strip(), ""]
    seeds = sorted({_text(r.get("seed")) for r in runs}) if "seed" in study["labels"] else []
    parts += [f"{len(runs)} runs: {n_ok} ok, {len(runs) - n_ok} failed"
              + (f"; seeds {', '.join(seeds)}" if seeds else "") + ". Scores are mean ± sd over seeds.", ""]
    missing = missing_runs(study)
    if missing:
        parts += [f"**Unfinished study: {missing} of {study['n_planned']} runs have no result yet** "
                  "(run the same `biofa run` command again to finish them).", ""]
    parts += [SELECTION_NOTE, "", "## Results", "", results_table(study), ""]
    for metric, title, digits in (
            ("weight_alignment", "Weight alignment ∠(W, B) at the final epoch (degrees)", 1),
            ("update_alignment", "Update alignment ∠(δ_rule, δ_BP) at the final epoch (degrees)", 1),
            ("norm_ratio", "Norm ratio ‖B‖/‖W‖ at the final epoch", 3),
            ("dale_violations", "Dale violations at the final epoch (must be 0)", 1)):
        table = layer_table(study, metric, digits)
        if table:
            parts += [f"## {title}", "", table, ""]
    notes = _full_notes(study)
    if notes:
        parts += ["## Notes", "", *[f"- {', '.join(conds)}: {note}" for note, conds in notes.items()], ""]
    failed = [r for r in runs if r.get("status") != "ok"]
    if failed:
        parts += ["## Failed runs", "", _table(["run_id", "reason"], [[r["run_id"], r.get("reason") or ""]
                                                                      for r in failed]), ""]
    if figures:
        parts += ["## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures] + [""]
    if study.get("environment"):
        parts += ["## Environment", "", environment.markdown(study["environment"]), ""]
    return "\n".join(parts)


def write_report(out: str | Path) -> Path:
    """Write ``report.md`` and the figures of the study in ``out``; returns the report's path."""
    from . import figures
    study = read_study(out)
    pngs = figures.write_figures(study)
    path = Path(out) / "report.md"
    results.atomic_write_text(path, render(study, pngs))
    return path
