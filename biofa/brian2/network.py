"""The circuit's plan built as a brian2 ``Network``: groups, block-diagonal synapses, schedule.

:class:`Brian2Circuit` creates one ``NeuronGroup`` per population holding ``batch`` copies, one
``Synapses`` object per synapse object connected block-diagonally inside each copy, and, while
learning, the weight stores, gradient sums and update operations of the three-factor rule;
:func:`schedule_order` gives every object its place in one Euler step and :func:`schedule_table`
lists the order brian2 will run. :func:`build_network` reads a circuit and an input (and target)
into such a network. brian2 is imported inside the functions only.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError, ShapeError
from .plan import ACTIVATIONS, Plan, as_numpy, read_circuit

__all__ = ["Brian2Circuit", "build_network", "schedule_order", "schedule_table"]


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

    def __init__(self, plan: Plan, x: dict, y, r0: dict, dt: float, eta: float, record: bool, name: str,
                 noise: dict | None = None):
        import brian2 as b2

        self.plan, self.dt, self.eta = plan, float(dt), float(eta)
        self._r0, self.inputs = r0, x
        noise = {} if noise is None else noise
        self.learning = eta != 0.0 and y is not None
        self.batch = batch = next(iter(x.values())).shape[-2]
        self.timed = {}  # TimedArrays: input rows and noise draws, values (T, batch * size)
        self.clock = clock = b2.Clock(dt=self.dt * b2.second, name=f"{name}_clock")
        self.groups, self.synapses, self.stores, self.monitors, self.bias_stores = {}, {}, {}, {}, {}
        self.objects = []
        self._order = {}
        lr = self.dt * self.eta / batch
        kw = {"clock": clock, "namespace": {}}
        incoming = {k: [] for k in range(len(plan.pops))}
        for k, s in enumerate(plan.ffs):
            incoming[s.post].append(f"I_ff{k}")
        fb_in = {k: [] for k in range(len(plan.pops))}
        for k, f in enumerate(plan.fbs):
            fb_in[f.target].append(f"fb{k}")

        # -- populations ---------------------------------------------------------------------
        for k, p in enumerate(plan.pops):
            gname = f"{name}_p{k}_{_ident(p.name)}"
            xs = x.get(p.name)
            if p.role == "input" and xs.ndim == 2 and p.name not in noise and not p.rectify and not p.bias.any():
                g = b2.NeuronGroup(batch * p.size, "r : 1 (constant)", name=gname, **kw)
                g.r = xs.reshape(-1)
            elif p.role == "input":
                # u^n = x[n] + b + sigma_in sqrt(2 tau_in / dt) xi[n], rectified on request, set at the
                # start of step n (before the currents read it)
                rows = xs if xs.ndim == 3 else xs[None]
                ns = {"xin": self._timed(b2, f"{gname}_x", rows)}
                expr = "xin(t, i) + b"
                if p.name in noise:
                    ns["nz_in"] = self._timed(b2, f"{gname}_xi", noise[p.name])
                    ns["s_in"] = float(p.sigma * np.sqrt(2.0 * p.tau / self.dt))
                    expr += " + s_in*nz_in(t, i)"
                if p.rectify:
                    expr = f"clip({expr}, 0, inf)"
                g = b2.NeuronGroup(batch * p.size, "r : 1\nb : 1 (constant)", name=gname, clock=clock, namespace=ns)
                g.b = np.tile(p.bias, batch)
                op = g.run_regularly(f"r = {expr}", name=f"{gname}_input")
                self._order[op] = "inputs"
            else:
                f_expr = ACTIVATIONS[p.activation][0]
                currents = " + ".join(incoming[k] + ["b"])
                ns = {}
                noise_term = ""
                if p.name in noise:
                    ns["nz_p"] = self._timed(b2, f"{gname}_xi", noise[p.name])
                    ns["s_p"] = float(p.sigma * np.sqrt(2.0 * p.tau / self.dt))
                    noise_term = " + s_p*nz_p(t, i)"
                if p.dynamics == "current":
                    eqs = [f"dv/dt = (-v + I{noise_term})/tau : 1", f"r = {re.sub(r'(?<![A-Za-z_])I(?![A-Za-z_0-9])', 'v', f_expr)} : 1"]
                else:
                    eqs = [f"dr/dt = (-r + {f_expr}{noise_term})/tau : 1"]
                eqs += [f"I = {currents} : 1", "tau : second (constant, shared)"]
                eqs += [f"{v} : 1" for v in incoming[k]]
                bias_linked = self.learning and p.learn_bias
                eqs.append("b : 1 (linked)" if bias_linked else "b : 1 (constant)")
                if self.learning:
                    eqs.append("delta : 1")
                    eqs += [f"{v} : 1" for v in fb_in[k]]
                    if p.role == "output":
                        eqs += ["err : 1", "ystar : 1 (constant)"]
                g = b2.NeuronGroup(batch * p.size, "\n".join(eqs), method="euler", name=gname, clock=clock,
                                   namespace=ns)
                g.tau = p.tau * b2.second
                if p.dynamics == "current":
                    g.v = r0[p.name].reshape(-1)
                else:
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
                if p.role != "input" or "r" not in self.groups[p.name].variables or \
                        not self.groups[p.name].variables["r"].constant:
                    variables = ["r", "v"] if p.dynamics == "current" else "r"
                    mon = b2.StateMonitor(self.groups[p.name], variables, record=True, when="end",
                                          name=f"{self.groups[p.name].name}_mon", clock=clock)
                    self.monitors[p.name] = mon
                    self.objects.append(mon)
        for g in list(self.groups.values()) + list(self.stores.values()) + list(self.bias_stores.values()):
            if g.state_updater not in self._order:  # no differential equation: nothing to integrate
                g.state_updater.active = False
        self._apply_schedule()
        self.network = b2.Network(*self.objects, name=f"{name}_net")

    def _timed(self, b2, name: str, values: np.ndarray):
        """A TimedArray of rows (T, batch, size) → values (T, batch * size): row n at t = n dt."""
        values = np.ascontiguousarray(values, dtype=float).reshape(values.shape[0], -1)
        ta = b2.TimedArray(values, dt=self.dt * b2.second, name=name)
        self.timed[name] = ta
        return ta

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

    def rates(self, initial: dict | None = None) -> dict:
        """Recorded rates {population: array (n_steps + 1, batch, size)}, index 0 = initial
        (``initial[name]``, else the initial state); a recorded input population's rows are
        u[0..T-1] then u[T-1] again (the time convention)."""
        out = {}
        initial = {} if initial is None else initial
        for p in self.plan.pops:
            if p.name not in self.monitors:
                continue
            mon = self.monitors[p.name]
            trace = np.asarray(mon.r).T.reshape(-1, self.batch, p.size)
            if p.role == "input":
                out[p.name] = np.concatenate([trace, trace[-1:]])
            else:
                first = initial.get(p.name, self._r0[p.name])
                out[p.name] = np.concatenate([np.asarray(first)[None], trace])
        return out

    def states(self) -> dict:
        """Recorded v of every current-form population {name: (n_steps + 1, batch, size)}."""
        out = {}
        for p in self.plan.pops:
            if p.role != "input" and p.dynamics == "current" and p.name in self.monitors:
                trace = np.asarray(self.monitors[p.name].v).T.reshape(-1, self.batch, p.size)
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

    ``inputs`` (the input rows u^n, time-varying or noisy inputs) < ``currents`` (feedforward summed variables from r^n) < ``("delta", rank)`` (output err and
    delta at rank -1, then per hidden population from the output backwards: its feedback summed
    variables at 2·rank, its delta at 2·rank + 1) < ``gradients`` (batch sums into the weight
    stores) < ``updates`` (W, learned B, sign projection) < ``rates`` (Euler state updaters,
    r^{n+1} from I^n) < ``bias`` (b updates, after the rates so I^n keeps the old b).
    """
    base = 10
    top = base + 2 * n_pops + 4
    if isinstance(label, tuple):
        return base + label[1]
    return {"inputs": -1, "currents": 0, "gradients": top, "updates": top + 1, "rates": top + 2, "bias": top + 3}[label]


