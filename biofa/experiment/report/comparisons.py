"""The comparisons a spec declares in ``[compare]``, paired over seeds.

``sign = ["free", "dale"]`` compares, for every combination of the other condition keys (every
feedback rule, say), the condition with ``sign = dale`` against the one with ``sign = free``:
the difference is always *second minus first* (dale - free). ``"*"`` on one side stands for every
other value of the key: ``feedback = ["bp", "*"]`` gives rule - bp for each rule.

Runs are paired by seed; a seed enters only when both conditions have a finished run for it
(:func:`~biofa.experiment.report.stats.pair_by_seed`), and the seeds left out are reported. All
comparisons of a study form one family for Holm's adjustment of the p-values.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import stats
from ..spec.search import ANY


@dataclass
class Comparison:
    """b - a on ``key`` within ``context`` (the other condition keys' values)."""

    key: str
    a: str
    b: str
    context: dict[str, str]
    pairing: stats.Pairing
    result: stats.Paired | None    # None without a complete pair
    p_holm: float | None = None


def pairs_of(a: str, b: str, values: list[str]) -> list[tuple[str, str]]:
    """The (a, b) pairs a declared pair stands for, among the key's ``values`` (in their order)."""
    if a == ANY:
        return [(v, b) for v in values if v != b and b in values]
    if b == ANY:
        return [(a, v) for v in values if v != a and a in values]
    return [(a, b)] if a in values and b in values else []


def compare(per_condition: dict[tuple, dict], condition_keys: list[str],
            declared: dict[str, tuple]) -> list[Comparison]:
    """Every comparison ``declared`` (``{column: (a, b)}``) among the conditions present.

    ``per_condition`` maps a condition (texts under ``condition_keys``) to ``{seed: value}``, the
    value None for a failed run. Conditions are visited in the order of ``per_condition``.
    """
    out = []
    for key, (a, b) in declared.items():
        if key not in condition_keys:
            continue
        i = condition_keys.index(key)
        values = list(dict.fromkeys(cond[i] for cond in per_condition))
        contexts = list(dict.fromkeys(cond[:i] + cond[i + 1:] for cond in per_condition))
        others = condition_keys[:i] + condition_keys[i + 1:]
        for context in contexts:
            for va, vb in pairs_of(a, b, values):
                cond_a = context[:i] + (va,) + context[i:]
                cond_b = context[:i] + (vb,) + context[i:]
                if cond_a not in per_condition or cond_b not in per_condition:
                    continue
                pairing = stats.pair_by_seed(per_condition[cond_a], per_condition[cond_b])
                result = stats.paired(pairing.a, pairing.b) if pairing.seeds else None
                out.append(Comparison(key, va, vb, dict(zip(others, context)), pairing, result))
    for comparison, p in zip(out, stats.holm([c.result.p if c.result else None for c in out])):
        comparison.p_holm = p
    return out
