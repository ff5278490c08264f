"""Circuit specs: packaged files, Python == TOML construction, exact round trips, validation."""

import copy
import os
import sys

import pytest
import tomli_w
import torch
from hypothesis import given
from hypothesis import strategies as st

import biofa.circuit as bc
from biofa._resources import packaged_dir
from biofa.circuit import Circuit, FeedbackSynapses, FeedforwardSynapses, Population
from biofa.errors import SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGED = ["dale_mlp", "dale_mlp_dale_feedback", "lillicrap_linear", "min_norm_linear", "mlp"]


def assert_same(c1, c2):
    s1, s2 = c1.state_dict(), c2.state_dict()
    assert list(s1) == list(s2)
    for k in s1:
        assert s1[k].dtype == s2[k].dtype and torch.equal(s1[k], s2[k]), k


def test_packaged_circuits_are_listed_and_load(f64):
    assert set(PACKAGED) <= set(bc.available())
    assert packaged_dir("circuits").name == "circuits"
    for name in PACKAGED:
        c = bc.load(name)
        assert c.seed == 0 and isinstance(c.description, str)
        assert c(torch.rand(2, c.population(c.input).size)).shape == (2, c.population(c.output).size)


@pytest.mark.parametrize("name", PACKAGED)
def test_load_to_spec_load_is_exact(f64, name):
    c = bc.load(name)
    spec = c.to_spec()
    again = bc.from_spec(copy.deepcopy(spec))
    assert again.to_spec() == spec
    assert_same(c, again)
    raw = bc.read(name)
    for key, value in raw.items():  # what the file says survives verbatim
        if key not in ("populations", "synapses"):
            assert spec[key] == value


def test_save_writes_toml_atomically_and_reloads(f64, tmp_path):
    c = bc.load("dale_mlp_dale_feedback")
    path = tmp_path / "c.toml"
    path.write_text("stale")
    c.save(path)
    assert os.listdir(tmp_path) == ["c.toml"]
    assert tomllib.loads(path.read_text()) == c.to_spec()
    assert_same(bc.load(path), c)
    assert_same(bc.load(str(path)), c)


def test_python_and_toml_build_identical_mlp(f64):
    g = torch.Generator().manual_seed(0)
    x, h1, h2 = Population("x", 40), Population("h1", 100), Population("h2", 100)
    y = Population("y", 10, activation="linear")
    c = Circuit([x, h1, h2, y], [FeedforwardSynapses(x, h1, generator=g), FeedforwardSynapses(h1, h2, generator=g),
                                 FeedforwardSynapses(h2, y, generator=g)], input="x", output="y")
    t = bc.load("mlp")
    assert_same(c, t)
    spec = t.to_spec()
    del spec["seed"], spec["description"]
    assert c.to_spec() == spec


def test_python_and_toml_build_identical_dale_mlp(f64):
    g = torch.Generator().manual_seed(0)
    pops = {n: Population(n, s, sign=t, activation=a) for n, s, t, a in [
        ("x", 40, "E", "relu"), ("h1_E", 80, "E", "relu"), ("h1_I", 20, "I", "linear"), ("h2_E", 80, "E", "relu"),
        ("h2_I", 20, "I", "relu"), ("y", 10, "E", "linear"), ("y_I", 2, "I", "relu")]}
    syns = []
    for below, e, i, a in [("x", "h1_E", "h1_I", 0.7746), ("h1_E", "h2_E", "h2_I", 0.5477), ("h2_E", "y", "y_I", 0.5477)]:
        syns += [FeedforwardSynapses(pops[below], pops[e], feedback="fa", feedback_sign="dale", init=a, generator=g),
                 FeedforwardSynapses(pops[below], pops[i], feedback="fa", feedback_sign="dale", generator=g),
                 FeedforwardSynapses(pops[i], pops[e], feedback="fa", feedback_sign="dale", generator=g)]
    c = Circuit(list(pops.values()), syns, input="x", output="y", balance=True)
    t = bc.load("dale_mlp_dale_feedback")
    assert_same(c, t)
    spec = t.to_spec()
    del spec["seed"], spec["description"]
    assert c.to_spec() == spec


def test_python_and_toml_build_identical_dfa_circuit(f64):
    spec = {"input": "x", "output": "y", "seed": 3,
            "populations": {"x": {"size": 3}, "h": {"size": 4, "activation": "tanh"},
                            "y": {"size": 2, "activation": "linear", "sign": "E"}},
            "synapses": [{"pre": "x", "post": "h", "feedback": {"rule": "frsf", "scale": "sn"}},
                         {"pre": "h", "post": "y", "feedback": "none", "norm": "const"}],
            "feedback": [{"source": "y", "target": "h", "rule": "dfa", "sign": "dale", "init": 0.2}]}
    t = bc.from_spec(spec)
    g = torch.Generator().manual_seed(3)
    x, h, y = Population("x", 3), Population("h", 4, activation="tanh"), Population("y", 2, activation="linear", sign="E")
    c = Circuit([x, h, y], [FeedforwardSynapses(x, h, feedback={"rule": "frsf", "scale": "sn"}, generator=g),
                            FeedforwardSynapses(h, y, feedback="none", norm="const", generator=g)],
                input="x", output="y", feedback=[FeedbackSynapses(y, h, rule="dfa", sign="dale", init=0.2, generator=g)])
    assert_same(c, t)
    assert (t.direct[0].matrix() >= 0).all() and t.direct[0].matrix().abs().max() <= 0.2
    out = t.to_spec()
    assert bc.from_spec(tomllib.loads(tomli_w.dumps(out))).to_spec() == out


