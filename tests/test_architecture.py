"""The shape of the package: no import cycles among biofa's modules and no private names imported
across modules (CONTRIBUTING.md, "Imports").

The checker reads the source with :mod:`ast` and runs nothing. Every import counts, at any depth
(inside functions, ``if TYPE_CHECKING:`` blocks, ``try``), relative ones resolved:

* ``import biofa.a.b`` and ``from biofa.a.b import f`` are edges to ``biofa.a.b``;
* ``from biofa.a import b`` is an edge to the submodule ``biofa.a.b`` when there is one, else to
  the package ``biofa.a`` (its ``__init__``), so in ``biofa.x.y``, ``from . import z`` and
  ``from .z import f`` are edges y -> z, while ``from . import f`` (a name the package's
  ``__init__`` defines or re-exports) is an edge y -> x;
* a package's ``__init__`` is a module like any other: a package that imports its submodules and a
  submodule that imports a name from the package make a cycle.

Importing a submodule also runs its parents' ``__init__``; that is not counted (every submodule
would otherwise be in a cycle with its package).

A private name (``_name``, not a dunder) may be imported only from a private module, one with a
component starting with an underscore (``biofa._hooks``, ``biofa.x._impl``): a helper two modules
share is public in the module that defines it (and kept out of the package's ``__all__``) or lives
in a private module.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import biofa

PACKAGE_ROOT = Path(biofa.__file__).resolve().parent
GUIDE = "(see CONTRIBUTING.md)"


@dataclass(frozen=True)
class PrivateImport:
    importer: str
    source: str
    name: str
    line: int

    def message(self) -> str:
        return (f"private import: {self.importer} (line {self.line}) imports {self.name} from "
                f"{self.source}; make it public there (out of the package's __all__) or move it to a "
                f"private module {GUIDE}")


def modules_of(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package in folder ``root`` (``__init__`` is the package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_private_module(module: str) -> bool:
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in module.split("."))


def _is_private_name(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _from_target(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` reads from (None above the top of the tree)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 > len(base) - 1:
        return None
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[PrivateImport]]:
    """The import edges among the modules of the package in ``root``, and its private imports."""
    modules = modules_of(root)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[PrivateImport] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    # the longest prefix that is one of ours (import a.b.c names module a.b.c)
                    parts = alias.name.split(".")
                    for k in range(len(parts), 0, -1):
                        if ".".join(parts[:k]) in modules:
                            edges[module].add(".".join(parts[:k]))
                            break
            elif isinstance(node, ast.ImportFrom):
                target = _from_target(module, is_package, node)
                if target is None or target not in modules:
                    continue  # not one of ours (torch, brian2, ...)
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        edges[module].add(submodule)
                        continue
                    edges[module].add(target)
                    if _is_private_name(alias.name) and not _is_private_module(target) and target != module:
                        private.append(PrivateImport(module, target, alias.name, node.lineno))
    for module in edges:
        edges[module].discard(module)
    return edges, private


def _components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (biofa's own graph code, the
    one circuits use)."""
    from biofa.circuit.graph import components
    names = sorted(edges)
    pairs = [(a, b) for a in names for b in sorted(edges[a]) if b in edges]
    return sorted(sorted(c) for c in components(names, pairs) if len(c) > 1)


def _shortest_cycle(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component``, staying inside it."""
    start, members = component[0], set(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node] & members):
                if child == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")  # pragma: no cover


def cycle_messages(edges: dict[str, set[str]]) -> list[str]:
    messages = []
    for component in _components(edges):
        cycle = _shortest_cycle(edges, component)
        also = "" if len(component) == len(cycle) - 1 else f" (the cycle joins {len(component)} modules: {', '.join(component)})"
        messages.append(f"import cycle: {' -> '.join(cycle)}{also} {GUIDE}")
    return messages


def private_messages(private: list[PrivateImport]) -> list[str]:
    return [p.message() for p in private]


# -- biofa itself ------------------------------------------------------------------------------

def test_no_import_cycles():
    edges, _ = import_graph(PACKAGE_ROOT)
    messages = cycle_messages(edges)
    assert not messages, "\n".join(messages)


def test_no_private_names_imported_across_modules():
    _, private = import_graph(PACKAGE_ROOT)
    messages = private_messages(private)
    assert not messages, "\n".join(messages)


def test_the_graph_sees_the_package():
    """Guard against a checker that passes because it reads nothing."""
    edges, _ = import_graph(PACKAGE_ROOT)
    assert "biofa.circuit.spec" in edges and "biofa.circuit.circuit" in edges["biofa.circuit.spec"]
    assert "biofa.feedback.base" in edges["biofa.feedback"]
    assert "biofa.errors" in edges["biofa.feedback.base"]


# -- the checker on a small package --------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "pkg"


CLEAN = {
    "pkg/__init__.py": "from . import a\nfrom .sub import thing\n",
    "pkg/_util.py": "def _helper():\n    pass\n",
    "pkg/a.py": "from ._util import _helper\nfrom .sub import z\n",
    "pkg/sub/__init__.py": "from .y import thing\n",
    # siblings: y -> z twice (module import and name import), never y -> sub
    "pkg/sub/y.py": "from . import z\nfrom .z import f\nthing = 1\n",
    "pkg/sub/z.py": "import os\ndef f():\n    from .. import _util\n    return os\n",
}


def test_checker_passes_a_clean_package(tmp_path):
    edges, private = import_graph(_write(tmp_path, CLEAN))
    assert cycle_messages(edges) == [] and private == []
    assert edges["pkg.sub.y"] == {"pkg.sub.z"}
    assert edges["pkg.sub.z"] == {"pkg._util"}
    assert edges["pkg"] == {"pkg.a", "pkg.sub"}


@pytest.mark.parametrize("changed, cycle", [
    # inside a function still counts
    ({"pkg/sub/z.py": "def f():\n    from .y import thing\n"}, "pkg.sub.y -> pkg.sub.z -> pkg.sub.y"),
    # a submodule importing a name its package re-exports
    ({"pkg/sub/z.py": "from pkg.sub import thing\ndef f():\n    pass\n"},
     "pkg.sub -> pkg.sub.y -> pkg.sub.z -> pkg.sub"),
    # absolute `import a.b` form, across subpackages
    ({"pkg/_util.py": "import pkg.a\n"}, "pkg._util -> pkg.a -> pkg._util"),
])
def test_checker_finds_a_cycle(tmp_path, changed, cycle):
    edges, _ = import_graph(_write(tmp_path, {**CLEAN, **changed}))
    messages = cycle_messages(edges)
    assert len(messages) == 1
    assert messages[0].startswith(f"import cycle: {cycle}") and messages[0].endswith(GUIDE)


def test_checker_finds_a_private_import(tmp_path):
    files = {**CLEAN,
             "pkg/sub/z.py": "def f():\n    pass\ndef _g():\n    pass\n",
             "pkg/a.py": "from pkg.sub.z import _g\ndef h():\n    from .sub.z import _g, __doc__\n"}
    _, private = import_graph(_write(tmp_path, files))
    assert [(p.importer, p.source, p.name, p.line) for p in private] == [
        ("pkg.a", "pkg.sub.z", "_g", 1), ("pkg.a", "pkg.sub.z", "_g", 3)]
    assert private_messages(private)[0].startswith("private import: pkg.a (line 1) imports _g from pkg.sub.z")