def schedule_table(model: Brian2Circuit) -> list:
    """``(when, order, name)`` of every active scheduled object, in the order brian2 runs them
    (from ``network.scheduling_summary()``)."""
    summary = model.network.scheduling_summary()
    return [(e.when, e.order, e.name) for e in summary.entries if e.active]


def _batched(value, size: int, owner: str) -> np.ndarray:
    a = as_numpy(value)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != size:
        raise ShapeError(f"{owner}: expected shape (batch, {size}) or ({size},), got {tuple(a.shape)}")
    return a


def _initial(plan: Plan, r0, batch: int) -> dict:
    r0 = {} if r0 is None else dict(r0)
    out = {}
    for p in plan.pops:
        if p.role == "input":
            continue
        value = np.zeros((batch, p.size))
        if p.name in r0:
            value = value + as_numpy(r0[p.name])
        out[p.name] = value
    unknown = sorted(set(r0) - set(out))
    if unknown:
        raise ConfigError(f"biofa.brian2: r0 names {unknown} are not non-input populations of the circuit")
    return out


def build_network(circuit, x, *, dt: float, target=None, lr: float = 0.0, r0=None, learn_bias: bool = True,
                  record: bool = True, name: str = "biofa", noise: dict | None = None) -> Brian2Circuit:
    """Build ``circuit`` as a brian2 ``Network`` for input ``x`` (and, to learn, ``target`` y*).

    Call it inside :func:`brian2_target` to choose the code-generation target, then
    ``model.run(n_steps)``. ``x``: (batch, n_in) or (n_in,); ``target``: (batch, n_out);
    ``lr`` (η) > 0 with a target turns online learning on. Raises
    :class:`~biofa.errors.ConfigError` naming the population or synapse object whose feature
    brian2 cannot express.
    """
    learning = lr != 0.0 and target is not None
    plan = read_circuit(circuit, learning=learning, learn_bias=learn_bias)
    inp = plan.pops[plan.index[circuit.input]]
    xa = as_numpy(x)
    if xa.ndim == 3:  # one input row per step
        if xa.shape[2] != inp.size:
            raise ShapeError(f"input x of population {inp.name!r}: expected shape (T, batch, {inp.size}), got {tuple(xa.shape)}")
        if learning:
            raise ConfigError("biofa.brian2: online learning takes a constant input x of shape (batch, n_in)")
        xs = xa
    else:
        xs = _batched(x, inp.size, f"input x of population {inp.name!r}")
    batch = xs.shape[-2]
    ys = None
    if learning:
        out = plan.pops[plan.index[circuit.output]]
        ys = _batched(target, out.size, f"target of output population {out.name!r}")
        if ys.shape[0] != batch:
            raise ShapeError(f"biofa.brian2: x has batch {batch} but target has {ys.shape[0]}")
    noise = {k: as_numpy(v) for k, v in (noise or {}).items()}
    return Brian2Circuit(plan, {inp.name: xs}, ys, _initial(plan, r0, batch), dt, lr, record, _ident(name), noise)
