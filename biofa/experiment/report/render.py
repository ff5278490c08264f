"""``report.md`` from a results folder's CSV files: tables of mean ± sd over seeds.

Everything is read back from ``runs.csv``, ``history.csv``, ``spec.toml``, ``plan.json`` and
``environment.json``, so ``biofa report DIR`` regenerates the report and the figures of any
finished (or partial) study; the report of a partial one says how many runs are missing.
A *condition* is one combination of the grid values other than the seed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ...errors import ConfigError
from .. import results
from .. import environment
from ..results import condition
from ..spec import published
from ..spec.expand import value_text
from ..spec.paths import display, tomllib
from . import figures, tasks
from .stats import t_interval
from .summary import analyse, final_layer_values, reported

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
    tree = {}
    if (out / "spec.toml").is_file():
        with open(out / "spec.toml", "rb") as fh:
            tree = tomllib.load(fh)
        meta.update(tree.get("experiment", {}))
    search, compare = _search_and_compare(tree, labels)
    conditions = [c for c in labels if c != "seed" and c not in search]
    plan = results.read_plan(out)
    return {"out": out, "runs": runs, "history": history, "labels": labels, "meta": meta, "spec": tree,
            "conditions": conditions, "search": search, "compare": compare,
            "n_planned": len(plan) if plan is not None else None,
            "environment": environment.read(out),
            "published": published.from_tree(tree, conditions)}


def missing_runs(study: dict) -> int | None:
    """How many planned runs have no result yet (None when the folder has no plan.json)."""
    planned = study.get("n_planned")
    return None if planned is None else max(planned - len(study["runs"]), 0)


def _search_and_compare(tree: dict, labels: list[str]) -> tuple[dict, dict]:
    """The resolved spec's ``[search]`` ({column: values}) and ``[compare]`` ({column: (a, b)}),
    keyed by their ``runs.csv`` columns."""
    search = {display(k): v for k, v in tree.get("search", {}).items() if display(k) in labels}
    compare = {display(k): tuple(v) for k, v in tree.get("compare", {}).items()}
    return search, compare


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


def interval_text(interval, digits: int = 1) -> str:
    """``"68.2 [66.1, 70.3]"`` (mean [95 % CI]); ``"68.2"`` for one value; ``"–"`` for none."""
    if interval is None:
        return "–"
    if interval.low is None:
        return f"{interval.mean:.{digits}f}"
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def _summary(study: dict):
    if "summary" not in study:
        study["summary"] = analyse(study)
    return study["summary"]


def results_table(study: dict) -> str:
    """The main table: one row per condition, scores as mean [95 % CI] over the seeds that
    finished; with ``[search]``, those of the candidate chosen on validation, and the choice."""
    keys = study["conditions"]
    summary = _summary(study)
    search = list(study.get("search") or {})
    if summary.classification:
        names = ["test acc @ best val (%)", "test acc @ final (%)", "best val acc (%)"]
        digits = 1
    else:
        names = ["test loss @ best val", "test loss @ final", "best val loss"]
        digits = 4
    reference = study.get("published")
    extra = _published_header(reference, summary.classification)
    header = keys + [f"selected {c.rpartition('.')[2]}" for c in search] + ["runs ok"] + names + \
        extra + ["best epoch (mean)", "notes"]
    rows = []
    for cond, item in summary.conditions.items():
        failed = [r for r in item.runs if r.get("status") != "ok"]
        notes = _short_notes(item.runs)
        if failed:
            reasons = sorted({str(r.get("reason") or "")[:60] for r in failed})
            notes = "; ".join(filter(None, [f"{len(failed)} failed ({', '.join(reasons)})", notes]))
        chosen = []
        if search:
            selected = item.choice.selected if item.choice else None
            chosen = [selected.values[c] if selected else "–" for c in search]
            edges = ["edge: " + e for e in (item.choice.edges if item.choice else [])]
            notes = "; ".join(filter(None, [*edges, notes if selected else "no candidate finished"]))
        cells = [interval_text(item.test, digits), interval_text(item.test_final, digits),
                 interval_text(item.val, digits), *_published_cells(reference, item, keys, cond, extra),
                 f"{item.best_epoch.mean:.1f}" if item.best_epoch else "–"]
        runs_ok = f"{item.n_ok}/{len(item.runs)}"
        if search and item.choice is not None and item.choice.selected is None:
            # no candidate to report: count the runs of every candidate, all of which failed
            runs_ok = f"0/{sum(len(c.runs) for c in item.choice.candidates)}"
        rows.append(list(cond) + chosen + [runs_ok] + cells + [notes])
    return _table(header, rows)


def _published_header(reference, classification: bool) -> list[str]:
    """Columns of a ``[published]`` table: ours as the published metric when it is not already a
    column (test error from test accuracy), then the published value."""
    if reference is None:
        return []
    ours = ["test error @ best val (%)"] if reference.metric == "test_error" and classification else []
    return ours + [f"published {reference.title}"]


def _published_cells(reference, item, keys, cond, header) -> list[str]:
    if reference is None:
        return []
    cells = []
    if len(header) == 2:  # 100 - accuracy: the same seeds' interval, mirrored
        test = item.test
        cells.append(interval_text(test if test is None else
                                   dataclasses.replace(test, mean=100 - test.mean,
                                                       low=None if test.low is None else 100 - test.high,
                                                       high=None if test.high is None else 100 - test.low),
                                   1))
    value = reference.value(keys, cond)
    return cells + ["–" if value is None else f"{value:g}"]


def published_note(study: dict) -> str | None:
    """The source of the *published* column, or None."""
    reference = study.get("published")
    if reference is None:
        return None
    return (f"*published*: {reference.source}. The study's own number beside it is the test score "
            "at the best validation epoch (test error = 100 − test accuracy); the source's own model "
            "selection may differ.")


def search_table(study: dict) -> str | None:
    """Every candidate's validation score per condition (the choice marked), or None."""
    summary = _summary(study)
    if not summary.choices:
        return None
    keys, search = study["conditions"], list(study["search"])
    label = "val acc (%)" if summary.classification else "val loss"
    digits = 1 if summary.classification else 4
    factor = summary.scale
    rows = []
    for cond, choice in summary.choices.items():
        for cand in choice.candidates:
            values = [r[choice.column] * factor for r in cand.runs
                      if r.get("status") == "ok" and isinstance(r.get(choice.column), float)]
            mark = "selected" if cand is choice.selected else ""
            rows.append(list(cond) + [cand.values[c] for c in search] +
                        [f"{cand.n_ok}/{len(cand.runs)}", interval_text(t_interval(values), digits),
                         mark])
    return _table(keys + [c.rpartition(".")[2] for c in search] +
                  ["runs ok", f"best {label} mean [95% CI]", "choice"], rows)


