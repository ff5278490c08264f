"""The per-layer columns of history.csv: ``[metrics] alignment``, ``update_alignment`` and
``spectra`` (``nse:<layer>``, :func:`~biofa.analysis.layer_nse`; epoch 0 is the initialisation)
(:func:`layer_columns`), and the conservation-law columns of ``[metrics] invariants`` and
``[metrics] min_norm``. A task run (a circuit trained in time) with ``spectra = true`` records
``nse:recurrent`` instead (:func:`recurrent_columns`).

``invariants = true`` records, for every hidden layer l of a chain of ``biofa.nn.Linear`` (named by
the layer whose rows are its neurons, W_l),

.. math:: \\texttt{invariant\\_sum} = \\sum_i c_{l,i}, \\qquad
          \\texttt{invariant\\_drift} = \\frac{\\|c_l(t) - c_l(0)\\|}{\\|c_l(0)\\|},
          \\qquad c_{l,i} = \\|W_l[i,:]\\|^2 + b_{l,i}^2 - 2\\langle W_{l+1}[:,i], B_{l+1}[:,i]\\rangle

(:func:`~biofa.analysis.relu_invariants`, conserved by FA's gradient flow in linear and ReLU
networks; drift is measured against the first recorded value, epoch 0). ``min_norm = true``
records ``min_norm_distance``, the relative distance of :math:`W_2 W_1` from :math:`Y X^+` on the
training split (:func:`~biofa.analysis.distance_to_min_norm`); it needs a two-layer linear
network without biases on a regression task.
"""

from __future__ import annotations

import torch

from ... import analysis
from ...errors import ConfigError

def _design(splits):
    """(X, Y) of the training split with samples as columns, float64."""
    x, y = splits.train.tensors[0], splits.train.tensors[1]
    return x.reshape(len(x), -1).to(torch.float64).T, y.reshape(len(y), -1).to(torch.float64).T


def check_metrics(metrics: dict, model, splits) -> None:
    """Raise :class:`~biofa.errors.ConfigError` when ``[metrics]`` asks for a quantity ``model``
    does not have: invariants need a chain of biofa Linear layers with layer-wise feedback (not
    DFA, not conv); min_norm needs two such layers, no biases, nothing nonlinear between them
    (checked on training inputs: :math:`f(x) = W_2 W_1 x`) and a regression task."""
    if not (metrics.get("invariants") or metrics.get("min_norm")):
        return
    try:
        Ws, bs, _ = analysis.feedback_chain(model)
    except ConfigError as err:
        key = "invariants" if metrics.get("invariants") else "min_norm"
        raise ConfigError(f"[metrics] {key} = true: {err}") from None
    if len(Ws) < 2:
        raise ConfigError("[metrics] invariants/min_norm = true needs at least two biofa layers (one hidden layer)")
    if not metrics.get("min_norm"):
        return
    if splits.task != "regression":
        raise ConfigError(f"[metrics] min_norm = true needs a regression task; {splits.name!r} is "
                          f"{splits.task} (use e.g. data name = 'linear_teacher')")
    if len(Ws) != 2 or any(b is not None for b in bs):
        raise ConfigError(f"[metrics] min_norm = true needs a two-layer linear network without biases "
                          f"(e.g. [model] name = 'mlp', hidden = [h], activation = 'linear', bias = false); "
                          f"this model has {len(Ws)} layers{' with biases' if any(b is not None for b in bs) else ''}")
    X, _ = _design(splits)
    probe = X.T[:16]
    param = next(model.parameters())
    with torch.no_grad():
        out = model(probe.to(param.dtype).reshape(-1, *splits.input_shape)).to(torch.float64)
    expect = probe @ analysis.effective_weight(Ws).T
    tol = 1e-4 if param.dtype == torch.float32 else 1e-10
    if not torch.allclose(out.reshape(expect.shape), expect, rtol=tol, atol=tol * float(expect.abs().max())):
        raise ConfigError("[metrics] min_norm = true needs a linear network (f(x) = W_2 W_1 x); this model is "
                          "not linear (an activation between the layers? use activation = 'linear')")


def initial_invariants(model, metrics: dict) -> list[torch.Tensor] | None:
    """c_l(0) of the freshly built ``model``: the baseline of ``invariant_drift`` (None unless
    ``[metrics] invariants`` asks for it).

    Taken from the initial weights, not from the first weights a process sees, so that a run
    resumed from a checkpoint measures its drift from the same c_l(0) as one never stopped.
    """
    if not metrics.get("invariants"):
        return None
    return [c.clone() for c in analysis.relu_invariants(model)]


def conservation_columns(model, metrics: dict, splits, initial: list[torch.Tensor] | None = None) -> dict:
    """``{"invariant_sum:<layer>", "invariant_drift:<layer>", "min_norm_distance:model": value}``
    for the current weights, as ``[metrics]`` asks (empty when it asks for neither).

    ``initial`` is :func:`initial_invariants` of the run's initial model (default: the current
    invariants, i.e. zero drift).
    """
    out = {}
    if metrics.get("invariants"):
        names = [name or "model" for name, _ in analysis.feedback_layers(model)]
        now = analysis.relu_invariants(model)
        start = now if initial is None else initial
        for name, c, c0 in zip(names, now, start):
            out[f"invariant_sum:{name}"] = float(c.sum())
            out[f"invariant_drift:{name}"] = analysis.drift(c0, c) if bool(c0.any()) else None
    if metrics.get("min_norm"):
        X, Y = _design(splits)
        out["min_norm_distance:model"] = analysis.distance_to_min_norm(analysis.effective_weight(model), X, Y)
    return out


def layer_columns(model, metrics: dict, probe, loss_fn) -> dict:
    """``{"<metric>:<layer>": value}`` from biofa.analysis for the current weights."""
    out = {}
    if metrics["alignment"]:
        for layer, values in analysis.layer_metrics(model).items():
            for metric, value in values.items():
                out[f"{metric}:{layer or 'model'}"] = value
    if metrics.get("spectra"):
        for layer, value in analysis.layer_nse(model).items():
            out[f"nse:{layer or 'model'}"] = value
    if metrics["update_alignment"] and probe is not None:
        for layer, value in analysis.update_alignment(model, probe[0], probe[1], loss_fn).items():
            out[f"update_alignment:{layer or 'model'}"] = value
    return out


def recurrent_columns(circuit, metrics: dict) -> dict:
    """``{"nse:recurrent": value}`` (``recurrent1``, ``recurrent2``, ... with several blocks): the
    NSE of each recurrent block's matrix with its interneurons eliminated
    (:func:`biofa.circuit.recurrent_init.effective_recurrent_matrix`: a DANN block's
    :math:`W_{EE} - W_{EI} W_{IE}`), when ``[metrics] spectra`` asks for it; epoch 0 is the
    initialisation."""
    if not metrics.get("spectra"):
        return {}
    from ...circuit.recurrent_init import effective_recurrent_matrix

    blocks = circuit.recurrent_components
    out = {}
    for k, component in enumerate(blocks, 1):
        name = "recurrent" if len(blocks) == 1 else f"recurrent{k}"
        out[f"nse:{name}"] = analysis.nse(effective_recurrent_matrix(circuit, component)[1])
    return out
