"""Tables of the benchmarks' committed records (``records/benchmarks/*.json``) for the README and the
docs; ``tools/doc_tables.py`` fills and checks them. Every cell is computed here from the JSON a
benchmark wrote with ``--json`` (its medians over interleaved rounds, and where the record keeps
the per-round values, their interquartile range); nothing is typed by hand.

A table is named by a short text after ``benchmark`` in a document's marker::

    <!-- biofa-table: records/benchmarks/training_step.json benchmark training_step variants=eager,compiled -->

The kinds (``KEY=VALUE`` options in brackets):

``training_step [model=mlp] [variants=eager,compiled] [rules=fa,usf,...]``
    ``bench_training_step.py``: per rule, the median over rounds of (step CPU time / native
    torch's in the same round and variant), with the interquartile range over rounds; the target
    and whether the median meets it, per variant that has a target (eager and compiled), with
    where the interquartile range lies (``yes, IQR within``; ``no, IQR across``: on both sides of
    the target, so the median alone decides).
``training_step_vs_eager [model=mlp] [variants=compiled,bf16] [rules=native,fa,...]``
    the median over rounds of (a configuration's step time / the same configuration's eager
    float32 step time): compiled / eager, bf16 autocast / float32.
``forward_projection``
    ``bench_forward_projection.py``: per constraint, the median CPU time of the projections of all
    layers over the median of the forward without them.
``ddp_buffers``
    ``bench_ddp_buffers.py``: bytes DDP broadcasts per forward, median step wall time, and the
    median over rounds of the step time against the default configuration's in the same round.
``dfa_memory``
    ``bench_dfa_memory.py``: DFA feedback memory against the forward weights.
``rate_dynamics [tasks=PREFIX,...]``
    ``bench_rate_dynamics.py``: ms per Euler step per engine (rows) and task (columns, those whose
    name starts with one of ``tasks``); ``*`` marks an engine run for a shorter model time.
``rate_dynamics_ratios [tasks=PREFIX,...] [targets=all|only]``
    the speed ratios (> 1: biofa faster) with their targets (``targets=only``: the ratios that
    have one).
``rate_dynamics_build [sizes=N,...]``
    brian2's build times, first build in a fresh cache or folder against a cached build (for the
    circuits of ``sizes`` neurons).
``runner_overhead``
    ``bench_runner_overhead.py``: runner / bare loop ratios (median over rounds, interquartile
    range) and the study's fixed cost against their targets (met as for the training step).

Every table's notes name the record's command, load average and commit (from its ``environment``
entry, which ``benchmarks/_record.py`` writes); a record older than that entry gets the command
that writes it again.
"""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

from biofa.errors import ConfigError
from biofa.experiment.report.excerpts import Excerpt

#: How the documents name the feedback rules and configurations of the benchmarks.
RULE_NAMES = {"native": "native torch", "bp": "BP", "fa": "FA", "usf": "uSF", "frsf": "frSF",
              "brsf": "brSF", "dfa": "DFA", "kp": "KP", "wm": "WM"}
VARIANT_NAMES = {"eager": "eager", "compiled": "compiled", "bf16": "bf16 autocast"}
VS_EAGER_NAMES = {"compiled": "compiled / eager", "bf16": "bf16 autocast / float32"}