def p_text(p) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def comparison_table(study: dict) -> str | None:
    """The declared comparisons: paired difference b - a over seeds, its interval, d_z, p, or None."""
    summary = _summary(study)
    if not summary.comparisons:
        return None
    unit = " (points)" if summary.classification else ""
    digits = 1 if summary.classification else 4
    rows = []
    for c in summary.comparisons:
        res = c.result
        excluded = ", ".join(f"seed {s}: {why}" for s, why in c.pairing.excluded)
        rows.append([f"{c.key}: {c.b} − {c.a}",
                     ", ".join(f"{k}={v}" for k, v in c.context.items()) or "all",
                     str(len(c.pairing.seeds)),
                     interval_text(res.diff if res else None, digits),
                     f"{res.d_z:.2f}" if res and res.d_z is not None else "–",
                     p_text(res.p if res else None), p_text(c.p_holm), excluded])
    return _table(["comparison", "within", "pairs", f"difference{unit} mean [95% CI]", "d_z",
                   "p (paired t)", "p (Holm)", "seeds left out"], rows)


def layer_table(study: dict, metric: str, digits: int = 1, epoch: int | None = None) -> str | None:
    """Mean ± sd over seeds of ``metric`` per layer at the final epoch (or at ``epoch``), or None
    if not measured."""
    layers, per_run = final_layer_values(study, metric, epoch)
    if not layers:
        return None
    keys = study["conditions"]
    rows = []
    for cond, group in _groups([r for r in study["runs"] if r.get("status") == "ok"], keys).items():
        rows.append(list(cond) + [mean_sd([per_run.get(r["run_id"], {}).get(layer) for r in group],
                                          digits=digits) for layer in layers])
    return _table(keys + [f"layer {x}" if x.isdigit() else x for x in layers], rows)


COMPARE_NOTE = (
    "Each row is the paired difference *second − first* of the test score at the best validation "
    "epoch, over the seeds both conditions finished (pairs), with its 95 % t interval, Cohen's "
    "d_z = mean / sd of the differences (no small-sample correction), the two-sided paired t-test "
    "p-value and Holm's step-down adjustment over every comparison of this report."
)


