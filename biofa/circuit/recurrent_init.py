r"""Initialisations of recurrent blocks: the whole recurrent matrix of each cycle, drawn at once.

A recurrent block is a strongly connected component of the circuit's graph with a cycle (a
self-connection counts); its recurrent matrix :math:`W_\mathrm{rec}` is the block matrix of every
synapse object inside it (populations in circuit order, the connectivity masks applied). Rules:

``"gamma"`` (Song, Yang & Wang 2016, as their code pycog does for an E/I network)
    magnitudes :math:`|W_{ij}| \sim c_{ij}\,\mathrm{Gamma}(k, \theta = 0.1/k)` (k = 2 by default),
    signed by the presynaptic type (Dale's law: every population of the block typed ``"E"`` or
    ``"I"``), then :math:`W_\mathrm{rec} \leftarrow \rho_0 W_\mathrm{rec} / \rho(W_\mathrm{rec})` so
    that its spectral radius is :math:`\rho_0` (default 1.5). The scales :math:`c_{ij}` are pycog's
    default E/I connectivity, *mean-balanced*: in row i, 1 on every present excitatory entry and
    :math:`n^E_i / n^I_i` on every present inhibitory one (:math:`n^E_i, n^I_i` the numbers of
    present E and I entries of the row; pycog counts the entries of its full connectivity without
    autapses, here the masks and absent synapse objects count too), each row then divided by its
    Euclidean norm. Each neuron thus receives as much excitation as inhibition on average, so the
    matrix has no large positive (Perron) eigenvalue; without that balance a relu network at
    :math:`\rho_0 > 1` grows without bound.
``"balanced"``
    as ``"gamma"``, then every row's inhibitory entries are rescaled so that the row sums to zero
    exactly (:math:`\sum_{j \in E} W_{ij} = -\sum_{j \in I} W_{ij}`), then the same radius scaling.
``"colei"`` (Li et al., NeurIPS 2023, their recurrent column-E/I networks)
    magnitudes :math:`|W_{ij}| \sim \mathrm{Exp}(1)`, every inhibitory entry scaled by
    :math:`n^E_i / n^I_i` (the row's present E and I entries, as for ``"gamma"``, without the row
    normalisation), signed by the presynaptic type, then scaled to spectral radius :math:`\rho_0`
    (default 1.5). Each row is balanced in expectation; the spectrum keeps ColEI's spread-out
    singular values, which is what their study measures (:func:`biofa.analysis.nse`).
``"orthogonal"``
    free-sign blocks (no typed population): :math:`W_\mathrm{rec} = \rho_0 Q` with Q a uniformly
    random orthogonal matrix (QR of a Gaussian matrix, signs fixed by R's diagonal), masked, then
    scaled to radius :math:`\rho_0` (default 1.0).
``"normal"``
    free-sign blocks: :math:`W_{ij} \sim \mathcal N(0, 1/N)` (N the block's width), masked, then
    scaled to radius :math:`\rho_0` (default 1.5): the random network of Sompolinsky et al.
    (1988) that Murray (2019) trains, whose gain g = 1.5 gives a radius close to 1.5 for large N.

Given in Python or TOML as a name or a table ``{rule = "gamma", rho0 = 1.5, k = 2}``. Draws come
from the circuit's generator after the synapses' own (the gamma draws through a numpy generator
seeded from it), so a spec and its seed give the same matrix.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ..errors import ConfigError

RULES = ("gamma", "balanced", "colei", "orthogonal", "normal")
DEFAULT_RHO0 = {"gamma": 1.5, "balanced": 1.5, "colei": 1.5, "orthogonal": 1.0, "normal": 1.5}
#: rules for free-sign blocks (the others draw E/I magnitudes and need every population typed)
FREE_SIGN_RULES = ("orthogonal", "normal")


def parse(value) -> dict:
    """The options of a ``recurrent_init`` value (name or table), validated: rule, rho0, k."""
    table = {"rule": value} if isinstance(value, str) else value
    if not isinstance(table, dict) or table.get("rule") not in RULES:
        raise ConfigError(f"Circuit: recurrent_init must be one of {list(RULES)} or a table with a 'rule' key "
                          f"naming one; got {value!r}")
    unknown = sorted(set(table) - {"rule", "rho0", "k"})
    if unknown:
        raise ConfigError(f"Circuit: recurrent_init: unknown key(s) {unknown}; expected some of ['rule', 'rho0', 'k']")
    rule = table["rule"]
    rho0 = table.get("rho0", DEFAULT_RHO0[rule])
    k = table.get("k", 2.0)
    for key, v in (("rho0", rho0), ("k", k)):
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < float("inf")):
            raise ConfigError(f"Circuit: recurrent_init.{key} must be a number > 0, got {v!r}")
    if "k" in table and rule in (*FREE_SIGN_RULES, "colei"):
        raise ConfigError(f"Circuit: recurrent_init.k is the gamma shape; rule {rule!r} has none")
    return {"rule": rule, "rho0": float(rho0), "k": float(k)}


def block_layout(circuit, component):
    """Offsets of the component's populations in the block and the synapses inside it."""
    offset, width = {}, 0
    for p in circuit.populations:
        if p.name in component:
            offset[p.name], width = width, width + p.size
    inside = [s for s in circuit.feedforward if s.pre.name in offset and s.post.name in offset]
    return offset, width, inside


def recurrent_matrix(circuit, component) -> torch.Tensor:
    """:math:`W_\\mathrm{rec}` of a component: the effective weights of the synapses inside it,
    placed by (post, pre) offsets and summed where two synapse objects join the same pair."""
    offset, width, inside = block_layout(circuit, component)
    w0 = inside[0].weight
    m = torch.zeros(width, width, dtype=w0.dtype, device=w0.device)
    for s in inside:
        a, b = offset[s.post.name], offset[s.pre.name]
        m[a:a + s.post.size, b:b + s.pre.size] += s.weight.detach()
    return m


