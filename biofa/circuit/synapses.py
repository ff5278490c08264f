r"""Synapse objects: feedforward synapses (W) and feedback synapses (B) between populations.

.. math:: I_\mathrm{post} \mathrel{+}= W \, r_\mathrm{pre}, \qquad
          g_\mathrm{pre} \mathrel{+}= \delta_\mathrm{post} B \;\;\text{(paired)}, \qquad
          g_h \mathrel{+}= e \, B_\mathrm{dfa} \;\;\text{(direct)}

A :class:`FeedforwardSynapses` holds W (shape (post.size, pre.size)) on a
:class:`biofa.nn.Linear` without bias, so feedback rules, sign and norm constraints and
initialisation are the core's. Its paired feedback pathway (rule ``fa``, ``usf``, ``frsf``,
``brsf``, ``kp``, ``wm`` or ``bp``; B of W's shape, living on the layer) is exposed as a
:class:`FeedbackSynapses` in ``synapse.feedback_synapses``. Direct (DFA) feedback from the output
error to a hidden population is a stand-alone :class:`FeedbackSynapses` handed to the circuit.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _hooks
from ..constraints import functional as CF
from ..constraints.sign import Dale, make_sign
from ..errors import ConfigError, check_choice
from ..feedback.base import RULES, Feedback, rule_name  # rule_name: also importable from here
from ..init import check_init, init_weight
from ..nn.functional import FeedbackLinearFunction, call_mode, cast_for_autocast
from ..nn.layers import Linear
from .masks import check_mask_options, draw_mask
from .populations import Population

#: rules a paired feedback pathway may use ("none"/None: no pathway)
PAIRED_RULES = tuple(sorted(set(RULES) - {"dfa"}))
#: rules whose B may carry a sign constraint of its own (the others derive B from W)
SIGNABLE_RULES = ("fa", "kp", "wm", "dfa")
#: values of ``feedback_sign`` / ``FeedbackSynapses(sign=)``
FEEDBACK_SIGNS = (None, "E", "I", "dale")


def _check_population(owner: str, role: str, pop) -> None:
    if not isinstance(pop, Population):
        raise ConfigError(f"{owner}: {role} must be a biofa.circuit.Population, got {type(pop).__name__}")


def _dale(kind: str, enforce: str = "project") -> Dale:
    return Dale(e_fraction=1.0 if kind == "E" else 0.0, enforce=enforce)


def resolve_sign(sign, pre: Population, owner: str):
    """The core sign constraint for a synapse from ``pre`` with argument ``sign``.

    ``None`` follows the presynaptic population (Dale's law when it has a type, free otherwise);
    ``"E"``/``"I"`` declare the synapses excitatory/inhibitory (must agree with ``pre.sign``);
    ``"dale"`` requires a typed ``pre``; ``"free"``/``"fixed"`` (or ``{"rule": "fixed", ...}``)
    only for untyped populations. A table ``{"rule": "E"|"I"|"dale", "enforce": "abs"}`` chooses how
    Dale's law is enforced (see :class:`biofa.constraints.Dale`).
    """
    declared = pre.sign
    if sign is None:
        return None if declared is None else _dale(declared)
    options = dict(sign) if isinstance(sign, dict) else {"rule": sign}
    rule = options.get("rule")
    if rule in ("E", "I", "dale"):
        unknown = sorted(set(options) - {"rule", "enforce"})
        if unknown:
            raise ConfigError(f"{owner}: unknown option(s) {unknown} for sign {rule!r}; expected 'enforce'")
        if rule == "dale":
            if declared is None:
                raise ConfigError(f"{owner}: sign 'dale' takes the type of the presynaptic population "
                                  f"{pre.name!r}, which has none; give it sign='E' or 'I'")
            kind = declared
        else:
            if declared is not None and declared != rule:
                word = {"E": "excitatory", "I": "inhibitory"}
                raise ConfigError(
                    f"{owner}: sign mismatch: the synapses are declared {word[rule]} ({rule!r}) but the "
                    f"presynaptic population {pre.name!r} is {word[declared]} ({declared!r}); under "
                    "Dale's law all its outgoing synapses share its type. Remove the synapse sign or "
                    "change the population's.")
            kind = rule
        return _dale(kind, options.get("enforce", "project"))
    if rule in ("free", "fixed"):
        if declared is not None:
            raise ConfigError(
                f"{owner}: sign {rule!r} contradicts the type {declared!r} of the presynaptic population "
                f"{pre.name!r} (Dale's law fixes the sign of all its outgoing synapses); leave sign unset")
        return make_sign(sign, owner)
    raise ConfigError(
        f"The 'sign' parameter of {owner} must be one of {{None, 'E', 'I', 'dale', 'free', 'fixed'}} "
        f"or a table with a 'rule' key. Got {sign!r} instead.")


def feedback_signs(sign, sender: Population, owner: str, device=None, dtype=None):
    """±1 per sender (row of B) for a feedback ``sign``; None when unconstrained."""
    check_choice(owner, "feedback sign", sign, FEEDBACK_SIGNS)
    if sign is None:
        return None
    kind = sign
    if sign == "dale":
        if sender.sign is None:
            raise ConfigError(f"{owner}: feedback sign 'dale' takes the type of the population that sends "
                              f"the error, {sender.name!r}, which has none; give it sign='E' or 'I'")
        kind = sender.sign
    value = 1.0 if kind == "E" else -1.0
    return torch.full((sender.size,), value, device=device, dtype=dtype)



def _resolve_name(kind: str, default: str, name) -> str:
    """The synapse object's name: ``name`` if given (a non-empty string), else ``default``."""
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"{kind} {default}: name must be a non-empty string, got {name!r}")
    return default if name is None else name


