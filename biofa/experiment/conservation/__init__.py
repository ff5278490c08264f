"""The conservation-laws study of feedback alignment (Robertson & Koyejo 2023) as one command.

``biofa run experiments/conservation_laws.toml`` runs a spec whose ``[experiment] kind`` is
``"conservation_laws"``: (a) drift of FA's invariants against time for several learning rates,
GD's balancedness beside them, gradient flow as the zero-drift reference; (b) layer-wise
alignment from a small initialisation; (c) distance to the minimum-norm solution against the
init scale, FA beside GD. It writes ``measurements.csv``, ``drift.png``, ``alignment.png``,
``min_norm.png``, ``report.md``, ``timings.json``, ``environment.json`` and ``spec.toml``.

A study kind of :mod:`biofa.experiment.kinds`: it reads its spec with the same loader, ``[quick]``
and ``--set`` as a grid study (:mod:`.spec` checks its own tables), writes through the same
atomic files and folder lock, and ``biofa report DIR`` regenerates its report. Its measurements
(:mod:`.measure`) and its report (:mod:`.report`) are its own.
"""

from __future__ import annotations

from ..spec.loader import read_tree
from .report import write_report
from .spec import KIND, SCHEMA, ConservationSpec, from_dict
from .study import ConservationOutcome, run


def load(spec, *, quick: bool = False, overrides=None) -> ConservationSpec:
    """Read and validate a conservation-laws spec (path or packaged name)."""
    tree, source, stem = read_tree(spec)
    return from_dict(tree, source=source, quick=quick, overrides=overrides, default_name=stem)


__all__ = ["KIND", "SCHEMA", "ConservationSpec", "ConservationOutcome", "from_dict", "load", "run",
           "write_report"]