def _seeds_text(study: dict, summary) -> str:
    """How many seeds, and what the intervals are."""
    if "seed" not in study["labels"]:
        return "Scores are single runs."
    counts = summary.n_per_condition
    n = (f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]} to {counts[-1]}") if counts \
        else "n = 0"
    text = (f"Seeds {', '.join(summary.seeds)}: {n} finished per condition. Scores are the mean over "
            "seeds [two-sided 95 % Student t confidence interval]")
    if counts and counts[0] < 2:
        text += "; a condition with a single finished seed has no interval"
    return text + "."


def _search_note(study: dict) -> str:
    search = study["search"]
    space = "; ".join(f"{k} ∈ {{{', '.join(value_text(v) for v in values)}}}"
                      for k, values in search.items())
    return (f"Searched per condition: {space}. Each candidate ran with every seed; the reported "
            "candidate has the best mean over seeds of the best validation score (accuracy; loss for "
            "regression), fewer failed runs first, exact ties to the candidate listed first. Test "
            "scores are read only at that choice. *edge* marks a choice at the end of a searched range.")


def _reported(study: dict) -> dict:
    return reported(study, _summary(study))


def render(study: dict, figures: list[str], task_rows: list | None = None) -> str:
    meta, runs = study["meta"], study["runs"]
    n_ok = sum(1 for r in runs if r.get("status") == "ok")
    parts = [f"# {meta['name']}", ""]
    if meta.get("description"):
        parts += [meta["description"].strip(), ""]
    summary = _summary(study)
    shown = _reported(study)
    parts += [f"{len(runs)} runs: {n_ok} ok, {len(runs) - n_ok} failed. {_seeds_text(study, summary)}",
              ""]
    missing = missing_runs(study)
    if missing:
        parts += [f"**Unfinished study: {missing} of {study['n_planned']} runs have no result yet** "
                  "(run the same `biofa run` command again to finish them).", ""]
    parts += [SELECTION_NOTE, ""]
    note = published_note(study)
    note = [note, ""] if note else []
    if study.get("search"):
        parts += [_search_note(study), "",
                  "## Results: test at the validation-selected " + ", ".join(study["search"]), "",
                  results_table(study), "", *note, "## Search: every candidate's validation score", "",
                  search_table(study), ""]
    else:
        parts += ["## Results", "", results_table(study), "", *note]
    if task_rows:
        parts += ["## Tasks: criteria, trials to criterion, psychometric fits", "", tasks.NOTE, "",
                  tasks.table(study, task_rows), ""]
        by_condition = tasks.condition_table(study, task_rows)
        if by_condition:
            parts += ["## Tasks: percent correct per condition", "",
                      "On the test trials, at the best validation epoch; trials of the conditions a "
                      "row groups are pooled per run; mean ± sd over seeds.", "", by_condition, ""]
    table = comparison_table(study)
    if table:
        parts += ["## Comparisons (paired over seeds)", "", COMPARE_NOTE, "", table, ""]
    for metric, title, digits, epoch in (
            ("weight_alignment", "Weight alignment ∠(W, B) at the final epoch (degrees)", 1, None),
            ("update_alignment", "Update alignment ∠(δ_rule, δ_BP) at the final epoch (degrees)", 1, None),
            ("norm_ratio", "Norm ratio ‖B‖/‖W‖ at the final epoch", 3, None),
            ("dale_violations", "Dale violations at the final epoch (must be 0)", 1, None),
            ("nse", "NSE of each layer's W at initialisation (epoch 0)", 3, 0),
            ("nse", "NSE of each layer's W at the final epoch", 3, None)):
        table = layer_table(shown, metric, digits, epoch)
        if table:
            parts += [f"## {title}", "", "Mean ± sample sd over seeds, per layer.", "", table, ""]
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
    study = read_study(out)
    pngs = figures.write_figures(_reported(study))
    pngs += figures.write_interval_figures(study, _summary(study))
    task_rows = tasks.collect(Path(out), study["labels"])
    if task_rows:  # with [search]: each condition's chosen candidate only, as the other tables
        task_rows = tasks.chosen_rows(_reported(study), task_rows)
        pngs += tasks.write_figures(study, task_rows)
    path = Path(out) / "report.md"
    results.atomic_write_text(path, render(study, pngs, task_rows))
    return path
