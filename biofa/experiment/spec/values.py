"""Checks of single spec values, shared by every study kind's schema.

Each check takes a value and returns ``None`` when it is fine, else the text of what was expected
(``"a positive integer"``); the schema turns that into the uniform message
``<file>: [table] key must be <expected>, got <value>``.
"""

from __future__ import annotations

import difflib
import math
import re


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(v):
    return None if is_int(v) and v > 0 else "a positive integer"


def nonneg_int(v):
    return None if is_int(v) and v >= 0 else "a non-negative integer"


def positive_num(v):
    return None if is_num(v) and v > 0 else "a positive number"


def nonneg_num(v):
    return None if is_num(v) and v >= 0 else "a non-negative number"


def unit_interval_open(v):
    return None if is_num(v) and 0 <= v < 1 else "a number in [0, 1)"


def unit_interval_exclusive(v):
    return None if is_num(v) and 0 < v < 1 else "a number in (0, 1)"


def validation_size(v):
    ok = (is_num(v) and 0 <= v < 1) or (is_int(v) and v >= 0)
    return None if ok else "a fraction in [0, 1) or a whole number of examples"


def boolean(v):
    return None if isinstance(v, bool) else "true or false"


def string(v):
    return None if isinstance(v, str) else "a string"


def nonempty_string(v):
    return None if isinstance(v, str) and v else "a non-empty string"


def folder_name(v):
    plain = isinstance(v, str) and v not in ("", ".", "..") and not any(c in v for c in "/\\\0")
    return None if plain else "a plain folder name (no '/' or '\\', not '.' or '..')"


def one_of(*choices):
    def check(v):
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)
    return check


def layers(v):
    ok = isinstance(v, list) and all(isinstance(x, str) or is_int(x) for x in v)
    return None if ok else "a list of layer names or indices (-1: the read-out)"


def milestones(v):
    ok = isinstance(v, list) and all(is_int(m) and m > 0 for m in v) and v == sorted(v)
    return None if ok else "an increasing list of positive integers"


def betas(v):
    ok = isinstance(v, list) and len(v) == 2 and all(is_num(b) and 0 <= b < 1 for b in v)
    return None if ok else "a list of two numbers in [0, 1)"


def gamma(v):
    return None if is_num(v) and 0 < v <= 1 else "a number in (0, 1]"


def strings(v):
    return None if isinstance(v, list) and all(isinstance(s, str) for s in v) else "a list of strings"


def sbatch_options(v):
    ok = isinstance(v, dict) and all(isinstance(x, (str, int)) and not isinstance(x, bool) or x is True
                                     for x in v.values())
    return None if ok else "a table of sbatch option = value (strings, integers or true)"


def suggest(word, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty text."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Device names a spec may give in ``[train] device`` (availability is checked when a run starts).
DEVICES = ("auto", "cpu", "cuda", "mps")
CUDA_INDEX = re.compile(r"cuda:(\d+)")


def device_name(name) -> bool:
    """Whether ``name`` is a device a spec may ask for: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    return isinstance(name, str) and (name in DEVICES or CUDA_INDEX.fullmatch(name) is not None)


def device(v):
    return None if device_name(v) else "one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"
