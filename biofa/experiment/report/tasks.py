"""The part of a report that studies on cognitive tasks (``[task]``) add: whether each run met
its task's criterion and after how many trials, psychometric fits, per-condition results, the
psychometric curves and the trial-averaged activity of E and I units.

These come from the run files (``runs/<run_id>.json``: ``criterion_met``, ``trials_to_criterion``,
``task_scores``, ``activity``), which a record does not keep; so the report first writes them,
compacted, to ``task_results.json`` (which a record keeps), and reads that file when the run
files are gone.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .. import results
from ..spec.paths import display

#: The file with the task results of every run (kept by a record).
FILE_NAME = "task_results.json"

#: pycog's stopping criteria (the paper's), per task, as the report states them.
CRITERIA = {
    "perceptual_decision": "mean of the last 5 validations > 85 % correct",
    "context_decision": "mean of the last 5 validations > 90 % correct",
    "multisensory": "mean of the last 5 validations > 90 % correct",
    "working_memory": "minimum over conditions > 85 % correct",
}


NOTE = (
    "Every run trains on fresh trials until its task's criterion (pycog's, over the validations so far) "
    "or its budget. *criterion met*: seeds that met it; *trials to criterion*: the median over seeds of "
    "the training trials seen at the validation where it was first met, a run that never met it counted at "
    "its budget (\">\": the median is such a censored value). *test correct* (mean ± sd over seeds): the "
    "best validation epoch's weights on fresh test trials, a fixed number per condition, catch trials not "
    "scored; *min over conditions*: the worst condition's percent correct (working memory's criterion); "
    "*psychometric σ*: the width of a cumulative Gaussian fitted to the choices against the signed "
    "stimulus (in its units: percent coherence, events per second), mean ± sd over seeds whose fit "
    "converged; for multisensory also per modality (v visual, a auditory, va both).")


def chosen_rows(study: dict, rows: list[dict]) -> list[dict]:
    """The task rows of the runs ``study`` reports: with ``[search]`` (a study passed through
    :func:`~biofa.experiment.report.summary.reported`), each condition's chosen candidate only."""
    ids = {r["run_id"] for r in study["runs"]}
    return [r for r in rows if r["run_id"] in ids]


def _round(value, digits: int = 4):
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def collect(out: Path, labels: list[str]) -> list[dict] | None:
    """The task results of the study in ``out`` (written to :data:`FILE_NAME` from the run
    files when there are any, else read from it); None for a study without task runs. The
    activity is kept for the first seed of each condition only (it is what the figure shows)."""
    out = Path(out)
    runs_dir = out / results.RUNS_DIR
    path = out / FILE_NAME
    files = [p for p in sorted(runs_dir.glob("*.json"))] if runs_dir.is_dir() else []
    rows, first_seed = [], {}
    for f in files:
        result = json.loads(f.read_text())
        if "task_scores" not in result:
            continue
        row_labels = result.get("labels", {})
        cond = tuple((k, str(v)) for k, v in row_labels.items() if k != "seed")
        seed = row_labels.get("seed", 0)
        keep = cond not in first_seed or seed < first_seed[cond]
        if keep:
            first_seed[cond] = seed
        rows.append({"run_id": result["run_id"], "labels": row_labels,
                     "criterion_met": result.get("criterion_met"),
                     "trials_to_criterion": result.get("trials_to_criterion"), "trials": result.get("trials"),
                     "scores": _round(result["task_scores"]), "activity": _round(result.get("activity") or {}, 3)})
    if rows:
        for row in rows:  # activity of the first seed of each condition only
            cond = tuple((k, str(v)) for k, v in row["labels"].items() if k != "seed")
            if row["labels"].get("seed", 0) != first_seed[cond]:
                row["activity"] = {}
        results.atomic_write_text(path, json.dumps(rows, indent=None, separators=(",", ":")) + "\n")
        return rows
    if path.is_file():
        return json.loads(path.read_text())
    return None


def _condition(row: dict, conditions: list[str]) -> tuple:
    return tuple(str(row["labels"].get(c)) for c in conditions)


