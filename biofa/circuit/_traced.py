"""What RFLO and e-prop learn and how (shared by :mod:`biofa.circuit.online` and
:mod:`biofa.circuit.sequence_update`): the method names, the argument checks, the traced weights
of a circuit (:class:`_Learner`, :class:`_Traced`), the routes the output error takes to each
hidden population, and the update with its constraint projection."""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass

import torch
from torch.nn.utils import parametrize

from .. import _hooks
from ..errors import ConfigError, DegenerateFeedbackWarning, DivergenceError, ShapeError
from .dynamics import time_input
from .synapses import check_updatable_in_place
from .traces import TRACES, Trace, exact_trace


def methods() -> tuple:
    """The ``method`` names of :func:`learn_online`: the three-factor rule, then every registered trace."""
    return ("three_factor",) + tuple(TRACES)


def _check_method(method) -> None:
    if method in methods():
        return
    hint = ""
    if isinstance(method, str):
        close = difflib.get_close_matches(method, methods(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"The 'method' parameter of learn_online must be one of {{{', '.join(map(repr, methods()))}}}. "
                      f"Got {method!r} instead{hint}. (Feedback rules such as 'fa' or 'bp' are set on the "
                      "synapses with feedback=..., not here.)")


def _check_lr(lr) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"learn_online: lr must be a finite number > 0 (the learning rate), got {lr!r}")


def _rows(value, name: str, steps: int, batch: int, width: int | None, like: torch.Tensor) -> torch.Tensor:
    """``value`` as (T, batch, width) (a view when broadcast: no copy per step). ``target`` may be
    (T, batch, n_out), (batch, n_out) or (n_out,); ``mask`` (T, batch, n_out) or (T, batch)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    want = f"(T, batch, {width}) = ({steps}, {batch}, {width})"
    if name == "mask":
        if value.dim() == 2 and value.shape == (steps, batch):
            return value.unsqueeze(-1)
        if value.shape == (steps, batch, width):
            return value
        raise ShapeError(f"learn_online: mask must have shape {want} or (T, batch) = ({steps}, {batch}), "
                         f"got {tuple(value.shape)}")
    if value.dim() in (1, 2) and value.shape[-1] == width and (value.dim() == 1 or value.shape[0] == batch):
        return value.expand(steps, batch, width)
    if value.shape != (steps, batch, width):
        raise ShapeError(f"learn_online: target must have shape {want} (one row per step; target[n] scores the "
                         f"output after step n), ({batch}, {width}) or ({width},), got {tuple(value.shape)}")
    return value


@dataclass
class _Learner:
    """One traced weight: a synapse object (``synapse``) or a population's bias (``synapse`` None,
    presynaptic rate 1), columns ``cols`` of its post population's trace."""

    post: str
    synapse: object
    key: str
    cols: slice
    signs: torch.Tensor | None = None  # Dale's signs when they are W's only constraint (in-place projection)


@dataclass
class _Traced:
    """The trace of every weight into population ``post``, side by side: presynaptic rates
    ``pres`` (population names; None for the bias's rate 1) concatenated, so one trace update and
    one gradient serve all of them. ``hidden``: False for the read-out (scored after the advance)."""

    post: str
    pres: list
    trace: Trace
    hidden: bool


def _learners(circuit, method: str, batch: int, dt: float, learn_bias: bool, factory: dict):
    """The traces (one per non-input population) and the weights they serve: every synapse into a
    non-input population and every learned bias. The output's trace is the exact one of its own
    form (it has no recurrence); the others use ``method``'s."""
    check_updatable_in_place(circuit, {"rflo": "RFLO", "eprop": "e-prop"}.get(method, method))
    traced, learners = [], []
    for p in circuit.populations:
        if p.name == circuit.input:
            continue
        readout = p.name == circuit.output
        cls = exact_trace(circuit.dynamics_of(p.name)) if readout else TRACES[method]
        pres, start = [], 0
        for s in circuit._incoming[p.name]:
            learners.append(_Learner(p.name, s, s.name, slice(start, start + s.pre.size), _dale_in_place(s.layer)))
            pres.append(s.pre.name)
            start += s.pre.size
        if learn_bias and p.learn_bias:
            learners.append(_Learner(p.name, None, f"bias:{p.name}", slice(start, start + 1)))
            pres.append(None)
            start += 1
        traced.append(_Traced(p.name, pres, cls(dt / p.tau, batch, p.size, start, **factory), not readout))
    return traced, learners


