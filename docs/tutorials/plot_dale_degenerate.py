"""
Sign-concordant feedback under Dale's law: a pathway that carries nothing
=========================================================================

Uniform sign-concordant feedback (uSF; Liao, Leibo & Poggio 2016) sends the error back through
:math:`B = c\\,\\mathrm{sign}(W)`: the feedback synapses know the *sign* of the forward synapses
but not their size, and on vision benchmarks that is almost as good as backprop. Can a network
that obeys **Dale's law** — every neuron is either excitatory or inhibitory — learn with it?

No. Under Dale's law every outgoing weight of presynaptic unit :math:`j` has the unit's sign
:math:`s_j`, so :math:`\\mathrm{sign}(W)_{kj} = s_j` for every output :math:`k`:
:math:`\\mathrm{sign}(W) = \\mathbf 1\\, s^\\top` is rank one, and the error that reaches unit
:math:`j` is

.. math:: \\delta h_j = \\sum_k e_k B_{kj} = c\\, s_j \\sum_k e_k .

With softmax cross-entropy :math:`e = p - \\mathrm{onehot}(y)` and
:math:`\\sum_k e_k = \\sum_k p_k - 1 = 0`: **the hidden error is exactly zero** and nothing below
the output learns. A random-magnitude rule (frSF, :math:`B = \\mathrm{sign}(W)\\circ|R|`) or a
per-synapse sign mask (full rank, not Dale) does not have this problem. This tutorial checks the
derivation numerically, then shows what happens in training, including one trap: weight
*projection* hides the degeneracy by accident.

References: Q. Liao, J. Z. Leibo and T. Poggio, "How important is weight symmetry in
backpropagation?", AAAI 2016; T. H. Moskovitz, A. Litwin-Kumar and L. F. Abbott, "Feedback
alignment in deep convolutional networks", arXiv:1812.06488 (2018).
"""

# %%
# Set-up
# ------
# Float64 throughout, so that "zero" can be told apart from rounding. ``BIOFA_FAST=1`` shortens
# the training part.
import os
import warnings

import matplotlib.pyplot as plt
import torch

import biofa.data as bd
import biofa.nn as bnn
from biofa import DegenerateFeedbackWarning
from biofa.constraints import Dale, FixedSigns

FAST = os.environ.get("BIOFA_FAST", "0") not in ("", "0")
STEPS = 40 if FAST else 400
torch.set_default_dtype(torch.float64)

x_train, y_train = bd.load("mnist1d", validation=0, seed=0).train.tensors
x_train = x_train.double()


# %%
# biofa warns when the combination is built
# -----------------------------------------
# A one-hidden-layer network 40 → 100 → 10. Dale's law constrains the synapses *leaving* the
# hidden units, i.e. the output layer (80% excitatory units by default).
def network(feedback, sign, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.Sequential(
        bnn.Linear(40, 100, feedback=feedback, generator=gen),
        torch.nn.ReLU(),
        bnn.Linear(100, 10, feedback=feedback, sign=sign, generator=gen),
    )


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    network("usf", "dale")
for w in caught:
    print(f"{w.category.__name__}: {w.message}")


# %%
# The hidden error on one batch
# -----------------------------
# We read the error that arrives at the hidden units (the gradient with respect to their
# activity) for one batch of 100 examples, under five combinations of rule and sign
# constraint. All start from the same forward weights.
def hidden_error(model, x, y, loss="cross_entropy"):
    h = model[1](model[0](x))
    h.retain_grad()
    out = model[2](h)
    if loss == "cross_entropy":
        value = torch.nn.functional.cross_entropy(out, y)
    else:
        value = 0.5 * ((out - torch.nn.functional.one_hot(y, 10)) ** 2).sum(dim=1).mean()
    value.backward()
    return h.grad


x, y = x_train[:100], y_train[:100]
configs = {
    "uSF, Dale": ("usf", "dale"),
    "frSF, Dale": ("frsf", "dale"),
    "uSF, fixed signs": ("usf", "fixed"),
    "uSF, free signs": ("usf", None),
    "BP, Dale": ("bp", "dale"),
}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DegenerateFeedbackWarning)  # we know; that is the point
    for label, (rule, sign) in configs.items():
        err = hidden_error(network(rule, sign), x, y)
        print(f"{label:18s} max |δh| = {err.abs().max():.2e}")

# %%
# Under uSF with Dale's law the hidden error is below :math:`10^{-18}`, some fifteen orders
# of magnitude below every other combination: it is the float64 rounding error of
# :math:`\sum_k p_k - 1`, not a signal. The closed form says
# :math:`|\delta h_j| = c\,|\sum_k e_k|`, with :math:`e = (p - \mathrm{onehot}(y))/N` as torch's
# mean-reduced cross-entropy gives it:
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DegenerateFeedbackWarning)
    model = network("usf", "dale")
