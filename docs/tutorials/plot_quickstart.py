"""
Quickstart: can a network learn without transporting its weights?
==================================================================

Backpropagation sends the output error back through the *transpose of the forward weights*:
the error reaching a hidden layer is :math:`\\delta h = g\\,W`. A neuron has no access to the
weights of the synapses it projects onto, so Lillicrap et al. (2016) asked what happens when
the error travels back through a **fixed random matrix** :math:`B` instead,
:math:`\\delta h = g\\,B`. Their answer, *feedback alignment* (FA): the network still learns,
because the forward weights come to align with the feedback weights.

This tutorial trains the same multilayer perceptron with backprop (BP) and with FA on
MNIST-1D (Greydanus 2020) and reads two curves: the accuracy, and the angle between each
layer's forward weights :math:`W` and its feedback weights :math:`B`,

.. math:: \\angle(W, B) = \\arccos \\frac{\\langle W, B \\rangle_F}{\\|W\\|_F \\, \\|B\\|_F}.

An angle of 90° means the feedback carries no information about the forward weights (a random
:math:`B` in high dimension); 0° is backprop.

Reference: T. P. Lillicrap, D. Cownden, D. B. Tweed and C. J. Akerman, "Random synaptic feedback
weights support error backpropagation for deep learning", *Nature Communications* 7, 13276 (2016).
"""

# %%
# Set-up
# ------
# ``BIOFA_FAST=1`` (set by the test suite) shrinks the run to a few epochs; the documentation
# is built with the full run.
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import biofa.analysis as ba
import biofa.data as bd
import biofa.models as bm
import biofa.nn as bnn

FAST = os.environ.get("BIOFA_FAST", "0") not in ("", "0")
EPOCHS = 8 if FAST else 100
BATCH = 100
torch.manual_seed(0)

# %%
# The data: MNIST-1D
# ------------------
# 4000 training and 1000 test sequences of 40 numbers, ten classes, generated offline by the
# ``mnist1d`` package. :func:`biofa.data.load` holds out 10% of the training split for
# validation (seeded) and standardises all three parts with the training part's statistics, so
# the test split is touched once, at the end.
splits = bd.load("mnist1d", validation=0.1, seed=0)
x_train, y_train = splits.train.tensors
x_val, y_val = splits.val.tensors
x_test, y_test = splits.test.tensors
print(splits.sizes())

# %%
# One network, two learning rules
# -------------------------------
# We write the network once in plain torch, draw its weights Xavier-uniform (biofa's default,
# :func:`biofa.models.initialize`), and let :func:`biofa.nn.convert` replace every
# ``nn.Linear`` by a :class:`biofa.nn.Linear` with the chosen feedback rule. ``convert`` copies
# the forward weights, so BP and FA start from *identical* forward weights; only the
# feedback differs. For FA each layer draws its own fixed B (a registered buffer) from the same
# Xavier-uniform distribution as W.
base = torch.nn.Sequential(
    torch.nn.Linear(40, 100), torch.nn.ReLU(),
    torch.nn.Linear(100, 100), torch.nn.ReLU(),
    torch.nn.Linear(100, 10),
)
bm.initialize(base, "xavier", generator=torch.Generator().manual_seed(0))
models = {
    rule: bnn.convert(base, feedback=rule, generator=torch.Generator().manual_seed(1))
    for rule in ("bp", "fa")
}
print(models["fa"])


# %%
# Training and measuring
# ----------------------
# A plain torch training loop: nothing in it knows about feedback rules. After every epoch we
# record the validation accuracy and two measurements from :mod:`biofa.analysis`:
#
# * :func:`~biofa.analysis.layer_metrics`: per layer, the angle :math:`\angle(W, B)` between the
#   forward weight ``layer.weight`` and the feedback in use, ``layer.feedback.matrix()``;
# * :func:`~biofa.analysis.update_alignment`: per hidden layer, Lillicrap et al.'s
#   :math:`\Delta h_\mathrm{FA} \angle \Delta h_\mathrm{BP}`, the angle between the error the
#   rule delivers and the true backprop error on the same validation batch. It leaves the
#   model and the training state untouched.
LAYERS = ["0", "2", "4"]  # the module names of the three Linear layers
loss_fn = torch.nn.functional.cross_entropy


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def measure(model, history):
    history["val"].append(accuracy(model, x_val, y_val))
    metrics = ba.layer_metrics(model)
    history["weight"].append([metrics[name]["weight_alignment"] for name in LAYERS])
    updates = ba.update_alignment(model, x_val, y_val, loss_fn)
    history["update"].append([updates[name] for name in LAYERS[:-1]])