def _signal_routes(circuit) -> dict:
    """hidden population → (paired read-out synapses whose B carries δ_out, direct pathways
    carrying e); warns (:class:`~biofa.errors.DegenerateFeedbackWarning`) about populations that
    no error reaches, whose incoming synapses will not learn."""
    routes, deaf = {}, []
    for p in circuit.populations:
        if p.name in (circuit.input, circuit.output):
            continue
        paired = [s for s in circuit._outgoing[p.name] if s.post.name == circuit.output and s.has_feedback]
        direct = [fb for fb in circuit.direct if fb.target is p]
        routes[p.name] = (paired, direct)
        if not paired and not direct:
            deaf.append(p.name)
    if deaf:
        warnings.warn(f"learn_online: no error reaches populations {deaf} (they feed the output through no "
                      "synapse with a feedback pathway and receive no direct feedback), so their incoming "
                      "synapses and biases will not learn; read the output from them (readout) or add "
                      "FeedbackSynapses(source=<output>, target=...) to them", DegenerateFeedbackWarning, stacklevel=4)
    return routes


def _check_traced(circuit, method) -> None:
    if circuit.output is None:
        raise ConfigError(f"learn_online(method={method!r}) needs the circuit's output population; set output=")
    for fb in circuit.feedback:
        if fb.rule == "wm":
            raise ConfigError(f"learn_online: synapses {fb.name!r} use weight mirror ('wm'), which learns B "
                              "from noise and has no online form here; use 'kp' or a fixed-B rule")


def _dale_in_place(layer):
    """The ±1 signs when W's only constraint is a projected sign (Dale's law), else None: then
    :meth:`_apply` projects in place, :math:`W \\leftarrow S \\circ \\max(S \\circ W, 0)` — the
    projection of ``layer.enforce_constraints()`` without its temporaries (the per-step cost)."""
    sign = layer.sign
    if sign is None or sign.reparameterised or layer.norm is not None or parametrize.is_parametrized(layer, "weight"):
        return None
    return sign.signs.to(layer.weight.dtype)


def _apply(circuit, learners, grads: dict, lr: float, batch: int) -> None:
    """:math:`W \\leftarrow W - \\eta\\, G / N` for every traced weight, then its constraints
    (sign and norm projected after every update; a learned Kolen–Pollack B gets W's update)."""
    scale = lr / batch
    for ln in learners:
        g = grads[ln.post][:, ln.cols]
        s = ln.synapse
        if s is None:
            circuit.biases[ln.post].sub_(g[:, 0], alpha=scale)
            continue
        layer = s.layer
        if s.mask is not None:
            g = g * s.mask.to(g.dtype)
        if ln.signs is not None:
            layer.weight.sub_(g, alpha=scale).mul_(ln.signs).clamp_(min=0).mul_(ln.signs)
        else:
            if parametrize.is_parametrized(layer, "weight"):
                layer._set_weight(s.weight.detach() - scale * g)
            else:
                layer.weight.sub_(g, alpha=scale)
            layer.enforce_constraints()
        if s.has_feedback and layer.feedback.learned:
            layer.feedback.B.sub_(g, alpha=scale)
            s.feedback_synapses.enforce_constraints()
    _hooks.next_step()


def _check_finite(circuit, learners, lr: float) -> None:
    """Raise :class:`~biofa.errors.DivergenceError` naming the first weight or bias that is not finite."""
    for ln in learners:
        value = circuit.biases[ln.post] if ln.synapse is None else ln.synapse.weight
        if not bool(torch.isfinite(value).all()):
            what = (f"the bias of population {ln.post!r}" if ln.synapse is None
                    else f"the weights of synapses {ln.synapse.name!r}")
            raise DivergenceError(f"learn_online: {what} became non-finite (NaN or inf); the learning rate "
                                  f"lr={lr} is probably too large for this circuit, dt and error")


def _sequence_rows(circuit, x, target, mask, duration, dt, owner: str):
    """The input rows of a traced rule and its target and mask as (T, batch, n_out) rows:
    ``(xs, steps, batch, target, mask, factory)``."""
    xs, steps, _ = time_input(circuit, x, duration, dt, owner)
    batch = xs.shape[1]
    n_out = circuit.population(circuit.output).size
    target = _rows(target, "target", steps, batch, n_out, xs)
    mask = None if mask is None else _rows(mask, "mask", steps, batch, n_out, xs)
    return xs, steps, batch, target, mask, {"dtype": xs.dtype, "device": xs.device}


def _per_weight(learners, grads: dict, batch: int) -> dict:
    """Each traced weight's gradient of the sequence (``OnlineTrace.gradients``): its columns of its
    population's summed gradient, divided by the batch, masked like the synapse."""
    out = {}
    for ln in learners:
        g = grads[ln.post][:, ln.cols] / batch
        mask_s = None if ln.synapse is None else ln.synapse.mask
        out[ln.key] = g if mask_s is None else g * mask_s.to(g.dtype)
    return out

