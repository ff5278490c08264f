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

from __future__ import annotations

import contextlib
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ConfigError, ShapeError, check_choice

TARGETS = ("numpy", "cython", "cpp_standalone")

#: f(I) and f'(I) of each activation as brian2 expressions in the variable ``I``; written to be
#: overflow-free (no ``exp`` of a large argument) so the numpy target raises no warnings.
ACTIVATIONS = {
    "relu": ("clip(I, 0, inf)", "int(I > 0)"),
    "linear": ("I", "1.0"),
    "tanh": ("tanh(I)", "(1 - tanh(I)**2)"),
    "sigmoid": ("(0.5 + 0.5*tanh(0.5*I))", "((0.5 + 0.5*tanh(0.5*I))*(0.5 - 0.5*tanh(0.5*I)))"),
    "softplus": ("(log1p(exp(-abs(I))) + clip(I, 0, inf))", "(0.5 + 0.5*tanh(0.5*I))"),
}


# --------------------------------------------------------------------------------------------
# the circuit, read once into plain numpy (the only place that knows biofa.circuit's objects)
# --------------------------------------------------------------------------------------------
@dataclass
class _Pop:
    name: str
    size: int
    tau: float
    activation: str
    bias: np.ndarray
    learn_bias: bool
    role: str  # "input", "hidden" or "output"


@dataclass
class _FF:
    name: str
    pre: int
    post: int
    weight: np.ndarray  # (post, pre)
    signs: np.ndarray | None  # ±1 of W's shape: projection after every update
    learned_b: bool = False  # a Kolen–Pollack B lives in this projection's store
    b_signs: np.ndarray | None = None  # ±1 of B's shape when the learned B is sign-constrained
    b_matrix: np.ndarray | None = None  # the learned B's initial value


@dataclass
class _FB:
    name: str
    source: int  # population whose delta (paired) or err (direct) is sent
    target: int  # population that receives it
    kind: str  # "fixed", "bp", "usf", "frsf", "kp"
    direct: bool
    ff: int | None  # index of the paired feedforward object
    matrix: np.ndarray  # (source size, target size): B now
    scale: float = 0.0  # uSF's c
    magnitude: np.ndarray | None = None  # frSF's |R|


@dataclass
class _Plan:
    pops: list
    ffs: list
    fbs: list
    index: dict = field(default_factory=dict)


def _as_numpy(t) -> np.ndarray:
    if torch.is_tensor(t):
        return t.detach().cpu().to(torch.float64).numpy().copy()
    return np.array(t, dtype=float)


def _read_circuit(circuit, *, learning: bool, learn_bias: bool = True) -> _Plan:
    """Read a :class:`~biofa.circuit.Circuit` into numpy; raise on what brian2 cannot express."""
    if learning and circuit.output is None:
        raise ConfigError("biofa.brian2: online learning needs the circuit's output population; set output=")
    index = {p.name: k for k, p in enumerate(circuit.populations)}
    plan_pops = []
    for p in circuit.populations:
        role = "input" if p.name == circuit.input else "output" if p.name == circuit.output else "hidden"
        check_choice(f"Population {p.name!r} (brian2 export)", "activation", p.activation, sorted(ACTIVATIONS))
        bias = np.zeros(p.size) if role == "input" else _as_numpy(circuit.bias(p.name))
        plan_pops.append(_Pop(p.name, int(p.size), float(p.tau), p.activation, bias,
                              bool(learn_bias and p.learn_bias), role))
    ffs, ff_index = [], {}
    for s in circuit.feedforward:
        layer = s.layer
        owner = f"FeedforwardSynapses {s.name!r}"
        if layer.norm is not None and learning:
            raise ConfigError(
                f"{owner}: its norm constraint ({layer.norm!r}) cannot be exported to brian2 (rescaling "
                "by the norm of all synapses is not a synaptic equation); remove norm= or learn with "
                "the torch engine.")
        signs = None
        if layer.sign is not None and learning:
            # every enforce mode ends in the projection S*max(S*W, 0) after an online update
            # (a reparameterised weight is written through its right inverse)
            signs = np.broadcast_to(_as_numpy(layer.sign.signs), tuple(layer.weight.shape)).copy()
        ff_index[id(s)] = len(ffs)
        ff = _FF(s.name, index[s.pre.name], index[s.post.name], _as_numpy(s.weight), signs)
        if learning and s.has_feedback and layer.feedback.name == "kp":
            # Kolen–Pollack B learns with W's update even where its error is not used
            ff.learned_b, ff.b_matrix = True, _as_numpy(layer.feedback.B)
            if s.feedback_synapses.signs is not None:
                ff.b_signs = np.broadcast_to(_as_numpy(s.feedback_synapses.signs)[:, None], ff.weight.shape).copy()
        ffs.append(ff)
    fbs = []
    if learning:
        for f in circuit.feedback:
            if f.target.name != circuit.input:  # an error sent to a clamped input is never used
                fbs.append(_read_feedback(f, index, ff_index, ffs))
    return _Plan(plan_pops, ffs, fbs, index)