def _in_plan_order(study: dict, rows: list[dict]) -> list[dict]:
    """``rows`` sorted by their condition's place in the study's plan (runs.csv's order)."""
    conditions = study["conditions"]
    order: dict[tuple, int] = {}
    for run in study["runs"]:
        order.setdefault(tuple(str(run.get(c)) for c in conditions), len(order))
    return sorted(rows, key=lambda r: order.get(_condition(r, conditions), len(order)))


def _median_trials(rows: list[dict]) -> str:
    """Median trials to criterion over seeds; a censored run counts at its budget and the median
    is marked ">" when it falls on a censored value."""
    values = sorted((r["trials_to_criterion"], not r["criterion_met"]) for r in rows
                    if r.get("trials_to_criterion") is not None)
    if not values:
        return "–"
    mid = statistics.median_low([v for v, _ in values])
    censored = any(c for v, c in values if v == mid)
    return f"{'>' if censored else ''}{mid:,}"


def _sigma(fit) -> float | None:
    fit = fit or {}
    return fit["sigma"] if fit.get("ok") and fit.get("sigma") is not None else None


def _fit_text(rows: list[dict]) -> str:
    """σ of the psychometric fit, mean ± sd over the seeds whose fit converged; per modality too
    where the task has modalities (multisensory: v, a, va)."""
    overall, modal = [], {}
    for r in rows:
        psy = r["scores"].get("psychometric") or {}
        if _sigma(psy.get("fit")) is not None:
            overall.append(_sigma(psy["fit"]))
        for name, sub in (psy.get("by_modality") or {}).items():
            if _sigma(sub.get("fit")) is not None:
                modal.setdefault(name, []).append(_sigma(sub["fit"]))
    if not overall and not modal:
        return "–"
    parts = [_mean_sd(overall, 2)] if overall else []
    parts += [f"{name} {_mean_sd(v, 2)}" for name, v in modal.items()]
    return "; ".join(parts)


