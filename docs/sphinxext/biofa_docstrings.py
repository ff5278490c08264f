"""Sphinx extension: render biofa's compact parameter lists the way they read.

Many biofa docstrings write a parameter as one line, ``name : what it is``, in the numpydoc
position of the type. napoleon would print that description as a type in parentheses, and a
wrapped line half as type, half as description. Before napoleon runs, this hook moves such a
description (a line that is long or ends like a sentence) below the name, where numpydoc puts
descriptions. Short entries (``size : int > 0``) stay types. Docstrings are not changed on disk.
"""

from __future__ import annotations

import re

SECTIONS = {"parameters", "other parameters", "attributes", "keyword arguments", "params"}
FIELD = re.compile(r"^(?P<indent>\s*)(?P<names>\*{0,2}[A-Za-z_][\w]*(?:\s*,\s*\*{0,2}[A-Za-z_][\w]*)*) : (?P<rest>.+)$")


def _is_description(rest: str) -> bool:
    rest = rest.rstrip()
    return len(rest) > 50 or rest.endswith((".", ";", ",", ":"))


def split_compact_fields(lines: list[str]) -> list[str]:
    """Return ``lines`` with compact ``name : description`` fields rewritten as numpydoc."""
    out: list[str] = []
    section = None
    base = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        stripped = line.strip()
        if stripped and nxt.strip() and set(nxt.strip()) == {"-"} and len(nxt.strip()) >= 3:
            section = stripped.lower()
            base = len(line) - len(line.lstrip())
            out.extend([line, nxt])
            i += 2
            continue
        if section in SECTIONS and stripped:
            indent = len(line) - len(line.lstrip())
            if indent < (base or 0):
                section = None
            match = FIELD.match(line) if section in SECTIONS and indent == base else None
            if match and _is_description(match["rest"]):
                out.append(match["indent"] + match["names"])
                out.append(match["indent"] + "    " + match["rest"])
                i += 1
                continue
        out.append(line)
        i += 1
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = split_compact_fields(lines)


def setup(app):
    # before napoleon (priority 500) turns the numpydoc sections into fields
    app.connect("autodoc-process-docstring", _process, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
