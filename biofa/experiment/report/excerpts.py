"""Tables for documents, excerpted from a study's record: the README and the docs print these,
and ``tools/doc_tables.py`` checks that every printed copy still equals what its record gives.

An excerpt is named by a short text, the same on the command line (``biofa report DIR --table
"selection rows=feedback columns=sign"``) and in a document's marker::

    <!-- biofa-table: records/quickstart selection rows=feedback columns=sign -->

The kinds, for a grid study (every number from :func:`~biofa.experiment.report.summary.analyse`,
so they equal ``report.md``'s):

``selection rows=K [columns=K2[,K3]] [lr=no] [compare=no] [where=K:V]``
    one row per value of ``K``; per value of ``K2`` (or combination of ``K2,K3``; one column
    without ``columns``) the candidate
    chosen on validation (``lr=no`` leaves it out) and the test score at the best validation epoch
    as mean [95 % t interval] (``*`` marks a choice at an end of its searched range); then every
    declared comparison on ``K2`` within the row: the paired difference [95 % interval] and its
    Holm-adjusted p.
``comparisons [key=K] [a=V] [b=V] [where=K:V]``
    declared comparisons *b − a*: pairs, difference [95 % interval], d_z, Holm-adjusted p.
``layers metric=M [where=K:V] [digits=N] [epoch=E]``
    a per-layer metric (``weight_alignment``, ``update_alignment``, ``norm_ratio``, ``nse``) at the
    final epoch (or at epoch ``E``; 0 is the initialisation) of the reported runs, mean ± sd over
    seeds.
``tasks``
    a study on cognitive tasks: the report's table of criteria met, trials to criterion, test
    percent correct and psychometric fits (:mod:`biofa.experiment.report.tasks`).

A conservation-laws study has its own kind, ``claims`` (its report's table), in
:mod:`biofa.experiment.conservation.report`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from ..results import condition
from . import tasks
from .render import interval_text, mean_sd, p_text, read_study
from .summary import analyse, final_layer_values, reported


@dataclass
class Excerpt:
    """A table: a header and rows of cell texts, printable as Markdown or as an RST list-table."""

    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        def line(cells):
            return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"
        return "\n".join([line(self.header), "| " + " | ".join("---" for _ in self.header) + " |",
                          *map(line, self.rows)])

    def rst(self, widths: list[int] | None = None) -> str:
        lines = [".. list-table::", "   :header-rows: 1"]
        if widths:
            lines.append("   :widths: " + " ".join(map(str, widths)))
        lines.append("")
        for row in [self.header, *self.rows]:
            for i, cell in enumerate(row):
                lines.append(("   * - " if i == 0 else "     - ") + (str(cell) or r"\ "))
        return "\n".join(lines)


def parse(text: str) -> tuple[str, dict[str, str]]:
    """``"selection rows=feedback columns=sign"`` -> ``("selection", {"rows": ..., ...})``."""
    words = shlex.split(text)
    if not words:
        raise ConfigError("an excerpt needs a kind: selection, comparisons, layers or claims")
    options = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            raise ConfigError(f"excerpt {text!r}: {word!r} is not KEY=VALUE")
        options[key] = value
    return words[0], options


def excerpt(folder: str | Path, text: str) -> Excerpt:
    """The excerpt ``text`` (see the module docstring) of the grid study or record in ``folder``
    (:func:`biofa.experiment.kinds.excerpt` dispatches on the study's kind)."""
    kind, options = parse(text)
    folder = Path(folder)
    makers = {"selection": selection, "comparisons": comparisons, "layers": layers, "tasks": task_table}
    if kind not in makers:
        raise ConfigError(f"excerpt {text!r}: a grid study has no {kind!r} table; expected one of "
                          f"{', '.join(makers)}")
    study = read_study(folder)
    study["summary"] = analyse(study)
    try:
        return makers[kind](study, **options)
    except TypeError as err:
        raise ConfigError(f"excerpt {text!r}: {err}") from None


def _where(study: dict, where: str | None) -> dict[str, str]:
    if not where:
        return {}
    out = {}
    for item in where.split(","):
        key, colon, value = item.partition(":")
        if not colon or key not in study["conditions"]:
            raise ConfigError(f"where={where!r}: expected KEY:VALUE with KEY one of "
                              f"{', '.join(study['conditions'])}")
        out[key] = value
    return out


def _matches(keys: list[str], cond: tuple, where: dict[str, str]) -> bool:
    return all(cond[keys.index(k)] == v for k, v in where.items())


def _key(study: dict, name: str) -> str:
    if name not in study["conditions"]:
        raise ConfigError(f"{name!r} is not a condition key of {study['meta']['name']}; expected one of "
                          f"{', '.join(study['conditions'])}")
    return name


def _short(column: str) -> str:
    return column.rpartition(".")[2]


def selection(study: dict, rows: str, columns: str | None = None, lr: str = "yes", compare: str = "yes",
              where: str | None = None) -> Excerpt:
    """One row per value of ``rows``; per value of ``columns`` (none: one column) the choice and
    the test score."""
    keys, summary = study["conditions"], study["summary"]
    row_key = _key(study, rows)
    col_keys = [_key(study, c) for c in columns.split(",")] if columns else []
    chosen = _where(study, where)
    search = list(study.get("search") or {}) if lr == "yes" else []
    unit = " %" if summary.classification else ""
    digits = 1 if summary.classification else 4
    conds = [c for c in summary.conditions if _matches(keys, c, chosen)]
    row_values = list(dict.fromkeys(c[keys.index(row_key)] for c in conds))
    col_values = list(dict.fromkeys(tuple(c[keys.index(k)] for k in col_keys) for c in conds))
    header = [row_key]
    for value in col_values:
        prefix = ", ".join(value) + ": " if value else ""
        header += [f"{prefix}{_short(s)}" for s in search] + [f"{prefix}test{unit} [95% CI]"]
    found = [c for c in summary.comparisons
             if compare == "yes" and len(col_keys) == 1 and c.key == col_keys[0]
             and all(c.context.get(k) == v for k, v in chosen.items() if k != c.key)]
    pairs = list(dict.fromkeys((c.a, c.b) for c in found))
    points = " points" if summary.classification else ""
    for a, b in pairs:
        header += [f"{b} − {a},{points} [95% CI]", f"{b} − {a}: p (Holm)"]
    body, edge = [], False
    for row_value in row_values:
        cells = [row_value]
        for value in col_values:
            cond = next((c for c in conds if c[keys.index(row_key)] == row_value
                         and tuple(c[keys.index(k)] for k in col_keys) == value), None)
            item = summary.conditions.get(cond) if cond else None
            selected = item.choice.selected if item and item.choice else None
            cells += [selected.values[s] if selected else "–" for s in search]
            text = interval_text(item.test if item else None, digits)
            if item and item.choice and item.choice.edges:
                text, edge = text + "*", True
            cells.append(text)
        for a, b in pairs:
            match = next((c for c in found if (c.a, c.b) == (a, b)
                          and c.context.get(row_key) == row_value), None)
            cells += [interval_text(match.result.diff if match and match.result else None, digits),
                      p_text(match.p_holm) if match else "–"]
        body.append(cells)
    notes = ["* the chosen value lies at an end of the searched range"] if edge else []
    return Excerpt(header, body, notes)


def comparisons(study: dict, key: str | None = None, a: str | None = None, b: str | None = None,
                where: str | None = None) -> Excerpt:
    """The declared comparisons b − a (filtered), with their intervals and Holm-adjusted p."""
    summary = study["summary"]
    chosen = _where(study, where)
    digits = 1 if summary.classification else 4
    unit = ", points" if summary.classification else ""
    rows = []
    for c in summary.comparisons:
        if (key and c.key != key) or (a and c.a != a) or (b and c.b != b):
            continue
        if any(c.context.get(k) != v for k, v in chosen.items() if k != c.key):
            continue
        res = c.result
        rows.append([f"{c.b} − {c.a}", ", ".join(f"{k}={v}" for k, v in c.context.items()) or "all",
                     str(len(c.pairing.seeds)), interval_text(res.diff if res else None, digits),
                     f"{res.d_z:.2f}" if res and res.d_z is not None else "–", p_text(c.p_holm)])
    return Excerpt(["comparison", "within", "pairs", f"difference{unit} [95% CI]", "d_z", "p (Holm)"],
                   rows)


def layers(study: dict, metric: str, where: str | None = None, digits: str = "1",
           epoch: str | None = None) -> Excerpt:
    """``metric`` per layer at the final epoch (or at ``epoch``: 0 is the initialisation) of the
    reported runs, mean ± sd over seeds."""
    shown = reported(study, study["summary"])
    names, per_run = final_layer_values(shown, metric, None if epoch is None else int(epoch))
    if not names:
        raise ConfigError(f"{study['meta']['name']}: no {metric!r} in history.csv")
    keys, chosen = study["conditions"], _where(study, where)
    groups: dict[tuple, list] = {}
    for row in shown["runs"]:
        if row.get("status") == "ok" and _matches(keys, condition(row, keys), chosen):
            groups.setdefault(condition(row, keys), []).append(row)
    shown_keys = [k for k in keys if k not in chosen]
    rows = [[*(cond[keys.index(k)] for k in shown_keys),
             *(mean_sd([per_run.get(r["run_id"], {}).get(x) for r in group], digits=int(digits))
               for x in names)] for cond, group in groups.items()]
    return Excerpt([*shown_keys, *(f"layer {x}" if x.isdigit() else x for x in names)], rows)


def task_table(study: dict) -> Excerpt:
    """The Tasks table of a study on cognitive tasks."""
    rows = tasks.collect(study["out"], study["labels"])
    if not rows:
        raise ConfigError(f"{study['meta']['name']}: not a study on cognitive tasks (no task results)")
    return Excerpt(*tasks.table_cells(study, tasks.chosen_rows(reported(study, study["summary"]), rows)))


def selection_cells(study: dict, record: dict) -> tuple[list[str], list[list[str]]]:
    """Per condition: this study's choice and test score beside the record's (both analysed)."""
    keys = study["conditions"]
    search = list(study.get("search") or {})
    digits = 1 if study["summary"].classification else 4
    unit = " %" if study["summary"].classification else ""

    def side(summary, cond):
        item = summary.conditions.get(cond)
        selected = item.choice.selected if item and item.choice else None
        return ([selected.values[s] if selected else "–" for s in search]
                + [interval_text(item.test if item else None, digits), str(item.n_ok if item else 0)])
    header = [*keys, *(f"this study: {_short(s)}" for s in search), f"this study: test{unit}",
              "this study: seeds", *(f"record: {_short(s)}" for s in search),
              f"record: test{unit} [95% CI]", "record: seeds"]
    rows = [[*cond, *side(study["summary"], cond), *side(record["summary"], cond)]
            for cond in study["summary"].conditions]
    return header, rows