def _read_feedback(f, index, ff_index, ffs) -> _FB:
    name, owner = f.name, f"FeedbackSynapses {f.name!r}"
    source, target = index[f.source.name], index[f.target.name]
    matrix = _as_numpy(f.matrix())
    if f.direct:
        return _FB(name, source, target, "fixed", True, None, matrix)
    rule = f.synapse.layer.feedback
    ff = ff_index[id(f.synapse)]
    kind = {"fa": "fixed", "bp": "bp", "usf": "usf", "frsf": "frsf", "kp": "kp"}.get(rule.name)
    if kind is None or getattr(rule, "scale", "init") == "sn":
        why = {"brsf": "redraws its magnitudes at every training step",
               "wm": "learns B from noise samples"}.get(rule.name, "rescales B to the norm of W every step")
        raise ConfigError(
            f"{owner}: rule {rule.name!r} {why}, which brian2 export cannot express; brian2 supports "
            "'fa', 'dfa', 'bp', 'kp', and 'usf'/'frsf' with scale='init'.")
    fb = _FB(name, source, target, kind, False, ff, matrix)
    if kind == "usf":
        from .init import init_std

        fb.scale = float(init_std(tuple(ffs[ff].weight.shape), rule.init_scheme))
    elif kind == "frsf":
        fb.magnitude = _as_numpy(rule.magnitude)
    return fb


# --------------------------------------------------------------------------------------------
# the brian2 network
# --------------------------------------------------------------------------------------------
def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _block_diagonal(n_pre: int, n_post: int, batch: int):
    """Synapse (k, i, j) for copy k, post unit i, pre unit j, in that order: (pre idx, post idx, i, j)."""
    k, i, j = (a.ravel() for a in np.meshgrid(np.arange(batch), np.arange(n_post), np.arange(n_pre), indexing="ij"))
    return k * n_pre + j, k * n_post + i, i, j, k


