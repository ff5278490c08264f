"""Update alignment: the error a rule delivers to a layer against the true backprop error.

.. math:: \\theta_l = \\angle\\left(\\delta_l^{\\mathrm{rule}}, \\delta_l^{\\mathrm{BP}}\\right),
          \\qquad \\delta_l = \\frac{\\partial \\mathcal L}{\\partial a_l}

where :math:`a_l` is layer l's output (its pre-activation) on the same batch with the same
weights, :math:`\\delta^{\\mathrm{rule}}` travels back through the model's feedback (FA, uSF,
DFA, ...) and :math:`\\delta^{\\mathrm{BP}}` through the forward weights
(:func:`biofa.nn.exact_gradients`). This is Lillicrap et al.'s (2016) "Δh_FA ∠ Δh_BP": the
hidden update directions, compared as one vector over the whole batch.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import ConfigError, ShapeError, check_choice
from ..nn import FeedbackLayer, exact_gradients
from .alignment import angle, feedback_layers

MODES = ("train", "eval", "current")
_MODULE_KEYS = frozenset(vars(nn.Module()))


def _bookkeeping(hub: nn.Module) -> dict:
    """A copy of a DFA hub's plain-Python state (pass counter, pending errors), two levels deep.

    Read generically from the instance dict, without the attributes every nn.Module has, so it
    does not depend on how the hub names its books.
    """
    def copy(value):
        if isinstance(value, dict):
            return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
        return list(value) if isinstance(value, list) else value

    return {k: copy(v) for k, v in vars(hub).items() if k not in _MODULE_KEYS}


@contextlib.contextmanager
def _undisturbed(model: nn.Module, mode: str):
    """Run analysis passes on ``model`` and leave it exactly as it was.

    Restored on exit: every module's train/eval flag, every parameter's ``requires_grad`` (set to
    False inside, so no weight or learned-feedback gradient is computed and weight mirror draws no
    noise), buffers written by a forward (BatchNorm running statistics: restored only where they
    changed, so graphs that saved unchanged buffers stay valid), and the DFA hubs' pass
    bookkeeping. The global RNG is handled by :func:`update_alignment` itself (``fork_rng``).
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    in_biofa = {id(b) for m in model.modules() if isinstance(m, FeedbackLayer) for b in m.buffers()}
    buffers = [(b, b._version, b.clone()) for b in model.buffers() if id(b) not in in_biofa]
    hubs = [m.feedback.hub for m in model.modules()
            if isinstance(m, FeedbackLayer) and m.feedback.direct and m.feedback.hub is not None]
    hub_state = [(h, _bookkeeping(h)) for h in hubs]
    try:
        if mode != "current":
            model.train(mode == "train")
        for p, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in params:
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, version, saved in buffers:
                # BatchNorm writes running stats without bumping the version counter: compare values
                if b._version != version or not torch.equal(b, saved):
                    b.copy_(saved)
        for h, book in hub_state:
            vars(h).update(book)


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({t.device.index or 0 for t in model.parameters() if t.device.type == "cuda"})


