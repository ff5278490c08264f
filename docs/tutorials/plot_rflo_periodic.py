"""
RFLO learns a periodic output under Dale's law
==============================================

Backpropagation through time (BPTT) needs the whole trajectory stored and the read-out's weights
sent backwards; random feedback local online learning (RFLO) needs neither: each synapse keeps a
low-pass filtered trace of its pre- and postsynaptic activity, and a fixed random matrix B sends
the output error back to every unit at every step. Murray (2019) showed that a network of 30 tanh
rate units learns to produce a periodic output from no input this way. Does it still learn when
the network obeys **Dale's law** (24 excitatory and 6 inhibitory units, every outgoing synapse of
a unit with the unit's sign), and how does it compare with BPTT on the same network?

This tutorial trains the packaged circuit ``murray_ei`` (Dale's law) by RFLO and by BPTT from the
same initial weights, with the free-sign ``murray_rnn`` beside it, on one seed.

Reference: J. M. Murray, "Local online learning in recurrent networks with random feedback",
*eLife* 8, e43299 (2019).
"""

# %%
# Set-up
# ------
# ``BIOFA_FAST=1`` (set by the test suite) trains for a few trials only; the documentation is
# built with the full run (250 trials per method and network, about a minute on one core, most
# of it RFLO).
import os
import time

import matplotlib.pyplot as plt
import torch

import biofa.circuit as bc
import biofa.tasks as bt

FAST = os.environ.get("BIOFA_FAST", "0") not in ("", "0")
TRIALS = 10 if FAST else 250
torch.manual_seed(0)

# %%
# The task
# --------
# Murray's target: one period of :math:`\sin(2\pi n/P) + \tfrac12\sin(4\pi n/P) +
# \tfrac14\sin(8\pi n/P)` with P = 200 steps of Δt = 10 ms (20 membrane time constants of
# τ = 100 ms), produced from no input. As in his example code, every trial is the same period,
# from the circuit's initial state (every unit at 0.1). An output stuck at 0 scores the target's
# mean square, the level to beat.
task = bt.load("periodic", period=200)
trials = task.trials(1)
T = trials.inputs.shape[0]
silent = float((trials.targets ** 2).mean())
print(f"T = {T} steps of dt = {task.dt} s; loss of a silent output (mean square of the target): {silent:.3f}")

# %%
# The networks
# ------------
# ``murray_ei``: 24 E and 6 I tanh units, recurrent weights drawn at spectral radius 1.5, a linear
# read-out from both populations whose feedback is a fixed random B (``fa``): the B through which
# RFLO sends the error. ``murray_rnn`` is the same without signs (30 units). For BPTT we want the
# exact gradient, so its copy of each network has the read-out's feedback set to ``bp``
# (:math:`B = W_\mathrm{out}^\top`) and the *same* initial weights as the RFLO copy.
def exact_copy(name, reference):
    """The circuit ``name`` with read-out feedback bp and the forward weights of ``reference``."""
    spec = bc.read(name)
    for synapse in spec["synapses"]:
        if synapse["post"] == spec["output"]:
            synapse["feedback"] = "bp"
    net = bc.from_spec(spec, seed=0)
    net.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.endswith("feedback.B")})
    return net


def loss_now(net):
    """Mean squared error over one period with the weights held (no learning)."""
    with torch.no_grad():
        out = net.unroll(trials.inputs, dt=task.dt).rates["y"][1:]
    return float(((out - trials.targets) ** 2).mean()), out[:, 0, 0]


nets = {"Dale": bc.load("murray_ei", seed=0), "free": bc.load("murray_rnn", seed=0)}
for label, net in nets.items():
    print(label, {p.name: (p.size, p.sign) for p in net.populations})

# %%
# Training
# --------
# **RFLO**: ``learn_online`` runs one period, accumulates the traced update with the weights held
# and applies it at the end (``update="sequence"``, one update per trial as in Murray's code).
# Its loss is :math:`\tfrac12\sum_n e_n^2` summed over the T steps, not averaged, so Murray's
# η = 0.03 on half the mean squared error is ``lr = 0.03 / T`` here.
# **BPTT**: ``unroll`` keeps the graph through the period, and plain SGD takes one step per trial
# on the mean squared error :math:`\frac1T\sum_n e_n^2` with lr = 0.015, the same step size. Both
# project the weights onto Dale's signs after every update. The loss of a trial is the one the
# network scored during that trial, before its update.
def train_rflo(net):
    losses = []
    for _ in range(TRIALS):
        trace = net.learn_online(trials.inputs, trials.targets, dt=task.dt, lr=0.03 / T, method="rflo",
                                 update="sequence", record_every=None)
        losses.append(2 * float(trace.loss.sum()) / T)
    return losses


