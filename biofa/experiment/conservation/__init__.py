"""The conservation-laws study of feedback alignment (Robertson & Koyejo 2023) as one command.

``biofa run experiments/conservation_laws.toml`` runs a spec whose ``[experiment] kind`` is
``"conservation_laws"``: (a) drift of FA's invariants against time for several learning rates,
GD's balancedness beside them, gradient flow as the zero-drift reference; (b) layer-wise
alignment from a small initialisation; (c) distance to the minimum-norm solution against the
init scale, FA beside GD. It writes ``measurements.csv``, ``drift.png``, ``alignment.png``,
``min_norm.png``, ``report.md`` and ``spec.toml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...errors import SpecError
from .spec import KIND, ConservationSpec, from_dict, is_kind
from .study import run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_tree(spec) -> tuple[dict, str, str]:
    """``(tree, source, stem)`` of a spec path or packaged experiment name."""
    from ..spec import resolve_path

    path = resolve_path(spec)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), str(path), path.stem
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None


def load(spec, *, quick: bool = False, overrides=None) -> ConservationSpec:
    """Read and validate a conservation-laws spec (path or packaged name)."""
    tree, source, stem = read_tree(spec)
    return from_dict(tree, source=source, quick=quick, overrides=overrides, default_name=stem)


def main(args) -> int:
    """``biofa run`` for a conservation-laws spec (``args`` from the ``biofa`` parser)."""
    import time

    loaded = load(args.spec, quick=args.quick, overrides=args.overrides)
    out = Path(args.out) if args.out else Path("results") / (loaded.name + ("_quick" if loaded.quick else ""))
    t0 = time.perf_counter()
    done = run(loaded, out, progress=bool(args.progress))
    from .report import table_markdown
    print(table_markdown(done["claims"]))
    print(f"\n{loaded.name}: {time.perf_counter() - t0:.1f} s; wrote {out}/measurements.csv, drift.png, "
          "alignment.png, min_norm.png and report.md")
    return 0


__all__ = ["KIND", "ConservationSpec", "from_dict", "is_kind", "load", "run", "main"]
