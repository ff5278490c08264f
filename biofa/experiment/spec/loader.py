"""Find a spec file and read it, once: a path, or the name of a packaged experiment.

Which kind of study the file describes (``[experiment] kind``) is decided by the caller
(:func:`biofa.experiment.load`), from the tree read here.
"""

from __future__ import annotations

from pathlib import Path

from ..._resources import packaged_dir
from ...errors import SpecError
from .paths import tomllib


def resolve_path(spec: str | Path) -> Path:
    """The spec file for ``spec``: a path, or the name of a packaged experiment (``quickstart``)."""
    path = Path(spec)
    if path.is_file():
        return path
    packaged = packaged_dir("experiments")
    for candidate in (packaged / f"{spec}.toml", packaged / str(spec)):
        if candidate.is_file():
            return candidate
    if (packaged_dir("circuits") / f"{spec}.toml").is_file():
        raise SpecError(circuit_message(str(spec)))
    names = sorted(p.stem for p in packaged.glob("*.toml"))
    raise SpecError(f"{spec}: no such experiment spec file, and no packaged experiment of that name "
                    f"(packaged: {', '.join(names) or 'none'})")


def circuit_message(circuit: str, source: str | None = None) -> str:
    """What to do with a circuit spec given where an experiment spec is expected."""
    what = f"{source}: a circuit spec ([populations], [synapses])" if source else \
        f"{circuit}: a packaged circuit"
    return (f"{what}, not an experiment spec. To train it, name it in an experiment spec's [model] "
            f"table, circuit = {circuit!r} (see the packaged experiment dale_circuits), then "
            f"`biofa run` that spec; in Python, biofa.circuit.load({circuit!r}) builds it")


def read_tree(spec: str | Path) -> tuple[dict, str, str]:
    """``(tree, source, stem)``: the parsed TOML of a spec path or packaged name, the file's path
    as text (named in every message) and its stem (the study's default name).

    Raises :class:`~biofa.errors.SpecError` for a missing file, invalid TOML, or a circuit spec.
    """
    path = resolve_path(spec)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            tree = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{source}: not valid TOML: {err}") from None
    if "populations" in tree:  # an experiment spec has no such table
        raise SpecError(circuit_message(source, source))
    return tree, source, path.stem
