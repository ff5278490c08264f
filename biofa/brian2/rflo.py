r"""RFLO online in brian2: the eligibility traces are synapse variables updated every step.

The rule and its time indices are those of :mod:`biofa.circuit.online` (``method="rflo"``):
for every synapse into a non-input population, per sample k,

.. math:: p_{k,ij} \leftarrow (1-\alpha)\,p_{k,ij} + \alpha\, f'(I^n_{k,i})\, r^n_{k,j}, \qquad
          W_{ij} \leftarrow W_{ij} - \frac{\eta}{N} \sum_k L_{k,i}\, p_{k,ij}

with :math:`L = \delta_\mathrm{out} B` (the read-out's paired feedback: ``fa`` or ``bp``) plus
:math:`e B_\mathrm{dfa}` (direct feedback) for a hidden population, scored against the trace
*before* it advances, and :math:`L = e^{n+1}` for the read-out, scored after (the delta rule when
:math:`\tau_\mathrm{out} = \Delta t`). Biases are traced the same way (a trace variable per neuron
copy) or frozen.

One Euler step, every object at ``when="groups"`` with an explicit ``order``: input rows u^n →
feedforward summed currents (from r^n) → output error :math:`e^{n+1}` and
:math:`\delta_\mathrm{out}` (from :math:`r^{n+1}_\mathrm{out} = r + \alpha(f(I) - r)`, computed
ahead of the state updater) → feedback summed variables L → hidden gradients (summed over the
batch copies into each synapse object's weight store) → trace updates → read-out gradients →
W updates and sign projection (``update="step"``; ``"sequence"`` accumulates and applies after
the run) → Euler state updaters → bias updates (after the rates, so I^n keeps the old b).

Rate form only, no population noise, read-out feedback ``fa``/``bp`` or direct ``dfa``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from .plan import ACTIVATIONS, as_numpy, read_circuit

#: the ``order`` of each phase of one step (all at ``when="groups"``)
ORDER = {"inputs": 0, "currents": 1, "error": 2, "feedback": 3, "grad_hidden": 4, "advance": 5,
         "grad_out": 6, "updates": 7, "rates": 8, "bias": 9}


def _rows(value, shape, name: str) -> np.ndarray:
    a = as_numpy(value)
    if a.shape != shape:
        a = np.broadcast_to(a, shape) if a.ndim < 3 and a.shape[-1:] == shape[-1:] else a
    if a.shape != shape:
        raise ShapeError(f"biofa.brian2.learn_online: {name} must have shape (T, batch, n) = {shape}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=float)


def learn_rflo(circuit, x, target, *, dt: float, lr: float, mask=None, update: str = "step", r0=None,
               learn_bias: bool = True, name: str = "rflo"):
    """Build and run RFLO for x (T, batch, n_in) and target (T, batch, n_out); returns
    ``(weights, biases)`` as float64 numpy arrays {synapse name: W}, {population: b}."""
    import brian2 as b2

    plan = read_circuit(circuit, learning=True, learn_bias=learn_bias, through_time=True)
    noisy = [p.name for p in plan.pops if p.sigma > 0]
    if noisy:
        raise ConfigError(f"biofa.brian2.learn_online(method='rflo'): populations {noisy} are noisy; RFLO in brian2 "
                          "runs without noise (set their noise to 0 or learn with the torch engine)")
    xs = as_numpy(circuit.input_rates(torch.as_tensor(as_numpy(x))))
    if xs.ndim != 3:
        raise ShapeError(f"biofa.brian2.learn_online(method='rflo'): x must have shape (T, batch, n_in), got {xs.shape}")
    steps, batch = xs.shape[:2]
    out_k = plan.index[circuit.output]
    out = plan.pops[out_k]
    ys = _rows(target, (steps, batch, out.size), "target")
    if mask is None:
        ms = np.ones((steps, batch, out.size))
    else:
        m = as_numpy(mask)
        ms = _rows(m[..., None] if m.shape == (steps, batch) else m, (steps, batch, out.size), "mask")
    clock = b2.Clock(dt=dt * b2.second, name=f"{name}_clock")
    kw = {"clock": clock}
    objects, order = [], {}
    lr_b = lr / batch

    def timed(tag, values):
        return b2.TimedArray(values.reshape(steps, -1), dt=dt * b2.second, name=f"{name}_{tag}")

    incoming = {k: [f"I_ff{j}" for j, s in enumerate(plan.ffs) if s.post == k] for k in range(len(plan.pops))}
    fbs = [f for f in plan.fbs if f.source == out_k]
    for f in fbs:
        if f.kind not in ("fixed", "bp"):
            raise ConfigError(f"FeedbackSynapses {f.name!r}: RFLO in brian2 supports the read-out feedback rules "
                              f"'fa', 'bp' and direct 'dfa', not {f.kind!r}")
    fb_in = {k: [f"fb{j}" for j, f in enumerate(fbs) if f.target == k] for k in range(len(plan.pops))}
    r0 = {} if r0 is None else r0
    groups, bias_stores = {}, {}
    for k, p in enumerate(plan.pops):
        gname = f"{name}_p{k}"
        if p.role == "input":
            g = b2.NeuronGroup(batch * p.size, "r : 1", name=gname, namespace={"xin": timed("x", xs)}, **kw)
            order[g.run_regularly("r = xin(t, i)", name=f"{gname}_in")] = "inputs"
            groups[p.name] = g
            objects.append(g)
            continue
        if p.dynamics != "rate":
            raise ConfigError(f"Population {p.name!r}: RFLO in brian2 integrates the rate form only")
        f_expr, df_expr = ACTIVATIONS[p.activation]
        eqs = [f"dr/dt = (-r + {f_expr})/tau : 1", f"I = {' + '.join(incoming[k] + ['b'])} : 1",
               "fpI : 1", "tau : second (constant, shared)"]
        eqs += [f"{v} : 1" for v in incoming[k] + fb_in[k]]
        eqs.append("b : 1 (linked)" if p.learn_bias else "b : 1 (constant)")
        if p.learn_bias:
            eqs.append("pb : 1")
        ns = {"alpha": dt / p.tau}
        if p.role == "output":
            eqs += ["err : 1", "delta : 1", "sig = err : 1"]
            ns.update(ystar=timed("y", ys), mk=timed("m", ms))
        else:
            eqs.append(f"sig = {' + '.join(fb_in[k]) or '0'} : 1")
        g = b2.NeuronGroup(batch * p.size, "\n".join(eqs), method="euler", name=gname, namespace=ns, **kw)
        g.tau = p.tau * b2.second
        g.r = np.broadcast_to(as_numpy(r0.get(p.name, np.zeros(p.size))), (batch, p.size)).reshape(-1)
        if p.learn_bias:
            store = b2.NeuronGroup(p.size, "b : 1\nbg : 1\nbgacc : 1", name=f"{gname}_bstore", namespace={"lr_b": lr_b}, **kw)
            store.b = p.bias
            g.b = b2.linked_var(store, "b", index=np.tile(np.arange(p.size), batch))
            acc = b2.Synapses(g, store, "bg_post = sig_pre*pb_pre : 1 (summed)", name=f"{gname}_bgrad", **kw)
            acc.connect(i=np.arange(batch * p.size), j=np.tile(np.arange(p.size), batch))
            order[acc.summed_updaters["bg_post"]] = "grad_out" if p.role == "output" else "grad_hidden"
            order[g.run_regularly("pb = (1 - alpha)*pb + alpha*fpI", name=f"{gname}_pb")] = "advance"
            code = "b = b - lr_b*bg" if update == "step" else "bgacc = bgacc + bg"
            order[store.run_regularly(code, name=f"{gname}_bupdate")] = "bias"
            bias_stores[p.name] = store
            objects += [store, acc]
        else:
            g.b = np.tile(p.bias, batch)
        code = f"fpI = {df_expr}"  # f'(I^n), stored: synapses read it as fpI_pre
        if p.role == "output":
            code += f"\nerr = mk(t, i)*(r + alpha*({f_expr} - r) - ystar(t, i))\ndelta = alpha*fpI*err"
        order[g.run_regularly(code, name=f"{gname}_err")] = "error"
        order[g.state_updater] = "rates"
        groups[p.name] = g
        objects.append(g)

    stores = {}
    for j, s in enumerate(plan.ffs):
        pre, post = plan.pops[s.pre], plan.pops[s.post]
        kk, ii, jj = (a.ravel() for a in np.meshgrid(np.arange(batch), np.arange(post.size), np.arange(pre.size),
                                                       indexing="ij"))
        if s.mask is not None:  # absent synapses (M = 0) are not created: they neither act nor learn
            keep = s.mask[ii, jj] != 0
            kk, ii, jj = kk[keep], ii[keep], jj[keep]
        pre_idx, post_idx, widx = kk * pre.size + jj, kk * post.size + ii, ii * pre.size + jj
        store_eqs = ["w : 1", "g : 1", "gacc : 1"] + (["sgn : 1 (constant)"] if s.signs is not None else [])
        store = b2.NeuronGroup(post.size * pre.size, "\n".join(store_eqs), name=f"{name}_ff{j}_store",
                               namespace={"lr_b": lr_b}, **kw)
        store.w = s.weight.reshape(-1)
        if s.signs is not None:
            store.sgn = s.signs.reshape(-1)
        syn = b2.Synapses(groups[pre.name], groups[post.name],
                          f"w : 1 (linked)\nwidx : integer (constant)\nI_ff{j}_post = w*r_pre : 1 (summed)",
                          name=f"{name}_ff{j}", **kw)
        syn.connect(i=pre_idx, j=post_idx)
        syn.widx = widx
        syn.w = b2.linked_var(store, "w", index="widx")
        order[syn.summed_updaters[f"I_ff{j}_post"]] = "currents"
        # the trace p of synapse (k, i, j) lives on the synapse from post unit (k, i) to store entry (i, j)
        acc = b2.Synapses(groups[post.name], store,
                          "p : 1\nrl : 1 (linked)\nridx : integer (constant)\ng_post = sig_pre*p : 1 (summed)",
                          name=f"{name}_ff{j}_trace", namespace={"alpha": dt / post.tau}, **kw)
        acc.connect(i=post_idx, j=widx)
        acc.ridx = pre_idx
        acc.rl = b2.linked_var(groups[pre.name], "r", index="ridx")
        order[acc.summed_updaters["g_post"]] = "grad_out" if post.role == "output" else "grad_hidden"
        order[acc.run_regularly("p = (1 - alpha)*p + alpha*fpI_pre*rl", name=f"{name}_ff{j}_advance")] = "advance"
        if update == "step":
            code = "w = w - lr_b*g" + ("\nw = sgn*clip(sgn*w, 0, inf)" if s.signs is not None else "")
        else:
            code = "gacc = gacc + g"
        order[store.run_regularly(code, name=f"{name}_ff{j}_update")] = "updates"
        stores[s.name] = store
        objects += [store, syn, acc]

    for j, f in enumerate(fbs):
        src, tgt = plan.pops[f.source], plan.pops[f.target]
        kk, cc, aa = (v.ravel() for v in np.meshgrid(np.arange(batch), np.arange(tgt.size), np.arange(src.size),
                                                     indexing="ij"))
        carried = "err_pre" if f.direct else "delta_pre"
        if f.kind == "fixed":
            model = f"B : 1 (constant)\nfb{j}_post = B*{carried} : 1 (summed)"
        else:
            model = f"B : 1 (linked)\nwidx : integer (constant)\nfb{j}_post = B*{carried} : 1 (summed)"
        syn = b2.Synapses(groups[src.name], groups[tgt.name], model, name=f"{name}_fb{j}", **kw)
        syn.connect(i=kk * src.size + aa, j=kk * tgt.size + cc)
        if f.kind == "fixed":
            syn.B = f.matrix[aa, cc]
        else:  # bp: B = the read-out's W, read from its store
            syn.widx = aa * tgt.size + cc
            syn.B = b2.linked_var(stores[plan.ffs[f.ff].name], "w", index="widx")
        order[syn.summed_updaters[f"fb{j}_post"]] = "feedback"
        objects.append(syn)

    for g in objects:
        if isinstance(g, b2.NeuronGroup) and g.state_updater not in order:
            g.state_updater.active = False
    for obj, label in order.items():
        obj.when, obj.order = "groups", ORDER[label]
    net = b2.Network(*objects, name=f"{name}_net")
    net.run(steps * dt * b2.second, namespace={})

    weights = {}
    for s in plan.ffs:
        store = stores[s.name]
        w = np.array(store.w[:]).reshape(plan.pops[s.post].size, plan.pops[s.pre].size)
        if update == "sequence":
            w = w - lr_b * np.array(store.gacc[:]).reshape(w.shape)
            if s.signs is not None:
                w = s.signs * np.clip(s.signs * w, 0, None)
        weights[s.name] = w
    biases = {}
    for p in plan.pops:
        if p.role == "input":
            continue
        if p.name in bias_stores:
            b = np.array(bias_stores[p.name].b[:])
            if update == "sequence":
                b = b - lr_b * np.array(bias_stores[p.name].bgacc[:])
            biases[p.name] = b
        else:
            biases[p.name] = p.bias.copy()
    return weights, biases
