"""A :class:`~biofa.circuit.Circuit` read once into plain numpy: the plan brian2 is built from.

The only place that knows biofa.circuit's objects: populations (``_Pop``), feedforward synapse
objects with their sign projections and learned Kolen–Pollack B (``_FF``) and feedback synapse
objects (``_FB``) become arrays in float64; a feature brian2 cannot express (a norm constraint
while learning, a feedback rule that redraws or rescales B) raises a
:class:`~biofa.errors.ConfigError` naming its object. :data:`ACTIVATIONS` holds f and f' of each
activation as brian2 expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..circuit.synapses import check_updatable_in_place
from ..errors import ConfigError, check_choice

__all__ = ["ACTIVATIONS"]

#: f(I) and f'(I) of each activation as brian2 expressions in the variable ``I``; written to be
#: overflow-free (no ``exp`` of a large argument) so the numpy target raises no warnings.
ACTIVATIONS = {
    "relu": ("clip(I, 0, inf)", "int(I > 0)"),
    "linear": ("I", "1.0"),
    "tanh": ("tanh(I)", "(1 - tanh(I)**2)"),
    "sigmoid": ("(0.5 + 0.5*tanh(0.5*I))", "((0.5 + 0.5*tanh(0.5*I))*(0.5 - 0.5*tanh(0.5*I)))"),
    "softplus": ("(log1p(exp(-abs(I))) + clip(I, 0, inf))", "(0.5 + 0.5*tanh(0.5*I))"),
}


@dataclass
class _Pop:
    name: str
    size: int
    tau: float
    activation: str
    bias: np.ndarray
    learn_bias: bool
    role: str  # "input", "hidden" or "output"
    dynamics: str = "rate"  # "rate" (dr/dt) or "current" (dv/dt, r = f(v))
    sigma: float = 0.0  # noise level (input: sigma_in)
    rectify: bool = False  # input only: r = [x + b + noise]_+


@dataclass
class _FF:
    name: str
    pre: int
    post: int
    weight: np.ndarray  # (post, pre)
    signs: np.ndarray | None  # ±1 of W's shape: projection after every update
    learned_b: bool = False  # a Kolen–Pollack B lives in this projection's store
    b_signs: np.ndarray | None = None  # ±1 of B's shape when the learned B is sign-constrained
    b_matrix: np.ndarray | None = None  # the learned B's initial value
    mask: np.ndarray | None = None  # the fixed connectivity mask M (0/1 of W's shape), None: all-to-all


@dataclass
class _FB:
    name: str
    source: int  # population whose delta (paired) or err (direct) is sent
    target: int  # population that receives it
    kind: str  # "fixed", "bp", "usf", "frsf", "kp"
    direct: bool
    ff: int | None  # index of the paired feedforward object
    matrix: np.ndarray  # (source size, target size): B now
    scale: float = 0.0  # uSF's c
    magnitude: np.ndarray | None = None  # frSF's |R|


@dataclass
class Plan:
    """What :func:`read_circuit` reads: populations, feedforward and feedback objects, and the index
    of each population by name (internal to :mod:`biofa.brian2`)."""

    pops: list
    ffs: list
    fbs: list
    index: dict = field(default_factory=dict)


def as_numpy(t) -> np.ndarray:
    """A float64 numpy copy of a tensor (detached, on the CPU) or of an array-like."""
    if torch.is_tensor(t):
        return t.detach().cpu().to(torch.float64).numpy().copy()
    return np.array(t, dtype=float)


def read_circuit(circuit, *, learning: bool, learn_bias: bool = True, through_time: bool = False) -> Plan:
    """Read a :class:`~biofa.circuit.Circuit` into numpy; raise on what brian2 cannot express.
    ``through_time``: learning by a traced rule (RFLO), which accepts cycles."""
    if learning:
        check_updatable_in_place(circuit, "brian2's online learning")
    if learning and circuit.output is None:
        raise ConfigError("biofa.brian2: online learning needs the circuit's output population; set output=")
    if learning and circuit.recurrent and not through_time:
        raise ConfigError(f"biofa.brian2: online learning needs an acyclic circuit; the synapses form a cycle "
                          f"{' -> '.join(circuit.cycle)} (simulate it, or train it with circuit.unroll)")
    index = {p.name: k for k, p in enumerate(circuit.populations)}
    plan_pops = []
    for p in circuit.populations:
        role = "input" if p.name == circuit.input else "output" if p.name == circuit.output else "hidden"
        check_choice(f"Population {p.name!r} (brian2 export)", "activation", p.activation, sorted(ACTIVATIONS))
        if role == "input":  # the input's bias is its fixed baseline
            bias = np.broadcast_to(np.array(p.bias, dtype=float), (p.size,)).copy()
        else:
            bias = as_numpy(circuit.bias(p.name))
        dynamics = "rate" if role == "input" else circuit.dynamics_of(p.name)
        if learning and dynamics == "current":
            raise ConfigError(f"Population {p.name!r} (brian2 export): online learning integrates the rate form "
                              "only; this population uses the current form")
        plan_pops.append(_Pop(p.name, int(p.size), float(p.tau), p.activation, bias,
                              bool(learn_bias and p.learn_bias), role, dynamics, p.sigma, bool(p.rectify)))
    ffs, ff_index = [], {}
    for s in circuit.feedforward:
        layer = s.layer
        owner = f"FeedforwardSynapses {s.name!r}"
        if layer.norm is not None and learning:
            raise ConfigError(
                f"{owner}: its norm constraint ({layer.norm!r}) cannot be exported to brian2 (rescaling "
                "by the norm of all synapses is not a synaptic equation); remove norm= or learn with "
                "the torch engine.")
        signs = None
        if layer.sign is not None and learning:
            # every enforce mode ends in the projection S*max(S*W, 0) after an online update
            # (a reparameterised weight is written through its right inverse)
            signs = np.broadcast_to(as_numpy(layer.sign.signs), tuple(layer.weight.shape)).copy()
        ff_index[id(s)] = len(ffs)
        ff = _FF(s.name, index[s.pre.name], index[s.post.name], as_numpy(s.weight), signs,
                 mask=None if s.mask is None else as_numpy(s.mask))
        if learning and s.has_feedback and layer.feedback.name == "kp":
            # Kolen–Pollack B learns with W's update even where its error is not used
            ff.learned_b, ff.b_matrix = True, as_numpy(layer.feedback.B)
            if s.feedback_synapses.signs is not None:
                ff.b_signs = np.broadcast_to(as_numpy(s.feedback_synapses.signs)[:, None], ff.weight.shape).copy()
        ffs.append(ff)
    fbs = []
    if learning:
        for f in circuit.feedback:
            if f.target.name != circuit.input:  # an error sent to a clamped input is never used
                fbs.append(_read_feedback(f, index, ff_index, ffs))
    return Plan(plan_pops, ffs, fbs, index)


def _read_feedback(f, index, ff_index, ffs) -> _FB:
    name, owner = f.name, f"FeedbackSynapses {f.name!r}"
    source, target = index[f.source.name], index[f.target.name]
    matrix = as_numpy(f.matrix())
    if f.direct:
        return _FB(name, source, target, "fixed", True, None, matrix)
    rule = f.synapse.layer.feedback
    ff = ff_index[id(f.synapse)]
    kind = {"fa": "fixed", "bp": "bp", "usf": "usf", "frsf": "frsf", "kp": "kp"}.get(rule.name)
    if kind is None or getattr(rule, "scale", "init") == "sn":
        why = {"brsf": "redraws its magnitudes at every training step",
               "wm": "learns B from noise samples"}.get(rule.name, "rescales B to the norm of W every step")
        raise ConfigError(
            f"{owner}: rule {rule.name!r} {why}, which brian2 export cannot express; brian2 supports "
            "'fa', 'dfa', 'bp', 'kp', and 'usf'/'frsf' with scale='init'.")
    fb = _FB(name, source, target, kind, False, ff, matrix)
    if kind == "usf":
        from ..init import init_std

        fb.scale = float(init_std(tuple(ffs[ff].weight.shape), rule.init_scheme))
    elif kind == "frsf":
        fb.magnitude = as_numpy(rule.magnitude)
    return fb
