r"""The :class:`Circuit`: populations joined by synapse objects, acyclic or recurrent.

.. math:: r_p = f_p\Big(\sum_{s:\,\mathrm{post}(s) = p} W_s \, r_{\mathrm{pre}(s)} + b_p\Big)
          \quad\text{in topological order}, \qquad r_\mathrm{in} = x

``circuit(x)`` is the steady state of the rate dynamics (the feed-forward pass) at the output
population; a circuit with cycles (self-connections included) has none and lives in time only
(:meth:`Circuit.simulate`, :meth:`Circuit.unroll`). The backward pass of ``loss.backward()`` follows the feedback synapses: through a
paired pathway the error reaching ``pre`` is :math:`\delta_\mathrm{post} B` (the core layer's
feedback); through direct feedback the error of the output rates :math:`e = \partial L / \partial
r_\mathrm{out}` reaches a hidden population as :math:`e B_\mathrm{dfa}` in one step, and autograd
carries :math:`f'` and everything upstream.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..nn.functional import exact_gradients_active
from ._direct import DirectFeedback
from .graph import components, find_cycle, is_recurrent, topological_order  # noqa: F401 (re-export)
from .populations import DYNAMICS, Population
from .recurrent_init import initialise_recurrent
from .synapses import FeedbackSynapses, FeedforwardSynapses
from .writer import save, to_spec


class Circuit(nn.Module):
    r"""A graph of populations, trained by its feedback synapses; recurrent when it has cycles.

    Parameters
    ----------
    populations : list of :class:`Population` (names unique).
    synapses : list of :class:`FeedforwardSynapses` between those populations.
    input : name (or Population) of the input population, clamped to x.
    output : name (or Population) of the output population (a sink); ``circuit(x)`` returns its
        rates. May be None for a circuit that is only simulated (then no direct feedback).
    feedback : list of direct :class:`FeedbackSynapses` (DFA) from the output to hidden populations.
        Paired pathways are declared on the feedforward synapses.
    balance : initialise every inhibitory population as subtractive inhibition that cancels the
        mean excitation (Cornford et al. 2021): for I population i fed by q and inhibiting e, with
        a direct synapse q→e: :math:`W_{iq} = \mathbf 1 \bar w^\top` (:math:`\bar w` the mean row of
        :math:`W_{eq}`) and :math:`W_{ei} = -\mathbf 1\mathbf 1^\top / n_i`, so the input current of e
        is :math:`(W_{eq} - \mathbf 1 \bar w^\top) r_q`, zero on average over e for every
        non-negative :math:`r_q`.
    dynamics : None (``"rate"``) or ``"current"``: the form of the dynamics of every population
        whose own ``dynamics`` is None (:mod:`biofa.circuit.dynamics`).
    learn_initial_state : a learned initial state (rates, or x in the current form) per non-input
        population, ``initial_value`` at first, used by ``simulate``/``unroll`` when no ``r0`` is
        given (``circuit.initial_state[name]``, shape (size,)).
    initial_value : the state every non-input population starts from when no ``r0`` is given
        (default 0; Murray 2019 starts his networks at 0.1, pycog its learned x0 at 0.1): a fixed
        initial state, or the learned one's first value with ``learn_initial_state``.
    readout : None or ``"E"``: the output population may only be fed by excitatory populations.
    recurrent_init : None, a rule name or a table ``{rule = ..., rho0 = ..., k = ...}`` that
        initialises every recurrent block (:mod:`biofa.circuit.recurrent_init`): ``"gamma"``
        (pycog), ``"balanced"`` (gamma with balanced E/I rows), ``"dann"`` (a recurrent DANN), ``"colei"`` (Li et al. 2023:
        exponential draws, I scaled by n_E/n_I), ``"orthogonal"`` or ``"normal"`` (free signs).
    generator : torch.Generator for ``recurrent_init``'s draws.

    Attributes
    ----------
    populations : list of Population
        Topological order, input first.
    feedforward : torch.nn.ModuleList of FeedforwardSynapses
    direct : torch.nn.ModuleList of FeedbackSynapses
        The direct (DFA) pathways; :attr:`feedback` lists the paired ones, then these.
    input, output : str
        Population names.
    biases : torch.nn.ParameterDict
        b of every non-input population, see :meth:`bias`.

    Examples
    --------
    >>> import torch
    >>> from biofa.circuit import Circuit, Population, FeedforwardSynapses
    >>> x, h, y = Population("x", 4), Population("h", 8), Population("y", 2, activation="linear")
    >>> c = Circuit([x, h, y], [FeedforwardSynapses(x, h), FeedforwardSynapses(h, y)], input="x", output="y")
    >>> c(torch.randn(5, 4)).shape
    torch.Size([5, 2])
    """

    def __init__(self, populations, synapses, input, output=None, feedback=(), *, balance: bool = False,
                 dynamics: str | None = None, learn_initial_state: bool = False, initial_value: float = 0.0,
                 readout: str | None = None,
                 recurrent_init=None, generator: torch.Generator | None = None):
        super().__init__()
        pops = list(populations)
        syns = list(synapses)
        direct = list(feedback)
        for p in pops:
            if not isinstance(p, Population):
                raise ConfigError(f"Circuit: populations must be Population objects, got {type(p).__name__}")
        by_name: dict[str, Population] = {}
        for p in pops:
            if hasattr(nn.ParameterDict, p.name):
                raise ConfigError(f"Circuit: population name {p.name!r} is reserved (it names a method of the "
                                  "parameter container holding the biases); rename the population")
            if p.name in by_name:
                raise ConfigError(f"Circuit: two populations are named {p.name!r}; names must be unique")
            by_name[p.name] = p
        names = list(by_name)
        input_name = input.name if isinstance(input, Population) else input
        output_name = output.name if isinstance(output, Population) else output
        if input_name not in by_name:
            raise ConfigError(f"Circuit: input {input_name!r} is not one of the populations {names}")
        if output_name is not None and output_name not in by_name:
            raise ConfigError(f"Circuit: output {output_name!r} is not one of the populations {names}")
        if output_name == input_name:
            raise ConfigError(f"Circuit: the output {output_name!r} cannot be the input population")
        seen = set()
        for s in syns:
            if not isinstance(s, FeedforwardSynapses):
                raise ConfigError(f"Circuit: synapses must be FeedforwardSynapses, got {type(s).__name__}")
            for role in ("pre", "post"):
                pop = getattr(s, role)
                if by_name.get(pop.name) is not pop:
                    raise ConfigError(f"Circuit: synapse {s.name!r} connects population {pop.name!r} ({role}), "
                                      f"which is not one of the circuit's populations {names}")
            if s.name in seen:
                raise ConfigError(f"Circuit: two synapses are named {s.name!r}; give them distinct names")
            seen.add(s.name)
            if s.post.name == input_name:
                raise ConfigError(f"Circuit: synapse {s.name!r} targets the input population {input_name!r}, "
                                  "which is clamped to x")
            if s.pre.name == output_name:
                raise ConfigError(f"Circuit: synapse {s.name!r} leaves the output population {output_name!r}; "
                                  "the output must be a sink")
        for fb in direct:
            if not isinstance(fb, FeedbackSynapses) or not fb.direct:
                raise ConfigError("Circuit: feedback must be a list of direct FeedbackSynapses "
                                  "(paired pathways are set with FeedforwardSynapses(feedback=...))")
            if output_name is None:
                raise ConfigError(f"Circuit: direct feedback {fb.name!r} ({fb.rule!r}) sends the output error, "
                                  "but the circuit has no output; set output=")
            if fb.source is not by_name[output_name]:
                raise ConfigError(f"Circuit: direct feedback {fb.name!r} must come from the output "
                                  f"{output_name!r}, not from {fb.source.name!r}")
            if by_name.get(fb.target.name) is not fb.target or fb.target.name in (input_name, output_name):
                raise ConfigError(f"Circuit: direct feedback {fb.name!r} targets {fb.target.name!r}, which is "
                                  f"not a hidden population of the circuit (hidden: "
                                  f"{[n for n in names if n not in (input_name, output_name)]})")
        if dynamics is not None and dynamics not in DYNAMICS:
            raise ConfigError(f"The 'dynamics' parameter of Circuit must be one of {{'rate', 'current'}}. "
                              f"Got {dynamics!r} instead.")
        if not isinstance(learn_initial_state, bool):
            raise ConfigError(f"Circuit: learn_initial_state must be true or false, got {learn_initial_state!r}")
        if isinstance(initial_value, bool) or not isinstance(initial_value, (int, float)) or \
                not math.isfinite(initial_value):
            raise ConfigError(f"Circuit: initial_value must be a finite number, got {initial_value!r}")
        if readout not in (None, "E"):
            raise ConfigError(f"The 'readout' parameter of Circuit must be one of {{None, 'E'}}. Got {readout!r} instead.")
        if readout == "E":
            if output_name is None:
                raise ConfigError("Circuit: readout='E' restricts what feeds the output, but the circuit has no output")
            bad = [s.name for s in syns if s.post.name == output_name and s.pre.sign != "E"]
            if bad:
                raise ConfigError(f"Circuit: readout='E': the output {output_name!r} may only be fed by excitatory "
                                  f"(sign='E') populations; synapses {bad} come from others")
        for p in pops:
            if p.rectify is not None and p.name != input_name:
                raise ConfigError(f"Circuit: population {p.name!r}: rectify applies to the input population "
                                  f"{input_name!r} only")
        edges = [(s.pre.name, s.post.name) for s in syns]
        self.components = components(names, edges)
        self.cycle = find_cycle(names, edges)
        order = [n for comp in self.components for n in comp]
        incoming = {n: [s for s in syns if s.post.name == n] for n in names}
        for n in names:
            if n != input_name and not incoming[n]:
                raise ConfigError(f"Circuit: population {n!r} receives no synapses; every population except "
                                  f"the input {input_name!r} needs at least one incoming synapse")
        self.populations = [by_name[n] for n in order]
        self.declared_populations = pops
        self.feedforward = nn.ModuleList(syns)
        self.direct = nn.ModuleList(direct)
        self.input = input_name
        self.output = output_name
        self.balance = balance
        self.dynamics = dynamics
        self.learn_initial_state = learn_initial_state
        self.initial_value = float(initial_value)
        self.readout = readout
        self.recurrent_init = recurrent_init
        self.recurrent_components = [c for c in self.components if is_recurrent(c, edges)]
        self.seed = None  # set by from_spec: the seed the spec was built with
        self.description = None
        self._by_name = by_name
        self._incoming = incoming
        self._outgoing = {n: [s for s in syns if s.pre.name == n] for n in names}
        self.biases = nn.ParameterDict()
        for p in self.populations:
            if p.name == input_name:
                continue
            w = incoming[p.name][0].weight
            value = torch.as_tensor(p.bias, dtype=w.dtype, device=w.device).expand(p.size).clone()
            self.biases[p.name] = nn.Parameter(value, requires_grad=p.learn_bias)
        self.initial_state = nn.ParameterDict()
        if learn_initial_state or initial_value != 0:
            for p in self.populations:
                if p.name != input_name:
                    w = incoming[p.name][0].weight
                    value = torch.full((p.size,), float(initial_value), dtype=w.dtype, device=w.device)
                    self.initial_state[p.name] = nn.Parameter(value, requires_grad=learn_initial_state)
        if balance:
            self.balance_inhibition()
        if recurrent_init is not None:
            initialise_recurrent(self, recurrent_init, generator)

    # -- structure ---------------------------------------------------------------------------
    @property
    def feedback(self) -> list[FeedbackSynapses]:
        """Every feedback pathway: the paired ones (in synapse order), then the direct ones."""
        return [s.feedback_synapses for s in self.feedforward if s.has_feedback] + list(self.direct)

    @property
    def recurrent(self) -> bool:
        """Whether the synapses form a cycle (a self-connection counts): then only time exists."""
        return self.cycle is not None

    def dynamics_of(self, name: str) -> str:
        """The dynamics form of population ``name``: its own, else the circuit's, else ``"rate"``."""
        p = self.population(name)
        return p.dynamics or self.dynamics or "rate"

    def population(self, name: str) -> Population:
        if name not in self._by_name:
            raise ConfigError(f"Circuit: no population {name!r}; populations are {list(self._by_name)}")
        return self._by_name[name]

    def synapse(self, name: str) -> FeedforwardSynapses:
        for s in self.feedforward:
            if s.name == name:
                return s
        raise ConfigError(f"Circuit: no synapse {name!r}; synapses are {[s.name for s in self.feedforward]}")

    def incoming(self, name: str) -> list[FeedforwardSynapses]:
        """Synapses whose post is population ``name``, in circuit order."""
        return list(self._incoming[self.population(name).name])

    def outgoing(self, name: str) -> list[FeedforwardSynapses]:
        return list(self._outgoing[self.population(name).name])

    def bias(self, name: str) -> torch.Tensor:
        """The bias b of population ``name`` (a Parameter; fixed when ``learn_bias`` is False)."""
        self.population(name)
        if name == self.input:
            raise ConfigError(f"Circuit: the input population {name!r} is clamped and has no bias")
        return self.biases[name]

    # -- initialisation ----------------------------------------------------------------------
    @torch.no_grad()
    def balance_inhibition(self) -> None:
        """Set every inhibitory population up as mean-cancelling subtractive inhibition (see ``balance``)."""
        inhibitory = [p for p in self.populations if p.sign == "I" and p.name != self.input]
        if not inhibitory:
            raise ConfigError("Circuit: balance=True needs at least one inhibitory (sign='I') population")
        for p in inhibitory:
            ins, outs = self._incoming[p.name], self._outgoing[p.name]
            direct = [s for s in self.feedforward
                      if len(ins) == 1 and len(outs) == 1 and s.pre is ins[0].pre and s.post is outs[0].post]
            if len(ins) != 1 or len(outs) != 1 or len(direct) != 1:
                raise ConfigError(
                    f"Circuit: balance=True: inhibitory population {p.name!r} needs exactly one incoming "
                    "synapse (from q), one outgoing synapse (to e) and one direct synapse q->e "
                    "(subtractive inhibition, Cornford et al. 2021)")
            w_direct = direct[0].weight.detach()
            mean_row = w_direct.mean(dim=0, keepdim=True)
            ins[0].write_weight(mean_row.expand(p.size, -1).clone())
            outs[0].write_weight(torch.full((outs[0].post.size, p.size), -1.0 / p.size,
                                              dtype=w_direct.dtype, device=w_direct.device))

    # -- evaluation --------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        n = self._by_name[self.input].size
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != n:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"Circuit: the input population {self.input!r} has {n} neurons; expected x of "
                             f"shape (..., {n}), got {shape}")
        return x

    def input_rates(self, x: torch.Tensor) -> torch.Tensor:
        """The input population's rates for input x, without noise: x + baseline (the input's
        ``bias``), rectified when the input population has ``rectify``."""
        p = self._by_name[self.input]
        if isinstance(p.bias, (list, tuple)) or p.bias != 0:
            x = x + torch.as_tensor(p.bias, dtype=x.dtype, device=x.device)
        return torch.relu(x) if p.rectify else x

    def rates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Steady-state rates of every population (name → tensor of shape (..., size))."""
        x = self._check_input(x)
        if self.cycle is not None:
            raise ConfigError(f"Circuit: the synapses form a cycle {' -> '.join(self.cycle)}, so the circuit has "
                              "no steady state circuit(x); run it in time with circuit.simulate(x, ...) or, to "
                              "train it, circuit.unroll(x, ...)")
        exact = exact_gradients_active()
        r = {self.input: self.input_rates(x)}
        for pop in self.populations:
            if pop.name == self.input:
                continue
            current = None
            for syn in self._incoming[pop.name]:
                pre = r[syn.pre.name]
                term = syn.project(pre) if (exact or syn.has_feedback) else syn.project(pre.detach())
                current = term if current is None else current + term
            # the fixed point of both dynamics forms: r = f(I) (rate form), x = I and r = f(x) (current)
            r[pop.name] = pop.act.f(current + self.biases[pop.name])
        if len(self.direct) and not exact and torch.is_grad_enabled():
            targets = [r[fb.target.name] for fb in self.direct]
            r[self.output] = DirectFeedback.apply(r[self.output], [fb.B.detach() for fb in self.direct], *targets)
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rates of the output population at steady state, shape (..., output.size)."""
        if self.output is None:
            raise ConfigError("Circuit: this circuit has no output population; use circuit.rates(x)")
        return self.rates(x)[self.output]

    def simulate(self, x, duration: float | None = None, dt: float | None = None, r0=None, *,
                 generator: torch.Generator | None = None, noise: dict | None = None):
        """Integrate the dynamics (no autograd); see :func:`biofa.circuit.dynamics.simulate`."""
        from .dynamics import simulate

        return simulate(self, x, duration, dt, r0=r0, generator=generator, noise=noise)

    def unroll(self, x, duration: float | None = None, dt: float | None = None, r0=None, *,
               generator: torch.Generator | None = None, noise: dict | None = None, truncate: int | None = None,
               probe: bool = False):
        """The dynamics as a differentiable trajectory (training through time); see
        :func:`biofa.circuit.unroll.unroll`."""
        from .unroll import unroll

        return unroll(self, x, duration, dt, r0=r0, generator=generator, noise=noise, truncate=truncate,
                      probe=probe)

    def learn_online(self, x, target, duration: float | None = None, dt: float | None = None,
                     lr: float | None = None, **kwargs):
        """Learn while the dynamics run (``method="three_factor"``, ``"rflo"`` or ``"eprop"``); see
        :func:`biofa.circuit.online.learn_online`."""
        from .online import learn_online

        return learn_online(self, x, target, duration, dt, lr, **kwargs)

    def learn_sequence(self, x, target, duration: float | None = None, dt: float | None = None,
                       lr: float | None = None, **kwargs):
        """RFLO or e-prop with the weights held for the sequence, the summed update computed backwards
        in time; see :func:`biofa.circuit.sequence_update.learn_sequence`."""
        from .sequence_update import learn_sequence

        return learn_sequence(self, x, target, duration, dt, lr, **kwargs)

    def online_step(self, rates, target, dt: float, lr: float, **kwargs):
        """One Euler step with plasticity; see :func:`biofa.circuit.online.online_step`."""
        from .online import online_step

        return online_step(self, rates, target, dt, lr, **kwargs)

    # -- specs -------------------------------------------------------------------------------
    def to_spec(self) -> dict:
        """The circuit as a spec dict (TOML-ready); ``biofa.circuit.from_spec`` rebuilds it."""
        return to_spec(self)

    def save(self, path) -> None:
        """Write :meth:`to_spec` as TOML to ``path`` (atomically)."""
        save(self, path)

    def extra_repr(self) -> str:
        return (f"input={self.input!r}, output={self.output!r}, populations="
                f"{[f'{p.name}({p.size})' for p in self.populations]}")