def _errors_at_outputs(model, x, y, loss_fn, layers):
    """One forward and backward: dLoss/d(output) for every call of every layer in ``layers``.

    Returns ``(errors, order)``: per layer name the flattened errors of all its calls, and the
    layer names in the order of their first call.
    """
    names = {id(m): n for n, m in layers}
    captured: dict[str, list] = {}
    order: list[str] = []

    def ensure_graph(module, args):
        # The first layer's input usually does not require grad, and no parameter does in here:
        # give the layer a leaf input that does, so every layer output is part of a graph.
        if args and torch.is_tensor(args[0]) and args[0].is_floating_point() and not args[0].requires_grad:
            return (args[0].detach().requires_grad_(True), *args[1:])
        return None

    def capture(module, args, output):
        name = names[id(module)]
        if name not in captured:
            captured[name] = []
            order.append(name)
        captured[name].append(output)

    handles = []
    try:
        for _, m in layers:
            handles.append(m.register_forward_pre_hook(ensure_graph))
            handles.append(m.register_forward_hook(capture))
        with torch.enable_grad():
            loss = loss_fn(model(x), y)
            if not torch.is_tensor(loss) or loss.numel() != 1:
                shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
                raise ShapeError(f"update_alignment: loss_fn must return a scalar tensor, got {shape}")
            if not order:
                raise ConfigError(f"update_alignment: the forward pass of {type(model).__name__} "
                                  "called none of its biofa layers")
            outputs = [t for n in order for t in captured[n]]
            if not loss.requires_grad:
                raise ConfigError("update_alignment: the loss does not depend on any biofa layer output")
            grads = torch.autograd.grad(loss, outputs, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    errors, k = {}, 0
    for n in order:
        parts = []
        for t in captured[n]:
            g = grads[k]
            parts.append((torch.zeros_like(t) if g is None else g).reshape(-1))
            k += 1
        errors[n] = torch.cat(parts)
    return errors, order


def update_alignment(model: nn.Module, x, y, loss_fn, *, mode: str = "train") -> dict[str, float]:
    """Per hidden biofa layer, the angle in degrees between this rule's error and backprop's.

    .. math:: \\theta_l = \\angle\\left(\\frac{\\partial\\mathcal L}{\\partial a_l}\\Big|_{\\mathrm{rule}},
              \\frac{\\partial\\mathcal L}{\\partial a_l}\\Big|_{\\mathrm{BP}}\\right)

    Parameters
    ----------
    model : a model containing biofa layers.
    x, y : one batch; ``loss_fn(model(x), y)`` must be a scalar tensor.
    mode : ``"train"`` (default): both passes run in training mode, as a training step would
        (BatchNorm normalises with batch statistics, dropout is on); ``"eval"``: both in eval
        mode; ``"current"``: every module keeps its own flag.

    Returns
    -------
    ``{layer name: angle}`` for every biofa layer except the output layer (the one called last in
    the forward pass, whose error is the same under every rule). A layer called several times is
    compared over all its calls at once. NaN where either error is exactly zero (e.g. uSF under
    Dale's law with softmax cross-entropy, see
    :ref:`Background, uSF under Dale's law <background-dale-usf>`).

    Notes
    -----
    Training is not disturbed: no ``.grad`` is written (``torch.autograd.grad`` on the layer
    outputs, with every parameter's ``requires_grad`` off meanwhile, so no weight gradient is
    computed and the weight-mirror noise stream does not advance), the optimizer is not touched,
    every module's train/eval flag is restored, buffers a forward writes (BatchNorm running
    statistics, ``num_batches_tracked``) are restored, both passes see the same dropout masks and
    the global RNG state is restored afterwards, DFA pass bookkeeping is restored, and brSF uses
    the B of the current training step (which a forward never redraws). A weight changed by hand
    since the last step is projected onto its constraints first, as the next forward would do.
    """
    check_choice("update_alignment", "mode", mode, MODES)
    layers = feedback_layers(model)
    if not layers:
        raise ConfigError(f"update_alignment: {type(model).__name__} has no biofa layer "
                          "(biofa.nn.Linear/Conv1d/Conv2d); convert it with biofa.nn.convert first.")
    with _undisturbed(model, mode), torch.random.fork_rng(devices=_cuda_devices(model)):
        cpu_state = torch.get_rng_state()
        cuda_states = [torch.cuda.get_rng_state(d) for d in _cuda_devices(model)]
        rule, order = _errors_at_outputs(model, x, y, loss_fn, layers)
        torch.set_rng_state(cpu_state)
        for d, state in zip(_cuda_devices(model), cuda_states):
            torch.cuda.set_rng_state(state, d)
        with exact_gradients():
            exact, _ = _errors_at_outputs(model, x, y, loss_fn, layers)
    return {n: angle(rule[n], exact[n]) for n in order[:-1]}
