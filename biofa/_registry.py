"""Building rules from registries: the factory that feedback rules, sign constraints and norm
constraints share (:func:`biofa.feedback.make_feedback`, :func:`biofa.constraints.make_sign`,
:func:`biofa.constraints.make_norm`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from .errors import ConfigError, check_choice


def build_from_table(table: Mapping, registry: Mapping, owner: str, kind: str):
    """Build ``registry[table["rule"]](**options)`` from a spec table, validating every key.

    ``kind`` names the parameter in messages (``"feedback"``, ``"sign"``, ``"norm"``): an unknown
    rule gets :func:`~biofa.errors.check_choice`'s message, an unknown option a message listing the
    allowed ones.
    """
    options = dict(table)
    name = options.pop("rule", None)
    check_choice(owner, f"{kind}.rule", name, sorted(registry))
    cls = registry[name]
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {unknown} for {kind} rule {name!r} of {owner}; expected some of {allowed}."
        )
    return cls(**options)