class Brian2Circuit:
    """A circuit built as a brian2 ``Network``, with handles to its groups and monitors.

    Attributes: ``network``, ``groups`` {population name: NeuronGroup}, ``synapses`` {synapse
    object name: Synapses}, ``stores`` {feedforward name: NeuronGroup of shared weights, learning
    only}, ``monitors`` {population name: StateMonitor of r}, ``batch``, ``dt``, ``plan``.
    """

    def __init__(self, plan: _Plan, x: dict, y, r0: dict, dt: float, eta: float, record: bool, name: str):
        import brian2 as b2

        self.plan, self.dt, self.eta = plan, float(dt), float(eta)
        self._r0, self.inputs = r0, x
        self.learning = eta != 0.0 and y is not None
        self.batch = batch = next(iter(x.values())).shape[0]
        self.clock = clock = b2.Clock(dt=self.dt * b2.second, name=f"{name}_clock")
        self.groups, self.synapses, self.stores, self.monitors, self.bias_stores = {}, {}, {}, {}, {}
        self.objects = []
        self._order = {}
        lr = self.dt * self.eta / batch
        kw = dict(clock=clock, namespace={})
        incoming = {k: [] for k in range(len(plan.pops))}
        for k, s in enumerate(plan.ffs):
            incoming[s.post].append(f"I_ff{k}")
        fb_in = {k: [] for k in range(len(plan.pops))}
        for k, f in enumerate(plan.fbs):
            fb_in[f.target].append(f"fb{k}")

        # -- populations ---------------------------------------------------------------------
        for k, p in enumerate(plan.pops):
            gname = f"{name}_p{k}_{_ident(p.name)}"
            if p.role == "input":
                g = b2.NeuronGroup(batch * p.size, "r : 1 (constant)", name=gname, **kw)
                g.r = x[p.name].reshape(-1)
            else:
                f_expr, df_expr = ACTIVATIONS[p.activation]
                currents = " + ".join(incoming[k] + ["b"])
                eqs = [f"dr/dt = (-r + {f_expr})/tau : 1", f"I = {currents} : 1",
                       "tau : second (constant, shared)"]
                eqs += [f"{v} : 1" for v in incoming[k]]
                bias_linked = self.learning and p.learn_bias
                eqs.append("b : 1 (linked)" if bias_linked else "b : 1 (constant)")
                if self.learning:
                    eqs.append("delta : 1")
                    eqs += [f"{v} : 1" for v in fb_in[k]]
                    if p.role == "output":
                        eqs += ["err : 1", "ystar : 1 (constant)"]
                g = b2.NeuronGroup(batch * p.size, "\n".join(eqs), method="euler", name=gname, **kw)
                g.tau = p.tau * b2.second
                g.r = r0[p.name].reshape(-1)
                if bias_linked:
                    store = b2.NeuronGroup(p.size, "b : 1\nbg : 1", name=f"{gname}_bstore", clock=clock,
                                           namespace={"lr": lr})
                    store.b = p.bias
                    g.b = b2.linked_var(store, "b", index=np.tile(np.arange(p.size), batch))
                    self.bias_stores[p.name] = store
                    self.objects.append(store)
                else:
                    g.b = np.tile(p.bias, batch)
                if self.learning and p.role == "output":
                    g.ystar = y.reshape(-1)
                self._order[g.state_updater] = "rates"
            self.groups[p.name] = g
            self.objects.append(g)

        # -- feedforward synapses ------------------------------------------------------------
        for k, s in enumerate(plan.ffs):
            pre, post = plan.pops[s.pre], plan.pops[s.post]
            gi, gj, i, j, _ = _block_diagonal(pre.size, post.size, batch)
            sname = f"{name}_ff{k}"
            if self.learning:
                store_eqs = ["w : 1", "g : 1"] + (["B : 1"] if s.learned_b else [])
                store_eqs += ["sgn : 1 (constant)"] if s.signs is not None else []
                store_eqs += ["bsgn : 1 (constant)"] if s.b_signs is not None else []
                store = b2.NeuronGroup(post.size * pre.size, "\n".join(store_eqs), name=f"{sname}_store",
                                       clock=clock, namespace={"lr": lr})
                store.w = s.weight.reshape(-1)
                if s.signs is not None:
                    store.sgn = s.signs.reshape(-1)
                if s.b_signs is not None:
                    store.bsgn = s.b_signs.reshape(-1)
                if s.learned_b:
                    store.B = s.b_matrix.reshape(-1)
                self.stores[s.name] = store
                self.objects.append(store)
                model = f"w : 1 (linked)\nwidx : integer (constant)\nI_ff{k}_post = w*r_pre : 1 (summed)"
            else:
                model = f"w : 1 (constant)\nI_ff{k}_post = w*r_pre : 1 (summed)"
            syn = b2.Synapses(self.groups[pre.name], self.groups[post.name], model, name=sname, **kw)
            syn.connect(i=gi, j=gj)
            if self.learning:
                syn.widx = i * pre.size + j
                syn.w = b2.linked_var(store, "w", index="widx")
            else:
                syn.w = s.weight[i, j]
            self._order[syn.summed_updaters[f"I_ff{k}_post"]] = "currents"
            self.synapses[s.name] = syn
            self.objects.append(syn)

        if self.learning:
            self._build_learning(b2, name, kw, lr, fb_in)

        # -- recording -----------------------------------------------------------------------
        if record:
            for p in plan.pops:
                if p.role != "input":
                    mon = b2.StateMonitor(self.groups[p.name], "r", record=True, when="end",
                                          name=f"{self.groups[p.name].name}_mon", clock=clock)
                    self.monitors[p.name] = mon
                    self.objects.append(mon)
        for g in list(self.groups.values()) + list(self.stores.values()) + list(self.bias_stores.values()):
            if g.state_updater not in self._order:  # no differential equation: nothing to integrate
                g.state_updater.active = False
        self._apply_schedule()
        self.network = b2.Network(*self.objects, name=f"{name}_net")

    # -- online learning ---------------------------------------------------------------------
    def _build_learning(self, b2, name, kw, lr, fb_in):
        plan, batch = self.plan, self.batch
        out = plan.index[next(p.name for p in plan.pops if p.role == "output")]
        out_pop = plan.pops[out]
        g_out = self.groups[out_pop.name]
        df_out = ACTIVATIONS[out_pop.activation][1]
        op = g_out.run_regularly(f"err = r - ystar\ndelta = {df_out}*err", name=f"{g_out.name}_err")
        self._order[op] = ("delta", -1)
        # feedback synapses: delta (or err) of the source, times B, summed into the target
        for k, f in enumerate(plan.fbs):
            src, tgt = plan.pops[f.source], plan.pops[f.target]
            # synapse from source unit (k, a) to target unit (k, c), weight B[a, c]
            src_idx, tgt_idx, c, a, _ = _block_diagonal(src.size, tgt.size, batch)
            carried = "err_pre" if f.direct else "delta_pre"
            eqs, ns = [], {}
            if f.kind == "fixed":
                eqs += ["B : 1 (constant)", f"fb{k}_post = B*{carried} : 1 (summed)"]
            elif f.kind in ("bp", "kp"):
                eqs += ["B : 1 (linked)", "widx : integer (constant)", f"fb{k}_post = B*{carried} : 1 (summed)"]
            elif f.kind == "usf":
                eqs += ["wl : 1 (linked)", "widx : integer (constant)",
                        f"fb{k}_post = c_usf*sign(wl)*{carried} : 1 (summed)"]
                ns["c_usf"] = f.scale
            else:  # frsf
                eqs += ["wl : 1 (linked)", "widx : integer (constant)", "mag : 1 (constant)",
                        f"fb{k}_post = mag*sign(wl)*{carried} : 1 (summed)"]
            syn = b2.Synapses(self.groups[src.name], self.groups[tgt.name], "\n".join(eqs),
                              name=f"{name}_fb{k}", clock=kw["clock"], namespace=ns)
            syn.connect(i=src_idx, j=tgt_idx)
            if f.kind == "fixed":
                syn.B = f.matrix[a, c]
            else:
                ff = plan.ffs[f.ff]
                store = self.stores[ff.name]
                syn.widx = a * plan.pops[ff.pre].size + c
                if f.kind == "frsf":
                    syn.mag = f.magnitude[a, c]
                linked = "B" if f.kind in ("bp", "kp") else "wl"
                setattr(syn, linked, b2.linked_var(store, "B" if f.kind == "kp" else "w", index="widx"))
            self._order[syn.summed_updaters[f"fb{k}_post"]] = ("delta", 2 * self._rank(f.target))
            self.synapses[f.name] = syn
            self.objects.append(syn)
        # hidden deltas, in reverse topological order (rank = position from the output)
        for k, p in enumerate(plan.pops):
            if p.role != "hidden":
                continue
            g = self.groups[p.name]
            total = " + ".join(fb_in[k]) if fb_in[k] else "0"
            op = g.run_regularly(f"delta = {ACTIVATIONS[p.activation][1]}*({total})", name=f"{g.name}_delta")
            self._order[op] = ("delta", 2 * self._rank(k) + 1)
        # batch sums of delta_post r_pre into each store, then the updates
        for k, s in enumerate(plan.ffs):
            pre, post = plan.pops[s.pre], plan.pops[s.post]
            store = self.stores[s.name]
            gi, gj, i, j, _ = _block_diagonal(pre.size, post.size, batch)
            acc = b2.Synapses(self.groups[post.name], store,
                              "rl : 1 (linked)\nridx : integer (constant)\ng_post = delta_pre*rl : 1 (summed)",
                              name=f"{store.name}_grad", **kw)
            acc.connect(i=gj, j=i * pre.size + j)
            acc.ridx = gi
            acc.rl = b2.linked_var(self.groups[pre.name], "r", index="ridx")
            self._order[acc.summed_updaters["g_post"]] = "gradients"
            self.objects.append(acc)
            code = ["w = w - lr*g"]
            if s.signs is not None:
                code.append("w = sgn*clip(sgn*w, 0, inf)")
            if s.learned_b:
                code.append("B = B - lr*g")
            if s.b_signs is not None:
                code.append("B = bsgn*clip(bsgn*B, 0, inf)")
            op = store.run_regularly("\n".join(code), name=f"{store.name}_update")
            self._order[op] = "updates"
        for pname, bstore in self.bias_stores.items():
            g = self.groups[pname]
            acc = b2.Synapses(g, bstore, "bg_post = delta_pre : 1 (summed)", name=f"{bstore.name}_grad", **kw)
            size = plan.pops[plan.index[pname]].size
            acc.connect(i=np.arange(batch * size), j=np.tile(np.arange(size), batch))
            self._order[acc.summed_updaters["bg_post"]] = "gradients"
            self.objects.append(acc)
            op = bstore.run_regularly("b = b - lr*bg", name=f"{bstore.name}_update")
            self._order[op] = "bias"

    # -- schedule ------------------------------------------------------------------------------
    def _rank(self, k: int) -> int:
        """Position from the output end: deltas are computed in increasing rank."""
        return len(self.plan.pops) - k

    def _apply_schedule(self) -> None:
        for obj, label in self._order.items():
            obj.when = "groups"
            obj.order = schedule_order(label, len(self.plan.pops))

    # -- running -------------------------------------------------------------------------------
    def run(self, n_steps: int) -> None:
        import brian2 as b2

        self.network.run(n_steps * self.dt * b2.second, namespace={})

    def rates(self) -> dict:
        """Recorded rates {population: array (n_steps + 1, batch, size)}, index 0 = initial."""
        out = {}
        for p in self.plan.pops:
            if p.role == "input":
                continue
            mon = self.monitors[p.name]
            trace = np.asarray(mon.r).T.reshape(-1, self.batch, p.size)
            out[p.name] = np.concatenate([self._r0[p.name][None], trace])
        return out

    def weights(self) -> dict:
        """Current W {feedforward name: (post, pre)}; with Kolen–Pollack also {name + '.B'}."""
        out = {}
        for s in self.plan.ffs:
            shape = (self.plan.pops[s.post].size, self.plan.pops[s.pre].size)
            if self.learning:
                store = self.stores[s.name]
                out[s.name] = np.asarray(store.w[:]).reshape(shape).copy()
                if s.learned_b:
                    out[s.name + ".B"] = np.asarray(store.B[:]).reshape(shape).copy()
            else:
                out[s.name] = s.weight.copy()
        return out

    def biases(self) -> dict:
        out = {p.name: p.bias.copy() for p in self.plan.pops if p.role != "input"}
        out.update({n: np.asarray(st.b[:]).copy() for n, st in self.bias_stores.items()})
        return out