def spectral_radius(m: torch.Tensor) -> float:
    """:math:`\\rho(M) = \\max_i |\\lambda_i(M)|` (eigenvalues in float64)."""
    return float(torch.linalg.eigvals(m.detach().to(torch.float64).cpu()).abs().max())


def _gamma(shape, k, generator) -> torch.Tensor:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).gamma(k, 0.1 / k, size=shape))


def balance_ratios(present: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Per row, 1 on present E entries and :math:`n^E_i / n^I_i` on present I entries (0 elsewhere)."""
    exc = (sign > 0).to(present.dtype)[None, :]
    n_e = (present * exc).sum(1, keepdim=True)
    n_i = (present * (1 - exc)).sum(1, keepdim=True)
    ratio = torch.where(n_i > 0, n_e / n_i.clamp(min=1), torch.ones_like(n_i))
    return present * (exc + (1 - exc) * ratio)


def mean_balanced_scales(present: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """pycog's default E/I connectivity scales c_ij (module docstring): per row, 1 on present E
    entries and n_E / n_I on present I entries, each row of unit Euclidean norm (empty rows 0)."""
    exc = (sign > 0).to(present.dtype)[None, :]
    n_e = (present * exc).sum(1, keepdim=True)
    n_i = (present * (1 - exc)).sum(1, keepdim=True)
    ratio = torch.where(n_i > 0, n_e / n_i.clamp(min=1), torch.ones_like(n_i))
    c = present * (exc + (1 - exc) * ratio)
    norm = torch.linalg.vector_norm(c, dim=1, keepdim=True)
    return c / torch.where(norm > 0, norm, torch.ones_like(norm))


@torch.no_grad()
def initialise_recurrent(circuit, value, generator=None) -> None:
    """Initialise every recurrent block of ``circuit`` by ``value`` (see the module docstring)."""
    opts = parse(value)
    if not circuit.recurrent_components:
        raise ConfigError("Circuit: recurrent_init needs a recurrent block (a cycle of synapses, or a "
                          "self-connection); this circuit has none")
    for comp in circuit.recurrent_components:
        pops = [circuit.population(n) for n in comp]
        typed = [p.sign is not None for p in pops]
        if opts["rule"] in FREE_SIGN_RULES and any(typed):
            raise ConfigError(f"Circuit: recurrent_init {opts['rule']!r} is for free-sign blocks, but populations "
                              f"{[p.name for p in pops if p.sign]} of the block {comp} are typed (Dale); use 'gamma', 'balanced' "
                              "or 'colei'")
        if opts["rule"] not in FREE_SIGN_RULES and not all(typed):
            raise ConfigError(f"Circuit: recurrent_init {opts['rule']!r} draws E/I magnitudes and needs every "
                              f"population of the block {comp} typed (sign 'E' or 'I'); untyped: "
                              f"{[p.name for p in pops if p.sign is None]}")
        offset, width, inside = block_layout(circuit, comp)
        # the block as the synapses will hold it (masks, pairs without a synapse object at 0)
        present = torch.zeros(width, width, dtype=torch.float64)
        for s in inside:
            a, b = offset[s.post.name], offset[s.pre.name]
            mask = 1.0 if s.mask is None else s.mask.detach().to(torch.float64).cpu()
            present[a:a + s.post.size, b:b + s.pre.size] = torch.maximum(
                present[a:a + s.post.size, b:b + s.pre.size], torch.ones(s.post.size, s.pre.size) * mask)
        if opts["rule"] == "orthogonal":
            q, r = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
            block = q * torch.sign(torch.diagonal(r))[None, :]
        elif opts["rule"] == "normal":
            block = torch.randn(width, width, generator=generator, dtype=torch.float64) / width ** 0.5
        else:
            sign = torch.cat([torch.full((p.size,), 1.0 if p.sign == "E" else -1.0, dtype=torch.float64)
                              for p in circuit.populations if p.name in offset])
            if opts["rule"] == "colei":
                draws = torch.empty(width, width, dtype=torch.float64).exponential_(1.0, generator=generator)
                block = draws * balance_ratios(present, sign)
            else:
                block = _gamma((width, width), opts["k"], generator) * mean_balanced_scales(present, sign)
            block = block * sign[None, :]
        block = block * present
        if opts["rule"] == "balanced":
            inhibitory = block.clamp(max=0).sum(1, keepdim=True)
            excitatory = block.clamp(min=0).sum(1, keepdim=True)
            factor = torch.where(inhibitory < 0, excitatory / (-inhibitory).clamp(min=1e-300), torch.ones_like(inhibitory))
            block = torch.where(block < 0, block * factor, block)
        rho = spectral_radius(block)
        if rho == 0:
            raise ConfigError(f"Circuit: recurrent_init: the recurrent matrix of block {comp} has spectral radius 0 "
                              "(nilpotent or empty); it cannot be scaled to rho0")
        block = block * (opts["rho0"] / rho)
        seen = {}
        for s in inside:  # two synapse objects joining the same pair share the block's entries
            seen.setdefault((s.pre.name, s.post.name), []).append(s)
        for group in seen.values():
            a, b = offset[group[0].post.name], offset[group[0].pre.name]
            part = block[a:a + group[0].post.size, b:b + group[0].pre.size] / len(group)
            for s in group:
                w = s.weight
                s.write_weight(part.to(dtype=w.dtype, device=w.device))
