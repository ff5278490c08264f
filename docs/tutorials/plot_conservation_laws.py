"""
Conservation laws: what does feedback alignment keep constant while it learns?
==============================================================================

Gradient descent conserves the *balancedness* :math:`W_l W_l^\\top - W_{l+1}^\\top W_{l+1}` of a
deep linear network. Does feedback alignment (FA), whose errors travel back through fixed random
matrices :math:`B_l`, have laws of its own? Robertson & Koyejo (2023) state in their abstract that
it does. The forms below are our derivation (the abstract is all of the paper we could check):
under gradient flow, for every hidden layer :math:`l`

.. math:: C_l = W_l W_l^\\top + b_l b_l^\\top - B_{l+1}^\\top W_{l+1} - W_{l+1}^\\top B_{l+1}
          \\quad \\text{(linear)}, \\qquad
          c_{l,i} = \\|W_l[i,:]\\|^2 + b_{l,i}^2 - 2\\langle W_{l+1}[:,i], B_{l+1}[:,i]\\rangle
          \\quad \\text{(ReLU)}

are constant. This tutorial measures three consequences with the functions of
``biofa run experiments/conservation_laws.toml`` (:mod:`biofa.experiment.conservation`):
(a) discrete steps drift by O(lr), (b) the alignment :math:`\\langle W_l, B_l\\rangle` stays
non-negative and grows from a small initialisation, (c) a two-layer linear network trained by FA
from a small initialisation reaches the minimum-norm solution.

Reference: Z. Robertson and O. Koyejo, "Layer-wise feedback alignment is conserved in deep neural
networks", arXiv:2306.01870 (2023).
"""

# %%
# Set-up
# ------
# ``BIOFA_FAST=1`` (set by the test suite) shrinks every measurement; the documentation is built
# with the settings of the full study. Everything runs in float64 with full-batch steps on the
# loss :math:`\frac{1}{2N}\sum_n \|f(x_n) - y_n\|^2` (standard normal inputs and targets).
import math
import os

import matplotlib.pyplot as plt

from biofa.experiment.conservation import measure
from biofa.experiment.conservation.report import alignment_figure, drift_figure, min_norm_figure

FAST = os.environ.get("BIOFA_FAST", "0") not in ("", "0")
SEEDS = [0] if FAST else [0, 1, 2]
WIDTHS = [20, 50, 40, 5]
SAMPLES = 40 if FAST else 100

# %%
# (a) Drift against time, for several learning rates
# ---------------------------------------------------
# One SGD step of size :math:`\eta` changes :math:`C_l` by exactly
# :math:`\eta^2 (G_l G_l^\top + g_{b_l} g_{b_l}^\top)` (the first-order terms cancel, which is
# the law), so over a fixed time :math:`t = \eta k` the drift is :math:`O(\eta)`. Gradient flow,
# integrated with ``scipy.integrate.solve_ivp``, is the zero-drift reference. GD's balancedness
# is measured along the same FA trajectories: it is not FA's law.
LRS = [0.1, 0.01] if FAST else [0.1, 0.01, 0.001]
rows = []
for network in ("linear", "relu"):
    for rule in ("fa", "bp"):
        for seed in SEEDS:
            for lr in LRS:
                for r in measure.drift_curve(WIDTHS, network, rule, lr, 1.0, seed, SAMPLES, points=10):
                    rows.append({"part": "drift", "network": network, "rule": rule, "method": "sgd",
                                 "lr": lr, "seed": seed, **r})
            if network == "linear":  # a ReLU flow crosses a kink at every sign change: slow to integrate
                for r in measure.flow_drift_curve(WIDTHS, network, rule, 1.0, seed, SAMPLES, points=10):
                    rows.append({"part": "drift", "network": network, "rule": rule, "method": "flow",
                                 "seed": seed, **r})
settings = {"drift": {"networks": ["linear", "relu"], "lrs": LRS, "flow": ["linear"]},
            "min_norm": {}}