def check_updatable_in_place(circuit, what: str) -> None:
    """Raise :class:`~biofa.errors.ConfigError` when a synapse's W is not a matrix of its own (a
    factorised W such as :class:`~biofa.circuit.DANNSynapses`'), which ``what`` (an engine that
    updates W in place from a local estimate of its gradient) cannot update."""
    for s in circuit.feedforward:
        message = s.in_place_update_error(what)
        if message:
            raise ConfigError(f"FeedforwardSynapses {s.name!r} {message}")


class FeedforwardSynapses(nn.Module):
    r"""All-to-all synapses from ``pre`` to ``post``: :math:`I_\mathrm{post} \mathrel{+}= W r_\mathrm{pre}`.

    Parameters
    ----------
    pre, post : Population
    feedback : the rule of the paired feedback pathway: ``"fa"`` (default), ``"bp"``, ``"usf"``,
        ``"frsf"``, ``"brsf"``, ``"kp"``, ``"wm"``, a table ``{"rule": "usf", "scale": "sn"}``, or
        ``"none"``/``None``: no pathway (``pre`` receives no error through these synapses; use it
        for a population that gets direct feedback).
    feedback_sign : None, ``"E"``, ``"I"`` or ``"dale"``: sign-constrain B itself per sender
        (row k of B, a neuron of ``post``; ``"dale"``: ``post``'s type). Rules fa, kp, wm only.
    sign : None (follow ``pre``: Dale's law when it has a type), ``"E"``, ``"I"``, ``"dale"``,
        ``"free"``, ``"fixed"`` or a table (see :func:`resolve_sign`).
    norm : None, ``"const"`` or a table, as :class:`biofa.nn.Linear`.
    init : ``"xavier"`` (default), ``"kaiming"`` or a bound a for U[-a, a]; under a sign
        constraint W starts at :math:`S \circ |W|`.
    name : default ``"pre->post"``.
    p_connect : None or a probability in (0, 1]: each synapse exists with this probability, drawn
        once into the fixed mask M (a buffer; :mod:`biofa.circuit.masks`); W and B act as M∘W, M∘B.
    autapses : None or bool; ``False`` on a self-connection (pre is post) removes every neuron's
        synapse onto itself (the diagonal of M).
    generator : torch.Generator for W, B, sign masks and the connectivity mask (drawn last).

    Attributes
    ----------
    layer : biofa.nn.Linear
        Holds W, its feedback rule and constraints.
    feedback_synapses : FeedbackSynapses or None
        The paired feedback pathway.
    """

    def __init__(self, pre: Population, post: Population, *, feedback="fa", feedback_sign=None,
                 sign=None, norm=None, init="xavier", name: str | None = None, p_connect=None,
                 autapses=None, generator: torch.Generator | None = None, device=None, dtype=None):
        super().__init__()
        _check_population("FeedforwardSynapses", "pre", pre)
        _check_population("FeedforwardSynapses", "post", post)
        resolved = _resolve_name("FeedforwardSynapses", f"{pre.name}->{post.name}", name)
        owner = f"FeedforwardSynapses {resolved!r}"
        check_mask_options(owner, p_connect, autapses, pre is post)
        if not (feedback is None or isinstance(feedback, (str, dict, Feedback))):
            raise ConfigError(f"{owner}: feedback must be a rule name, a table or 'none', got {feedback!r}")
        if isinstance(feedback, dict) and feedback.get("rule") in (None, "none"):
            raise ConfigError(f"{owner}: a feedback table needs a 'rule' key naming one of {list(PAIRED_RULES)}, got {feedback!r}")
        rule = rule_name(feedback)
        if rule == "dfa":
            raise ConfigError(
                f"{owner}: 'dfa' is direct feedback from the output, not a paired pathway: declare it "
                f"as FeedbackSynapses(source=<output>, target={pre.name!r}) (a [[feedback]] table in a "
                "spec) and give these synapses feedback='none'")
        if rule is not None:
            check_choice(owner, "feedback", rule, PAIRED_RULES + ("none",))
        constraint = resolve_sign(sign, pre, owner)
        self.pre = pre
        self.post = post
        self.name = resolved
        self.feedback = feedback
        self.feedback_sign = feedback_sign
        self.sign = sign
        self.norm = norm
        self.init = init
        self.p_connect = p_connect
        self.autapses = autapses
        try:
            self.layer = Linear(pre.size, post.size, bias=False, feedback="bp" if rule is None else feedback,
                                sign=constraint, norm=norm, init=init, generator=generator,
                                device=device, dtype=dtype)
        except ConfigError as err:
            raise ConfigError(f"{owner}: {err}") from None
        if rule is None:
            if feedback_sign is not None:
                raise ConfigError(f"{owner}: feedback_sign={feedback_sign!r} needs a feedback pathway, "
                                  "but feedback is 'none'")
            self.feedback_synapses = None
        else:
            self.feedback_synapses = FeedbackSynapses._paired(self, feedback_sign)
        w = self.layer.weight
        self.register_buffer("mask", draw_mask(tuple(w.shape), p_connect, autapses, generator,
                                               device=w.device, dtype=w.dtype))
        if self.mask is not None:
            self.write_weight(w.detach() * self.mask)
            self._mask_feedback()

    @torch.no_grad()
    def _mask_feedback(self) -> None:
        """M∘B for rules with a B of their own (fixed or learned); the rules that derive B from W
        (bp, uSF, frSF, brSF) read the masked W, whose absent entries are 0."""
        b = getattr(self.layer.feedback, "B", None)
        if isinstance(b, torch.Tensor) and b.shape == self.mask.shape:
            b.mul_(self.mask.to(b.dtype))

    @property
    def weight(self) -> torch.Tensor:
        """The effective forward weight W (M∘W under a connectivity mask), shape (post.size, pre.size)."""
        w = self.layer.weight
        return w if self.mask is None else w * self.mask.to(w.dtype)

    @torch.no_grad()
    def write_weight(self, value: torch.Tensor) -> None:
        """Set the effective W (through a sign reparameterisation, sign-projected, masked; a norm
        target follows)."""
        layer = self.layer
        if self.mask is not None:
            value = value * self.mask.to(value.dtype)
        if layer.sign is not None:
            value = layer.sign.project(value)
        layer._set_weight(value)
        if layer.norm is not None:
            layer.norm.bind(value)

    def in_place_update_error(self, what: str) -> str | None:
        """Why ``what`` (an engine that writes W in place) cannot update these synapses, or None."""
        return None

    def feedback_matrix(self) -> torch.Tensor:
        """The effective B of the paired pathway now (detached; M∘B under a connectivity mask)."""
        b = self.layer.feedback.matrix()
        return b if self.mask is None else b * self.mask.to(b.dtype)

    def forward_tensors(self):
        """``(W, fb_input)`` of one forward: the effective (masked, constrained) W the autograd
        function multiplies by, and the rule's feedback tensor (masked when it has W's shape)."""
        layer = self.layer
        w = layer._weight_for_forward()
        if self.mask is not None:
            w = w * self.mask.to(w.dtype)
        fb = layer.feedback.feedback_input(w)
        if self.mask is not None and isinstance(fb, torch.Tensor) and fb.shape == w.shape:
            fb = fb * self.mask.to(fb.dtype)
        return w, fb

    def project(self, r_pre: torch.Tensor) -> torch.Tensor:
        """:math:`W r_\\mathrm{pre}` whose backward sends the error through B (no detaching)."""
        if self.mask is None:
            return self.layer(r_pre)
        w, fb = self.forward_tensors()
        w, r_pre, fb = cast_for_autocast(w, r_pre, fb)
        return FeedbackLinearFunction.apply(r_pre, w, None, fb, self.layer, call_mode(self.layer, r_pre))

    @property
    def has_feedback(self) -> bool:
        """Whether these synapses have a paired feedback pathway (``feedback`` is not ``"none"``)."""
        return self.feedback_synapses is not None

    def forward(self, r_pre: torch.Tensor) -> torch.Tensor:
        """:math:`W r_\\mathrm{pre}`; without a feedback pathway no error reaches ``r_pre``."""
        return self.project(r_pre if self.has_feedback else r_pre.detach())

    def to_spec(self) -> dict:
        """The constructor arguments as a TOML-ready table (None omitted, no feedback → ``"none"``)."""
        spec = {"pre": self.pre.name, "post": self.post.name, "name": self.name}
        fb = self.feedback
        if isinstance(fb, Feedback):
            fb = {"rule": fb.name, **{k: v for k, v in fb.config().items() if v is not None}}
        spec["feedback"] = "none" if fb is None else (dict(fb) if isinstance(fb, dict) else fb)
        for key in ("feedback_sign", "sign", "norm"):
            value = getattr(self, key)
            if value is not None:
                spec[key] = dict(value) if isinstance(value, dict) else value
        spec["init"] = self.init
        for key in ("p_connect", "autapses"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

    def extra_repr(self) -> str:
        return f"{self.name!r}: {self.pre.name}({self.pre.size}) -> {self.post.name}({self.post.size})"


class FeedbackSynapses(nn.Module):
    r"""Feedback synapses: the matrix B that carries an error to the population ``target``.

    .. math:: \text{paired: } g_\mathrm{pre} \mathrel{+}= \delta_\mathrm{post} B, \; B \in
              \mathbb R^{n_\mathrm{post} \times n_\mathrm{pre}}; \qquad
              \text{direct (DFA): } g_h \mathrel{+}= e B, \; B \in \mathbb R^{n_\mathrm{out} \times n_h}

    Construct it for **direct** feedback (Nøkland 2016): ``FeedbackSynapses(source=output,
    target=hidden, rule="dfa")``, where e = ∂L/∂r_out is the error of the output rates; the
    downstream W never enters. B ~ U from ``init`` (default Xavier for shape (n_out, n_h)), a
    buffer. Paired pathways are made by :class:`FeedforwardSynapses` (``feedback=``) and reach B
    through the core layer's rule.

    ``sign``: None, ``"E"``, ``"I"`` or ``"dale"`` (the type of ``source``, the population that
    sends the error): every row k of B gets the sign of sender k, :math:`B = s \circ |B|`.

    Attributes
    ----------
    source, target : Population
        The population that sends the error and the one that receives it.
    rule : str
    synapse : FeedforwardSynapses or None
        The paired synapses (None for direct feedback).

    :meth:`matrix` is the effective B now.
    """

    def __init__(self, source: Population, target: Population, *, rule: str = "dfa", sign=None,
                 init=None, name: str | None = None, generator: torch.Generator | None = None,
                 device=None, dtype=None):
        super().__init__()
        _check_population("FeedbackSynapses", "source", source)
        _check_population("FeedbackSynapses", "target", target)
        resolved = _resolve_name("FeedbackSynapses", f"{source.name}=>{target.name}", name)
        owner = f"FeedbackSynapses {resolved!r}"
        if rule in PAIRED_RULES:
            raise ConfigError(f"{owner}: rule {rule!r} is a paired pathway; set it on the feedforward "
                              f"synapses (FeedforwardSynapses(..., feedback={rule!r}))")
        check_choice(owner, "rule", rule, ("dfa",))
        if init is not None:
            check_init(owner, init)
        signs = feedback_signs(sign, source, owner, device=device, dtype=dtype)
        self.source, self.target, self.rule = source, target, rule
        self.sign, self.init, self.name = sign, init, resolved
        object.__setattr__(self, "synapse", None)
        factory = {"device": device, "dtype": dtype}
        b = init_weight(torch.empty(source.size, target.size, **factory), "xavier" if init is None else init, generator)
        if signs is not None:
            b = b.abs() * signs[:, None]
        self.register_buffer("B", b)
        self.register_buffer("signs", signs)

    @classmethod
    def _paired(cls, synapse: FeedforwardSynapses, sign) -> "FeedbackSynapses":
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        owner = f"FeedforwardSynapses {synapse.name!r}"
        rule = synapse.layer.feedback.name
        w = synapse.layer.weight
        signs = feedback_signs(sign, synapse.post, owner, device=w.device, dtype=w.dtype)
        if signs is not None and rule not in SIGNABLE_RULES:
            raise ConfigError(f"{owner}: feedback_sign needs a rule with a B of its own ({', '.join(SIGNABLE_RULES[:-1])}); "
                              f"rule {rule!r} derives B from W")
        self.source, self.target, self.rule = synapse.post, synapse.pre, rule
        self.sign, self.init, self.name = sign, None, synapse.name
        object.__setattr__(self, "synapse", synapse)
        self.register_buffer("signs", signs)
        if signs is not None:
            self.enforce_constraints(initial=True)
            if synapse.layer.feedback.learned:
                _hooks.register_constrained(self)
        return self

    @property
    def direct(self) -> bool:
        """True for direct (DFA) feedback from the output, False for a paired pathway."""
        return self.synapse is None

    def _b_tensor(self) -> torch.Tensor:
        return self.B if self.direct else self.synapse.layer.feedback.B

    def matrix(self) -> torch.Tensor:
        """The effective B now (detached): shape (source.size, target.size)."""
        return self.B.detach() if self.direct else self.synapse.feedback_matrix()

    # -- sign constraint on B: the global optimizer hook calls these (learned B) ---------------
    def constrained_parameters(self):
        return [] if self.direct else [self.synapse.layer.feedback.B]

    @torch.no_grad()
    def enforce_constraints(self, initial: bool = False) -> None:
        """Project B onto its sign constraint (at construction: :math:`B \\leftarrow s \\circ |B|`)."""
        if self.signs is None:
            return
        b = self._b_tensor()
        s = self.signs[:, None].to(b.dtype)
        b.copy_(b.abs() * s if initial else CF.project_signs(b.detach().clone(), s))

    def violations(self) -> int:
        """Entries of B whose sign contradicts their sender's (0 when unconstrained)."""
        if self.signs is None:
            return 0
        return int(CF.violations(self._b_tensor().detach(), self.signs[:, None]))

    def __setstate__(self, state):
        super().__setstate__(state)
        if state.get("_buffers", {}).get("signs") is not None:
            _hooks.register_constrained(self)

    def to_spec(self) -> dict:
        """Direct feedback as a TOML-ready table (paired pathways live in their synapse's table)."""
        if not self.direct:
            raise ConfigError(f"FeedbackSynapses {self.name!r} is paired: its spec is part of synapse {self.synapse.name!r}")
        spec = {"source": self.source.name, "target": self.target.name, "rule": self.rule, "name": self.name}
        if self.sign is not None:
            spec["sign"] = self.sign
        if self.init is not None:
            spec["init"] = self.init
        return spec

    def extra_repr(self) -> str:
        kind = "direct" if self.direct else "paired"
        return f"{self.name!r}: {kind} {self.rule!r}, {self.source.name}({self.source.size}) => {self.target.name}({self.target.size})"
