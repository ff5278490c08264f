"""Writing circuit specs: :func:`to_spec`, :func:`dump` and :func:`save`.

The writing half of :mod:`biofa.circuit.spec`, kept apart from the reading half so that
:class:`~biofa.circuit.Circuit` (whose :meth:`~biofa.circuit.Circuit.to_spec` and
:meth:`~biofa.circuit.Circuit.save` are these) never imports the module that builds circuits.
:mod:`biofa.circuit.spec` re-exports all three.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def to_spec(circuit) -> dict:
    """The spec dict of ``circuit``, a :class:`~biofa.circuit.Circuit` (every key, None values
    omitted); :func:`~biofa.circuit.from_spec` inverts it."""
    spec = {}
    if circuit.description is not None:
        spec["description"] = circuit.description
    if circuit.seed is not None:
        spec["seed"] = circuit.seed
    spec["input"] = circuit.input
    if circuit.output is not None:
        spec["output"] = circuit.output
    spec["balance"] = circuit.balance
    if circuit.dynamics is not None:
        spec["dynamics"] = circuit.dynamics
    if circuit.learn_initial_state:
        spec["learn_initial_state"] = True
    if circuit.initial_value != 0:
        spec["initial_value"] = circuit.initial_value
    if circuit.readout is not None:
        spec["readout"] = circuit.readout
    if circuit.recurrent_init is not None:
        init = circuit.recurrent_init
        spec["recurrent_init"] = dict(init) if isinstance(init, dict) else init
    spec["populations"] = {p.name: p.to_spec() for p in circuit.declared_populations}
    spec["synapses"] = [s.to_spec() for s in circuit.feedforward]
    spec["feedback"] = [fb.to_spec() for fb in circuit.direct]
    return spec


def dump(spec: dict, path) -> None:
    """Write a spec dict as TOML to ``path`` atomically (a temporary file, then a rename)."""
    import tomli_w

    path = Path(path)
    text = tomli_w.dumps(spec)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save(circuit, path) -> None:
    """Write ``circuit.to_spec()`` (a :class:`~biofa.circuit.Circuit`'s) as TOML to ``path`` (atomically)."""
    dump(to_spec(circuit), path)
