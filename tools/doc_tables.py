"""Tables in the README and the docs, regenerated from the committed records and checked.

Every table of measured numbers in a document sits between two markers that name its record and
the table (a :mod:`biofa.experiment.report.excerpts` text, or ``benchmark KIND ...`` for a
benchmark's JSON record, see ``benchmarks/tables.py``)::

    <!-- biofa-table: records/quickstart selection rows=feedback columns=sign -->
    | ... |
    <!-- /biofa-table -->

    <!-- biofa-table: records/benchmarks/training_step.json benchmark training_step variants=eager,compiled -->
    <!-- /biofa-table -->

    .. biofa-table: records/moskovitz_signs_norms selection rows=feedback columns=sign,norm widths=10,15

    .. list-table:: ...

    .. /biofa-table

Markdown files get a pipe table, RST files a list-table (``widths=`` sets its column widths);
the lines keep the marker's indentation.

    python tools/doc_tables.py           # check: exit 1 and name every table and cell that differs
    python tools/doc_tables.py --write   # rewrite every table from its record

A table of intervals ("61.0 [59.6, 62.5]") or of a benchmark's medians and interquartile ranges
("1.04 (1.02–1.06)") outside any marker is an error too: a number without its record. The
figures the docs show live in ``docs/_static/reproductions/<study>_<figure>.png`` (Sphinx needs
them inside its source folder): each must be a copy of ``records/<study>/<figure>.png``;
``--write`` copies them.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The documents that may carry tables of measured numbers.
DOCUMENTS = ("README.md", "CONTRIBUTING.md", "experiments/README.md", "records/README.md", "docs/**/*.rst")

_MD_OPEN = re.compile(r"^(\s*)<!-- biofa-table: (\S+) (.+?) -->\s*$")
_MD_CLOSE = re.compile(r"^\s*<!-- /biofa-table -->\s*$")
_RST_OPEN = re.compile(r"^(\s*)\.\. biofa-table: (\S+) (.+?)\s*$")
_RST_CLOSE = re.compile(r"^\s*\.\. /biofa-table\s*$")
#: A cell that holds a mean and its interval, "61.0 [59.6, 62.5]", or a benchmark's median and
#: interquartile range, "1.04 (1.02–1.06)".
_CI = r"-?\d+(?:\.\d+)?\*? \[-?\d+(?:\.\d+)?, -?\d+(?:\.\d+)?\]"  # mean [95% CI]: study reports
_INTERVAL = re.compile(_CI)
#: a result cell of a table: a study interval or a benchmark median (interquartile range)
_RESULT = re.compile(_CI + r"|\d+(?:\.\d+)? \(\d+(?:\.\d+)?–\d+(?:\.\d+)?\)")


@dataclass
class Block:
    """One marked table of a document: lines [start, end) between its markers."""

    path: Path
    line: int          # 1-based line of the opening marker
    indent: str
    record: str
    text: str          # the table's description after the record
    start: int
    end: int
    rst: bool

    @property
    def name(self) -> str:
        return f"{self.record} {self.text}"


#: Where the docs keep copies of records' figures.
FIGURES = "docs/_static/reproductions"


def figure_source(path: Path, root: Path = ROOT) -> Path | None:
    """The record figure ``docs/_static/reproductions/<study>_<figure>.png`` copies (None: no
    record of that name)."""
    for record in sorted((root / "records").iterdir(), key=lambda p: -len(p.name)):
        if path.name.startswith(record.name + "_"):
            return record / path.name[len(record.name) + 1:]
    return None


def figure_problems(root: Path = ROOT) -> list[str]:
    """Figures of the docs that are not a copy of their record's."""
    out = []
    for path in sorted((root / FIGURES).glob("*.png")):
        source = figure_source(path, root)
        if source is None or not source.is_file():
            out.append(f"{path.relative_to(root)}: no record figure records/<study>/<figure>.png "
                       "to copy it from (name it <study>_<figure>.png after its record)")
        elif source.read_bytes() != path.read_bytes():
            out.append(f"{path.relative_to(root)}: differs from {source.relative_to(root)}; run "
                       "python tools/doc_tables.py --write")
    return out