def train_bptt(net):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.015)
    losses = []
    for _ in range(TRIALS):
        out = net.unroll(trials.inputs, dt=task.dt).rates["y"][1:]
        loss = ((out - trials.targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


curves, outputs, trained = {}, {}, {}
for label, net in nets.items():
    bptt_net = exact_copy("murray_ei" if label == "Dale" else "murray_rnn", net)
    for method, model, train in (("RFLO", net, train_rflo), ("BPTT", bptt_net, train_bptt)):
        start = time.process_time()
        curves[label, method] = train(model)
        ms = 1e3 * (time.process_time() - start) / TRIALS
        final, outputs[label, method] = loss_now(model)
        trained[label, method] = model
        below = next((f"on trial {i + 1}" for i, v in enumerate(curves[label, method]) if v < silent / 2),
                     "not yet")
        print(f"{label:4s} {method}: loss {curves[label, method][0]:.3f} on trial 1, {final:.3f} after "
              f"{TRIALS} trials; first below half the silent loss {below} "
              f"({ms:.0f} ms CPU per trial)")

shown = list(range(0, TRIALS, 50 if TRIALS > 50 else 5)) + [TRIALS - 1]
print("Dale network, loss on trials " + ", ".join(str(i + 1) for i in shown) + ":")
for method in ("RFLO", "BPTT"):
    print(f"  {method}: " + ", ".join(f"{curves['Dale', method][i]:.3f}" for i in shown))

# %%
# Dale's law holds at the end: every synapse leaving an E unit is non-negative and every synapse
# leaving an I unit non-positive, after either rule.
for method in ("RFLO", "BPTT"):
    net = trained["Dale", method]
    ok = all(bool((s.weight >= 0).all()) if s.pre.name == "E" else bool((s.weight <= 0).all())
             for s in net.feedforward if s.pre.name in ("E", "I"))
    print(f"Dale's law holds after {method}: {ok}")

# %%
# Loss curves and the learned output
# ----------------------------------
fig, (ax_loss, ax_out) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
styles = {"RFLO": "C3", "BPTT": "C0"}
for (label, method), c in curves.items():
    dale = label == "Dale"
    ax_loss.semilogy(range(1, TRIALS + 1), c, color=styles[method], lw=1.5 if dale else 0.8,
                     alpha=1 if dale else 0.5, ls="-" if dale else "--", label=f"{method}, {label}")
ax_loss.axhline(silent, color="grey", lw=0.8, ls=":", label="silent output")
ax_loss.set(xlabel="trial (one period)", ylabel="mean squared error", title="learning (one seed)")
ax_loss.legend(frameon=False, fontsize=8)
t = (torch.arange(T) + 1) * task.dt
ax_out.plot(t, trials.targets[:, 0, 0], color="k", lw=2, label="target")
for method in ("RFLO", "BPTT"):
    ax_out.plot(t, outputs["Dale", method], color=styles[method], label=f"{method}, Dale")
ax_out.set(xlabel="time (s)", ylabel="output", title=f"Dale network after {TRIALS} trials")
ax_out.legend(frameon=False, fontsize=8)

# %%
# What this shows, and what it does not
# -------------------------------------
# * Under Dale's law RFLO does learn the period: after 250 trials the loss is about a fifth of
#   a silent output's and the output follows the target's shape. On this seed it first sits
#   near the silent level for about 150 trials and first falls below half of it on trial 200.
#   Exact BPTT on the same network, at the same step size, gets there on trial 47 and ends about
#   four times lower, though not smoothly: its loss spikes a few times and oscillates from trial
#   to trial. With free signs RFLO gets there on trial 21. (These numbers are the full run's;
#   the fast mode stops after 10 trials.)
# * After training, RFLO's output follows the slow part of the target but smooths over its
#   fastest harmonic; BPTT's follows it more closely.
# * Per trial RFLO used several times BPTT's CPU time here (the printed ms per trial, which
#   depend on the machine). What it saves is memory, which does not grow with the length of
#   the sequence; the guide :doc:`/guide/learning_in_time` measures both.
# * It is **one seed, one period (20 τ) and a few hundred trials** (Murray's example code runs 10 000),
#   at a single learning rate. It does not say which rule learns faster in general, nor how the
#   plateau's length varies with the seed. The study ``experiments/murray2019.toml``
#   (``biofa run experiments/murray2019.toml``) runs 9 seeds, both periods (20 τ and 160 τ),
#   RFLO against BPTT, random against symmetric feedback and free signs against Dale's law, and
#   compares them over paired seeds. Note that its BPTT runs keep each circuit's read-out
#   feedback (random B on ``murray_rnn`` and ``murray_ei``; exact BPTT is
#   ``murray_rnn_symmetric``), whereas BPTT here is exact.
