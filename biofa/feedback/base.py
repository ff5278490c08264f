"""The base class of every feedback rule and the registry that turns names into rules."""

from __future__ import annotations

import abc
import inspect
from typing import ClassVar

import torch
from torch import nn

from .._registry import build_from_table
from ..errors import ConfigError, check_choice


class Feedback(nn.Module, metaclass=abc.ABCMeta):
    """The feedback synapses of one layer: the matrix B that carries the error backwards.

    B has the shape of the forward weight W it stands in for; the layer's backward sends
    ``g @ B`` to its input where backprop would send ``g @ W``. A rule holds only its
    hyper-parameters until :meth:`bind` attaches it to a layer and draws its tensors: a fixed B is
    a registered buffer, a learned B a :class:`~torch.nn.Parameter` of its own, so
    ``state_dict``, ``.to()`` and ``deepcopy`` keep it.

    Subclasses implement :meth:`matrix_for` and, when B is learned, :meth:`feedback_grad`.
    """

    #: Registry name of the rule ("fa", "usf", ...).
    name: ClassVar[str] = ""
    #: B is a Parameter that receives a gradient of its own (Kolen–Pollack, weight mirror).
    learned: ClassVar[bool] = False
    #: The rule reads the sign of W (uSF, frSF, brSF): degenerate under Dale's law for uSF.
    sign_concordant: ClassVar[bool] = False
    #: Direct feedback: the error comes from the network output, not from the layer above.
    direct: ClassVar[bool] = False
    #: For convolutions B is a dense matrix from the whole output map to the whole input map,
    #: ``(C_out·L_out, C_in·L_in)``, not a kernel shared over positions (DenseFA).
    untied: ClassVar[bool] = False

    def __init__(self):
        super().__init__()
        # The owning layer, kept out of the module tree (no second registration, no cycle in
        # state_dict); deepcopy maps it to the copied layer.
        object.__setattr__(self, "_owner", None)
        #: The owning layer's name in its model (set by biofa.nn.convert), for messages.
        self.where: str | None = None

    # -- construction ----------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments, unmodified: ``type(rule)(**rule.config())`` is a clone."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def clone(self) -> "Feedback":
        """A fresh, unbound rule with the same hyper-parameters."""
        return type(self)(**self.config())

    def bind(self, layer, generator: torch.Generator | None = None) -> "Feedback":
        """Attach to ``layer`` and draw this rule's tensors for ``layer.weight``'s shape."""
        if self._owner is not None and self._owner is not layer:
            raise ConfigError(
                f"This {type(self).__name__} feedback is already bound to another layer; "
                "pass a rule name or a new rule object to each layer (biofa.nn.convert clones)."
            )
        object.__setattr__(self, "_owner", layer)
        with torch.no_grad():
            self.reset_parameters(layer.weight, generator)
        return self

    @property
    def init_scheme(self):
        """The init distribution B draws from: the rule's own ``init``, else the owner's."""
        own = getattr(self, "init", None)
        if own is not None:
            return own
        return getattr(self._owner, "init", "xavier")

    def reset_parameters(self, weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Draw the rule's tensors for a forward weight like ``weight`` (nothing by default)."""

    def prepare(self, x: torch.Tensor) -> None:
        """Called by the layer's forward with its input before B is read (nothing by default;
        DenseFA draws its B at the first input and checks the size of later ones)."""

    # -- the matrix ------------------------------------------------------------------------
    @abc.abstractmethod
    def matrix_for(self, weight: torch.Tensor) -> torch.Tensor:
        """The effective B for forward weight ``weight`` at the current training step."""

    def feedback_input(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The tensor besides W that B is made of (FA's B, frSF's magnitudes, brSF's draw key, a
        learned B), read once per forward and handed to the backward, or None when B is a function
        of W alone.

        Capturing it at forward time is what makes ``torch.func.functional_call`` with a
        substituted buffer or parameter use the substituted B.
        """
        return None

    def matrix_from(self, weight: torch.Tensor, fb_input: torch.Tensor | None) -> torch.Tensor:
        """B from W and this forward's :meth:`feedback_input` (what the backward uses)."""
        return self.matrix_for(weight)

    def backward_matrix(self, weight: torch.Tensor, fb_input: torch.Tensor | None) -> torch.Tensor:
        """B as one backward pass uses it: :meth:`matrix_from`, possibly written into a buffer the
        rule reuses (the backward consumes B at once)."""
        return self.matrix_from(weight, fb_input)

    def matrix(self) -> torch.Tensor:
        """The effective B in use now by the owning layer (detached)."""
        if self._owner is None:
            raise ConfigError(f"{type(self).__name__} feedback is not bound to a layer yet.")
        with torch.no_grad():
            return self.matrix_for(self._owner.weight.detach())

    def feedback_parameter(self) -> torch.Tensor | None:
        """The learned B Parameter, or None for fixed rules."""
        return None

    def feedback_grad(self, weight: torch.Tensor, grad_weight: torch.Tensor,
                      fb_input: torch.Tensor | None = None) -> torch.Tensor | None:
        """Gradient of the learned B (``fb_input``) for one backward pass (None for fixed rules)."""
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


RULES: dict[str, type[Feedback]] = {}


def register_rule(cls: type[Feedback]) -> type[Feedback]:
    """Class decorator: make ``cls`` available by its ``name`` everywhere a rule is accepted."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty 'name'")
    RULES[cls.name] = cls
    return cls


def make_feedback(spec, owner: str = "layer") -> Feedback:
    """Turn ``spec`` into a new, unbound rule.

    ``spec`` is a registry name (``"fa"``), a :class:`Feedback` object (cloned, so the caller's
    object is never bound or mutated), or a table ``{"rule": "usf", "scale": "sn"}``.
    """
    if isinstance(spec, Feedback):
        return spec.clone()
    if isinstance(spec, dict):
        return build_from_table(spec, RULES, owner, "feedback")
    check_choice(owner, "feedback", spec, sorted(RULES))
    return RULES[spec]()


def rule_name(value) -> str | None:
    """The registry name of a feedback value: a name (``"fa"``), a table with ``"rule"``
    (``{"rule": "usf", "scale": "sn"}``) or a :class:`Feedback` object.

    None for no pathway (``None`` or ``"none"``) and for a table without ``"rule"``; anything else
    is returned as it is (not validated: :func:`check_value` and :func:`make_feedback` do that).
    """
    if value is None or value == "none":
        return None
    if isinstance(value, Feedback):
        return value.name
    if isinstance(value, dict):
        return value.get("rule")
    return value


def check_value(value) -> str | None:
    """Check a feedback value in a spec: None when it names a registered rule (a name, or a table
    whose ``"rule"`` does), else what was expected, for a message ``"<key>: expected <text>"``."""
    if isinstance(value, dict):
        value = value.get("rule")
    return None if value in RULES else "a feedback rule, one of " + ", ".join(sorted(RULES)) + \
        " (or a table {rule = ..., ...})"