err = hidden_error(model, x, y)
out = model[2](model[1](model[0](x)))
e = (torch.softmax(out, dim=1) - torch.nn.functional.one_hot(y, 10)) / len(y)
B = model[2].feedback.matrix()
c = B.abs().max()  # uSF: every entry of B is ±c
s = model[2].sign.signs.flatten()  # the unit types s_j = ±1
print(f"c = {c:.4f}; max_n |sum_k e_k| = {e.sum(dim=1).abs().max():.1e}; "
      f"max |δh| = {err.abs().max():.1e}")

# %%
# The structure is easier to see with a squared-error loss, where :math:`e = (y_\text{out} -
# \mathrm{onehot}(y))/N` and :math:`\sum_k e_k \ne 0`. The error is no longer zero, but it is
# still degenerate: every hidden unit receives the *same* number up to its sign :math:`s_j`,
# exactly the closed form, and the hidden error matrix (examples × units) has rank one.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DegenerateFeedbackWarning)
    model = network("usf", "dale")
err_mse = hidden_error(model, x, y, loss="squared_error")
out = model[2](model[1](model[0](x)))
e = (out - torch.nn.functional.one_hot(y, 10)).detach() / len(y)
closed_form = c * e.sum(dim=1, keepdim=True) * s
print(f"squared error: max |δh| = {err_mse.abs().max():.2e}, "
      f"closed form matches autograd: {torch.allclose(err_mse, closed_form, rtol=1e-12, atol=0)}, "
      f"rank of δh = {int(torch.linalg.matrix_rank(err_mse))}")


# %%
# What happens in training
# ------------------------
# Dale's law can be enforced in two ways (see :doc:`/guide/constraints`): by
# **reparameterisation**, :math:`W = S \circ |V|` with ``Dale(enforce="abs")``, which never makes
# a weight exactly zero, or by **projection** after every optimizer step
# (``Dale(enforce="project")``, the default), which clamps violating weights to exactly 0. We
# train each network with SGD and record the norm of the first layer's weight gradient — the
# only way the hidden error shows up in learning.
def train(rule, sign, steps, lr=0.05, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateFeedbackWarning)
        model = network(rule, sign, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    grad_norms, zeros = [], []
    order = torch.randperm(len(x_train), generator=gen)
    for step in range(steps):
        idx = order[(step * 100) % len(order):][:100]
        loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        grad_norms.append(float(model[0].weight.grad.norm()))
        optimizer.step()
        zeros.append(int((model[2].weight == 0).sum()))
    return torch.tensor(grad_norms), zeros


runs = {
    "uSF, Dale (reparameterised)": ("usf", Dale(enforce="abs")),
    "uSF, Dale (projected)": ("usf", Dale(enforce="project")),
    "frSF, Dale (reparameterised)": ("frsf", Dale(enforce="abs")),
    "uSF, fixed signs (reparameterised)": ("usf", FixedSigns(enforce="abs")),
}
results = {label: train(rule, sign, STEPS) for label, (rule, sign) in runs.items()}
for label, (norms, zeros) in results.items():
    live = torch.nonzero(norms > 1e-12)
    first = int(live[0]) if len(live) else None
    print(f"{label:36s} max ‖∇W1‖ = {norms.max():.1e}, first step with ‖∇W1‖ > 1e-12: {first}, "
          f"zero weights in W2 at the end: {zeros[-1]}")

fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
for label, (norms, _) in results.items():
    ax.semilogy(norms.clamp(min=1e-20), label=label)
ax.set(xlabel="optimizer step", ylabel="‖∇W₁‖ (first layer)",
       title="Hidden-layer learning signal, cross-entropy")
ax.legend(fontsize=8)

# %%
# Reading the plot
# ----------------
# * **uSF under Dale, reparameterised**: the first layer's gradient stays at the rounding level
#   for the whole run. The hidden layer never learns; only the output layer does.
# * **frSF under Dale** and **uSF with fixed per-synapse signs** deliver a real error from the
#   first step: a random magnitude, or a full-rank sign mask, breaks the rank-one structure.
# * **uSF under Dale, projected**: the gradient is at the rounding level for the first steps,
#   then jumps up. Projection clamps violating output weights to *exactly zero*, and
#   :math:`\mathrm{sign}(0) = 0`, so :math:`\mathrm{sign}(W)` is no longer rank one: unit
#   :math:`j` now receives :math:`-c\,s_j \sum_{k:\,W_{kj}=0} e_k`, the error of exactly those
#   outputs whose synapse from :math:`j` happens to sit at zero. The network learns, but from an
#   artefact of the projection, not from the rule. Do not read such a run as "uSF works under
#   Dale's law".
#
# The way out is a rule whose magnitudes carry information (frSF, brSF, FA), per-synapse sign
# constraints instead of Dale's law, or a non-uSF feedback pathway altogether.
