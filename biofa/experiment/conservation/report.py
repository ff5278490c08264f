"""The table "claim | paper | ours" and the three figures of a conservation-laws study.

The "paper" column says what the abstract of Robertson & Koyejo (2023) states about each claim,
or that the claim (a law's exact form, a rate, a condition) is our derivation; it holds no
numbers. The "ours" column is computed here from the rows of ``measurements.csv`` only.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ...errors import ConfigError
from .. import results
from ..report.excerpts import Excerpt, parse
from ..report.figures import pyplot, save_png
from .spec import KIND, from_dict

#: The study's files: every measured value, and the seconds each part took.
MEASUREMENTS, TIMINGS = "measurements.csv", "timings.json"


def select(rows, **match) -> list[dict]:
    """Rows whose columns equal every ``match`` value."""
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def final_drift(rows, network, rule, method, quantity, lr=None) -> list[float]:
    """The drift at the last recorded time of each seed."""
    picked = select(rows, part="drift", network=network, rule=rule, method=method, quantity=quantity)
    if lr is not None:
        picked = [r for r in picked if r["lr"] == lr]
    last = {}
    for r in picked:
        if r["seed"] not in last or r["time"] >= last[r["seed"]]["time"]:
            last[r["seed"]] = r
    return [r["value"] for r in last.values()]


def drift_slope(lrs, drifts) -> float:
    """Least-squares slope of log(drift) against log(lr): 1 for drift = O(lr)."""
    xs, ys = [math.log(a) for a in lrs], [math.log(b) for b in drifts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _g(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def claims(rows, settings) -> list[tuple[str, str, str]]:
    """``(claim, paper, ours)`` rows of the report's table."""
    d, a, m = settings["drift"], settings["alignment"], settings["min_norm"]
    out = []
    law = {"linear": "C_l", "relu": "c_(l,i)"}
    for network in d["flow"]:
        fa = final_drift(rows, network, "fa", "flow", "fa_law")
        bound = final_drift(rows, network, "fa", "flow", "fa_law_bound")
        gd = final_drift(rows, network, "bp", "flow", "balancedness")
        out.append((f"Gradient flow conserves FA's {law[network]} ({network} net)",
                    "conservation laws of FA's learning dynamics (abstract); this form of the law "
                    "and the gradient-flow setting are ours",
                    f"drift ≤ {_g(max(fa))} over t = {d['time']:g} (solve_ivp bound {_g(max(bound))}); "
                    f"GD's flow keeps its balancedness to {_g(max(gd))}"))
    for network in d["networks"]:
        lrs = sorted(d["lrs"], reverse=True)
        med = [statistics.median(final_drift(rows, network, "fa", "sgd", "fa_law", lr)) for lr in lrs]
        slope = f"; slope of log drift vs log lr {drift_slope(lrs, med):.2f}" if len(lrs) > 1 else ""
        out.append((f"SGD drifts by O(lr) over a fixed time ({network} net, {law[network]})",
                    "not in the abstract; the O(lr) rate is our derivation",
                    ", ".join(f"{_g(v)} at lr {lr:g}" for lr, v in zip(lrs, med))
                    + f" (t = {d['time']:g}, median of {len(d['seeds'])} seeds){slope}"))
        small = min(d["lrs"])
        bal = statistics.median(final_drift(rows, network, "fa", "sgd", "balancedness", small))
        fa = statistics.median(final_drift(rows, network, "fa", "sgd", "fa_law", small))
        out.append((f"GD's balancedness is not conserved under FA ({network} net)",
                    "not in the abstract (which draws parallels between FA and GD); our derivation",
                    f"drift {_g(bal)} under FA at lr {small:g}, against {_g(fa)} for FA's own law"))
    inner = select(rows, part="alignment", quantity="inner")
    sums0 = [r["value"] for r in select(rows, part="alignment", quantity="invariant_sum", step=0)]
    sums = [r["value"] for r in select(rows, part="alignment", quantity="invariant_sum")]
    grow = _monotone_fraction(rows, "inner")
    cos_grow = _monotone_fraction(rows, "cosine")
    cosines = [r["value"] for r in select(rows, part="alignment", quantity="cosine")]
    out.append(("⟨W_l, B_l⟩ ≥ 0 from an init with Σ_i c_(l-1,i) ≤ 0, growing with ‖W_(l-1)‖² + ‖b_(l-1)‖²",
                "sufficient conditions for layer-wise alignment in ReLU networks (abstract); this "
                "condition, 2⟨W_l, B_l⟩ = ‖W_(l-1)‖² + ‖b_(l-1)‖² − Σ_i c_(l-1,i), is our derivation",
                f"min ⟨W,B⟩ over time, layers and {len(a['seeds'])} seeds {_g(min(r['value'] for r in inner))}; "
                f"⟨W,B⟩ rises with the norm in {grow:.0%} of recorded intervals; Σc from ≤ {_g(max(sums0))} at "
                f"init to ≤ {_g(max(sums))} (SGD's O(lr) drift, lr {a['lr']:g})"))
    out.append(("The cosine ∠(W_l, B_l) is what grows", "not in the abstract; the law as we derive it bounds ⟨W, B⟩, not the angle",
                f"cosine between {_g(min(cosines))} and {_g(max(cosines))}, rising in {cos_grow:.0%} of "
                "recorded intervals"))
    for rule in m["rules"]:
        dist = {s: statistics.median(r["value"] for r in select(rows, part="min_norm", rule=rule, init_scale=s,
                                                                 quantity="distance"))
                for s in m["init_scales"]}
        worst = max(r["value"] for r in select(rows, part="min_norm", rule=rule, quantity="relative_loss"))
        name = "FA" if rule == "fa" else "GD (bp)"
        out.append((f"{name} reaches the minimum-norm solution Y X^+ from a small init (2-layer linear, "
                    f"d={m['d']}, N={m['samples']}, h={m['hidden']})",
                    ("convergence to minimum-norm solutions (abstract); the dependence on the "
                     "init scale is our derivation" if rule == "fa" else
                     "known for gradient descent from a small init; the reference for FA"),
                    "relative distance " + ", ".join(f"{_g(v)} at init {s:g}" for s, v in dist.items())
                    + f" (median of {len(m['seeds'])} seeds; every run's loss / ½‖Y‖² ≤ {_g(worst)})"))
    if "fa" in m["rules"]:
        smallest = min(m["init_scales"])
        angles = [r["value"] for r in select(rows, part="min_norm", rule="fa", init_scale=smallest, quantity="angle")]
        one_minus = max(2 * math.sin(math.radians(t) / 2) ** 2 for t in angles)
        out.append((f"cos(W_2, B_2) → 1 for {'scalar' if m['outputs'] == 1 else str(m['outputs']) + '-d'} output",
                    "not in the abstract; our derivation",
                    f"1 − cos ≤ {_g(one_minus)} at init {smallest:g} ({len(angles)} seeds)"))
    return out