def test_lillicrap_spec_draws_the_published_distributions(f64):
    c = bc.load("lillicrap_linear")
    assert [p.size for p in c.populations] == [30, 20, 10]
    assert all(p.activation == "linear" and not p.learn_bias for p in c.populations[1:])
    for s in c.feedforward:
        w, b = s.weight.abs(), s.feedback_synapses.matrix().abs()
        # the max of n >= 200 draws of U[-a, a] is below 0.9 a with probability 0.9^n < 1e-9
        assert w.max() <= 0.01 and w.max() > 0.009
        assert b.max() <= 0.5 and b.max() > 0.45
    m = bc.load("min_norm_linear")
    assert all(s.weight.abs().max() <= 1e-3 for s in m.feedforward) and m.population("y").size == 1


def test_seed_argument_overrides_and_global_rng_without_seed(f64):
    a, b = bc.load("mlp", seed=5), bc.load("mlp", seed=5)
    assert_same(a, b) and a.seed == 5
    assert not torch.equal(a.feedforward[0].weight, bc.load("mlp").feedforward[0].weight)
    spec = bc.read("mlp")
    del spec["seed"]
    torch.manual_seed(1)
    c1 = bc.from_spec(spec)
    torch.manual_seed(1)
    assert_same(c1, bc.from_spec(spec))
    assert "seed" not in c1.to_spec()


# -- hypothesis: random small specs survive TOML and rebuild the same circuit ---------------------
@st.composite
def specs(draw):
    n = draw(st.integers(2, 5))
    names = [f"p{i}" for i in range(n)]
    pops = {}
    for i, name in enumerate(names):
        table = {"size": draw(st.integers(1, 4))}
        sign = draw(st.sampled_from([None, "E", "I"]))
        if sign:
            table["sign"] = sign
        if i:
            table["activation"] = draw(st.sampled_from(sorted(bc.ACTIVATIONS)))
            table["tau"] = draw(st.sampled_from([0.005, 0.01, 0.02]))
            if draw(st.booleans()):
                table["bias"] = [draw(st.floats(-1, 1, allow_nan=False)) for _ in range(table["size"])]
            table["learn_bias"] = draw(st.booleans())
        pops[name] = table
    synapses = []
    for j in range(1, n):
        pres = [j - 1] + [i for i in range(j - 1) if draw(st.booleans())]
        for i in pres:
            typed = "sign" in pops[names[i]]
            rules = [r for r in bc.PAIRED_RULES if not (typed and r == "usf")] + ["none"]
            syn = {"pre": names[i], "post": names[j], "feedback": draw(st.sampled_from(rules))}
            if syn["feedback"] in ("fa", "kp", "wm") and draw(st.booleans()):
                syn["feedback_sign"] = draw(st.sampled_from(["E", "I"]))
            init = draw(st.sampled_from(["xavier", "kaiming", 0.3]))
            if init != "xavier":
                syn["init"] = init
            if draw(st.booleans()):
                syn["norm"] = "const"
            synapses.append(syn)
    spec = {"input": names[0], "output": names[-1], "seed": draw(st.integers(0, 2**31)),
            "populations": pops, "synapses": synapses}
    hidden = names[1:-1]
    targets = draw(st.lists(st.sampled_from(hidden), unique=True)) if hidden else []
    if targets:
        spec["feedback"] = [{"source": names[-1], "target": t, "rule": "dfa"} for t in targets]
    return spec


@given(specs())
def test_random_specs_round_trip_through_toml(spec):
    c = bc.from_spec(copy.deepcopy(spec))
    out = c.to_spec()
    for name, table in spec["populations"].items():   # what was given is kept verbatim
        assert {k: out["populations"][name][k] for k in table} == table
    for given_syn, got in zip(spec["synapses"], out["synapses"]):
        assert {k: got[k] for k in given_syn} == given_syn
    again = bc.from_spec(tomllib.loads(tomli_w.dumps(out)))
    assert again.to_spec() == out
    assert_same(c, again)
    x = torch.rand(2, spec["populations"][spec["input"]]["size"])
    torch.testing.assert_close(again(x), c(x), rtol=0, atol=0)


# -- validation: every error names the key and what was expected ---------------------------------
BASE = {"input": "x", "output": "y",
        "populations": {"x": {"size": 2}, "h": {"size": 3}, "i": {"size": 2, "sign": "I"}, "y": {"size": 1}},
        "synapses": [{"pre": "x", "post": "h"}, {"pre": "x", "post": "i"}, {"pre": "i", "post": "h"},
                     {"pre": "h", "post": "y"}],
        "feedback": []}


