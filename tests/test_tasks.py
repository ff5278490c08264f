"""biofa.tasks: trials laid out in time (pycog's epochs, catch trials, padding), scoring, stopping
rules, the registry and its errors."""

import math

import pytest
import torch

import biofa.tasks as bt
from biofa.cli import list_text
from biofa.errors import ConfigError, ShapeError
from biofa.tasks.base import condition_grid

CHOICE = ["perceptual_decision", "context_decision", "multisensory", "working_memory"]
ALL = CHOICE + ["periodic", "sequence"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tasks():
    return {name: bt.load(name) for name in ALL}


def test_registry_lists_every_task_and_the_cli_shows_them():
    assert set(ALL) <= set(bt.available())
    text = list_text("tasks")
    for name in ALL:
        assert name in text
    assert "Random-dots" in text and "Multisensory integration" in text


@pytest.mark.parametrize("name", ALL)
def test_deterministic_from_the_generator_and_shaped(tasks, name):
    task = tasks[name]
    a, b, c = task.trials(40, generator=gen(1)), task.trials(40, generator=gen(1)), task.trials(40, generator=gen(2))
    for field in ("inputs", "targets", "mask", "lengths"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    if name != "periodic":  # Murray's trials all start at phase 0: nothing to draw
        assert not (torch.equal(a.inputs, c.inputs) and torch.equal(a.targets, c.targets))
    T = int(a.lengths.max())
    assert a.inputs.shape == (T, 40, task.n_inputs) and a.inputs.dtype == torch.float32
    assert a.targets.shape == a.mask.shape == (T, 40, task.n_outputs)
    assert a.lengths.dtype == torch.int64 and len(a) == 40
    assert a.conditions["catch"].dtype == torch.bool
    for v in a.conditions.values():
        assert v.shape == (40,)
    d = task.trials(8, generator=gen(1), dtype=torch.float64)
    assert d.inputs.dtype == d.targets.dtype == d.mask.dtype == torch.float64
    moved = a.to(dtype=torch.float64)
    assert moved.targets.dtype == torch.float64 and moved.lengths.dtype == torch.int64


@pytest.mark.parametrize("name", ALL)
def test_settings_round_trip(tasks, name):
    task = tasks[name]
    again = type(task)(**task.settings())
    assert again.settings() == task.settings()
    assert torch.equal(again.trials(8, generator=gen(3)).targets, task.trials(8, generator=gen(3)).targets)
    assert bt.load(name, **task.settings()).settings() == task.settings()


@pytest.mark.parametrize("name", CHOICE)
def test_padding_is_masked_with_zero_input(tasks, name):
    tr = tasks[name].trials(200, generator=gen(4))
    assert len(set(tr.lengths.tolist())) > 1            # catch trials (and Romo's delays) differ
    pad = torch.arange(tr.inputs.shape[0]).unsqueeze(1) >= tr.lengths
    assert pad.any()
    assert (tr.inputs[pad] == 0).all() and (tr.mask[pad] == 0).all() and (tr.targets[pad] == 0).all()
    assert set(tr.mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", CHOICE)
def test_catch_fraction_within_a_binomial_bound(tasks, name):
    task = tasks[name]
    n = 20000
    p = task.catch_weight / (len(task.conditions()) + 1)
    assert task.p_catch == pytest.approx(p)
    catch = task.trials(n, generator=gen(5), dt=0.1).conditions["catch"]
    # the count is Binomial(n, p): 5 standard deviations leave a false failure ~6e-7
    assert abs(int(catch.sum()) - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_catch_probabilities_are_pycogs(tasks):
    assert tasks["perceptual_decision"].p_catch == pytest.approx(1 / 11)
    assert tasks["context_decision"].p_catch == pytest.approx(1 / 73)
    assert tasks["multisensory"].p_catch == pytest.approx(5 / 25)
    assert tasks["working_memory"].p_catch == pytest.approx(1 / 11)


@pytest.mark.parametrize("name", CHOICE + ["sequence"])
def test_balanced_has_every_condition_per_condition_times(tasks, name):
    task = tasks[name]
    tr = task.balanced(3, generator=gen(6))
    conds = task.conditions()
    assert len(tr) == 3 * (len(conds) + (name != "sequence"))
    catch = tr.conditions["catch"]
    assert int(catch.sum()) == (0 if name == "sequence" else 3)
    for cond in conds:
        here = ~catch
        for k, v in cond.items():
            here &= tr.conditions[k] == v
        assert int(here.sum()) == 3, cond
    if name != "sequence":
        assert (tr.conditions["choice"][catch] == -1).all()


def test_conditions_enumerate_like_pycog():
    grid = condition_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert grid[:3] == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 1, "b": "y"}]
    assert len(bt.load("context_decision").conditions()) == 72
    assert len(bt.load("multisensory").conditions()) == 24
    wm = bt.load("working_memory").conditions()
    assert {(c["f1"], c["f2"]) for c in wm} >= {(18, 10), (10, 18), (34, 26), (26, 34)}
    assert all(c["choice"] == (0 if c["f1"] > c["f2"] else 1) for c in wm)


def test_perceptual_epochs_follow_pycog_and_the_time_convention():
    task = bt.load("perceptual_decision")
    tr = task.balanced(1, dt=0.02)
    b = int(torch.nonzero(~tr.conditions["catch"])[0])
    x, y, m = tr.inputs[:, b], tr.targets[:, b], tr.mask[:, b, 0]
    assert int(tr.lengths[b]) == 60                          # 100 + 800 + 300 ms at 20 ms
    # fixation: steps 0..4 (t = (n + 1) dt in (0, 0.1]); stimulus 5..44; decision 45..59
    assert (x[:5] == 0).all() and (x[5:45] > 0).all() and (x[45:] == 0).all()
    assert (m[:5] == 1).all() and (m[5:45] == 0).all() and (m[45:60] == 1).all() and (m[60:] == 0).all()
    assert (y[:5] == 0.2).all() and (y[5:45] == 0).all()
    c = int(tr.conditions["choice"][b])
    assert (y[45:60, c] == 1).all() and (y[45:60, 1 - c] == 0.2).all()
    coh, s = float(tr.conditions["coh"][b]), float(tr.conditions["in_out"][b])
    assert x[10, 0].item() == pytest.approx((1 + 3.2 * s * coh / 100) / 2)
    catch = int(torch.nonzero(tr.conditions["catch"])[0])
    assert int(tr.lengths[catch]) == 100 and (tr.targets[:100, catch] == 0.2).all()
    assert (tr.mask[:100, catch] == 1).all() and (tr.inputs[:, catch] == 0).all()


def test_test_fixation_and_working_memory_delay():
    long = bt.load("perceptual_decision", fixation=0.3).balanced(1)
    assert int(long.lengths[1]) == 70
    wm = bt.load("working_memory")
    tr = wm.trials(500, generator=gen(7), dt=0.02)
    steps = tr.lengths[~tr.conditions["catch"]]
    fixed = round((0.1 + 0.5 + 0.5 + 0.3) / 0.02)
    assert (steps >= fixed + 125).all() and (steps < fixed + 175).all() and len(steps.unique()) > 20
    three = bt.load("working_memory", delay=3.0).balanced(1)
    assert int(three.lengths[1]) == fixed + 150
    # f1 during steps 5..29, f2 after the delay
    x = three.inputs[:, 1]
    assert (x[5:30] > 0).all() and (x[30:180] == 0).all() and (x[180:205] > 0).all()


@pytest.mark.parametrize("name", CHOICE)
def test_score_perfect_and_swapped_outputs(tasks, name):
    task = tasks[name]
    tr = task.trials(300, generator=gen(8))
    s = task.score(tr.targets, tr)
    assert s["correct"] == 1.0 and s["loss"] == 0.0
    assert s["n_scored"] == int((~tr.conditions["catch"]).sum())
    swapped = task.score(tr.targets.flip(-1), tr)
    assert swapped["correct"] == 0.0 and swapped["loss"] > 0
    assert sum(c["n"] for c in s["per_condition"]) == s["n_scored"]
    assert all(c["correct"] == 1.0 for c in s["per_condition"] if c["n"])
    if name == "working_memory":
        assert s["min_condition"] == 1.0 and swapped["min_condition"] == 0.0


def test_catch_trials_are_not_scored(tasks):
    task = tasks["perceptual_decision"]
    tr = task.balanced(4)
    out = tr.targets.clone()
    catch = tr.conditions["catch"]
    out[:, catch, 1] = 5.0                                  # any answer on catch trials
    s = task.score(out, tr)
    assert s["correct"] == 1.0 and s["n_scored"] == 40


@pytest.mark.parametrize("name", CHOICE)
def test_decision_uses_each_trials_last_step(tasks, name):
    task = tasks[name]
    tr = task.trials(200, generator=gen(9))
    assert len(tr.lengths.unique()) > 1
    choice = tr.conditions["choice"].clamp(min=0)
    wrong = torch.nn.functional.one_hot(1 - choice, 2).float()
    out = wrong.expand_as(tr.targets).clone()
    last = tr.lengths - 1
    out[last, torch.arange(len(tr))] = torch.nn.functional.one_hot(choice, 2).float()
    assert task.score(out, tr)["correct"] == 1.0
    out[last, torch.arange(len(tr))] = wrong
    assert task.score(out, tr)["correct"] == 0.0


@pytest.mark.parametrize("name", ["perceptual_decision", "context_decision", "multisensory"])
def test_psychometric_of_perfect_outputs(tasks, name):
    task = tasks[name]
    tr = task.balanced(2)
    psy = task.score(tr.targets, tr)["psychometric"]
    assert set(psy) >= {"levels", "fraction", "n", "fit"}
    assert all(f in (0.0, 1.0) for f in psy["fraction"])
    assert psy["fit"]["kind"] == "cumulative_gaussian" and psy["fit"]["ok"]
    if name == "multisensory":
        assert 12 < psy["fit"]["mu"] < 13 and set(psy["by_modality"]) == {"v", "a", "va"}
    else:
        assert abs(psy["fit"]["mu"]) < 1


def test_criterion_rules():
    pd, cd, ms, wm = (bt.load(n) for n in CHOICE)

    def hist(*values):
        return [{"correct": v} for v in values]
    assert not pd.criterion([])
    assert pd.criterion(hist(0.9))                          # mean of what there is (numpy's [-5:])
    assert pd.criterion(hist(0.0, 0.9, 0.9, 0.9, 0.9, 0.7))  # last five: mean 0.86 > 0.85
    assert not pd.criterion(hist(0.85, 0.85, 0.85, 0.85, 0.85))  # strictly greater
    assert not cd.criterion(hist(0.9, 0.9, 0.9, 0.9, 0.9)) and cd.criterion(hist(0.95, 0.9, 0.9, 0.9, 0.9))
    assert ms.criterion(hist(0.91)) and not ms.criterion(hist(0.89))
    assert wm.criterion([{"min_condition": 0.5}, {"min_condition": 0.85}])   # latest, >=
    assert not wm.criterion([{"min_condition": 0.95}, {"min_condition": 0.8}])
    per = bt.load("periodic")
    assert per.criterion([{"normalized_loss": 0.01}]) and not per.criterion([{"normalized_loss": 0.5}])


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'perceptual_decision'"):
        bt.load("perceptual_decisoin")


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match="perid"):
        bt.load("periodic", perid=3)


@pytest.mark.parametrize("dt", [0.0, -0.01, 0.5, "fast"])
def test_bad_dt_is_named(tasks, dt):
    with pytest.raises(ConfigError, match="dt"):
        tasks["perceptual_decision"].trials(4, dt=dt)
    with pytest.raises(ConfigError, match="dt"):
        bt.load("working_memory", dt=dt).balanced(1)


@pytest.mark.parametrize("name", ALL)
def test_outputs_of_the_wrong_shape(tasks, name):
    task = tasks[name]
    tr = task.trials(4, generator=gen(10))
    expected = str(tuple(tr.targets.shape))
    with pytest.raises(ShapeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        task.score(tr.targets[:-1], tr)


def test_periodic_target(tasks):
    task = tasks["periodic"]
    tr = task.balanced(4)
    assert tr.inputs.shape == (200, 4, 1) and (tr.inputs == 0).all() and (tr.mask == 1).all()
    n = torch.arange(200, dtype=torch.float64)
    murray = torch.sin(2 * math.pi * n / 200) + 0.5 * torch.sin(4 * math.pi * n / 200) + \
        0.25 * torch.sin(8 * math.pi * n / 200)
    assert torch.allclose(tr.targets[:, :, 0].double(), murray[:, None].expand(200, 4), atol=1e-6)
    assert tr.conditions["phase"].tolist() == [0, 0, 0, 0]     # every trial from the start, as Murray
    shifted = bt.load("periodic", random_phase=True, duration=400).balanced(4)
    assert shifted.conditions["phase"].tolist() == [0, 50, 100, 150]
    y = shifted.targets[:, 0, 0].double()
    assert torch.allclose(y[:200], y[200:], atol=1e-6)
    assert torch.allclose(shifted.targets[50:, 0], shifted.targets[:-50, 1], atol=1e-6)
    coarse = task.balanced(1, dt=0.02)                       # the period stays 2 s: 100 steps
    assert coarse.targets.shape[0] == 100
    assert torch.allclose(coarse.targets[:, 0, 0], tr.targets[::2, 0, 0], atol=1e-6)
    s = task.score(tr.targets, tr)
    assert s["correct"] is None and s["loss"] == 0 and s["normalized_loss"] == 0


def test_sequence_reads_rows_and_scores_the_last_step(tasks):
    task = tasks["sequence"]
    assert (task.n_inputs, task.n_outputs, task.n_steps) == (8, 10, 8)
    tr = task.trials(32, generator=gen(11))
    assert tr.inputs.shape == (8, 32, 8) and (tr.mask[:-1] == 0).all() and (tr.mask[-1] == 1).all()
    assert torch.equal(tr.targets[-1].argmax(-1), tr.conditions["label"])
    assert task.score(tr.targets, tr)["correct"] == 1.0
    out = tr.targets.clone()
    out[-1] = out[-1].roll(1, -1)
    assert task.score(out, tr)["correct"] == 0.0
    chunks = bt.load("sequence", mode="steps", chunk=4)
    assert chunks.trials(2).inputs.shape == (16, 2, 4)
    with pytest.raises(ConfigError, match="chunk"):
        bt.load("sequence", mode="steps", chunk=5)


def test_sequence_validation_and_test_trials_come_from_their_own_splits(tasks):
    task = tasks["sequence"]
    val, test = task.balanced(2), task.balanced(2, split="test")
    assert val.conditions["label"].tolist() == test.conditions["label"].tolist()
    assert not torch.equal(val.inputs, test.inputs)     # other digits: the test split is held out
    with pytest.raises(ConfigError, match="split must be 'val' or 'test'"):
        task.balanced(2, split="train")