def _monotone_fraction(rows, quantity) -> float:
    """Fraction of consecutive recorded intervals (per seed and layer) where ``quantity`` rises."""
    series = {}
    for r in select(rows, part="alignment", quantity=quantity):
        series.setdefault((r["seed"], r["layer"]), []).append((r["step"], r["value"]))
    ups = total = 0
    for points in series.values():
        values = [v for _, v in sorted(points)]
        ups += sum(b > a for a, b in zip(values, values[1:]))
        total += len(values) - 1
    return ups / total if total else math.nan


def _curve(rows, **match):
    """{seed: (times, values)} sorted by time."""
    out = {}
    for r in select(rows, **match):
        out.setdefault(r["seed"], []).append((r["time"], r["value"]))
    return {s: tuple(zip(*sorted(v))) for s, v in out.items()}


def drift_figure(rows, settings):
    """(a) drift against time: FA's law and balancedness under FA, balancedness under GD."""
    plt = pyplot()
    d = settings["drift"]
    nets = d["networks"]
    fig, axes = plt.subplots(len(nets), 2, figsize=(10, 3.6 * len(nets)), squeeze=False, sharey=True)
    colors = plt.cm.viridis([i / max(1, len(d["lrs"])) for i in range(len(d["lrs"]))])
    for i, net in enumerate(nets):
        for j, rule in enumerate(("fa", "bp")):
            ax = axes[i][j]
            quantities = [("fa_law", "-"), ("balancedness", "--")] if rule == "fa" else [("balancedness", ":")]
            for quantity, style in quantities:
                for lr, color in zip(sorted(d["lrs"], reverse=True), colors):
                    for k, (t, v) in enumerate(_curve(rows, part="drift", network=net, rule=rule, method="sgd",
                                                      quantity=quantity, lr=lr).values()):
                        ax.plot(t[1:], v[1:], style, color=color, lw=1.2,
                                label=f"{quantity}, lr {lr:g}" if k == 0 else None)
                for k, (t, v) in enumerate(_curve(rows, part="drift", network=net, rule=rule, method="flow",
                                                  quantity=quantity).values()):
                    ax.plot(t[1:], [max(x, 1e-17) for x in v[1:]], style, color="black", lw=1.5,
                            label=f"{quantity}, gradient flow" if k == 0 else None)
            ax.set_yscale("log")
            ax.set_title(f"{net} network, trained by {'FA' if rule == 'fa' else 'GD (bp)'}")
            ax.set_xlabel("time t = lr × steps")
            if j == 0:
                ax.set_ylabel("relative drift ‖C(t) − C(0)‖ / ‖C(0)‖")
            ax.legend(fontsize=7)
    fig.suptitle("(a) FA's invariants drift O(lr); GD's balancedness is not FA's law")
    fig.tight_layout()
    return fig


