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
    hub = ok.out.feedback.hub
    seen = {}

    def keep_input(mod, inp, out):
        inp[0].retain_grad()
        seen["h"] = inp[0]

    handle = ok.out.register_forward_hook(keep_input)
    out = ok(x)
    handle.remove()
    e = torch.randn(4, 3)
    out.backward(e)
    # the output layer's error per token: mean(1)'s backward gives e_t = e / 5 to each of the 5 tokens
    e_t = (e / 5)[:, None, :].expand(4, 5, 3)
    # every token's own row e_t @ [B_hidden | B_out] (one matmul over the 4 * 5 rows), exactly
    projected = (e_t.reshape(20, 3) @ hub.matrix_all).reshape(4, 5, 6 + 8)
    o, w = ok.out.feedback.slot  # the read-out's input h gets e_t @ B, not W_out^T e_t
    assert torch.equal(seen["h"].grad, projected[..., o:o + w])
    o, w = ok.hidden.feedback.slot  # and so does the network input x (the hidden layer's input)
    assert torch.equal(x.grad, projected[..., o:o + w])
    # the hidden weight gradient is the local one, summed over batch and tokens: (f'(a) * e_t B)^T x
    a = ok.hidden(x)
    delta = seen["h"].grad * (1 - torch.tanh(a) ** 2)
    torch.testing.assert_close(ok.hidden.weight.grad, delta.reshape(-1, 8).T @ x.detach().reshape(-1, 6),
                               rtol=1e-13, atol=1e-15)
    # tokens with different errors (the read-out applied per token, no pooling): each its own e_t @ B
    x2 = x.detach().clone().requires_grad_(True)
    e_tokens = torch.randn(4, 5, 3)
    ok.out(torch.tanh(ok.hidden(x2))).backward(e_tokens)
    own = (e_tokens.reshape(20, 3) @ hub.matrix_all).reshape(4, 5, 6 + 8)
    assert torch.equal(x2.grad, own[..., o:o + w])
