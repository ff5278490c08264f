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
``"dann"`` (the recurrent DANN of Cornford et al. 2021 as Li et al. 2023 initialise it)
    a block of excitatory populations and inhibitory interneuron populations (no I -> I entries):
    :math:`W_{EE} \sim \mathrm{Exp}(s)` with :math:`s^2 = \frac{n_E}{n_E - 1}\frac{1}{3 n_E}`
    (PyTorch's default variance, their ``numerator = 1/3``), every row of :math:`W_{IE}` the mean
    row of :math:`W_{EE}` (their ``random = False``), :math:`W_{EI}` exponential draws with each row
    divided by its sum (rows summing to 1), so that the E units' effective recurrence
    :math:`W_{EE} - W_{EI} W_{IE}` has every column centred. No radius scaling unless ``rho0``
    is given (then the whole block is scaled to it).
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

RULES = ("gamma", "balanced", "colei", "dann", "orthogonal", "normal")
#: None: no radius scaling
DEFAULT_RHO0 = {"gamma": 1.5, "balanced": 1.5, "colei": 1.5, "dann": None, "orthogonal": 1.0, "normal": 1.5}
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
        if key == "rho0" and "rho0" not in table and v is None:
            continue
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < float("inf")):
            raise ConfigError(f"Circuit: recurrent_init.{key} must be a number > 0, got {v!r}")
    if "k" in table and rule in (*FREE_SIGN_RULES, "colei", "dann"):
        raise ConfigError(f"Circuit: recurrent_init.k is the gamma shape; rule {rule!r} has none")
    return {"rule": rule, "rho0": None if rho0 is None else float(rho0), "k": float(k)}


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


def effective_recurrent_matrix(circuit, component) -> tuple[list[str], torch.Tensor]:
    r"""The recurrence among a block's principal populations, its interneurons eliminated.

    .. math:: W_\mathrm{eff} = W_{PP} + W_{PI} W_{IP}

    An *interneuron* population of the block has no synapse onto itself and exchanges synapses
    only with the other (principal) populations P of the block; linear interneurons with
    :math:`\tau = \Delta t` relay :math:`W_{IP} r_P` to P, so :math:`W_\mathrm{eff}` is a DANN's
    :math:`W_{EE} - W_{EI} W_{IE}` (the matrix whose spectrum Li et al. 2023 measure). A block
    without interneurons (every population recurrent onto itself, e.g. a ColEI block) returns
    :func:`recurrent_matrix`. Returns the principal populations' names and the matrix.
    """
    offset, width, inside = block_layout(circuit, component)
    self_loop = {s.pre.name for s in inside if s.pre.name == s.post.name}
    inter = [n for n in offset if n not in self_loop]
    if inter and all((s.pre.name in inter) + (s.post.name in inter) < 2 for s in inside) \
            and len(inter) < len(offset):
        keep = [n for n in offset if n not in inter]
    else:
        keep, inter = list(offset), []
    m = recurrent_matrix(circuit, component)
    index = lambda names: torch.cat([torch.arange(offset[n], offset[n] + circuit.population(n).size)  # noqa: E731
                                     for n in names]) if names else torch.zeros(0, dtype=torch.long)
    p, i = index(keep), index(inter)
    eff = m[p][:, p] + m[p][:, i] @ m[i][:, p]
    return keep, eff


def spectral_radius(m: torch.Tensor) -> float:
    """:math:`\\rho(M) = \\max_i |\\lambda_i(M)|` (eigenvalues in float64)."""
    return float(torch.linalg.eigvals(m.detach().to(torch.float64).cpu()).abs().max())


def dann_block(present: torch.Tensor, sign: torch.Tensor, generator=None) -> torch.Tensor:
    """The signed block of rule ``"dann"`` (module docstring) on the entries ``present``."""
    exc = sign > 0
    n_e, n_i = int(exc.sum()), int((~exc).sum())
    if n_e < 2 or n_i < 1:
        raise ConfigError(f"Circuit: recurrent_init 'dann' needs at least 2 excitatory and 1 inhibitory unit in "
                          f"the block; got {n_e} E and {n_i} I")
    width = len(sign)
    scale = (n_e / (n_e - 1) / (3 * n_e)) ** 0.5
    draws = torch.empty(width, width, dtype=torch.float64).exponential_(1.0, generator=generator) * scale
    e_idx, i_idx = torch.nonzero(exc).reshape(-1), torch.nonzero(~exc).reshape(-1)
    block = torch.zeros(width, width, dtype=torch.float64)
    w_ee = draws[e_idx][:, e_idx] * present[e_idx][:, e_idx]
    block[e_idx[:, None], e_idx[None, :]] = w_ee
    block[i_idx[:, None], e_idx[None, :]] = w_ee.mean(0, keepdim=True).expand(n_i, n_e)
    w_ei = draws[e_idx][:, i_idx] * present[e_idx][:, i_idx]
    sums = w_ei.sum(1, keepdim=True)
    block[e_idx[:, None], i_idx[None, :]] = -w_ei / torch.where(sums > 0, sums, torch.ones_like(sums))
    return block


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
            if opts["rule"] == "dann":
                block = dann_block(present, sign, generator)
            elif opts["rule"] == "colei":
                draws = torch.empty(width, width, dtype=torch.float64).exponential_(1.0, generator=generator)
                block = draws * balance_ratios(present, sign)
            else:
                block = _gamma((width, width), opts["k"], generator) * mean_balanced_scales(present, sign)
            if opts["rule"] != "dann":
                block = block * sign[None, :]
        block = block * present
        if opts["rule"] == "balanced":
            inhibitory = block.clamp(max=0).sum(1, keepdim=True)
            excitatory = block.clamp(min=0).sum(1, keepdim=True)
            factor = torch.where(inhibitory < 0, excitatory / (-inhibitory).clamp(min=1e-300), torch.ones_like(inhibitory))
            block = torch.where(block < 0, block * factor, block)
        if opts["rho0"] is None:
            rho = None
        else:
            rho = spectral_radius(block)
        if rho == 0:
            raise ConfigError(f"Circuit: recurrent_init: the recurrent matrix of block {comp} has spectral radius 0 "
                              "(nilpotent or empty); it cannot be scaled to rho0")
        if rho is not None:
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
