"""A circuit in continuous time: its rate dynamics and online learning run by brian2.

.. math::

    \\tau_p \\frac{dr_p}{dt} = -r_p + f_p(I_p), \\qquad I_p = \\sum_{s:\\,\\mathrm{post}(s)=p} W_s r_{\\mathrm{pre}(s)} + b_p

integrated by forward Euler (``method="euler"``) in the order of the torch engine's step
(CIRCUIT_CONTRACT): every input current from the rates of step n, then every rate. With a
learning rate ``lr`` (η) > 0 the three-factor rule runs in the same step: the output error
:math:`\\mathrm{err} = r_\\mathrm{out} - y^*`, :math:`\\delta_\\mathrm{out} = f'(I_\\mathrm{out})\\,\\mathrm{err}`,
hidden deltas :math:`\\delta_h = f'(I_h)(\\sum \\delta_\\mathrm{post} B + \\sum \\mathrm{err}\\,B_\\mathrm{dfa})`
delivered by the feedback ``Synapses``, then
:math:`W \\leftarrow W - \\Delta t\\,\\eta\\,\\delta_\\mathrm{post}^\\top r_\\mathrm{pre}/n_\\mathrm{batch}`
(Kolen–Pollack B the same), sign projection, and the rates advance with the old weights.

On a recurrent circuit, ``learn_online(..., method="rflo")`` runs RFLO instead, its eligibility
traces held as synapse variables and updated every step (:mod:`biofa.brian2.rflo`; the rule of
:func:`biofa.circuit.online.learn_online`).

The brian2 network (see :func:`build_network`):

- one ``NeuronGroup`` per population holding ``batch`` copies (neuron ``k*size + i`` is unit i of
  input k); input populations are clamped parameters (``r = x``);
- one ``Synapses`` object per feedforward and per feedback synapse object, connected with explicit
  i/j arrays inside each copy (block diagonal), each summing into its own variable
  (``I_ff<k>``, ``fb<k>``);
- while learning, every weight that is shared by the copies or read by two objects (W, a learned
  B, a learned bias) lives once in a ``NeuronGroup`` store (``<ff>_store``, one neuron per
  synapse) that the ``Synapses`` link to; the batch sum :math:`\\sum_k \\delta_{k,i} r_{k,j}` is a
  summed variable of a gradient ``Synapses`` object into the store.

Batching: the ``batch`` inputs are simulated at once as independent copies inside each group
(not a Python loop over inputs), so one network run serves the whole batch and the batch-mean
update of the torch engine is exact.

Scheduling: every object runs at ``when="groups"`` with an explicit ``order``
(:func:`schedule_order`): feedforward summed variables (currents from r^n) → output err and
delta → per hidden population, from the output backwards, its feedback summed variables then its
delta → batch sums into the weight stores → W / B updates with sign projection → Euler state
updaters (r^{n+1} from I^n) → bias updates; monitors at ``when="end"``. Ties only occur between
objects that read and write disjoint variables, so no result depends on brian2's tie-break by
object name; :func:`schedule_table` lists the order brian2 will run.

Targets: ``"numpy"`` (no compiler), ``"cython"`` and ``"cpp_standalone"`` (:func:`brian2_target`).
brian2 is imported inside the functions only: ``import biofa`` never imports it.
"""

from .network import Brian2Circuit, build_network, schedule_order, schedule_table
from .plan import ACTIVATIONS as _ACTIVATIONS
from .runs import Brian2Learning, learn_online, simulate
from .targets import TARGETS, brian2_target

#: f(I) and f'(I) of each activation as brian2 expressions in the variable ``I``; written to be
#: overflow-free (no ``exp`` of a large argument) so the numpy target raises no warnings.
#: (Defined in ``biofa.brian2.plan``; bound here so that it is documented with the package.)
ACTIVATIONS = _ACTIVATIONS

__all__ = [
    "ACTIVATIONS",
    "TARGETS",
    "Brian2Circuit",
    "Brian2Learning",
    "brian2_target",
    "build_network",
    "learn_online",
    "schedule_order",
    "schedule_table",
    "simulate",
]
