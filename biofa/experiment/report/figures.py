"""PNG figures of a study (matplotlib, Agg backend): learning curves, alignment angles per layer,
norm ratios per layer, each as mean over seeds with a ±sd band; the test score per condition and
the declared comparisons, each as mean with its 95 % t interval.

Lines are the feedback rules (or, without a feedback grid, the conditions); panels are the
combinations of the other grid values (e.g. free signs vs Dale's law).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from .. import results
from ..results import condition
from .summary import columns, final_layer_values

#: (metric prefix, file name, y label) of the per-layer figures.
LAYER_FIGURES = (
    ("weight_alignment", "alignment.png", "∠(W, B) (degrees)"),
    ("update_alignment", "update_alignment.png", "∠(δ, δ_BP) (degrees)"),
    ("norm_ratio", "norm_ratio.png", "‖B‖ / ‖W‖"),
    ("nse", "nse.png", "NSE of W"),
)


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display), imported on first use."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _split(study):
    """(line key, panel keys) for the conditions of a study."""
    conds = study["conditions"]
    line = "feedback" if "feedback" in conds else (conds[0] if conds else None)
    return line, [c for c in conds if c != line]


def _series(study, column):
    """{panel: {line: {epoch: [values over seeds]}}} for one history column (ok runs only)."""
    ok = {r["run_id"] for r in study["runs"] if r.get("status") == "ok"}
    line_key, panel_keys = _split(study)
    out: dict = {}
    for row in study["history"]:
        value = row.get(column)
        if row["run_id"] not in ok or not isinstance(value, float) or not math.isfinite(value):
            continue
        panel = ", ".join(f"{k}={v}" for k, v in zip(panel_keys, condition(row, panel_keys))) or "all runs"
        line = condition(row, [line_key])[0] if line_key else "all"
        out.setdefault(panel, {}).setdefault(line, {}).setdefault(int(row["epoch"]), []).append(value)
    return out


def _panel_order(study, panels) -> list:
    """Panels in grid order (the order of runs.csv), not alphabetical."""
    _, panel_keys = _split(study)
    order = []
    for row in study["runs"]:
        name = ", ".join(f"{k}={v}" for k, v in zip(panel_keys, condition(row, panel_keys))) or "all runs"
        if name not in order:
            order.append(name)
    return [p for p in order if p in panels] + sorted(p for p in panels if p not in order)


def _draw(ax, lines: dict, colors: dict) -> None:
    for name, by_epoch in lines.items():
        epochs = sorted(by_epoch)
        means = [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
        sds = [math.sqrt(sum((v - m) ** 2 for v in by_epoch[e]) / max(len(by_epoch[e]) - 1, 1))
               for e, m in zip(epochs, means)]
        color = colors.get(name)
        ax.plot(epochs, means, label=name, color=color, lw=1.5, marker="o" if len(epochs) < 4 else None, ms=3)
        ax.fill_between(epochs, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                        color=color, alpha=0.15, lw=0)


def _colors(study, plt) -> dict:
    line_key, _ = _split(study)
    names = []
    for row in study["runs"]:
        name = condition(row, [line_key])[0] if line_key else "all"
        if name not in names:
            names.append(name)
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _legend(axes, size) -> None:
    """One legend, on the first panel of the top row that has lines."""
    for ax in axes[0][::-1]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=size, loc="best")
            return


def save_png(fig, path: Path) -> None:
    """Write ``fig`` as a PNG (110 dpi, tight box) atomically, and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    results.atomic_write_bytes(path, buffer.getvalue())