def schedule_order(label, n_pops: int) -> int:
    """The ``order`` (all objects run ``when="groups"``) of each phase of one Euler step.

    ``currents`` (feedforward summed variables from r^n) < ``("delta", rank)`` (output err and
    delta at rank -1, then per hidden population from the output backwards: its feedback summed
    variables at 2·rank, its delta at 2·rank + 1) < ``gradients`` (batch sums into the weight
    stores) < ``updates`` (W, learned B, sign projection) < ``rates`` (Euler state updaters,
    r^{n+1} from I^n) < ``bias`` (b updates, after the rates so I^n keeps the old b).
    """
    base = 10
    top = base + 2 * n_pops + 4
    if isinstance(label, tuple):
        return base + label[1]
    return {"currents": 0, "gradients": top, "updates": top + 1, "rates": top + 2, "bias": top + 3}[label]


def schedule_table(model: Brian2Circuit) -> list:
    """``(when, order, name)`` of every active scheduled object, in the order brian2 runs them
    (from ``network.scheduling_summary()``)."""
    summary = model.network.scheduling_summary()
    return [(e.when, e.order, e.name) for e in summary.entries if e.active]


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def brian2_target(target: str = "numpy", directory: str | None = None):
    """Run the enclosed brian2 code with code-generation ``target``; restore brian2's state after.

    ``"numpy"`` (no compiler), ``"cython"`` (a C++ compiler; cached in brian2's cache folder) or
    ``"cpp_standalone"`` (make; built into ``directory``, a fresh temporary folder by default,
    at the network's run). The device and preferences are reset on exit.
    """
    check_choice("biofa.brian2", "backend", target, TARGETS)
    import brian2 as b2

    old_target = b2.prefs.codegen.target
    tmp = None
    try:
        if target == "cpp_standalone":
            if directory is None:
                tmp = tempfile.TemporaryDirectory(prefix="biofa_brian2_")
                directory = tmp.name
            b2.set_device("cpp_standalone", directory=directory, build_on_run=True)
        else:
            b2.prefs.codegen.target = target
        yield
    finally:
        b2.prefs.codegen.target = old_target
        if target == "cpp_standalone":
            b2.device.reinit()
            b2.device.activate()
            b2.set_device("runtime")
        if tmp is not None:
            tmp.cleanup()


