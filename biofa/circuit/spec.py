"""Circuit specs: TOML files (or dicts) that build a :class:`~biofa.circuit.Circuit`.

A spec has top-level keys ``input``, ``output``, ``populations`` (a table of tables keyed by
population name: the :class:`~biofa.circuit.Population` arguments), ``synapses`` (an array of
tables: ``pre``, ``post`` and the :class:`~biofa.circuit.FeedforwardSynapses` keywords),
optionally ``feedback`` (direct feedback tables: ``source``, ``target``, ``rule = "dfa"``,
``sign``, ``init``, ``name``), ``balance``, ``seed`` and ``description``, and for circuits in time
``dynamics`` (``"rate"``/``"current"``), ``learn_initial_state``, ``initial_value``, ``readout = "E"`` and
``recurrent_init`` (:mod:`biofa.circuit.recurrent_init`); populations also take ``dynamics``,
``noise`` and (input only) ``rectify``, synapses ``p_connect`` and ``autapses``; a synapse table
with ``interneurons`` (and optionally ``variance``, ``corrected``) builds
:class:`~biofa.circuit.DANNSynapses`. Synapses may form
cycles (a recurrent circuit, see :mod:`biofa.circuit.dynamics`)::

    input = "x"
    output = "y"
    seed = 0

    [populations.x]
    size = 30
    [populations.h]
    size = 20
    activation = "tanh"
    [populations.y]
    size = 10
    activation = "linear"

    [[synapses]]
    pre = "x"
    post = "h"
    [[synapses]]
    pre = "h"
    post = "y"
    feedback = "kp"

Randomness is drawn in spec order (synapses, then direct feedback) from one generator seeded
with ``seed``, so the same spec and seed give the same weights, and building the same objects in
Python with ``generator=torch.Generator().manual_seed(seed)`` gives identical ones.
:func:`to_spec` writes every key except those whose value is None (TOML has no null), so
``from_spec(to_spec(c))`` rebuilds ``c`` exactly.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from .._resources import packaged_dir
from ..errors import ConfigError, SpecError
from .circuit import Circuit
from .dann_synapses import DANNSynapses
from .populations import Population
from .synapses import FeedbackSynapses, FeedforwardSynapses
from .writer import dump, save, to_spec  # the writing half, re-exported here

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = ("description", "seed", "input", "output", "balance", "dynamics", "learn_initial_state", "initial_value",
            "readout", "recurrent_init", "populations", "synapses", "feedback")
POPULATION_KEYS = ("size", "sign", "activation", "tau", "bias", "learn_bias", "dynamics", "noise", "rectify")
SYNAPSE_KEYS = ("pre", "post", "name", "feedback", "feedback_sign", "sign", "norm", "init", "p_connect", "autapses",
                "interneurons", "variance", "corrected")
FEEDBACK_KEYS = ("source", "target", "rule", "name", "sign", "init")


def _unknown(table: dict, allowed, where: str) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; expected some of {list(allowed)}")


@contextlib.contextmanager
def _at(where: str):
    """Turn a construction error into a SpecError that names the spec key."""
    try:
        yield
    except SpecError:
        raise
    except ConfigError as err:
        raise SpecError(f"{where}: {err}") from None


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _name(spec: dict, key: str, where: str, names: list[str]) -> str:
    path = f"{where}.{key}" if where else key
    if key not in spec:
        raise SpecError(f"{path}: missing; expected the name of a population, one of {names}")
    value = spec[key]
    if value not in names:
        raise SpecError(f"{path}: unknown population {value!r}; expected one of {names}")
    return value


def from_spec(spec: dict, *, seed: int | None = None, dtype=None, device=None) -> Circuit:
    """Build a :class:`Circuit` from a spec dict. ``seed`` overrides the spec's ``seed``; with
    neither, torch's global generator is used."""
    spec = _table(spec, "spec")
    _unknown(spec, TOP_KEYS, "top level")
    for key in ("input", "populations", "synapses"):
        if key not in spec:
            raise SpecError(f"{key}: missing; a circuit spec needs 'input', 'populations' and 'synapses'")
    for key in ("description", "input", "output"):
        if key in spec and not isinstance(spec[key], str):
            raise SpecError(f"{key}: expected a string, got {spec[key]!r}")
    if not isinstance(spec.get("balance", False), bool):
        raise SpecError(f"balance: expected true or false, got {spec['balance']!r}")
    seed = spec.get("seed") if seed is None else seed
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise SpecError(f"seed: expected a non-negative integer, got {seed!r}")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    factory = {"dtype": dtype, "device": device}

    tables = _table(spec["populations"], "populations")
    if not tables:
        raise SpecError("populations: empty; declare at least the input and one more population")
    pops = []
    for name, table in tables.items():
        where = f"populations.{name}"
        _unknown(_table(table, where), POPULATION_KEYS, where)
        if "size" not in table:
            raise SpecError(f"{where}.size: missing; expected a positive integer")
        with _at(where):
            pops.append(Population(name, **table))
    by_name = {p.name: p for p in pops}
    names = list(by_name)
    _name(spec, "input", "", names)
    if "output" in spec:
        _name(spec, "output", "", names)

    if not isinstance(spec["synapses"], list):
        raise SpecError(f"synapses: expected an array of tables ([[synapses]]), got {spec['synapses']!r}")
    edges = []
    for i, table in enumerate(spec["synapses"]):
        where = f"synapses[{i}]"
        _unknown(_table(table, where), SYNAPSE_KEYS, where)
        edges.append((_name(table, "pre", where, names), _name(table, "post", where, names)))
    syns = []
    for i, table in enumerate(spec["synapses"]):
        options = {k: v for k, v in table.items() if k not in ("pre", "post")}
        with _at(f"synapses[{i}]"):
            kind = DANNSynapses if "interneurons" in options else FeedforwardSynapses
            syns.append(kind(by_name[table["pre"]], by_name[table["post"]], generator=generator, **options, **factory))

    feedback_tables = spec.get("feedback", [])
    if not isinstance(feedback_tables, list):
        raise SpecError(f"feedback: expected an array of tables ([[feedback]]), got {feedback_tables!r}")
    direct = []
    for i, table in enumerate(feedback_tables):
        where = f"feedback[{i}]"
        _unknown(_table(table, where), FEEDBACK_KEYS, where)
        if "output" not in spec:
            raise SpecError(f"{where}: direct feedback sends the output error, but the spec has no 'output' "
                            "key; add output = \"<population name>\"")
        source = _name(table, "source", where, names)
        target = _name(table, "target", where, names)
        if source != spec["output"]:
            raise SpecError(f"{where}.source: direct feedback sends the output error, so its source must be "
                            f"the output {spec['output']!r}; got {source!r}")
        options = {k: v for k, v in table.items() if k not in ("source", "target")}
        with _at(where):
            direct.append(FeedbackSynapses(by_name[source], by_name[target], generator=generator,
                                           **options, **factory))
    with _at("circuit"):
        circuit = Circuit(pops, syns, input=spec["input"], output=spec.get("output"), feedback=direct,
                          balance=spec.get("balance", False), dynamics=spec.get("dynamics"),
                          learn_initial_state=spec.get("learn_initial_state", False),
                          initial_value=spec.get("initial_value", 0.0),
                          readout=spec.get("readout"), recurrent_init=spec.get("recurrent_init"),
                          generator=generator)
    circuit.seed = seed
    circuit.description = spec.get("description")
    return circuit


def available() -> list[str]:
    """Names of the packaged circuit specs (``biofa.circuit.load(name)`` reads them)."""
    return sorted(p.stem for p in packaged_dir("circuits").glob("*.toml"))


def read(name_or_path) -> dict:
    """The spec dict of a packaged name or a TOML file path."""
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or text.endswith(".toml") or os.sep in text
    path = Path(text) if looks_like_path else packaged_dir("circuits") / f"{text}.toml"
    if not path.is_file():
        if looks_like_path:
            raise SpecError(f"No circuit spec file at {str(path)!r}")
        raise SpecError(f"Unknown circuit {text!r}: not a packaged circuit (available: {available()}) and "
                        "not a path to a .toml file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: invalid TOML: {err}") from None


def load(name_or_path, *, seed: int | None = None, dtype=None, device=None) -> Circuit:
    """Build the circuit of a packaged spec (``load("mlp")``, see :func:`available`) or of a TOML file.

    ``seed`` overrides the spec's own; errors are :class:`~biofa.errors.SpecError` naming the
    file and the key.
    """
    spec = read(name_or_path)
    try:
        return from_spec(spec, seed=seed, dtype=dtype, device=device)
    except SpecError as err:
        raise SpecError(f"{name_or_path}: {err}") from None