def alignment_figure(rows, settings):
    """(b) ⟨W_l, B_l⟩ and cos ∠(W_l, B_l) against ‖W_(l-1)‖² + ‖b_(l-1)‖²."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    norm = {(r["seed"], r["step"], r["layer"]): r["value"] for r in select(rows, part="alignment",
                                                                          quantity="norm_below")}
    layers = sorted({r["layer"] for r in select(rows, part="alignment", quantity="inner")})
    colors = dict(zip(layers, plt.cm.tab10.colors))
    for quantity, ax in (("inner", left), ("cosine", right)):
        series = {}
        for r in select(rows, part="alignment", quantity=quantity):
            series.setdefault((r["layer"], r["seed"]), []).append((norm[(r["seed"], r["step"], r["layer"])], r["step"],
                                                                  r["value"]))
        for k, ((layer, seed), points) in enumerate(sorted(series.items())):
            points.sort(key=lambda p: p[1])
            ax.plot([p[0] for p in points], [p[2] for p in points], "-", color=colors[layer], lw=1, alpha=0.8,
                    label=f"layer {results.cell_text(layer)}" if seed == min(s for (ly, s) in series if ly == layer) else None)
        ax.set_xscale("log")
        ax.set_xlabel("‖W_(l-1)‖² + ‖b_(l-1)‖²")
    xs = sorted(norm.values())
    left.plot(xs, [x / 2 for x in xs], "k--", lw=1, label="lower bound (‖W_(l-1)‖² + ‖b‖²)/2")
    left.set_yscale("log")
    left.set_ylabel("⟨W_l, B_l⟩ (guaranteed ≥ 0, grows)")
    right.set_ylabel("cos ∠(W_l, B_l) (not monotone)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle("(b) layer-wise alignment from a small init (one line per seed)")
    fig.tight_layout()
    return fig


def min_norm_figure(rows, settings):
    """(c) distance to Y X^+ and 1 − cos ∠(W_2, B_2) against the init scale."""
    plt = pyplot()
    m = settings["min_norm"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for rule, marker in (("fa", "o"), ("bp", "s")):
        if rule not in m["rules"]:
            continue
        picked = select(rows, part="min_norm", rule=rule, quantity="distance")
        left.plot([r["init_scale"] for r in picked], [r["value"] for r in picked], marker, alpha=0.6,
                  label="FA" if rule == "fa" else "GD (bp)")
        med = [statistics.median(r["value"] for r in picked if r["init_scale"] == s) for s in sorted(m["init_scales"])]
        left.plot(sorted(m["init_scales"]), med, "-", color=left.lines[-1].get_color())
    if "fa" in m["rules"]:
        picked = select(rows, part="min_norm", rule="fa", quantity="angle")
        right.plot([r["init_scale"] for r in picked],
                   [max(2 * math.sin(math.radians(r["value"]) / 2) ** 2, 1e-17) for r in picked], "o", label="FA")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("init scale of W (B at its Xavier scale)")
        ax.legend(fontsize=7)
    left.set_ylabel("‖W_2 W_1 − Y X^+‖ / ‖Y X^+‖")
    right.set_ylabel("1 − cos ∠(W_2, B_2)")
    fig.suptitle(f"(c) minimum-norm solution: d={m['d']}, N={m['samples']}, h={m['hidden']}, "
                 f"{m['outputs']} output(s)")
    fig.tight_layout()
    return fig


FIGURES = (("drift.png", drift_figure), ("alignment.png", alignment_figure), ("min_norm.png", min_norm_figure))


def write_figures(out, rows, settings) -> list[str]:
    """Draw and write the three figures; returns their file names."""
    for name, draw in FIGURES:
        save_png(draw(rows, settings), out / name)
    return [name for name, _ in FIGURES]


def table_markdown(table) -> str:
    """The claims as a Markdown table."""
    lines = ["| claim | paper | ours |", "|---|---|---|"]
    lines += [f"| {c} | {p} | {o} |" for c, p, o in table]
    return "\n".join(lines)


def excerpt(out, text: str) -> Excerpt:
    """The table ``text`` names of the study in ``out``: ``claims``, the report's claims table."""
    kind, options = parse(text)
    if kind != "claims" or options:
        raise ConfigError(f"excerpt {text!r}: a {KIND} study has one table, 'claims' (no options)")
    out = Path(out)
    tree, _ = results.read_spec(out)
    if not tree or not (out / MEASUREMENTS).is_file():
        raise ConfigError(f"{out}: no spec.toml and measurements.csv here; give the folder a "
                          f"{KIND} study wrote (biofa run ... --out DIR)")
    settings = from_dict(tree, source=str(out / results.SPEC_NAME)).settings
    table = claims(results.read_csv(out / MEASUREMENTS)[1], settings)
    return Excerpt(["claim", "paper", "ours"], [list(row) for row in table])