def _batched(value, size: int, owner: str) -> np.ndarray:
    a = _as_numpy(value)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != size:
        raise ShapeError(f"{owner}: expected shape (batch, {size}) or ({size},), got {tuple(a.shape)}")
    return a


def _initial(plan: _Plan, r0, batch: int) -> dict:
    r0 = {} if r0 is None else dict(r0)
    out = {}
    for p in plan.pops:
        if p.role == "input":
            continue
        value = np.zeros((batch, p.size))
        if p.name in r0:
            value = value + _as_numpy(r0[p.name])
        out[p.name] = value
    unknown = sorted(set(r0) - set(out))
    if unknown:
        raise ConfigError(f"biofa.brian2: r0 names {unknown} are not non-input populations of the circuit")
    return out


def build_network(circuit, x, *, dt: float, target=None, lr: float = 0.0, r0=None, learn_bias: bool = True,
                  record: bool = True, name: str = "biofa") -> Brian2Circuit:
    """Build ``circuit`` as a brian2 ``Network`` for input ``x`` (and, to learn, ``target`` y*).

    Call it inside :func:`brian2_target` to choose the code-generation target, then
    ``model.run(n_steps)``. ``x``: (batch, n_in) or (n_in,); ``target``: (batch, n_out);
    ``lr`` (η) > 0 with a target turns online learning on. Raises
    :class:`~biofa.errors.ConfigError` naming the population or synapse object whose feature
    brian2 cannot express.
    """
    learning = lr != 0.0 and target is not None
    plan = _read_circuit(circuit, learning=learning, learn_bias=learn_bias)
    inp = plan.pops[plan.index[circuit.input]]
    xs = _batched(x, inp.size, f"input x of population {inp.name!r}")
    batch = xs.shape[0]
    ys = None
    if learning:
        out = plan.pops[plan.index[circuit.output]]
        ys = _batched(target, out.size, f"target of output population {out.name!r}")
        if ys.shape[0] != batch:
            raise ShapeError(f"biofa.brian2: x has batch {batch} but target has {ys.shape[0]}")
    return Brian2Circuit(plan, {inp.name: xs}, ys, _initial(plan, r0, batch), dt, lr, record, _ident(name))