def documents(root: Path = ROOT) -> list[Path]:
    found = []
    for pattern in DOCUMENTS:
        found += sorted(p for p in root.glob(pattern) if "_build" not in p.parts)
    return found


def blocks(path: Path) -> list[Block]:
    """The marked tables of ``path``; a marker without its end is an error."""
    lines = path.read_text(encoding="utf-8").split("\n")
    rst = path.suffix == ".rst"
    opening, closing = (_RST_OPEN, _RST_CLOSE) if rst else (_MD_OPEN, _MD_CLOSE)
    out, i = [], 0
    while i < len(lines):
        match = opening.match(lines[i])
        if match:
            end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
            if end is None:
                raise ValueError(f"{path}:{i + 1}: biofa-table marker without its end marker")
            out.append(Block(path, i + 1, match.group(1), match.group(2), match.group(3), i + 1, end, rst))
            i = end
        i += 1
    return out


def generate(block: Block, root: Path = ROOT) -> list[str]:
    """The lines the block should hold, from its record."""
    from biofa.experiment import kinds
    from biofa.experiment.report.excerpts import Excerpt
    text, widths = block.text, None
    found = re.search(r"\s+widths=(\S+)", text)
    if found:
        widths = [int(w) for w in found.group(1).split(",")]
        text = text[:found.start()] + text[found.end():]
    record = root / block.record
    if text.startswith("benchmark "):
        table: Excerpt = _benchmark_tables(root).excerpt(record, text[len("benchmark "):])
    else:
        table = kinds.excerpt(record, text)
    body = table.rst(widths) if block.rst else table.markdown()
    body_lines = ["", *body.split("\n"), ""]
    if table.notes:  # a leading * would start a list
        body_lines += [*(re.sub(r"^\*", r"\\*", n) for n in table.notes), ""]
    return [block.indent + line if line else "" for line in body_lines]


