"""Turn any torch model into one with separate feedback, and wire up DFA."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..errors import ConfigError, DegenerateFeedbackWarning
from ..feedback.direct import DFA, DirectFeedbackHub
from ..constraints.sign import Dale, make_sign
from .ei import Projection, check_ei_sign, make_ei
from .layers import Conv1d, Conv2d, FeedbackLayer, Linear, degenerate_usf_message

_TORCH_TO_BIOFA = {nn.Linear: Linear, nn.Conv1d: Conv1d, nn.Conv2d: Conv2d}


def convert(model: nn.Module, feedback="fa", sign=None, norm=None, *, init="xavier",
            batch_manhattan: bool = False, exclude=(), output: str | None = None, free_norm=(),
            free_sign=(), ei=None, excitatory_input: bool = False,
            generator: torch.Generator | None = None, inplace: bool = False) -> nn.Module:
    """Replace every ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` of ``model`` by biofa's layer.

    Forward weights and biases are copied (under a sign constraint W becomes S∘|W|); B is drawn
    per layer. The rule, sign and norm options are cloned for each layer, so the caller's objects
    are never bound or mutated. Returns a converted deep copy unless ``inplace=True``.

    ``exclude``: names of modules to leave as they are. ``output``: for DFA, the name of the output
    layer (default: the last converted layer in module order).

    ``free_norm``: layers that get no ``norm`` constraint (their norm is learned freely) while every
    other converted layer gets ``norm``, e.g. the read-out under ``norm="const"``. Each entry is a
    module name (``"classifier.5"``) or an int indexing the converted layers in module order
    (``-1``: the last one, the read-out). Sign constraints and feedback are unaffected.

    ``free_sign``: layers exempt from the ``sign`` constraint, named like ``free_norm``: ``[0]``
    lets the first layer read signed inputs with weights of either sign while every later layer
    obeys Dale's law. A free-sign layer is a plain free layer whatever ``ei`` says.

    ``ei``: the E/I architecture of the sign-constrained layers (:mod:`biofa.nn.ei`):
    ``"projection"`` (default), ``"colei"``, ``"dann"`` or a table ``{"rule": "dann", ...}``; other
    than projection it needs ``sign="dale"``. ``excitatory_input``: the first layer's presynaptic
    units are all excitatory (non-negative input populations such as on/off channels,
    :class:`biofa.models.OnOff`), so under Dale's law all its weights are non-negative.

    ``init`` is the distribution feedback is drawn from (FA's B, frSF/brSF magnitudes, uSF's c,
    DFA blocks) and what ``reset_parameters`` redraws W from: ``"xavier"`` (default),
    ``"kaiming"``, a bound a for U[-a, a], or ``"match"``: per layer the uniform U[-a, a] with the
    copied W's own scale (a = √3·RMS(W)), so that B has W's scale whatever init the torch model
    used (:ref:`background-feedback-rules`; torch's default init U[±1/√fan_in] is 1.2–2.4× smaller
    than Xavier). With ``"match"`` the bound is computed from the weights being copied, so to reload
    a state_dict, convert the same torch weights again (or pass the bound explicitly).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    options = {"feedback": feedback, "sign": sign, "norm": norm, "init": init,
               "batch_manhattan": batch_manhattan, "generator": generator}
    exclude = set(exclude)
    unknown = exclude - {n for n, _ in target.named_modules()}
    if unknown:
        raise ConfigError(f"convert: exclude names {sorted(unknown)} are not modules of the model")
    convertible = [name for name, module in target.named_modules() if name not in exclude
                   and not isinstance(module, FeedbackLayer) and type(module) in _TORCH_TO_BIOFA]
    free = _resolve_layers(free_norm, convertible, "free_norm")
    free_signs = _resolve_layers(free_sign, convertible, "free_sign")
    architecture = make_ei(ei)
    check_ei_sign(architecture, sign)
    first_sign = sign
    if excitatory_input and isinstance(make_sign(sign), Dale):
        first_sign = Dale(**{**make_sign(sign).config(), "types": None, "e_fraction": 1.0})
    degenerate = []
    for name, module in list(target.named_modules()):
        if name in exclude or isinstance(module, FeedbackLayer) or type(module) not in _TORCH_TO_BIOFA:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        if not name:
            raise ConfigError("convert: pass a model that contains the layer, not the layer itself "
                              "(or build biofa.nn.Linear/Conv2d directly)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateFeedbackWarning)
            first = name == convertible[0]
            layer_options = {**options, "norm": None} if name in free else dict(options)
            if name in free_signs:
                replacement = Projection().replace(module, {**layer_options, "sign": None}, first)
            else:
                if first:
                    layer_options["sign"] = first_sign
                replacement = architecture.replace(module, layer_options, first)
            for layer in _feedback_layers(replacement):
                layer.feedback.where = name if layer is replacement else f"{name}.{_child_name(replacement, layer)}"
            setattr(parent, child, replacement)
        for w in caught:  # one warning per convert, not one per layer; others pass through
            if not issubclass(w.category, DegenerateFeedbackWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if any(issubclass(w.category, DegenerateFeedbackWarning) for w in caught):
            degenerate.append(name)
    if degenerate:
        shown = ", ".join(degenerate[:4]) + (", ..." if len(degenerate) > 4 else "")
        warnings.warn(degenerate_usf_message(f"convert ({len(degenerate)} layers: {shown})"),
                      DegenerateFeedbackWarning, stacklevel=2)
    if any(isinstance(m, FeedbackLayer) and m.feedback.direct for m in target.modules()):
        connect_dfa(target, output=output, generator=generator)
    return target


def _feedback_layers(module: nn.Module) -> list[FeedbackLayer]:
    return [m for m in module.modules() if isinstance(m, FeedbackLayer)]


def _child_name(parent: nn.Module, child: nn.Module) -> str:
    return next(n for n, m in parent.named_modules() if m is child)


def _resolve_layers(entries, names: list[str], what: str) -> set[str]:
    """The layer names that ``entries`` (names or int indices into ``names``) stand for."""
    if isinstance(entries, (str, int)):
        entries = [entries]
    out = set()
    for entry in entries:
        if isinstance(entry, int) and not isinstance(entry, bool):
            if not -len(names) <= entry < len(names):
                raise ConfigError(f"convert: {what} index {entry} is out of range: the model has "
                                  f"{len(names)} convertible layers {names}")
            out.add(names[entry])
        elif isinstance(entry, str) and entry in names:
            out.add(entry)
        else:
            raise ConfigError(f"convert: {what} entry {entry!r} is not a convertible layer of the model; "
                              f"give a name among {names} or an index (-1: the last layer)")
    return out


def connect_dfa(model: nn.Module, output: str | None = None,
                generator: torch.Generator | None = None) -> nn.Module:
    """Connect every DFA layer of ``model`` to its output layer; returns ``model``.

    The output layer (``output`` by name, else the last biofa layer in module order; it must be a
    Linear) gets a :class:`~biofa.feedback.DirectFeedbackHub` with one block B_l of shape
    (n_out, n_l) per DFA layer, drawn now. Calling it again redraws the blocks.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FeedbackLayer)]
    dfa_layers = [(n, m) for n, m in layers if isinstance(m.feedback, DFA)]
    if not dfa_layers:
        raise ConfigError("connect_dfa: the model has no layer with feedback='dfa'")
    if output is None:
        out_name, out_layer = layers[-1]
    else:
        found = dict(layers)
        if output not in found:
            raise ConfigError(f"connect_dfa: output {output!r} is not a biofa layer of the model; "
                              f"layers are {[n for n, _ in layers]}")
        out_name, out_layer = output, found[output]
    if not isinstance(out_layer, Linear) or not isinstance(out_layer.feedback, DFA):
        raise ConfigError(f"connect_dfa: the output layer {out_name!r} must be a Linear with feedback='dfa' "
                          f"(got {type(out_layer).__name__} with {out_layer.feedback.name!r})")
    for _, m in layers:  # disconnect previous wiring
        if isinstance(m.feedback, DFA):
            m.feedback.hub = None
    feedbacks = [m.feedback for _, m in dfa_layers]
    w = out_layer.weight
    hub = DirectFeedbackHub(out_layer.out_features, feedbacks, generator, device=w.device, dtype=w.dtype)
    out_layer.feedback.hub = hub
    for fb in feedbacks:
        object.__setattr__(fb, "_hub", hub)
    return model


def feedback_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned feedback matrices (Kolen–Pollack, weight mirror) of ``model``."""
    return [p for m in model.modules() if isinstance(m, FeedbackLayer)
            for p in [m.feedback.feedback_parameter()] if p is not None]


def forward_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``model`` except learned feedback matrices."""
    fb = {id(p) for p in feedback_parameters(model)}
    return [p for p in model.parameters() if id(p) not in fb]