# -- reading ---------------------------------------------------------------------------------------
def _load(record: Path) -> dict:
    try:
        data = json.loads(Path(record).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"benchmark record {record}: cannot be read ({err.strerror})") from None
    except ValueError as err:
        raise ConfigError(f"benchmark record {record}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"benchmark record {record}: expected a JSON object, got {type(data).__name__}")
    return data


def _field(data, *path, record: Path, kind: str):
    """``data[path[0]][path[1]]...``, or a ConfigError naming the missing field."""
    value = data
    for i, key in enumerate(path):
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            where = ".".join(map(str, path[:i + 1]))
            raise ConfigError(f"benchmark record {record}: the '{kind}' table needs the field {where!r}, "
                              f"which the record does not have (is it a {kind} record?)") from None
    return value


def _options(kind: str, options: dict[str, str], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"benchmark table {kind!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                          f"expected {', '.join(sorted(allowed)) or 'none'}")


def _list(options: dict[str, str], key: str, default: list[str]) -> list[str]:
    return [v for v in options[key].split(",") if v] if key in options else default


# -- numbers as text -------------------------------------------------------------------------------
def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (``statistics.quantiles``, inclusive method)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def median_iqr(values: list[float], digits: int = 2) -> str:
    """``"1.04 (1.02–1.06)"``: the median and the interquartile range."""
    q1, q3 = quartiles(values)
    return f"{statistics.median(values):.{digits}f} ({q1:.{digits}f}–{q3:.{digits}f})"


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, trailing zeros kept ("3.00", "0.0520", "113"),
    without an exponent for usual magnitudes."""
    if abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    text = f"{value:#.{digits}g}"
    if "e" in text:
        return f"{value:.{digits - 1}e}"
    return text.rstrip(".")


def megabytes(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f}" if nbytes >= 1e5 else f"{nbytes / 1e6:.3f}"


def _met(value: float, target: float, at_most: bool = True) -> str:
    return "yes" if (value <= target if at_most else value >= target) else "no"


def met_spread(values: list[float], target: float) -> str:
    """Whether the median is within an upper ``target`` ("yes"/"no"), and where the interquartile
    range lies: wholly within it, wholly outside it, or across it (then the median alone decides,
    and another run on a loaded machine may decide otherwise)."""
    q1, q3 = quartiles(values)
    met = _met(statistics.median(values), target)
    spread = "IQR within" if q3 <= target else "IQR outside" if q1 > target else "IQR across"
    return f"{met}, {spread}"



#: The benchmark script that writes each kind's record.
SCRIPTS = {"training_step": "bench_training_step.py", "training_step_vs_eager": "bench_training_step.py",
           "forward_projection": "bench_forward_projection.py", "ddp_buffers": "bench_ddp_buffers.py",
           "dfa_memory": "bench_dfa_memory.py", "rate_dynamics": "bench_rate_dynamics.py",
           "rate_dynamics_ratios": "bench_rate_dynamics.py", "rate_dynamics_build": "bench_rate_dynamics.py",
           "runner_overhead": "bench_runner_overhead.py"}
_ROOT = Path(__file__).resolve().parents[1]


def _shown(record: Path) -> str:
    """The record's path as the documents name it: relative to the repository where it lies inside."""
    record = Path(record)
    try:
        return record.resolve().relative_to(_ROOT).as_posix()
    except ValueError:
        return record.as_posix()


def provenance(data: dict, record: Path | None = None, kind: str | None = None) -> list[str]:
    """A note naming the record's command, commit, machine and load (its ``environment``). A record
    written before benchmarks kept their environment gets the command that writes it again."""
    env = data.get("environment")
    if not isinstance(env, dict):
        meta = data.get("meta") or {}
        load = ""
        if "loadavg_1min_before" in meta:
            load = (f"; load average (1 min) {meta['loadavg_1min_before']:.1f} before, "
                    f"{meta['loadavg_1min_after']:.1f} after")
        again = ""
        if record is not None and kind in SCRIPTS:
            again = f" ``python benchmarks/{SCRIPTS[kind]} --json {_shown(record)}`` writes it again."
        return [f"Recorded before benchmarks recorded their environment: torch {meta.get('torch', '?')}, "
                f"{meta.get('cpus', '?')} CPUs{load}.{again}"]
    commit = str(env.get("git_commit", "unknown"))[:9]
    if env.get("git_modified"):
        commit += " (with local changes)"
    return [f"Recorded with ``{env.get('command', '?')}`` at commit {commit}: {env.get('cpu', '?')}, "
            f"{env.get('cpus', '?')} CPUs, torch {env.get('torch', '?')}, load average (1 min) "
            f"{env.get('loadavg_1min_before', float('nan')):.1f} before and "
            f"{env.get('loadavg_1min_after', float('nan')):.1f} after, {env.get('wall_s', '?')} s."]


# -- training step ---------------------------------------------------------------------------------
def _training_rows(data: dict, record: Path, kind: str, model: str) -> list[dict]:
    results = _field(data, "results", record=record, kind=kind)
    for result in results:
        if isinstance(result, dict) and result.get("model") == model:
            return _field(result, "rows", record=record, kind=kind)
    raise ConfigError(f"benchmark record {record}: no results for model {model!r}; it has "
                      f"{', '.join(str(r.get('model')) for r in results if isinstance(r, dict)) or 'none'}")


def _row(rows: list[dict], config: str, variant: str, record: Path, kind: str) -> dict:
    for row in rows:
        if row.get("config") == config and row.get("variant") == variant:
            return row
    raise ConfigError(f"benchmark record {record}: the '{kind}' table needs config {config!r} in variant "
                      f"{variant!r}, which the record does not have")


def training_step(data: dict, record: Path, model: str = "mlp", variants: str = "eager,compiled",
                  rules: str | None = None) -> Excerpt:
    kind = "training_step"
    rows = _training_rows(data, record, kind, model)
    variants_ = [v for v in variants.split(",") if v]
    configs = ([r for r in rules.split(",") if r] if rules
               else list(dict.fromkeys(r["config"] for r in rows if r.get("config") != "native")))
    targeted = [v for v in variants_ if v in ("eager", "compiled")]
    header = ["rule", *(VARIANT_NAMES.get(v, v) for v in variants_)]
    if targeted:
        header += ["target", *(f"met ({VARIANT_NAMES[v]})" for v in targeted)]
    table = []
    for config in configs:
        cells = [RULE_NAMES.get(config, config)]
        found = {v: _row(rows, config, v, record, kind) for v in variants_}
        for v in variants_:
            cells.append(median_iqr(_field(found[v], "ratio_rounds", record=record, kind=kind)))
        if targeted:
            target = found[targeted[0]].get("target")
            cells.append("–" if target is None else f"≤ {target:.2f}")
            for v in targeted:
                cells.append("–" if target is None else met_spread(found[v]["ratio_rounds"], target))
        table.append(cells)
    first = rows[0]
    notes = [f"Step CPU time / native torch's in the same round and variant: median over "
             f"{first.get('rounds', '?')} interleaved rounds (interquartile range over rounds); batch "
             f"{first.get('batch', '?')}, {data.get('meta', {}).get('threads', '?')} thread(s). Met: the "
             f"median is within the target; IQR within, outside or across: the whole interquartile range is "
             f"within the target, outside it, or on both sides (the median alone decides)."]
    return Excerpt(header, table, notes + provenance(data, record, kind))


def training_step_vs_eager(data: dict, record: Path, model: str = "mlp", variants: str = "compiled,bf16",
                           rules: str | None = None) -> Excerpt:
    kind = "training_step_vs_eager"
    rows = _training_rows(data, record, kind, model)
    variants_ = [v for v in variants.split(",") if v]
    configs = ([r for r in rules.split(",") if r] if rules
               else list(dict.fromkeys(r["config"] for r in rows)))
    header = ["configuration", *(VS_EAGER_NAMES.get(v, v) for v in variants_)]
    table = []
    for config in configs:
        cells = [RULE_NAMES.get(config, config)]
        for v in variants_:
            values = _field(_row(rows, config, v, record, kind), "vs_eager_rounds", record=record, kind=kind)
            if not values:
                raise ConfigError(f"benchmark record {record}: {config} {v} has no eager step in its rounds")
            cells.append(median_iqr(values))
        table.append(cells)
    notes = [f"A configuration's step CPU time / its own eager float32 step time in the same round: "
             f"median over {rows[0].get('rounds', '?')} interleaved rounds (interquartile range over rounds)."]
    return Excerpt(header, table, notes + provenance(data, record, kind))


# -- forward projection ----------------------------------------------------------------------------
def _constraint(row: dict) -> str:
    parts = [f"sign={row['sign']}" if row.get("sign") else "", f"norm={row['norm']}" if row.get("norm") else ""]
    return ", ".join(p for p in parts if p)


def forward_projection(data: dict, record: Path) -> Excerpt:
    kind = "forward_projection"
    rows = _field(data, "rows", record=record, kind=kind)
    for row in rows:
        for key in ("model", "median_projection_s", "median_forward_s"):
            _field(row, key, record=record, kind=kind)
    models = list(dict.fromkeys(r["model"] for r in rows))
    constraints = list(dict.fromkeys(_constraint(r) for r in rows))
    header = ["constraint", *(f"{m}: projection / forward" for m in models)]
    by = {(_constraint(r), r["model"]): r for r in rows}
    table = []
    for c in constraints:
        cells = [c]
        for m in models:
            r = by.get((c, m))
            cells.append("–" if r is None else
                         f"{r['median_projection_s'] / r['median_forward_s']:.3f} "
                         f"({1e3 * r['median_projection_s']:.2f} / {1e3 * r['median_forward_s']:.2f} ms)")
        table.append(cells)
    notes = [f"Median CPU time (one thread, batch 128) of the projections of all layers over the median of the "
             f"forward without them, {rows[0].get('rounds', '?')} interleaved rounds."]
    return Excerpt(header, table, notes + provenance(data, record, kind))


# -- DDP buffers -----------------------------------------------------------------------------------
def ddp_buffers(data: dict, record: Path) -> Excerpt:
    kind = "ddp_buffers"
    rows = _field(data, "rows", record=record, kind=kind)
    default = next((r for r in rows if r.get("config") == "default"), None)
    if default is None:
        raise ConfigError(f"benchmark record {record}: the 'ddp_buffers' table needs the 'default' row")
    reference = _field(default, "step_s", record=record, kind=kind)
    table = []
    for row in rows:
        steps = _field(row, "step_s", record=record, kind=kind)
        per_round = [a / b for a, b in zip(steps, reference)]
        table.append([f"{RULE_NAMES.get(row.get('rule'), row.get('rule'))}, {row['config']}",
                      f"{_field(row, 'bytes_per_forward', record=record, kind=kind):,d}",
                      f"{1e3 * statistics.median(steps):.1f}", median_iqr(per_round)])
    header = ["configuration", "bytes broadcast per forward", "median step (ms, wall)",
              "step / default's in the same round"]
    meta = data.get("meta", {})
    notes = [f"{meta.get('processes', 2)} gloo processes, global batch {meta.get('global_batch', 128)}; step wall "
             f"time (forward, backward with the all-reduce, SGD step), {len(reference)} rounds in which the "
             f"configurations alternate; median (interquartile range over rounds)."]
    return Excerpt(header, table, notes + provenance(data, record, kind))


# -- DFA memory ------------------------------------------------------------------------------------
def dfa_memory(data: dict, record: Path) -> Excerpt:
    kind = "dfa_memory"
    rows = _field(data, "rows", record=record, kind=kind)
    header = ["input", "naive dense B (MB)", "biofa channel form (MB)", "forward weights (MB)",
              "biofa / weights", "naive / weights", "target: biofa < weights"]
    table = []
    for row in rows:
        naive, mine, weights = (_field(row, k, record=record, kind=kind)
                                for k in ("naive_dense_bytes", "biofa_bytes", "forward_weight_bytes"))
        size = _field(row, "input", record=record, kind=kind)
        table.append([f"{size}×{size}", megabytes(naive), megabytes(mine), megabytes(weights),
                      f"{mine / weights:.2f}", f"{naive / weights:.1f}", "met" if mine < weights else "missed"])
    notes = [f"{data.get('model', '?')} with {data.get('n_classes', '?')} classes, float32, the layers that "
             f"receive an error (1 MB = 10^6 bytes)."]
    return Excerpt(header, table, notes + provenance(data, record, kind))


# -- rate dynamics ---------------------------------------------------------------------------------
def _tasks(rows: list[dict], tasks: str | None) -> list[str]:
    names = list(dict.fromkeys(r["task"] for r in rows))
    if tasks:
        prefixes = [t for t in tasks.split(",") if t]
        names = [n for n in names if any(n.startswith(p) for p in prefixes)]
    return names


def rate_dynamics(data: dict, record: Path, tasks: str | None = None) -> Excerpt:
    kind = "rate_dynamics"
    rows = _field(data, "rows", record=record, kind=kind)
    for row in rows:
        for key in ("task", "engine", "ms_per_step", "shortened"):
            _field(row, key, record=record, kind=kind)
    names = _tasks(rows, tasks)
    if not names:
        raise ConfigError(f"benchmark record {record}: no task starts with {tasks!r}")
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    by = {(r["task"], r["engine"]): r for r in rows}
    table = []
    for engine in engines:
        cells = [engine]
        for task in names:
            r = by.get((task, engine))
            cells.append("–" if r is None else significant(r["ms_per_step"]) + ("*" if r["shortened"] else ""))
        table.append(cells)
    repeats = sorted({r.get("repeats") for r in rows if r["task"] in names})
    notes = [f"ms per Euler step, median of {'/'.join(map(str, repeats))} interleaved repeat(s); * this engine "
             f"ran a shorter model time than the others, scaled per step."]
    return Excerpt(["engine", *(f"{t} (ms/step)" for t in names)], table,
                   notes + provenance(data, record, kind))


def rate_dynamics_ratios(data: dict, record: Path, tasks: str | None = None,
                         targets: str = "all") -> Excerpt:
    kind = "rate_dynamics_ratios"
    if targets not in ("all", "only"):
        raise ConfigError(f"benchmark table {kind!r}: targets={targets!r}; expected all or only")
    rows = _field(data, "rows", record=record, kind=kind)
    ratios = _field(data, "ratios", record=record, kind=kind)
    names = set(_tasks(rows, tasks))
    by = {(r["task"], r["engine"]): r["ms_per_step"] for r in rows}
    table = []
    for item in ratios:
        task, text, target = (_field(item, k, record=record, kind=kind) for k in ("task", "ratio", "target"))
        if task not in names or (targets == "only" and target is None):
            continue
        other, mine = (s.strip() for s in text.split("/"))
        value = by[task, other] / by[task, mine]  # from the medians, as the benchmark computes it
        table.append([task, f"{other} / {mine}", f"{value:.2f}",
                      "–" if target is None else f"≥ {target:g}",
                      "–" if target is None else ("met" if value >= target else "missed")])
    notes = ["Ratio of the median ms per step (> 1: biofa faster)."]
    return Excerpt(["task", "time ratio", "value", "target", "met"], table,
                   notes + provenance(data, record, kind))


def rate_dynamics_build(data: dict, record: Path, sizes: str | None = None) -> Excerpt:
    kind = "rate_dynamics_build"
    rows = _field(data, "compile", record=record, kind=kind)
    if sizes:
        rows = [r for r in rows if str(_field(r, "N", record=record, kind=kind)) in sizes.split(",")]
    table = [[str(_field(r, "N", record=record, kind=kind)), _field(r, "target", record=record, kind=kind),
              f"{_field(r, 'first_build_s', record=record, kind=kind):.1f}",
              f"{_field(r, 'cached_build_s', record=record, kind=kind):.2f}"] for r in rows]
    notes = ["brian2 build time (s): the first build in a fresh cache or folder, then the same model again."]
    return Excerpt(["N", "brian2 target", "first build (s)", "cached (s)"], table,
                   notes + provenance(data, record, kind))


# -- runner overhead -------------------------------------------------------------------------------
def runner_overhead(data: dict, record: Path) -> Excerpt:
    kind = "runner_overhead"
    rounds = _field(data, "rows", record=record, kind=kind)
    studies = _field(data, "studies", record=record, kind=kind)
    target = _field(data, "target", record=record, kind=kind)
    fixed_target = _field(data, "fixed_target_s", record=record, kind=kind)

    def column(items, key):
        return [_field(item, key, record=record, kind=kind) for item in items]

    wall = column(rounds, "wall_ratio")
    fixed = column(studies, "fixed_s")
    table = [
        ["runner / bare loop, wall time", median_iqr(wall), f"≤ {target:g}",
         met_spread(wall, target)],
        ["runner / bare loop, CPU time", median_iqr(column(rounds, "ratio")), "–", "–"],
        ["runner checkpointing every epoch / bare loop, wall time",
         median_iqr(column(rounds, "every_epoch_wall_ratio")), "–", "–"],
        ["a two-run study's fixed cost (s)", median_iqr(fixed), f"≤ {fixed_target:g}",
         met_spread(fixed, fixed_target)],
        ["a two-run study's wall time (s)", median_iqr(column(studies, "study_wall_s"), 1), "–", "–"],
        ["a process that only imports torch (s)", median_iqr(column(studies, "import_torch_s")), "–", "–"],
    ]
    meta = data.get("meta", {})
    notes = [f"{meta.get('runs', '?')} runs × {meta.get('epochs', '?')} epochs per side; median over "
             f"{len(rounds)} interleaved rounds, or over {len(studies)} fresh ``biofa run`` processes for the "
             f"study rows (interquartile range). Met: the median is within the target; IQR within, outside or "
             f"across: the whole interquartile range is within the target, outside it, or on both sides."]
    return Excerpt(["measure", "median (IQR)", "target", "met"], table, notes + provenance(data, record, kind))


KINDS = {"training_step": training_step, "training_step_vs_eager": training_step_vs_eager,
         "forward_projection": forward_projection, "ddp_buffers": ddp_buffers, "dfa_memory": dfa_memory,
         "rate_dynamics": rate_dynamics, "rate_dynamics_ratios": rate_dynamics_ratios,
         "rate_dynamics_build": rate_dynamics_build, "runner_overhead": runner_overhead}
_OPTIONS = {"training_step": {"model", "variants", "rules"},
            "training_step_vs_eager": {"model", "variants", "rules"},
            "rate_dynamics": {"tasks"}, "rate_dynamics_ratios": {"tasks", "targets"},
            "rate_dynamics_build": {"sizes"}}


def excerpt(record: str | Path, text: str) -> Excerpt:
    """The table ``text`` (``KIND [KEY=VALUE ...]``, see the module docstring) of the benchmark
    record ``record``."""
    words = shlex.split(text)
    if not words:
        raise ConfigError(f"a benchmark table needs a kind: one of {', '.join(KINDS)}")
    kind = words[0]
    if kind not in KINDS:
        raise ConfigError(f"benchmark table {text!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    options = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            raise ConfigError(f"benchmark table {text!r}: {word!r} is not KEY=VALUE")
        options[key] = value
    _options(kind, options, _OPTIONS.get(kind, set()))
    record = Path(record)
    return KINDS[kind](_load(record), record, **options)