def _trajectory(model: Brian2Circuit, x, n_steps: int, dt: float, dtype):
    from .circuit.dynamics import Trajectory

    recorded = model.rates()
    rates = {}
    for p in model.plan.pops:
        if p.role == "input":
            xs = torch.as_tensor(model.inputs[p.name], dtype=dtype)
            rates[p.name] = xs.expand(n_steps + 1, *xs.shape).clone()
        else:
            rates[p.name] = torch.as_tensor(recorded[p.name], dtype=dtype)
    return Trajectory(t=torch.arange(n_steps + 1, dtype=dtype) * dt, rates=rates)


def simulate(circuit, x, duration: float, dt: float, r0=None, *, backend: str = "numpy",
             directory: str | None = None):
    """Integrate the circuit's rate dynamics in brian2, returning what ``circuit.simulate`` returns.

    .. math:: r_p^{n+1} = r_p^n + \\frac{\\Delta t}{\\tau_p}\\left(-r_p^n + f_p(I_p^n)\\right)

    Parameters
    ----------
    x : (batch, n_in) or (n_in,): the batch runs as ``batch`` copies of every population in one
        network (block-diagonal synapses).
    duration, dt : seconds; n_steps = round(duration / dt).
    r0 : optional initial rates, name → array broadcastable to (batch, size); default 0.
    backend : brian2 code-generation target, ``"numpy"``, ``"cython"`` or ``"cpp_standalone"``.

    Returns
    -------
    :class:`biofa.circuit.Trajectory`: ``t`` (n_steps + 1,), ``rates`` name → (n_steps + 1,
    batch, size) for every population (the input clamped), in x's dtype when x is a float
    tensor (brian2 computes in float64).
    """
    from .circuit.dynamics import n_steps as _n_steps

    steps = _n_steps(duration, dt)
    with brian2_target(backend, directory):
        model = build_network(circuit, x, dt=dt, r0=r0)
        model.run(steps)
        trajectory = _trajectory(model, x, steps, dt, _dtype(x))
    return trajectory


