"""DANN synapses (biofa.circuit.DANNSynapses): W = W_EE - W_EI W_IE with non-negative factors and
interneurons that act within the step. In float64: the unrolled circuit is the hand-written DANN RNN
(forward and every gradient), the factors' gradients are the chain rule of W's, the error reaches
the presynaptic rates through the rule's B made from the effective W; the initialisation's
identities; the constraints after a step; corrected updates; specs, copies and the errors."""

import copy
import math

import pytest
import torch

import biofa.circuit as bc
from biofa.analysis import nse
from biofa.errors import ConfigError
from biofa.nn import parameter_groups

pytestmark = pytest.mark.usefixtures("f64")  # every tensor in float64, the default restored after
DT = 0.02


def spec(feedback="bp", n_e=12, n_in=5, n_out=3, interneurons=(3, 2, 1), **extra):
    return {"input": "x", "output": "y", "seed": 0, "dynamics": "rate", "readout": "E",
            "populations": {"x": {"size": n_in, "tau": DT},
                            "E": {"size": n_e, "sign": "E", "activation": "relu", "tau": DT},
                            "y": {"size": n_out, "activation": "linear", "tau": DT}},
            "synapses": [{"pre": "x", "post": "E", "sign": "E", "interneurons": interneurons[0], "feedback": feedback},
                         {"pre": "E", "post": "E", "interneurons": interneurons[1], "feedback": feedback, **extra},
                         {"pre": "E", "post": "y", "interneurons": interneurons[2], "feedback": feedback}]}


def circuit(seed=0, **kw):
    c = bc.from_spec(dict(spec(**kw), seed=seed), dtype=torch.float64)
    with torch.no_grad():  # non-zero biases, so that the relu units are not all active or all silent
        for b in c.biases.values():
            b.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 100))
    return c


def inputs(seed=0, steps=7, batch=4, n_in=5):
    return torch.rand(steps, batch, n_in, generator=torch.Generator().manual_seed(seed))


def hand_rnn(c, x, factors):
    """h_t = relu(U x_t + W h_{t-1} + b), y_t = V h_{t-1} + c (tau = dt: the rate form reads the state
    of the step before), with U, W, V = A - B C from the given factors."""
    (u_ee, u_ei, u_ie), (w_ee, w_ei, w_ie), (v_ee, v_ei, v_ie) = factors
    u, w, v = u_ee - u_ei @ u_ie, w_ee - w_ei @ w_ie, v_ee - v_ei @ v_ie
    b_e, b_y = c.biases["E"], c.biases["y"]
    h = torch.zeros(x.shape[1], w.shape[0])
    ys = [torch.zeros(x.shape[1], v.shape[0])]
    for t in range(x.shape[0]):
        ys.append(h @ v.T + b_y)
        h = torch.relu(x[t] @ u.T + h @ w.T + b_e)
    return torch.stack(ys)


def leaf_factors(c):
    return [[f.detach().clone().requires_grad_(True) for f in s.factors()] for s in c.feedforward]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unroll_is_the_hand_written_dann_rnn_with_every_gradient(seed):
    c = circuit(seed)
    x = inputs(seed)
    out = c.unroll(x, dt=DT).rates["y"]
    factors = leaf_factors(c)
    ref = hand_rnn(c, x, factors)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    target = torch.randn_like(ref, generator=torch.Generator().manual_seed(seed + 7))
    ((out - target) ** 2).sum().backward()
    ((ref - target) ** 2).sum().backward()
    for s, mine in zip(c.feedforward, factors):
        params = (s.layer.weight, s.w_ei, s.w_ie)
        for p, f in zip(params, mine):
            assert torch.allclose(p.grad, f.grad, rtol=0, atol=1e-10), s.name