drift_figure(rows, settings)
plt.show()

for network in ("linear", "relu"):
    final = {lr: max((r for r in rows if r["network"] == network and r["rule"] == "fa" and r.get("lr") == lr
                      and r["quantity"] == "fa_law"), key=lambda r: r["time"])["value"] for lr in LRS}
    print(network, {lr: f"{v:.2g}" for lr, v in final.items()})

# %%
# Ten times smaller steps, ten times less drift: the law is the flow's, and SGD follows it to
# first order. The flow's drift is integration error (about 1e-12), and GD's balancedness moves
# by O(1) under FA whatever the step size.
#
# (b) Alignment from a small initialisation
# -----------------------------------------
# Summing the ReLU law over a layer gives
# :math:`2\langle W_{l+1}, B_{l+1}\rangle_F = \|W_l\|^2 + \|b_l\|^2 - \sum_i c_{l,i}`. With W
# drawn small (B at its Xavier scale) and the signs of :math:`W_{l+1}`'s columns chosen so that
# :math:`\sum_i c_{l,i} \le 0`, the inner product is at least half the squared norm of the layer
# below, for all time: **it is** :math:`\langle W, B\rangle` **that the law guarantees to be
# non-negative and to grow with** :math:`\|W_l\|^2 + \|b_l\|^2`, not the cosine of the angle.
STEPS = 200 if FAST else 3000
LR = 0.02 if FAST else 0.01
align = []
for seed in SEEDS:
    for r in measure.alignment_curve(WIDTHS, 0.01, LR, STEPS, seed, SAMPLES, points=20):
        align.append({"part": "alignment", "seed": seed, **r})
alignment_figure(align, settings)
plt.show()

# %%
# The left panel follows its lower bound :math:`(\|W_l\|^2 + \|b_l\|^2)/2` once the weights have
# grown; the cosine (right) rises too but is not monotone and has no such guarantee.
#
# (c) The minimum-norm solution
# -----------------------------
# Over-parameterised regression, :math:`d = 100` inputs, :math:`N = 30` samples, 50 hidden
# units, one output, no biases. Every update of :math:`W_1` lies in the row space of
# :math:`X^\top`, so from a small :math:`W` the end-to-end map :math:`W_2 W_1` reaches
# :math:`Y X^+`, the minimum-norm interpolating solution; with one output :math:`W_2` also aligns
# exactly with :math:`B_2`. From a large initialisation the network interpolates elsewhere.
SCALES = [1e-3, 1.0] if FAST else [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
points = []
for rule in ("fa", "bp"):
    for scale in SCALES:
        for seed in SEEDS:
            result = measure.min_norm_point(100, 30, 50, 1, rule, scale, 0.1, 400 if FAST else 1000, seed)
            points += [{"part": "min_norm", "rule": rule, "init_scale": scale, "seed": seed,
                        "quantity": q, "value": v} for q, v in result.items()]
min_norm_figure(points, {"min_norm": {"rules": ["fa", "bp"], "init_scales": SCALES, "d": 100, "samples": 30,
                                      "hidden": 50, "outputs": 1}})
plt.show()
for p in points:
    if p["quantity"] == "distance":
        print(f"{p['rule']} init {p['init_scale']:g}: distance to Y X^+ {p['value']:.2g}")
    if p["quantity"] == "angle" and p["rule"] == "fa":
        print(f"   1 - cos(W2, B2) = {2 * math.sin(math.radians(p['value']) / 2) ** 2:.2g}")

# %%
# The distance scales with the init scale, for FA as for gradient descent: the implicit bias of
# FA towards small-norm solutions is the same as GD's. The whole study, with its table of what the
# paper's abstract states (or that a claim is our derivation) beside these numbers, is one command:
#
# .. code-block:: console
#
#     biofa run experiments/conservation_laws.toml          # or --quick