def _set(path, value):
    def mutate(spec):
        node = spec
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return mutate


CASES = [
    (_set(["synapses", 0, "pre"], "zz"), r"synapses\[0\]\.pre: unknown population 'zz'; expected one of \['x', 'h', 'i', 'y'\]"),
    (_set(["feedback"], [{"source": "y", "target": "q", "rule": "dfa"}]), r"feedback\[0\]\.target: unknown population 'q'"),
    (_set(["output"], "out"), r"output: unknown population 'out'"),
    (_set(["input"], KeyError), r"input: missing"),
    (_set(["populations", "h", "size"], 0), r"populations\.h: Population 'h': size must be a positive integer, got 0"),
    (_set(["populations", "h", "size"], KeyError), r"populations\.h\.size: missing; expected a positive integer"),
    (lambda s: s["synapses"].append({"pre": "y", "post": "h"}), r"circuit: Circuit: synapse 'y->h' leaves the output population 'y'"),
    (_set(["synapses", 0, "feedback"], "fb"), r"synapses\[0\]: .*'feedback' parameter of FeedforwardSynapses 'x->h' must be one of \{'bp', 'brsf'"),
    (_set(["feedback"], [{"source": "y", "target": "h", "rule": "rdfa"}]), r"feedback\[0\]: The 'rule' parameter of FeedbackSynapses 'y=>h' must be one of \{'dfa'\}"),
    (_set(["populations", "h", "activation"], "gelu"), r"populations\.h: The 'activation' parameter of Population 'h' must be one of \{'linear', 'relu'"),
    (lambda s: (s.pop("output"), s.update(feedback=[{"source": "y", "target": "h", "rule": "dfa"}]), s["synapses"].pop()),
     r"feedback\[0\]: direct feedback sends the output error, but the spec has no 'output' key"),
    (_set(["feedback"], [{"source": "h", "target": "h"}]), r"feedback\[0\]\.source: .* must be the output 'y'; got 'h'"),
    (_set(["synapses", 2, "sign"], "E"), r"synapses\[2\]: FeedforwardSynapses 'i->h': sign mismatch: the synapses are declared excitatory \('E'\) but the presynaptic population 'i' is inhibitory"),
    (_set(["synapses", 2, "sign"], "free"), r"synapses\[2\]: .*sign 'free' contradicts the type 'I'"),
    (_set(["synapses", 2, "feedback_sign"], "dale"), r"synapses\[2\]: .*feedback sign 'dale' takes the type of the population that sends the error, 'h'"),
    (_set(["bogus"], 1), r"top level: unknown key\(s\) \['bogus'\]; expected some of \['description', 'seed'"),
    (_set(["populations", "h", "sise"], 3), r"populations\.h: unknown key\(s\) \['sise'\]; expected some of \['size'"),
    (_set(["synapses", 0, "weight"], 3), r"synapses\[0\]: unknown key\(s\) \['weight'\]; expected some of \['pre', 'post'"),
    (_set(["feedback"], [{"source": "y", "target": "h", "B": 1}]), r"feedback\[0\]: unknown key\(s\) \['B'\]"),
    (_set(["seed"], -1), r"seed: expected a non-negative integer, got -1"),
    (_set(["balance"], "yes"), r"balance: expected true or false"),
    (lambda s: (s.update(balance=True), s["synapses"].append({"pre": "i", "post": "y"})), r"circuit: Circuit: balance=True: inhibitory population 'i' needs exactly one incoming synapse"),
    (_set(["populations"], []), r"populations: expected a table"),
    (_set(["synapses"], {}), r"synapses: expected an array of tables"),
    (_set(["synapses", 0, "init"], -1), r"synapses\[0\]: .*'init' parameter .* must be one of"),
    (_set(["synapses", 0, "feedback"], {"scale": "sn"}), r"synapses\[0\]: .*a feedback table needs a 'rule' key"),
]


@pytest.mark.parametrize("mutate, message", CASES)
def test_spec_validation_messages(mutate, message):
    spec = copy.deepcopy(BASE)
    bc.from_spec(copy.deepcopy(spec))  # the base is valid
    mutate(spec)
    with pytest.raises(SpecError, match=message):
        bc.from_spec(spec)


def test_load_errors(tmp_path):
    with pytest.raises(SpecError, match=r"Unknown circuit 'nope': not a packaged circuit \(available: \['dale_mlp'"):
        bc.load("nope")
    with pytest.raises(SpecError, match="No circuit spec file at"):
        bc.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("input = [")
    with pytest.raises(SpecError, match="invalid TOML"):
        bc.load(bad)
    worse = tmp_path / "worse.toml"
    worse.write_text(tomli_w.dumps({**BASE, "extra": 1}))
    with pytest.raises(SpecError, match=r"worse\.toml: top level: unknown key\(s\) \['extra'\]"):
        bc.load(worse)