def learning_curves(study, path: Path, plt) -> bool:
    classification = any(isinstance(r.get("val_acc"), float) for r in study["history"])
    rows = [("val_acc", "validation accuracy"), ("train_loss", "training loss")] if classification \
        else [("val_loss", "validation loss"), ("train_loss", "training loss")]
    data = [_series(study, column) for column, _ in rows]
    rows, data = [r for r, d in zip(rows, data) if d], [d for d in data if d]  # e.g. no validation split
    panels = _panel_order(study, {p for d in data for p in d})
    if not panels:
        return False
    colors = _colors(study, plt)
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(4.2 * len(panels), 3.2 * len(rows)),
                             squeeze=False, sharex=True)
    for i, ((_, ylabel), series) in enumerate(zip(rows, data)):
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            _draw(ax, series.get(panel, {}), colors)
            ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(panel, fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel("epoch")
            if rows[i][0] == "train_loss":
                ax.set_yscale("log")
    _legend(axes, 8)
    fig.suptitle(f"{study['meta']['name']}: learning curves (mean ± sd over seeds)", fontsize=11)
    save_png(fig, path)
    return True


def layer_figure(study, metric: str, ylabel: str, path: Path, plt) -> bool:
    layers, _ = final_layer_values(study, metric)
    series = {layer: _series(study, f"{metric}:{layer}") for layer in layers}
    panels = _panel_order(study, {p for s in series.values() for p in s})
    if not panels:
        return False
    colors = _colors(study, plt)
    fig, axes = plt.subplots(len(panels), len(layers), figsize=(3.6 * len(layers), 3.0 * len(panels)),
                             squeeze=False, sharex=True)
    for i, panel in enumerate(panels):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            _draw(ax, series[layer].get(panel, {}), colors)
            ax.set_title((f"layer {layer}" if layer.isdigit() else layer) + (f"\n{panel}" if len(panels) > 1 or panel != "all runs" else ""),
                         fontsize=9)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == len(panels) - 1:
                ax.set_xlabel("epoch")
    _legend(axes, 7)
    fig.suptitle(f"{study['meta']['name']}: {metric.replace('_', ' ')} per layer", fontsize=11)
    save_png(fig, path)
    return True


def write_figures(study: dict) -> list[str]:
    """Write every figure the study's data allow; returns the file names written."""
    plt = pyplot()
    out = Path(study["out"])
    written = []
    if learning_curves(study, out / "learning_curves.png", plt):
        written.append("learning_curves.png")
    for metric, name, ylabel in LAYER_FIGURES:
        if layer_figure(study, metric, ylabel, out / name, plt):
            written.append(name)
    return written


def intervals_figure(study, summary, path: Path, plt) -> bool:
    """Test score at the best validation epoch per condition: each seed (dots), the mean and its
    95 % t interval (bar); lines of the study on the x axis, panels as colours."""
    line_key, panel_keys = _split(study)
    keys = study["conditions"]
    column = columns(summary.classification)[0]
    points = []
    for cond, item in summary.conditions.items():
        if item.test is None:
            continue
        values = dict(zip(keys, cond))
        line = values[line_key] if line_key else "all"
        panel = ", ".join(f"{k}={values[k]}" for k in panel_keys) or "all runs"
        seeds = [r[column] * summary.scale for r in item.runs
                 if r.get("status") == "ok" and isinstance(r.get(column), float)]
        points.append((line, panel, item.test, seeds))
    if not points:
        return False
    lines = list(dict.fromkeys(p[0] for p in points))
    panels = _panel_order(study, {p[1] for p in points})
    width = 0.8 / len(panels)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(lines) * max(1, len(panels)) ** 0.5 + 2), 3.6))
    for j, panel in enumerate(panels):
        color = cmap(j % 10)
        mine = [p for p in points if p[1] == panel]
        for k, (line, _, interval, seeds) in enumerate(mine):
            x = lines.index(line) - 0.4 + width * (j + 0.5)
            ax.plot([x] * len(seeds), seeds, ".", color=color, alpha=0.35, ms=4)
            err = None if interval.low is None else [[interval.mean - interval.low],
                                                     [interval.high - interval.mean]]
            ax.errorbar([x], [interval.mean], yerr=err, fmt="o", color=color, ms=5, capsize=3,
                        label=panel if k == 0 else None)
    ax.set_xticks(range(len(lines)))
    ax.set_xticklabels(lines, rotation=30 if len(lines) > 6 else 0)
    ax.set_ylabel("test accuracy @ best val (%)" if summary.classification else "test loss @ best val")
    if len(panels) > 1 or panels[0] != "all runs":
        ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{study['meta']['name']}: mean and 95% t interval over seeds (dots: seeds)", fontsize=11)
    save_png(fig, path)
    return True


def comparisons_figure(summary, name: str, path: Path, plt) -> bool:
    """Each declared comparison's mean paired difference with its 95 % t interval (a forest plot)."""
    rows = [c for c in summary.comparisons if c.result is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.32 * len(rows)))
    for i, c in enumerate(rows):
        d = c.result.diff
        y = len(rows) - 1 - i
        if d.low is not None:
            ax.plot([d.low, d.high], [y, y], color="tab:blue", lw=2)
        ax.plot([d.mean], [y], "o", color="tab:blue", ms=5)
    ax.axvline(0.0, color="0.4", lw=1, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{c.b} − {c.a}" + (f" ({', '.join(f'{k}={v}' for k, v in c.context.items())})"
                                            if c.context else "") for c in rows][::-1], fontsize=8)
    unit = "test accuracy difference (points)" if summary.classification else "test loss difference"
    ax.set_xlabel(f"{unit}, paired over seeds")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{name}: paired differences, mean and 95% t interval", fontsize=11)
    save_png(fig, path)
    return True


def write_interval_figures(study: dict, summary) -> list[str]:
    """Write the per-condition interval figure and the comparisons figure; returns their names."""
    plt = pyplot()
    out = Path(study["out"])
    written = []
    if intervals_figure(study, summary, out / "intervals.png", plt):
        written.append("intervals.png")
    if comparisons_figure(summary, study["meta"]["name"], out / "comparisons.png", plt):
        written.append("comparisons.png")
    return written
