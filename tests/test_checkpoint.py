"""Saving and resuming: ``torch.save(model)`` for every constraint mode, and checkpoints that
continue a run bit for bit (every rule, SGD with momentum and Adam, a StepLR schedule, Dale)."""

import io
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofa
import biofa.constraints as bc
import biofa.nn as bnn
from biofa import feedback as fb
from biofa.errors import BiofaError, CheckpointError, ConfigError

RULE_NAMES = ["bp", "fa", "densefa", "usf", "frsf", "brsf", "dfa", "kp", "wm"]


def net(rule, sign, seed, norm=None):
    torch.manual_seed(seed)
    native = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
                           nn.Linear(3 * 3 * 3, 6), nn.Tanh(), nn.Linear(6, 3))
    return bnn.convert(native, feedback=rule, sign=sign, norm=norm)


def sign_for(rule):
    # uSF under Dale's law is degenerate (and warns); it gets fixed per-synapse signs instead
    return "fixed" if rule == "usf" else "dale"


SAVE_CASES = [("brsf", e) for e in ("project", "abs", "relu")] + [(r, "softplus") for r in RULE_NAMES]


@pytest.mark.parametrize("rule, enforce", SAVE_CASES)
def test_torch_save_whole_model_every_constraint_mode(f64, rule, enforce):
    sign = {"rule": "fixed" if rule == "usf" else "dale", "enforce": enforce}
    model = net(rule, sign, seed=1, norm="const")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 2, 5, 5), torch.randint(0, 3, (4,))
    model.eval()
    buf = io.BytesIO()
    torch.save({"model": model, "optimizer": opt}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    copy_, opt2 = loaded["model"], loaded["optimizer"]
    # the optimizer pickled alongside still holds the loaded model's own parameters
    assert [id(p) for p in copy_.parameters()] == [id(p) for g in opt2.param_groups for p in g["params"]]
    for a, b in zip(model.modules(), copy_.modules()):
        assert type(a).__name__ == type(b).__name__
    outputs, grads = [], []
    for m in (model, copy_):
        m.zero_grad()
        xi = x.clone().requires_grad_()
        out = m(xi)
        F.cross_entropy(out, y).backward()
        outputs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert torch.equal(*outputs)
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # the loaded model is constrained by the optimizer hook like the original
    opt2.param_groups[0]["lr"] = 50.0
    opt2.step()
    assert all(v == 0 for v in bc.dale_violations(copy_).values())
    layers = [m for m in copy_.modules() if isinstance(m, bnn.FeedbackLayer)]
    for m in layers:
        torch.testing.assert_close(m.weight.norm(), m.norm.target, rtol=1e-13, atol=0)


def _batches(n):
    """Draws from numpy's and Python's global generators, which the checkpoint must restore."""
    rng = np.random
    for _ in range(n):
        x = torch.from_numpy(rng.standard_normal((6, 2, 5, 5)))
        y = torch.tensor([random.randrange(3) for _ in range(6)])
        yield x, y


def _train(model, opt, sched, steps):
    model.train()  # dropout draws from torch's generator
    for x, y in _batches(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


def _optimizer(kind, model):
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-3)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def _seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("optim", ["sgd", "adam"])
@pytest.mark.parametrize("rule", RULE_NAMES)
def test_resumed_run_is_bit_identical(f64, tmp_path, rule, optim):
    n, k = 6, 3
    # the uninterrupted run
    fb.reset_step(0)
    full = net(rule, sign_for(rule), seed=5)
    opt, sched = _optimizer(optim, full)
    _seed_all(7)
    _train(full, opt, sched, n)
    # k steps, save, then a fresh reconstruction: other weights, other step, other RNG states
    fb.reset_step(0)
    part = net(rule, sign_for(rule), seed=5)
    opt, sched = _optimizer(optim, part)
    _seed_all(7)
    _train(part, opt, sched, k)
    path = tmp_path / "run.ckpt"
    biofa.save_checkpoint(path, model=part, optimizer=opt, scheduler=sched, extra={"epoch": k})
    fb.reset_step(1234)
    _seed_all(99)
    fresh = net(rule, sign_for(rule), seed=11)
    opt, sched = _optimizer(optim, fresh)
    assert biofa.load_checkpoint(path, model=fresh, optimizer=opt, scheduler=sched) == {"epoch": k}
    assert fb.training_step() == k
    _train(fresh, opt, sched, n - k)
    assert fb.training_step() == n
    a, b = full.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    assert all(v == 0 for v in bc.dale_violations(fresh).values())


def test_module_generators_are_saved_and_restored(tmp_path):
    model = nn.Sequential(bnn.Linear(3, 2))
    model[0].noise = torch.Generator().manual_seed(3)
    torch.rand(5, generator=model[0].noise)
    expected = torch.rand(4, generator=torch.Generator().set_state(model[0].noise.get_state()))
    biofa.save_checkpoint(tmp_path / "g.ckpt", model=model)
    other = nn.Sequential(bnn.Linear(3, 2))
    other[0].noise = torch.Generator().manual_seed(8)
    assert biofa.load_checkpoint(tmp_path / "g.ckpt", model=other) is None
    assert torch.equal(torch.rand(4, generator=other[0].noise), expected)
    with pytest.raises(ConfigError, match=r"generators \['0.noise'\] that this model lacks"):
        biofa.load_checkpoint(tmp_path / "g.ckpt", model=nn.Sequential(bnn.Linear(3, 2)))


def test_checkpoint_file_errors(tmp_path):
    model = nn.Sequential(bnn.Linear(3, 2, sign="dale"))
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        biofa.load_checkpoint(tmp_path / "missing.ckpt", model=model)
    assert isinstance(info.value, BiofaError) and isinstance(info.value, FileNotFoundError)
    path = tmp_path / "run.ckpt"
    biofa.save_checkpoint(path, model=model)
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        biofa.load_checkpoint(tmp_path / "cut.ckpt", model=model)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a biofa checkpoint"):
        biofa.load_checkpoint(tmp_path / "other.pt", model=model)
    with pytest.raises(ConfigError, match="does not fit this model"):
        biofa.load_checkpoint(path, model=nn.Sequential(bnn.Linear(3, 4)))
    with pytest.raises(ConfigError, match="holds no optimizer state"):
        biofa.load_checkpoint(path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1))
    with pytest.raises(ConfigError, match=r"extra\['loader'\] is a object"):
        biofa.save_checkpoint(path, model=model, extra={"loader": object()})
    with pytest.raises(CheckpointError, match="does not exist"):
        biofa.save_checkpoint(tmp_path / "no" / "dir.ckpt", model=model)


def test_save_is_atomic(tmp_path, monkeypatch):
    model = nn.Sequential(bnn.Linear(3, 2))
    path = tmp_path / "run.ckpt"
    biofa.save_checkpoint(path, model=model, extra={"epoch": 1})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        biofa.save_checkpoint(path, model=model, extra={"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old checkpoint survives a failed save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary left behind
    assert biofa.load_checkpoint(path, model=model) == {"epoch": 1}