def write_report(out) -> tuple[Path, list[tuple[str, str, str]]]:
    """Write the figures and ``report.md`` of the study in ``out`` from its files alone
    (``spec.toml``, ``measurements.csv``, ``timings.json``), so ``biofa report DIR`` regenerates
    them; returns the report's path and the claims table."""
    out = Path(out)
    tree, quick = results.read_spec(out)
    if not tree or not (out / MEASUREMENTS).is_file():
        raise ConfigError(f"{out}: no spec.toml and measurements.csv here; give the folder a "
                          f"{KIND} study wrote (biofa run ... --out DIR)")
    spec = from_dict(tree, source=str(out / results.SPEC_NAME))
    rows = results.read_csv(out / MEASUREMENTS)[1]
    table = claims(rows, spec.settings)
    figures = write_figures(out, rows, spec.settings)
    parts = [f"# {spec.name}{' (--quick)' if quick else ''}", ""]
    if spec.description:
        parts += [spec.description.strip(), ""]
    parts += ["Conservation laws of feedback alignment (Robertson & Koyejo 2023): what the paper claims "
              "beside what this run measured (float64, full-batch; settings in spec.toml, every value in "
              "measurements.csv).", "", table_markdown(table), ""]
    parts += [f"![{name}]({name})" for name in figures] + [""]
    timings = json.loads((out / TIMINGS).read_text()) if (out / TIMINGS).is_file() else {}
    if timings:
        parts += ["Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
                  + f" (total {sum(timings.values()):.1f} s).", ""]
    path = out / "report.md"
    results.atomic_write_text(path, "\n".join(parts))
    return path, table