def _dtype(x):
    return x.dtype if torch.is_tensor(x) and x.is_floating_point() else torch.float64


@dataclass
class Brian2Learning:
    """A brian2 online-learning run: ``weights`` {synapse name: W (post, pre)}, ``feedback``
    {synapse name: learned Kolen–Pollack B}, ``biases`` {population: b}, ``trajectory`` (a
    :class:`biofa.circuit.Trajectory`, when recorded) — all torch tensors."""

    weights: dict
    feedback: dict
    biases: dict
    trajectory: object = None

    @torch.no_grad()
    def load_into(self, circuit) -> None:
        """Write the learned W, B and b into ``circuit`` (constraints follow W as usual)."""
        for s in circuit.feedforward:
            s.layer._set_weight(self.weights[s.name].to(s.weight.dtype))
            if s.name in self.feedback:
                s.layer.feedback.B.copy_(self.feedback[s.name])
        for name, b in self.biases.items():
            circuit.bias(name).copy_(b)


def learn_online(circuit, x, target, duration: float, dt: float, lr: float, *, r0=None,
                 learn_bias: bool = True, record: bool = False, backend: str = "numpy",
                 directory: str | None = None) -> Brian2Learning:
    """Online three-factor learning in brian2, with input ``x`` and target ``y*`` clamped.

    .. math:: W \\leftarrow W - \\Delta t\\,\\eta\\,\\delta_\\mathrm{post}^\\top r_\\mathrm{pre} / N

    at every step, in the order of :func:`biofa.circuit.learn_online` (same arguments); the
    circuit is not modified (:meth:`Brian2Learning.load_into` writes the result back).
    ``record=True`` also returns the rate trajectory.
    """
    from .circuit.dynamics import n_steps as _n_steps

    steps = _n_steps(duration, dt)
    if not lr > 0:
        raise ConfigError(f"biofa.brian2.learn_online: lr must be > 0, got {lr!r}")
    dtype = _dtype(x)
    with brian2_target(backend, directory):
        model = build_network(circuit, x, dt=dt, target=target, lr=lr, r0=r0, learn_bias=learn_bias,
                              record=record)
        model.run(steps)
        cast = lambda d: {k: torch.as_tensor(v, dtype=dtype) for k, v in d.items()}  # noqa: E731
        weights = model.weights()
        result = Brian2Learning(
            weights=cast({k: v for k, v in weights.items() if not k.endswith(".B")}),
            feedback=cast({k[:-2]: v for k, v in weights.items() if k.endswith(".B")}),
            biases=cast(model.biases()),
            trajectory=_trajectory(model, x, steps, dt, dtype) if record else None)
    return result
