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

import biofa.data as bd
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
# We write the network once in plain torch and let :func:`biofa.nn.convert` replace every
# ``nn.Linear`` by a :class:`biofa.nn.Linear` with the chosen feedback rule. ``convert`` copies
# the forward weights, so BP and FA start from *identical* forward weights; only the
# feedback differs. For FA each layer draws its own fixed B (a registered buffer) from W's
# initial distribution (Xavier-uniform).
base = torch.nn.Sequential(
    torch.nn.Linear(40, 100), torch.nn.ReLU(),
    torch.nn.Linear(100, 100), torch.nn.ReLU(),
    torch.nn.Linear(100, 10),
)
models = {
    rule: bnn.convert(base, feedback=rule, generator=torch.Generator().manual_seed(1))
    for rule in ("bp", "fa")
}
print(models["fa"])


# %%
# Training and measuring
# ----------------------
# A plain torch training loop: nothing in it knows about feedback rules. After every epoch we
# record the validation accuracy and, for every biofa layer, the angle between its forward
# weight ``layer.weight`` and the feedback matrix in use, ``layer.feedback.matrix()``.
def alignment_angle(weight, feedback):
    """Angle in degrees between vec(W) and vec(B)."""
    cos = (weight * feedback).sum() / (weight.norm() * feedback.norm())
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def train(model, epochs, lr=0.05, seed=0):
    layers = [m for m in model.modules() if isinstance(m, bnn.Linear)]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    history = {"val": [accuracy(model, x_val, y_val)],
               "angle": [[alignment_angle(m.weight.detach(), m.feedback.matrix()) for m in layers]]}
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history["val"].append(accuracy(model, x_val, y_val))
        history["angle"].append([alignment_angle(m.weight.detach(), m.feedback.matrix()) for m in layers])
    history["angle"] = np.array(history["angle"])
    return history


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
# Reading the alignment plot
# --------------------------
# For BP the angle is 0° by construction (B is W). For FA, each layer tells its own story:
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
# An angle below 90° means that :math:`g\,B` is a descent direction: the FA update is within
# 90° of the BP update, so it lowers the loss.
fig, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
for i, name in enumerate(["layer 1 (40→100)", "layer 2 (100→100)", "layer 3, output (100→10)"]):
    ax.plot(epochs, histories["fa"]["angle"][:, i], label=name)
ax.axhline(90, color="grey", lw=0.8, ls=":")
ax.set(xlabel="epoch", ylabel="∠(W, B) in degrees", ylim=(0, 100),
       title="Feedback alignment: forward weights align with B")
ax.legend(loc="lower left")

# %%
# The numbers
# -----------
# The test split is used once, now, for the final models.
for rule, model in models.items():
    print(f"{rule}: test accuracy {accuracy(model, x_test, y_test):.3f}, "
          "final ∠(W, B) per layer: "
          + ", ".join(f"{a:.1f}°" for a in histories[rule]["angle"][-1]))

# %%
# Where next
# ----------
# * :doc:`/guide/feedback` lists every feedback rule (uSF, frSF, brSF, DFA, Kolen–Pollack,
#   weight mirror) and how to choose one.
# * :doc:`/guide/constraints` adds Dale's law and fixed synaptic signs; the next tutorial shows
#   a combination that cannot learn.
