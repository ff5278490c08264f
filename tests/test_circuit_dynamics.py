"""biofa.circuit rate dynamics and online learning, against the math (float64)."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import biofa.circuit as bc
from biofa.circuit import Circuit, FeedbackSynapses, FeedforwardSynapses, Population
from biofa.constraints import dale_violations
from biofa.errors import ConfigError, ShapeError


def mixed_circuit():
    """Every activation, paired FA, Kolen–Pollack, a no-feedback synapse with DFA, a fixed bias."""
    g = torch.Generator().manual_seed(7)
    x = Population("x", 4)
    h1 = Population("h1", 6, activation="tanh", tau=0.01, bias=0.05)
    h2 = Population("h2", 5, activation="softplus", tau=0.02, bias=-0.1)
    h3 = Population("h3", 5, activation="relu", tau=0.015, bias=0.2, learn_bias=False)
    y = Population("y", 3, activation="sigmoid", tau=0.005)
    syns = [FeedforwardSynapses(x, h1, generator=g),
            FeedforwardSynapses(x, h2, feedback="kp", generator=g),
            FeedforwardSynapses(h1, h2, generator=g),
            FeedforwardSynapses(h1, h3, feedback="kp", generator=g),
            FeedforwardSynapses(h2, y, generator=g),
            FeedforwardSynapses(h3, y, feedback="none", generator=g)]
    direct = [FeedbackSynapses(y, h3, generator=g), FeedbackSynapses(y, h1, init=0.3, generator=g)]
    return Circuit([x, h1, h2, h3, y], syns, input="x", output="y", feedback=direct)


def test_simulate_trajectory_layout(f64):
    c = mixed_circuit()
    x = torch.randn(3, 4)
    tr = c.simulate(x, duration=0.01, dt=1e-3)
    assert tr.t.shape == (11,) and torch.allclose(tr.t, torch.arange(11) * 1e-3)
    assert tr.rates["h2"].shape == (11, 3, 5) and torch.equal(tr.rates["h2"][0], torch.zeros(3, 5))
    assert torch.equal(tr.rates["x"][5], x)
    # step one by hand: r1 = (dt / tau) f(I0), I0 from zero rates
    torch.testing.assert_close(tr.rates["h1"][1], 0.1 * torch.tanh(x @ c.synapse("x->h1").weight.T + 0.05))
    r0 = {"h1": torch.ones(6)}
    tr = c.simulate(x[0], duration=0.002, dt=1e-3, r0=r0)
    assert tr.rates["h1"].shape == (3, 1, 6) and torch.equal(tr.rates["h1"][0], torch.ones(1, 6))


def test_simulate_converges_to_the_feedforward_pass(f64):
    c = mixed_circuit()
    x = torch.randn(8, 4)
    final = c.simulate(x, duration=1.0, dt=1e-3).final()
    with torch.no_grad():
        ref = c.rates(x)
    for name in ref:
        torch.testing.assert_close(final[name], ref[name], rtol=0, atol=1e-12)
    dale = bc.load("dale_mlp", dtype=torch.float64)
    xs = torch.rand(4, 40)
    with torch.no_grad():
        torch.testing.assert_close(dale.simulate(xs, 0.6, 1e-3).final()["y"], dale(xs), rtol=0, atol=1e-10)


def test_euler_error_is_first_order_against_solve_ivp(f64):
    g = torch.Generator().manual_seed(2)
    x, h = Population("x", 2), Population("h", 3, activation="tanh", tau=0.01, bias=0.3)
    y = Population("y", 2, activation="sigmoid", tau=0.02)
    c = Circuit([x, h, y], [FeedforwardSynapses(x, h, init=2.0, generator=g),
                            FeedforwardSynapses(h, y, init=2.0, generator=g)], input="x", output="y")
    xv = torch.tensor([[0.7, -1.2]])
    w1, w2 = c.synapse("x->h").weight.detach().numpy(), c.synapse("h->y").weight.detach().numpy()
    b2 = c.bias("y").detach().numpy()

    def rhs(t, state):
        rh, ry = state[:3], state[3:]
        dh = (-rh + np.tanh(w1 @ xv.numpy()[0] + 0.3)) / 0.01
        dy = (-ry + 1 / (1 + np.exp(-(w2 @ rh + b2)))) / 0.02
        return np.concatenate([dh, dy])

    T = 0.04
    exact = solve_ivp(rhs, (0, T), np.zeros(5), method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    errors = []
    for dt in (1e-3, 5e-4, 2.5e-4):
        fin = c.simulate(xv, T, dt).final()
        errors.append(np.abs(np.concatenate([fin["h"][0].numpy(), fin["y"][0].numpy()]) - exact).max())
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(1.8 < q < 2.2 for q in ratios), (errors, ratios)
    assert errors[-1] < 1e-2


def test_simulate_validation(f64):
    c = mixed_circuit()
    with pytest.raises(ConfigError, match="dt must be a number > 0"):
        c.simulate(torch.zeros(4), 0.1, 0.0)
    with pytest.raises(ConfigError, match="shorter than one step"):
        c.simulate(torch.zeros(4), 1e-5, 1e-3)
    with pytest.raises(ConfigError, match=r"r0 names \['x', 'zz'\]"):
        c.simulate(torch.zeros(4), 0.01, 1e-3, r0={"zz": 1.0, "x": 0.0})
    with pytest.raises(ShapeError, match="expected x of shape"):
        c.simulate(torch.zeros(2, 3), 0.01, 1e-3)


# -- online learning: a numpy transcription of CIRCUIT_CONTRACT ---------------------------------
NP_ACT = {
    "relu": (lambda i: np.maximum(i, 0), lambda i: (i > 0).astype(float)),
    "tanh": (np.tanh, lambda i: 1 - np.tanh(i) ** 2),
    "sigmoid": (lambda i: 1 / (1 + np.exp(-i)), lambda i: np.exp(-i) / (1 + np.exp(-i)) ** 2),
    "softplus": (lambda i: np.logaddexp(0, i), lambda i: 1 / (1 + np.exp(-i))),
    "linear": (lambda i: i, np.ones_like),
}


def numpy_online(c, x, y, dt, lr, steps):
    pops = [p for p in c.populations if p.name != c.input]
    syns = [(s.name, s.pre.name, s.post.name, s.has_feedback, s.layer.feedback.name) for s in c.feedforward]
    W = {s.name: s.weight.detach().numpy().copy() for s in c.feedforward}
    B = {s.name: s.feedback_synapses.matrix().numpy().copy() for s in c.feedforward if s.has_feedback}
    D = [(fb.target.name, fb.B.numpy().copy()) for fb in c.direct]
    b = {p.name: c.bias(p.name).detach().numpy().copy() for p in pops}
    r = {c.input: x}
    r.update({p.name: np.zeros((x.shape[0], p.size)) for p in pops})
    for _ in range(steps):
        current = {}
        for p in pops:
            terms = [r[pre] @ W[n].T for n, pre, post, *_ in syns if post == p.name]
            current[p.name] = sum(terms[1:], terms[0]) + b[p.name]
        err = r[c.output] - y
        delta = {}
        for p in reversed(pops):
            g = err.copy() if p.name == c.output else np.zeros((x.shape[0], p.size))
            for n, pre, post, fb, _ in syns:
                if pre == p.name and fb:
                    g = g + delta[post] @ B[n]
            for target, bd in D:
                if target == p.name:
                    g = g + err @ bd
            delta[p.name] = NP_ACT[p.activation][1](current[p.name]) * g
        grads = {n: delta[post].T @ r[pre] / x.shape[0] for n, pre, post, *_ in syns}
        for n, pre, post, fb, rule in syns:
            W[n] = W[n] - dt * lr * grads[n]
            if rule == "kp":
                B[n] = B[n] - dt * lr * grads[n]
        for p in pops:
            if p.learn_bias:
                b[p.name] = b[p.name] - dt * lr * delta[p.name].mean(0)
        r = {c.input: x, **{p.name: r[p.name] + dt / p.tau * (-r[p.name] + NP_ACT[p.activation][0](current[p.name]))
                            for p in pops}}
    return r, W, B, b


def test_online_step_matches_numpy_transcription_of_the_contract(f64):
    c = mixed_circuit()
    x, y = torch.randn(5, 4), torch.rand(5, 3)
    r_np, W, B, b = numpy_online(c, x.numpy(), y.numpy(), 1e-3, 5.0, 40)
    rates = bc.dynamics.initial_rates(c, x)
    for _ in range(40):
        rates = c.online_step(rates, y, 1e-3, 5.0).rates
    for name, v in r_np.items():
        np.testing.assert_allclose(rates[name].numpy(), v, rtol=1e-12, atol=1e-14)
    for s in c.feedforward:
        np.testing.assert_allclose(s.weight.detach().numpy(), W[s.name], rtol=1e-12, atol=1e-14)
        if s.has_feedback:
            np.testing.assert_allclose(s.feedback_synapses.matrix().numpy(), B[s.name], rtol=1e-12, atol=1e-14)
    for name, v in b.items():
        np.testing.assert_allclose(c.bias(name).detach().numpy(), v, rtol=1e-12, atol=1e-14)
    assert torch.equal(c.bias("h3"), torch.full((5,), 0.2))  # learn_bias=False
    assert not torch.allclose(c.synapse("h1->h3").weight, c.synapse("h1->h3").feedback_synapses.matrix())


def test_online_update_at_steady_state_equals_autograd_gradient(f64):
    """From the fixed point the online step moves W by -dt·lr·(the circuit's own backward gradient)."""
    c = mixed_circuit()
    x, y = torch.randn(6, 4), torch.rand(6, 3)
    with torch.no_grad():
        steady = c.rates(x)
    c.zero_grad()
    (0.5 * ((c(x) - y) ** 2).sum(1).mean()).backward()
    grads = {s.name: s.layer.weight.grad.clone() for s in c.feedforward}
    bgrads = {n: c.bias(n).grad.clone() for n in ("h1", "h2", "y")}
    before = {s.name: s.weight.detach().clone() for s in c.feedforward}
    b_before = {n: c.bias(n).detach().clone() for n in bgrads}
    step = c.online_step(steady, y, 1e-3, 2.0)
    for s in c.feedforward:
        torch.testing.assert_close((before[s.name] - s.weight.detach()) / 2e-3, grads[s.name], rtol=1e-9, atol=1e-12)
    for n in bgrads:
        torch.testing.assert_close((b_before[n] - c.bias(n).detach()) / 2e-3, bgrads[n], rtol=1e-9, atol=1e-12)
    for name in steady:  # at the fixed point the rates do not move
        torch.testing.assert_close(step.rates[name], steady[name], rtol=0, atol=1e-14)


def test_learn_online_trace_and_consistency(f64):
    c1, c2 = mixed_circuit(), mixed_circuit()
    x, y = torch.randn(4, 4), torch.rand(4, 3)
    tr = c1.learn_online(x, y, duration=0.02, dt=1e-3, lr=3.0, record_every=7, record_weights=True)
    assert tr.t.tolist() == pytest.approx([0.0, 0.007, 0.014, 0.02])
    assert tr.rates["h2"].shape == (4, 4, 5) and tr.weights["x->h1"].shape == (4, 6, 4)
    assert tr.loss.shape == (20,)
    rates = bc.dynamics.initial_rates(c2, x)
    w0 = c2.synapse("h2->y").weight.detach().clone()
    for n in range(20):
        step = c2.online_step(rates, y, 1e-3, 3.0)
        assert float(step.loss) == pytest.approx(float(tr.loss[n]), rel=1e-13)
        rates = step.rates
    torch.testing.assert_close(tr.weights["h2->y"][0], w0, rtol=0, atol=0)
    torch.testing.assert_close(tr.weights["h2->y"][-1], c2.synapse("h2->y").weight.detach(), rtol=0, atol=0)
    for name in rates:
        torch.testing.assert_close(tr.final_rates[name], rates[name], rtol=0, atol=0)
        torch.testing.assert_close(tr.rates[name][-1], rates[name], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_online_learning_learns_the_lillicrap_task(f64, seed):
    """FA in the 30-20-10 linear circuit, online (rates and weights move together), on the task of
    Lillicrap et al. (2016). How far the loss falls in a given time is no law (FA is not gradient
    descent and the convergence theorem gives no rate), so the test asserts the learning rule's
    exact laws, at every step, on more than one draw of circuit and task.

    With x clamped, e_n = r_y^n - y*, lr' = dt * lr / N and the paired B_2 (10 x 20) of h->y, the
    hidden error is e_n B_2 (linear units), so

        W_1(n) - W_1(0) = B_2^T A_n,          A_n = -lr' sum_{k<n} e_k^T x     (the span of B_2^T)
        W_2(n) - W_2(0) = -lr' sum_{k<n} e_k^T r_h^k

    and, started from W = 0 and zero rates, r_h stays in the row space of B_2 (it low-passes W_1 x)
    and so does every row of W_2: W_2 = W_2 P with P the projector onto that space, the alignment
    of W_2 with B_2 on which Lillicrap et al.'s argument rests. Under BP (e W_2 sent back) none
    holds. Float64 over 2000 steps: rounding ~1e-13 relative; 1e-10 allowed."""
    g = torch.Generator().manual_seed(seed)
    T = torch.rand(10, 30, generator=g) * 2 - 1
    x = torch.randn(64, 30, generator=g)
    y = x @ T.T
    dt, lr = 2e-3, 5.0
    for from_zero in (False, True):
        c = bc.load("lillicrap_linear", seed=seed, dtype=torch.float64)
        w1, w2 = c.synapse("x->h"), c.synapse("h->y")
        if from_zero:
            for s in (w1, w2):
                s.layer._set_weight(torch.zeros_like(s.weight))
        W10, W20 = w1.weight.detach().clone(), w2.weight.detach().clone()
        B2 = w2.layer.feedback.matrix().clone()
        P = torch.linalg.pinv(B2) @ B2  # projector onto the row space of B_2 (rank 10 in R^20)
        sum_e, sum_er = torch.zeros(64, 10), torch.zeros(10, 20)
        rates = bc.dynamics.initial_rates(c, x)
        for n in range(2000):
            step = c.online_step(rates, y, dt, lr)
            sum_e += step.error
            sum_er += step.error.T @ rates["h"]
            rates = step.rates
            if n % 400 == 399:
                scale = -dt * lr / x.shape[0]
                W1, W2 = w1.weight.detach(), w2.weight.detach()
                torch.testing.assert_close(W1 - W10, B2.T @ (scale * sum_e.T @ x), rtol=1e-10,
                                           atol=1e-10 * float((W1 - W10).norm()))
                torch.testing.assert_close(W2 - W20, scale * sum_er, rtol=1e-10, atol=1e-10 * float((W2 - W20).norm()))
                if from_zero:
                    torch.testing.assert_close(W2 @ P, W2, rtol=0, atol=1e-10 * float(W2.norm()))
                    torch.testing.assert_close(rates["h"] @ P, rates["h"], rtol=0, atol=1e-10 * float(rates["h"].norm()))
        assert torch.equal(w2.layer.feedback.matrix(), B2)  # B is fixed
        if not from_zero:  # a random W_2 is not confined to B_2's row space (about half of its norm² is outside)
            assert float((W20 - W20 @ P).norm()) > 0.1 * float(W20.norm())


def _feedback_sign_violations(c) -> int:
    """Entries of every feedback B whose sign differs from the type of the neuron sending the error
    (row k of B: sender k of the source population, E = +1, I = -1), counted here from the
    populations, not from the synapses' own bookkeeping."""
    total = 0
    for fb in c.feedback:
        sign = {"E": 1.0, "I": -1.0}[fb.source.sign]
        total += int((fb.matrix() * sign < 0).sum())
    return total


@pytest.mark.parametrize("rule", ["fa", "kp"])  # kp: B learns W's update, then is projected
def test_online_learning_keeps_dale_and_feedback_signs(f64, rule):
    spec = bc.read("dale_mlp_dale_feedback")
    for table in spec["synapses"]:
        if table.get("feedback") == "fa":
            table["feedback"] = rule
    c = bc.from_spec(spec, dtype=torch.float64)
    assert c.feedback and all(fb.sign == "dale" for fb in c.feedback)
    assert {fb.rule for fb in c.feedback} == {rule}
    b0 = {fb.name: fb.matrix().clone() for fb in c.feedback}
    assert _feedback_sign_violations(c) == 0
    x, y = torch.rand(8, 40), torch.randn(8, 10)
    rates = bc.dynamics.initial_rates(c, x)
    for _ in range(30):
        rates = c.online_step(rates, y, 1e-3, 200.0).rates
        assert sum(dale_violations(c).values()) == 0
        assert _feedback_sign_violations(c) == 0
        assert sum(fb.violations() for fb in c.feedback) == 0
    assert any((s.weight == 0).any() for s in c.feedforward if s.pre.sign == "E")
    if rule == "fa":  # a fixed B never moves
        assert all(torch.equal(fb.matrix(), b0[fb.name]) for fb in c.feedback)
    else:  # Kolen-Pollack's B moved, and the sign projection had work to do (entries clamped at 0)
        assert any(not torch.equal(fb.matrix(), b0[fb.name]) for fb in c.feedback)
        assert any(bool((fb.matrix() == 0).any()) for fb in c.feedback)


def test_online_learning_errors(f64):
    x, h, y = Population("x", 2), Population("h", 3), Population("y", 1)
    c = Circuit([x, h, y], [FeedforwardSynapses(x, h, feedback="wm"), FeedforwardSynapses(h, y)],
                input="x", output="y")
    with pytest.raises(ConfigError, match="weight mirror"):
        c.learn_online(torch.zeros(2), torch.zeros(1), 0.01, 1e-3, 1.0)
    c = Circuit([x, h, y], [FeedforwardSynapses(x, h), FeedforwardSynapses(h, y)], input="x", output="y")
    with pytest.raises(ShapeError, match=r"target must have shape \(batch, 1\)"):
        c.learn_online(torch.zeros(2), torch.zeros(2), 0.01, 1e-3, 1.0)
    with pytest.raises(ConfigError, match="record_every"):
        c.learn_online(torch.zeros(2), torch.zeros(1), 0.01, 1e-3, 1.0, record_every=0)