def _benchmark_tables(root: Path):
    """``benchmarks/tables.py`` of the checkout (benchmarks are scripts, not a package)."""
    import importlib.util
    path = root / "benchmarks" / "tables.py"
    if not path.is_file():
        path = ROOT / "benchmarks" / "tables.py"
    spec = importlib.util.spec_from_file_location("benchmark_tables", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_tables", module)
    spec.loader.exec_module(module)
    return module


def cells(lines: list[str], rst: bool) -> list[list[str]]:
    """The rows of cells of a generated (or hand-edited) table."""
    rows: list[list[str]] = []
    for line in lines:
        s = line.strip()
        if rst:
            if s.startswith("* - "):
                rows.append([s[4:]])
            elif s.startswith("- ") and rows:
                rows[-1].append(s[2:])
        elif s.startswith("|") and not re.fullmatch(r"\|(\s*-+\s*\|)+", s):
            rows.append([c.strip() for c in s.strip("|").split("|")])
    return rows


def differences(block: Block, have: list[str], want: list[str]) -> list[str]:
    """What differs between the document's lines and the record's, cell by cell."""
    if have == want:
        return []
    where = f"{block.path.relative_to(ROOT) if block.path.is_relative_to(ROOT) else block.path}:{block.line}"
    a, b = cells(have, block.rst), cells(want, block.rst)
    head = f"{where}: table '{block.name}'"
    if not b:
        return [f"{head}: the record gives no table"]
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return [f"{head}: the document's table has {len(a)} rows of {[len(r) for r in a][:1]} cells, the "
                f"record's {len(b)} rows of {len(b[0])} cells; run python tools/doc_tables.py --write"]
    out = []
    header = b[0]
    for i, (x, y) in enumerate(zip(a, b)):
        for j, (u, v) in enumerate(zip(x, y)):
            if u != v:
                row = "header" if i == 0 else f"row {i} ({y[0]!r})"
                out.append(f"{head}: {row}, column {header[j]!r}: the document has {u!r}, the record "
                           f"gives {v!r}")
    if not out:
        out.append(f"{head}: the text around the table differs from the record's (notes or layout)")
    return out


def _plain(text: str) -> str:
    """Intervals as the reports write them: ASCII minus, no emphasis."""
    return text.replace("\u2212", "-").replace("\\*", "*")


def _is_result_cell(s: str, rst: bool) -> bool:
    """A table cell whose value is an interval (``- 80.3 [71.5, 89.1]`` in RST, a pipe cell in
    Markdown): a table of results, which must be generated."""
    if rst:
        if not s.startswith(("* - ", "- ")):
            return False
        return bool(_RESULT.match(_plain(s.split("- ", 1)[1].strip())))
    if not s.startswith("|"):
        return False
    return any(_RESULT.match(_plain(cell.strip())) for cell in s.strip("|").split("|"))


def recorded_intervals(root: Path = ROOT) -> set[str]:
    """Every interval printed in a record's report (``records/*/report.md``)."""
    found = set()
    for report in (root / "records").glob("*/report.md"):
        found.update(m.group(0).rstrip("*") for m in _INTERVAL.finditer(_plain(report.read_text())))
    return found


def unmarked(path: Path, recorded: set[str] | None = None) -> list[str]:
    """Problems with the intervals outside marked blocks: a table of them (it must be generated
    from its record), or one quoted in prose that no record's report contains (a typo, or a number
    whose record changed)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    inside = set()
    for block in blocks(path):
        inside.update(range(block.start, block.end))
    rst = path.suffix == ".rst"
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    out = []
    for i, line in enumerate(lines):
        if i in inside:
            continue
        s = line.strip()
        if _is_result_cell(s, rst):
            out.append(f"{where}:{i + 1}: a table of intervals or medians without a biofa-table "
                       f"marker naming its record: {s[:70]!r}")
            continue
        if recorded is None:
            continue
        for m in _INTERVAL.finditer(_plain(s)):
            if m.group(0).rstrip("*") not in recorded:
                out.append(f"{where}:{i + 1}: the interval {m.group(0)!r} is in no record's report "
                           "(quote the record's numbers, or regenerate the record)")
    return out


def check(paths: list[Path] | None = None, root: Path = ROOT) -> list[str]:
    """Every difference between a document's marked tables and their records, and every unmarked
    table of intervals; [] when all agree."""
    problems = []
    recorded = recorded_intervals(root)
    for path in paths if paths is not None else documents(root):
        lines = path.read_text(encoding="utf-8").split("\n")
        for block in blocks(path):
            try:
                want = generate(block, root)
            except Exception as err:  # a missing record or a bad table text: name the block
                problems.append(f"{path}:{block.line}: table '{block.name}': {type(err).__name__}: {err}")
                continue
            problems += differences(block, lines[block.start:block.end], want)
        problems += unmarked(path, recorded)
    if paths is None:
        problems += figure_problems(root)
    return problems


def write(paths: list[Path] | None = None, root: Path = ROOT) -> list[Path]:
    """Rewrite every marked table from its record; returns the files changed. A table whose record
    is missing or cannot give it keeps its lines (``check`` names it)."""
    changed = []
    for path in paths if paths is not None else documents(root):
        lines = path.read_text(encoding="utf-8").split("\n")
        for block in reversed(blocks(path)):
            try:
                lines[block.start:block.end] = generate(block, root)
            except Exception:  # noqa: BLE001 - reported by check()
                continue
        text = "\n".join(lines)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    if paths is None:
        for path in sorted((root / FIGURES).glob("*.png")):
            source = figure_source(path, root)
            if source is not None and source.is_file() and source.read_bytes() != path.read_bytes():
                path.write_bytes(source.read_bytes())
                changed.append(path)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables from their records")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(f"rewrote tables in {path.relative_to(ROOT)}")
    problems = check()
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's biofa, not another one an environment installed
    sys.exit(main())
