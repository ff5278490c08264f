"""Circuits: populations of rate neurons joined by feedforward and feedback synapse objects.

A :class:`Circuit` is a directed acyclic graph of :class:`Population` objects joined by
:class:`FeedforwardSynapses` (W, on a :class:`biofa.nn.Linear`, so Dale's law, fixed signs,
norm constraints and initialisation are the core's) whose errors travel back through
:class:`FeedbackSynapses` (B: paired FA/sign-concordant/KP/WM pathways, or direct DFA from the
output). It is a torch module: ``circuit(x)`` is the feed-forward (steady-state) pass and
``loss.backward(); opt.step()`` trains it with any torch optimizer, the backward going through B.

The same circuit runs in time: :meth:`Circuit.simulate` integrates
:math:`\\tau \\dot r = -r + f(\\sum W r_\\mathrm{pre} + b)` (forward Euler), and
:meth:`Circuit.learn_online` learns while it runs (three-factor updates on acyclic circuits,
RFLO or e-prop eligibility traces on recurrent ones: :mod:`biofa.circuit.online`). Specs are TOML (:mod:`biofa.circuit.spec`).

>>> import torch
>>> from biofa.circuit import Circuit, Population, FeedforwardSynapses, FeedbackSynapses
>>> x = Population("x", 30)
>>> h = Population("h", 20, activation="tanh")
>>> y = Population("y", 10, activation="linear")
>>> c = Circuit([x, h, y],
...             [FeedforwardSynapses(x, h), FeedforwardSynapses(h, y, feedback="none")],
...             input="x", output="y", feedback=[FeedbackSynapses(y, h, rule="dfa")])
>>> loss = ((c(torch.randn(8, 30)) - torch.zeros(8, 10)) ** 2).sum() / 2
>>> loss.backward()            # h receives e @ B_dfa, never W_{y h}
>>> trace = c.simulate(torch.randn(8, 30), duration=0.1, dt=1e-3)
>>> trace.rates["y"].shape
torch.Size([101, 8, 10])
>>> import biofa.circuit as bc
>>> "lillicrap_linear" in bc.available()
True
"""

from . import activations, dynamics, graph, masks, noise, online, recurrent_init, three_factor, traces, unroll
from .activations import ACTIVATIONS, Activation
from .circuit import Circuit, topological_order
from .dann_synapses import DANNSynapses
from .dynamics import Trajectory, simulate
from .graph import components
from .online import OnlineStep, OnlineTrace, learn_online, online_step
from .populations import Population
from .spec import available, dump, from_spec, load, read, save, to_spec
from .synapses import FEEDBACK_SIGNS, PAIRED_RULES, FeedbackSynapses, FeedforwardSynapses

__all__ = [
    "Population", "FeedforwardSynapses", "DANNSynapses", "FeedbackSynapses", "Circuit",
    "Activation", "ACTIVATIONS", "PAIRED_RULES", "FEEDBACK_SIGNS",
    "simulate", "Trajectory", "learn_online", "online_step", "OnlineStep", "OnlineTrace",
    "load", "available", "from_spec", "to_spec", "read", "save", "dump",
    "activations", "dynamics", "online", "topological_order", "components",
    "graph", "masks", "noise", "recurrent_init", "unroll", "three_factor", "traces",
]