def table(study: dict, rows: list[dict]) -> str:
    """:func:`table_cells` as Markdown."""
    header, body = table_cells(study, rows)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def table_cells(study: dict, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per condition: criterion met (seeds), median trials to criterion, test percent
    correct (mean ± sd over seeds), the worst condition, the psychometric σ and the criterion."""
    conditions = study["conditions"]
    by_cond: dict[tuple, list] = {}
    for r in _in_plan_order(study, rows):
        by_cond.setdefault(_condition(r, conditions), []).append(r)
    header = [display(c) for c in conditions] + ["criterion met", "trials to criterion (median)",
                                                  "test correct (%)", "min over conditions (%)",
                                                  "psychometric σ", "criterion (pycog)"]
    body = []
    runs = {r["run_id"]: r for r in study["runs"]}
    for cond, group in by_cond.items():
        met = sum(1 for r in group if r.get("criterion_met"))
        accs = [runs[r["run_id"]].get("test_acc_at_best_val") for r in group if r["run_id"] in runs]
        accs = [100 * a for a in accs if isinstance(a, float)]
        mins = [100 * r["scores"]["min_condition"] for r in group
                if isinstance(r["scores"].get("min_condition"), float)]
        task = next((v for c, v in zip(conditions, cond) if c == "task.name"), None) or \
            study.get("task_name", "")
        cells = list(cond) + [f"{met}/{len(group)}", _median_trials(group), _mean_sd(accs), _mean_sd(mins),
                              _fit_text(group), CRITERIA.get(task, "the task's own")]
        body.append(cells)
    return header, body


#: The labels a task's per-condition table groups by (the others are averaged over, trials weighted).
GROUP_BY = {"perceptual_decision": ("coh",), "context_decision": ("context",),
            "multisensory": ("modality",), "working_memory": ("f1", "f2")}


def condition_table(study: dict, rows: list[dict]) -> str | None:
    """Percent correct per condition group (:data:`GROUP_BY`: the coherence, the context, the
    modality, the frequency pair), one column per value of the study's other condition keys,
    mean ± sd over seeds; None when no run has per-condition results."""
    conditions = study["conditions"]
    task_key = "task.name" if "task.name" in conditions else None
    others = [c for c in conditions if c != task_key]
    cells: dict[tuple, dict[str, list]] = {}
    columns: list[str] = []
    for r in _in_plan_order(study, rows):
        per = r["scores"].get("per_condition") or []
        if not per:
            continue
        task = str(r["labels"].get(task_key, "")) if task_key else study.get("task_name", "")
        keys = GROUP_BY.get(task) or tuple(k for k in per[0] if k not in ("correct", "n", "choice"))
        column = "/".join(str(r["labels"].get(c)) for c in others) or "all"
        if column not in columns:
            columns.append(column)
        sums: dict[tuple, list] = {}
        for entry in sorted(per, key=lambda e: tuple(e.get(k, 0) for k in keys)):
            group = (task, ", ".join(f"{k} {entry.get(k)}" for k in keys))
            acc = sums.setdefault(group, [0.0, 0])
            acc[0] += entry["correct"] * entry["n"]
            acc[1] += entry["n"]
        for group, (hits, n) in sums.items():
            cells.setdefault(group, {}).setdefault(column, []).append(100 * hits / n if n else float("nan"))
    if not cells:
        return None
    header = ["task", "condition"] + [f"{c}: correct (%)" for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (task, group), by_column in cells.items():
        lines.append("| " + " | ".join([task, group] + [_mean_sd(by_column.get(c, [])) for c in columns]) + " |")
    return "\n".join(lines)


def _mean_sd(values, digits: int = 1) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def write_figures(study: dict, rows: list[dict]) -> list[str]:
    """``psychometric.png`` (the fraction choosing the first output against the signed stimulus,
    mean over seeds, per condition) and ``activity.png`` (trial-averaged rates of the E and I
    units by preference, first seed); the names of the files written."""
    from .figures import pyplot, save_png

    plt = pyplot()
    out = Path(study["out"])
    rows = chosen_rows(study, rows)
    written = []
    if _psychometric_figure(study, rows, out / "psychometric.png", plt):
        written.append("psychometric.png")
    if _activity_figure(study, rows, out / "activity.png", plt):
        written.append("activity.png")
    if _loss_curves_figure(study, out / "loss_curves.png", plt):
        written.append("loss_curves.png")
    return written


def _plain(value) -> str:
    """A grid value as written (runs.csv reads 200 back as 200.0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _trials_per_epoch(study) -> int | None:
    """``[task] trials_per_epoch`` of the resolved spec the study ran with (None without one)."""
    value = study.get("spec", {}).get("task", {}).get("trials_per_epoch")
    return int(value) if isinstance(value, int) else None


def _loss_curves_figure(study, path, plt) -> bool:
    """For a task scored by its error alone (e.g. ``periodic``): the validation loss against
    training trials, the median over seeds with the band between the quartiles, log scale; a
    panel per value of the task's grid keys, a line per combination of the other condition keys
    (Murray 2019's Fig. 2 plots the median loss per rule the same way)."""
    history = study["history"]
    if not history or any(isinstance(h.get("val_acc"), float) for h in history):
        return False
    ok = {r["run_id"]: r for r in study["runs"] if r.get("status") == "ok"}
    conditions = study["conditions"]
    panel_keys = [c for c in conditions if c.startswith("task.")]
    line_keys = [c for c in conditions if c not in panel_keys]
    curves: dict = {}
    for h in history:
        run, value = ok.get(h.get("run_id")), h.get("val_loss")
        if run is None or not isinstance(value, float) or not math.isfinite(value):
            continue
        panel = ", ".join(f"{k.rpartition('.')[2]} {_plain(run[k])}" for k in panel_keys) or "all runs"
        line = " / ".join(_plain(run[k]) for k in line_keys) or "all runs"
        curves.setdefault(panel, {}).setdefault(line, {}).setdefault(int(h["epoch"]), []).append(value)
    if not curves:
        return False
    from .figures import save_png

    per_epoch = _trials_per_epoch(study)
    cmap = plt.get_cmap("tab10")
    names = list(dict.fromkeys(line for lines in curves.values() for line in lines))
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False)
    for ax, (title, lines) in zip(axes[0], curves.items()):
        for name, by_epoch in lines.items():
            epochs = sorted(by_epoch)
            x = [e * per_epoch if per_epoch else e for e in epochs]
            quartiles = [statistics.quantiles(by_epoch[e], n=4, method="inclusive") if len(by_epoch[e]) > 1
                         else [by_epoch[e][0]] * 3 for e in epochs]
            color = cmap(names.index(name) % 10)
            seeds = max(len(v) for v in by_epoch.values())
            ax.plot(x, [q[1] for q in quartiles], color=color, lw=1.4, label=f"{name} ({seeds} seeds)")
            ax.fill_between(x, [q[0] for q in quartiles], [q[2] for q in quartiles], color=color, alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training trials" if per_epoch else "epoch")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("validation loss (median, quartiles)")
    axes[0][0].legend(fontsize=7)
    save_png(fig, path)
    return True


#: The psychometric axis of each task, as its figure labels it.
STIMULUS = {"perceptual_decision": "signed coherence (%)", "context_decision": "signed coherence of the cued input (%)",
            "multisensory": "event rate (Hz)"}


def _psychometric_figure(study, rows, path, plt) -> bool:
    """One panel per task (a line per circuit, mean over seeds); a task with modalities
    (multisensory) gets one panel per circuit with a line per modality, as Raposo et al. plot it."""
    conditions = study["conditions"]
    task_key = "task.name" if "task.name" in conditions else None
    others = [c for c in conditions if c != task_key]
    panels: dict[str, dict] = {}
    xlabels: dict[str, str] = {}
    for r in _in_plan_order(study, rows):
        psy = r["scores"].get("psychometric")
        if not psy:
            continue
        task = str(r["labels"].get(task_key, "")) if task_key else ""
        line = "/".join(str(r["labels"].get(c)) for c in others) or "run"
        modal = psy.get("by_modality")
        curves = [(name, sub["levels"], sub["fraction"]) for name, sub in modal.items()] if modal else \
            [(line, psy["levels"], psy["fraction"])]
        panel = f"{task} ({line})" if modal else task
        xlabels[panel] = STIMULUS.get(task, "stimulus")
        for name, x, p in curves:
            panels.setdefault(panel, {}).setdefault(name, []).append((x, p))
    if not panels:
        return False
    from .figures import save_png

    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.1), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for line, curves in lines.items():
            x = curves[0][0]
            ps = [p for xx, p in curves if xx == x]
            mean = [statistics.fmean(v for v in col if v is not None) if any(v is not None for v in col)
                    else float("nan") for col in zip(*ps)]
            ax.plot(x, mean, "o-", ms=3, label=f"{line} ({len(ps)} seeds)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabels[title], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("fraction choosing output 0")
    save_png(fig, path)
    return True


#: at most this many conditions (rows) in ``activity.png``
ACTIVITY_ROWS = 16


def _activity_figure(study, rows, path, plt) -> bool:
    """The trial-averaged rates of each circuit's E and I units by preference (first seed): a
    row per condition of the study, a panel per group; red lines are trials whose correct choice
    is output 0, blue output 1, darker for a larger value of the task's first label (coherence,
    context, modality or f1)."""
    shown = [r for r in _in_plan_order(study, rows) if r.get("activity", {}).get("groups")]
    if not shown:
        return False
    total = len(shown)
    shown = shown[:ACTIVITY_ROWS]  # a figure, not a poster: the first conditions in grid order
    from .figures import save_png

    conditions = study["conditions"]
    groups = sorted({g for r in shown for g in r["activity"]["groups"]})
    fig, axes = plt.subplots(len(shown), len(groups), figsize=(2.7 * len(groups), 2.2 * len(shown)),
                             squeeze=False)
    reds, blues = plt.get_cmap("Reds"), plt.get_cmap("Blues")
    for i, r in enumerate(shown):
        act = r["activity"]
        name = "/".join(str(r["labels"].get(c)) for c in conditions)
        levels = sorted({cond[0] for cond in act["conditions"]})
        for j, g in enumerate(groups):
            ax = axes[i][j]
            traces = act["groups"].get(g)
            if traces is None:
                ax.axis("off")
                continue
            for cond, trace in zip(act["conditions"], traces):
                shade = 0.35 + 0.65 * levels.index(cond[0]) / max(len(levels) - 1, 1)
                color = (reds if cond[-1] == 0 else blues)(shade)
                t = [act["dt"] * (s + 1) for s in range(len(trace))]
                ax.plot(t, trace, color=color, lw=0.8)
            ax.set_title(f"{name}: {g}", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[i][0].set_ylabel("rate", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=7)
    if total > len(shown):
        fig.suptitle(f"the first {len(shown)} of {total} conditions (grid order)", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    return True