def train(model, epochs, lr=0.05, seed=0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    history = {"val": [], "weight": [], "update": []}
    measure(model, history)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        measure(model, history)
    return {key: np.array(value) for key, value in history.items()}


histories = {}
for rule, model in models.items():
    start = time.perf_counter()
    histories[rule] = train(model, EPOCHS)
    print(f"{rule}: {EPOCHS} epochs in {time.perf_counter() - start:.1f} s, "
          f"final validation accuracy {histories[rule]['val'][-1]:.3f}")

# %%
# The accuracy
# ------------
# Both rules learn, FA more slowly and to a lower accuracy: early in training its hidden layers
# receive errors through a B that has nothing to do with W, and those errors only become
# useful as the network aligns (next plot).
epochs = np.arange(EPOCHS + 1)
fig, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
for rule, style in (("bp", "-"), ("fa", "--")):
    ax.plot(epochs, histories[rule]["val"], style, label=rule.upper())
ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
ax.set(xlabel="epoch", ylabel="validation accuracy", title="MNIST-1D, MLP 40-100-100-10")
ax.legend()

# %%
# Reading the alignment plots
# ---------------------------
# For BP both angles are 0° by construction (B is W). For FA, each layer tells its own story
# (left):
#
# * **Layer 1** (40 → 100): its B would carry the error to the *input*, which does not learn,
#   so it is never used and nothing pulls W towards it. Its angle stays at the 90° of two
#   independent random matrices.
# * **Layer 3** (the output layer, 100 → 10): its W receives the true local gradient, and its B
#   delivers the error to the last hidden layer. The hidden layer learns to produce activity
#   that makes :math:`W_3` useful *given* :math:`B_3`, which drags :math:`W_3` towards
#   :math:`B_3`: the angle falls steadily, far below 90°. This is the alignment Lillicrap et
#   al. describe.
# * **Layer 2** (100 → 100) aligns too, but more weakly: it is further from the output and its
#   error is itself carried by the random :math:`B_3`.
#
# The update alignment (right) is what matters for learning: the angle between the error FA
# delivers to a hidden layer and the error backprop would deliver. Below 90° the FA update is a
# descent direction, so it lowers the loss. It starts near 90° and falls as the forward weights
# align with B; the layer nearer the output is better aligned.
epochs = np.arange(EPOCHS + 1)
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained", sharey=True)
names = ["layer 1 (40→100)", "layer 2 (100→100)", "layer 3, output (100→10)"]
for i, name in enumerate(names):
    left.plot(epochs, histories["fa"]["weight"][:, i], label=name)
for i, name in enumerate(names[:2]):
    right.plot(epochs, histories["fa"]["update"][:, i], color=f"C{i}",
               label=f"error at the output of {name.split(' (')[0]}")
for ax in (left, right):
    ax.axhline(90, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylim=(0, 100))
left.set(ylabel="degrees", title="weight alignment ∠(W, B)")
right.set(title=r"update alignment $\angle(\delta_\mathrm{FA}, \delta_\mathrm{BP})$")
left.legend(loc="lower left", fontsize=8)
right.legend(loc="lower left", fontsize=8)

# %%
# The numbers
# -----------
# The test split is used once, now, for the final models.
for rule, model in models.items():
    print(f"{rule}: test accuracy {accuracy(model, x_test, y_test):.3f}, "
          "final ∠(W, B) per layer: "
          + ", ".join(f"{a:.1f}°" for a in histories[rule]["weight"][-1])
          + "; final update alignment per hidden layer: "
          + ", ".join(f"{a:.1f}°" for a in histories[rule]["update"][-1]))

# %%
# Where next
# ----------
# * :doc:`/guide/feedback` lists every feedback rule (uSF, frSF, brSF, DFA, Kolen–Pollack,
#   weight mirror) and how to choose one.
# * :doc:`/guide/constraints` adds Dale's law and fixed synaptic signs; the next tutorial shows
#   a combination that cannot learn.
