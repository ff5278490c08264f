"""DFA with activation checkpointing and with outputs that do not have a row per hidden input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import biofa.nn as bnn
from biofa.errors import ConfigError, ShapeError


class Net(nn.Module):
    def __init__(self, use_reentrant=None):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh())
        self.out = nn.Linear(6, 3)
        self.use_reentrant = use_reentrant

    def forward(self, x):
        if self.use_reentrant is None:
            h = self.body(x)
        else:
            h = checkpoint(self.body, x, use_reentrant=self.use_reentrant)
        return self.out(h)


def grads(model, x, e):
    model.zero_grad(set_to_none=True)
    model(x).backward(e)
    return [p.grad.clone() for p in model.parameters()]


def test_non_reentrant_checkpoint_is_exact(f64):
    model = bnn.convert(Net(), feedback="dfa")
    x = torch.randn(4, 5, requires_grad=True)
    e = torch.randn(4, 3)
    ref = grads(model, x, e)
    model.use_reentrant = False
    for a, b in zip(grads(model, x, e), ref):
        assert torch.equal(a, b)
    assert not model.out.feedback.hub._pending  # the recomputation left nothing registered


def test_reentrant_checkpoint_raises_naming_the_fix(f64):
    model = bnn.convert(Net(use_reentrant=True), feedback="dfa")
    x = torch.randn(4, 5, requires_grad=True)
    with pytest.raises(ConfigError, match=r"use_reentrant=True.*use_reentrant=False"):
        model(x).backward(torch.randn(4, 3))
    assert not model.out.feedback.hub._pending


class PerToken(nn.Module):
    """A hidden layer applied to every token, mean-pooled, then the output layer."""

    def __init__(self, pool_first: bool):
        super().__init__()
        self.hidden = nn.Linear(6, 8)
        self.out = nn.Linear(8, 3)
        self.pool_first = pool_first

    def forward(self, x):  # x: (batch, tokens, 6)
        h = torch.tanh(self.hidden(x))
        if self.pool_first:
            return self.out(h.mean(1))
        return self.out(h).mean(1)


def test_pooled_output_gives_a_shape_error_that_explains(f64):
    model = bnn.convert(PerToken(pool_first=True), feedback="dfa")
    x = torch.randn(4, 5, 6, requires_grad=True)
    with pytest.raises(ShapeError, match=r"\(4, 5, 6\).*rows.*per token.*Pool after the output layer"):
        model(x)
    assert not model.out.feedback.hub._pending
    with torch.no_grad():  # inference does not project anything
        assert model(x).shape == (4, 3)
    # pooling after the output layer gives every token its own error e_t @ B
    ok = bnn.convert(PerToken(pool_first=False), feedback="dfa")
    out = ok(x)
    e = torch.randn(4, 3)
    out.backward(e)
    assert x.grad is not None and ok.hidden.weight.grad is not None