def test_factor_gradients_are_the_chain_rule_of_ws():
    """dL/dW_EE = G, dL/dW_EI = -G W_IE^T, dL/dW_IE = -W_EI^T G, with G = dL/dW: G from a twin whose
    synapses hand the engine their W as a leaf."""
    c, twin = circuit(3), circuit(3)
    x = inputs(3)
    c.unroll(x, dt=DT).rates["y"].pow(2).sum().backward()
    leaves = {s.name: s.weight.detach().clone().requires_grad_(True) for s in twin.feedforward}
    for s in twin.feedforward:
        s.forward_tensors = lambda s=s: (leaves[s.name], s.layer.feedback.feedback_input(leaves[s.name]))
    twin.unroll(x, dt=DT).rates["y"].pow(2).sum().backward()
    for s in c.feedforward:
        g = leaves[s.name].grad
        _, w_ei, w_ie = (f.detach() for f in s.factors())
        assert torch.allclose(s.layer.weight.grad, g, rtol=0, atol=1e-10)
        assert torch.allclose(s.w_ei.grad, -g @ w_ie.T, rtol=0, atol=1e-10)
        assert torch.allclose(s.w_ie.grad, -w_ei.T @ g, rtol=0, atol=1e-10)


@pytest.mark.parametrize("rule", ["bp", "fa", "usf", "frsf", "brsf"])
def test_the_error_reaches_the_presynaptic_rates_through_the_rules_b(rule):
    c = circuit(1, feedback=rule)
    s = c.synapse("E->E")
    r = torch.rand(4, 12, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    g = torch.randn(4, 12, generator=torch.Generator().manual_seed(1))
    out = s(r)
    assert torch.allclose(out, r.detach() @ s.weight.detach().T, rtol=0, atol=1e-14)
    out.backward(g)
    b = c.feedback[[f.name for f in c.feedback].index("E->E")].matrix()
    assert torch.allclose(r.grad, g @ b, rtol=0, atol=1e-12)
    if rule == "bp":
        assert torch.equal(b, s.weight.detach())
    elif rule == "fa":
        assert torch.equal(b, s.layer.feedback.B)
    else:  # sign-concordant: the signs of the effective (signed) W, not of its non-negative factors
        assert torch.equal(torch.sign(b), torch.sign(s.weight.detach()))


def test_through_time_the_error_uses_the_rules_b():
    """Under fa the gradient reaching the input population's synapse differs from bp's, and equals
    the hand RNN's where the recurrent and read-out backward use their B (a custom autograd)."""
    c = circuit(2, feedback="fa")
    x = inputs(2)
    out = c.unroll(x, dt=DT).rates["y"]
    out.pow(2).sum().backward()
    factors = leaf_factors(c)

    class Through(torch.autograd.Function):
        @staticmethod
        def forward(ctx, r, w, b):
            ctx.save_for_backward(r, b)
            return r @ w.T

        @staticmethod
        def backward(ctx, g):
            r, b = ctx.saved_tensors
            return g @ b, g.T @ r, None

    (u_ee, u_ei, u_ie), (w_ee, w_ei, w_ie), (v_ee, v_ei, v_ie) = factors
    u, w, v = u_ee - u_ei @ u_ie, w_ee - w_ei @ w_ie, v_ee - v_ei @ v_ie
    bs = [s.feedback_matrix() for s in c.feedforward]
    h = torch.zeros(x.shape[1], 12)
    ys = [torch.zeros(x.shape[1], 3)]
    for t in range(x.shape[0]):
        ys.append(Through.apply(h, v, bs[2]) + c.biases["y"])
        h = torch.relu(Through.apply(x[t], u, bs[0]) + Through.apply(h, w, bs[1]) + c.biases["E"])
    torch.stack(ys).pow(2).sum().backward()
    for s, mine in zip(c.feedforward, factors):
        for p, f in zip((s.layer.weight, s.w_ei, s.w_ie), mine):
            assert torch.allclose(p.grad, f.grad, rtol=0, atol=1e-10), s.name


def test_simulate_and_the_steady_state_read_the_effective_w():
    c = circuit(4)
    x = inputs(4)
    with torch.no_grad():
        ref = hand_rnn(c, x, [list(s.factors()) for s in c.feedforward])
    assert torch.allclose(c.simulate(x, dt=DT).rates["y"], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_initialisation_centres_every_column(seed):
    c = circuit(seed, n_e=60, n_in=40)
    for s in c.feedforward:
        w_ee, w_ei, w_ie = (f.detach() for f in s.factors())
        assert bool((w_ee >= 0).all() and (w_ei >= 0).all() and (w_ie >= 0).all())
        assert torch.allclose(w_ei.sum(1), torch.ones(s.post.size), rtol=0, atol=1e-12)
        assert torch.allclose(w_ie, w_ee.mean(0, keepdim=True).expand_as(w_ie), rtol=0, atol=1e-15)
        assert float(s.weight.detach().sum(0).abs().max()) < 1e-12
        assert nse(s) == nse(s.weight.detach())  # the spectrum of a DANN synapse is its effective W's


def test_initial_variance_over_seeds():
    """E[W_ij^2] = v: W_EE's entries have variance v n/(n-1) and centring a column of n removes
    1/n of it. 20 draws of 100 x 100 entries: the mean sample second moment's relative sd is about
    sqrt(8 / 10^4 / 20) = 0.6 % (an exponential's kurtosis is 9), so 5 % is about 8 sd."""
    v = 1 / 300
    moments = []
    for seed in range(20):
        pre = bc.Population("E", 100, sign="E")
        s = bc.DANNSynapses(pre, pre, interneurons=10, feedback="bp", generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
        moments.append(float(s.weight.detach().pow(2).mean()))
    assert abs(sum(moments) / len(moments) / v - 1) < 0.05
    # an exponential's mean is its sd: 20 draws of 8 x 100 entries, the mean's relative sd 0.8 %
    pre, post = bc.Population("x", 8, sign="E"), bc.Population("E", 100, sign="E")
    means = [float(bc.DANNSynapses(pre, post, interneurons=10, variance=0.01,
                                   generator=torch.Generator().manual_seed(seed)).layer.weight.detach().mean())
             for seed in range(20)]
    assert abs(sum(means) / len(means) / math.sqrt(0.01 * 100 / 99) - 1) < 0.05


def test_factors_stay_non_negative_after_a_step_and_w_stays_signed():
    c = circuit(5)
    opt = torch.optim.SGD(c.parameters(), lr=5.0)
    c.unroll(inputs(5), dt=DT).rates["y"].pow(2).sum().backward()
    opt.step()
    for s in c.feedforward:
        assert all(bool((f.detach() >= 0).all()) for f in s.factors())
        assert all(float(p.detach().min()) >= 0 for p in (s.layer.weight, s.w_ei, s.w_ie))
    w = c.synapse("E->E").weight.detach()
    assert bool((w < 0).any()) and bool((w > 0).any())


def test_corrected_updates_as_learning_rate_multipliers():
    c = circuit(0, corrected=True)
    s = c.synapse("E->E")
    groups = {g["lr_scale"]: g["params"] for g in parameter_groups(c)}
    assert groups[1 / math.sqrt(12)] == [s.w_ie] and groups[1 / 12] == [s.w_ei]
    assert circuit(0).synapse("E->E").lr_multipliers() == {}


def test_spec_round_trip_copy_and_state_dict():
    c = circuit(6, corrected=True)
    again = bc.from_spec(c.to_spec(), dtype=torch.float64)
    assert c.to_spec() == again.to_spec()
    assert [type(s) for s in again.feedforward] == [bc.DANNSynapses] * 3
    again.load_state_dict(c.state_dict())
    x = inputs(6)
    assert torch.equal(again.simulate(x, dt=DT).rates["y"], c.simulate(x, dt=DT).rates["y"])
    twin = copy.deepcopy(c)
    opt = torch.optim.SGD(twin.parameters(), lr=50.0)
    twin.unroll(x, dt=DT).rates["y"].pow(2).sum().backward()
    opt.step()  # the copy's factors are projected too: the hook knows the copy
    assert all(float(p.detach().min()) >= 0 for s in twin.feedforward for p in (s.w_ei, s.w_ie))


def test_bad_options_are_named():
    x, e = bc.Population("x", 4), bc.Population("E", 6, sign="E")
    i = bc.Population("I", 3, sign="I")
    with pytest.raises(ConfigError, match="interneurons must be a positive int"):
        bc.DANNSynapses(e, e, interneurons=0)
    with pytest.raises(ConfigError, match="interneurons must be a positive int"):
        bc.DANNSynapses(e, e, interneurons=True)
    with pytest.raises(ConfigError, match="needs excitatory presynaptic units.*inhibitory"):
        bc.DANNSynapses(i, e, interneurons=2)
    with pytest.raises(ConfigError, match="needs excitatory presynaptic units.*untyped"):
        bc.DANNSynapses(x, e, interneurons=2)
    with pytest.raises(ConfigError, match="learns B alongside W"):
        bc.DANNSynapses(e, e, interneurons=2, feedback="kp")
    with pytest.raises(ConfigError, match=r"\['p_connect'\] are not options of a DANN synapse"):
        bc.DANNSynapses(e, e, interneurons=2, p_connect=0.5)
    with pytest.raises(ConfigError, match="variance must be a positive number"):
        bc.DANNSynapses(e, e, interneurons=2, variance=-1.0)
    with pytest.raises(ConfigError, match="corrected must be true or false"):
        bc.DANNSynapses(e, e, interneurons=2, corrected="yes")
    s = bc.DANNSynapses(x, e, interneurons=2, sign="E")
    with pytest.raises(ConfigError, match="set through its factors"):
        s.write_weight(torch.zeros(6, 4))
    with pytest.raises(ConfigError, match="w_ei must have shape"):
        s.write_factors(torch.zeros(6, 4), torch.zeros(2, 6), torch.zeros(2, 4))
    bad = spec()
    bad["recurrent_init"] = "colei"
    with pytest.raises(ConfigError, match="set through its factors"):
        bc.from_spec(bad)


@pytest.mark.parametrize("method", ["rflo", "eprop"])
def test_local_rules_through_time_refuse_a_factorised_w(method):
    c = circuit(0)
    x = inputs(0)
    target = torch.zeros(x.shape[0], x.shape[1], 3)
    with pytest.raises(ConfigError, match=r"'x->E' is a DANN synapse .*(RFLO|e-prop) updates W itself"):
        c.learn_online(x, target, dt=DT, lr=0.1, method=method)
    with pytest.raises(ConfigError, match="is a DANN synapse"):
        c.learn_sequence(x, target, dt=DT, method=method, apply=False)


def test_three_factor_and_brian2_learning_refuse_a_factorised_w():
    s = spec()
    s["synapses"] = [s["synapses"][0], {"pre": "E", "post": "y", "interneurons": 1}]
    c = bc.from_spec(s)
    x = torch.rand(3, 5)
    with pytest.raises(ConfigError, match="the three-factor rule updates W itself"):
        c.learn_online(x, torch.zeros(3, 3), duration=0.1, dt=DT, lr=0.1)
    from biofa.brian2.plan import read_circuit
    read_circuit(c, learning=False)  # running it is fine: W is read once
    with pytest.raises(ConfigError, match="brian2's online learning updates W itself"):
        read_circuit(c, learning=True)


def test_direct_feedback_reaches_the_dann_synapses_of_a_hidden_population():
    """DFA: E's error is e B_dfa, not the read-out's W. With a loss linear in y (e = 1) the input and
    recurrent factors' gradients do not depend on the read-out's factors at all."""
    def grads(readout_scale):
        s = spec(feedback="none")
        s["feedback"] = [{"source": "y", "target": "E", "rule": "dfa"}]
        c = bc.from_spec(s)
        with torch.no_grad():
            readout = c.synapse("E->y")
            readout.layer.weight.mul_(readout_scale)
            readout.w_ei.mul_(readout_scale)
        c.unroll(inputs(8), dt=DT).rates["y"].sum().backward()
        return [p.grad.clone() for s_ in c.feedforward[:2] for p in (s_.layer.weight, s_.w_ei, s_.w_ie)]

    one, other = grads(1.0), grads(3.0)
    assert all(float(g.abs().sum()) > 0 for g in one)
    assert all(torch.equal(a, b) for a, b in zip(one, other))
