"""Direct feedback alignment (Nøkland 2016) against its mathematics and its pitfalls
(docs/background.rst)."""

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import biofa.nn as bnn
from biofa.errors import ConfigError, ShapeError


class OpLog(TorchDispatchMode):
    """Records every aten op with its tensor arguments (shape, storage pointer) and the op's args."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((func, args))
        return func(*args, **(kwargs or {}))

    def tensors(self, op_args):
        flat = []
        for a in op_args:
            if isinstance(a, torch.Tensor):
                flat.append(a)
            elif isinstance(a, (list, tuple)):
                flat.extend(t for t in a if isinstance(t, torch.Tensor))
        return flat


def dfa_mlp():
    native = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))
    return bnn.convert(native, feedback="dfa")


def hidden_errors(model, x, e, layers):
    """dL/d(input of each layer in ``layers``) for L = <model(x), e>."""
    store = {}

    def hook(mod, inp, out):
        inp[0].retain_grad()
        store[mod] = inp[0]

    handles = [layer.register_forward_hook(hook) for layer in layers]
    model(x).backward(e)
    for h in handles:
        h.remove()
    return [store[layer].grad for layer in layers]


def test_hidden_error_is_e_at_B_and_ignores_downstream_W(f64):
    model = dfa_mlp()
    hub = model[4].feedback.hub
    assert hub.matrix_all.shape == (3, 5 + 7 + 6)
    x, e = torch.randn(8, 5), torch.randn(8, 3)
    h2, h4 = hidden_errors(model, x, e, [model[2], model[4]])
    projected = e @ hub.matrix_all
    for layer, h in ((model[2], h2), (model[4], h4)):
        offset, width = layer.feedback.slot
        assert torch.equal(h, projected[:, offset:offset + width])  # the one matmul, sliced
        torch.testing.assert_close(h, e @ layer.feedback.matrix(), rtol=1e-14, atol=1e-15)
    # change every downstream W: the hidden errors do not move
    with torch.no_grad():
        model[2].weight.mul_(-3.0).add_(1.0)
        model[4].weight.mul_(5.0)
    h2b, h4b = hidden_errors(model, x, e, [model[2], model[4]])
    assert torch.equal(h2, h2b) and torch.equal(h4, h4b)
    # and the weight gradient of a hidden layer is the local one: (f'(a) ∘ e B) h^T
    model.zero_grad()
    model(x).backward(e)
    a = model[0](x)
    delta = h2 * (1 - torch.tanh(a) ** 2)
    torch.testing.assert_close(model[0].weight.grad, delta.T @ x, rtol=1e-14, atol=1e-15)


def test_one_matmul_and_no_backward_through_W(f64):
    model = dfa_mlp()
    weights = [model[i].weight for i in (0, 2, 4)]
    hub = model[4].feedback.hub
    x = torch.randn(8, 5)
    loss = nn.functional.cross_entropy(model(x), torch.randint(0, 3, (8,)))
    with OpLog() as log:
        loss.backward()
    w_ptrs = {w.untyped_storage().data_ptr() for w in weights}
    b_ptr = hub.matrix_all.untyped_storage().data_ptr()
    uses_b = 0
    for func, args in log.ops:
        ptrs = {t.untyped_storage().data_ptr() for t in log.tensors(args)}
        assert not ptrs & w_ptrs, f"{func} read a forward weight during the DFA backward"
        uses_b += b_ptr in ptrs
    assert uses_b == 1
    mms = [args for func, args in log.ops if func.__name__.startswith(("mm", "addmm", "matmul"))]
    assert len(mms) == 1 + 3  # e @ [B_1|B_2|B_3] and three local weight gradients


def test_conv_dfa_skips_input_convolution(f64):
    native = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
                           nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    model = bnn.convert(native, feedback="dfa")
    hub = model[5].feedback.hub
    assert hub.matrix_all.shape == (3, 2 + 4 + 16)  # channel structure for convs, dense for Linear
    x, e = torch.randn(2, 2, 6, 6), torch.randn(2, 3)
    with OpLog() as log:
        (h2,) = hidden_errors(model, x, e, [model[2]])
    masks = [args[-1] for func, args in log.ops if "convolution_backward" in func.__name__]
    assert masks and all(mask[0] is False for mask in masks)  # no input gradient through any W
    offset, width = model[2].feedback.slot
    assert torch.equal(h2, (e @ hub.matrix_all)[:, offset:offset + width, None, None].expand_as(h2))


def test_eval_mode_and_changing_batch_size(f64):
    model = dfa_mlp()
    hub = model[4].feedback.hub
    b0 = hub.matrix_all.clone()
    model.eval()
    for batch in (3, 11, 1):
        x, e = torch.randn(batch, 5), torch.randn(batch, 3)
        (h4,) = hidden_errors(model, x, e, [model[4]])
        o, w = model[4].feedback.slot
        assert torch.equal(h4, (e @ hub.matrix_all)[:, o:o + w])
        assert not hub._pending  # nothing registered outlives the forward
    for _ in range(100):  # forwards with grad on and no backward: bounded bookkeeping
        model(torch.randn(2, 5, requires_grad=True))
    assert not hub._pending
    with torch.no_grad():
        model(torch.randn(4, 5))
    model.train()
    x, e = torch.randn(4, 5), torch.randn(4, 3)
    h2, h4 = hidden_errors(model, x, e, [model[2], model[4]])  # back in training mode: still e @ B
    projected = e @ b0  # the B drawn at construction: no forward changed it
    for layer, h in ((model[2], h2), (model[4], h4)):
        o, w = layer.feedback.slot
        assert torch.equal(h, projected[:, o:o + w])
    assert not hub._pending


def test_state_dict_deepcopy_and_dtype_keep_feedback(f64):
    model = dfa_mlp()
    x, e = torch.randn(4, 5), torch.randn(4, 3)
    ref = hidden_errors(model, x, e, [model[2], model[4]])
    other = dfa_mlp()
    assert not torch.equal(other[4].feedback.hub.matrix_all, model[4].feedback.hub.matrix_all)
    other.load_state_dict(model.state_dict())
    clone = copy.deepcopy(model)
    assert clone[0].feedback._hub is clone[4].feedback.hub is not model[4].feedback.hub
    for m in (other, clone):
        got = hidden_errors(m, x, e, [m[2], m[4]])
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
    with torch.no_grad():
        clone[4].feedback.hub.matrix_all.zero_()
    assert model[4].feedback.hub.matrix_all.abs().sum() > 0
    half = copy.deepcopy(model).to(torch.float32)
    assert half[2].feedback.matrix().dtype == torch.float32
    got = hidden_errors(half, x.float(), e.float(), [half[2]])[0]
    torch.testing.assert_close(got, ref[0].float())


def test_dfa_resnet_trains_and_uses_channel_feedback(f64):
    native = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    model = bnn.convert(native, feedback="dfa")
    assert model[8].feedback.hub.matrix_all.shape == (5, 3 + 4 + 8)
    hub = model[8].feedback.hub
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    w0 = model[0].weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        # every hidden input hears its channel slice of e @ B, the same at every pixel, at every step
        store = {}

        def hook(mod, inp, out, store=store):
            inp[0].retain_grad()
            store[mod] = inp[0]

        handles = [model[i].register_forward_hook(hook) for i in (3, 8)]
        out = model(x)
        for h in handles:
            h.remove()
        out.retain_grad()
        nn.functional.cross_entropy(out, y).backward()
        projected = out.grad @ hub.matrix_all
        for i in (3, 8):
            o, w = model[i].feedback.slot
            got = store[model[i]].grad
            if got.dim() == 4:  # a convolution's input: one feedback weight per channel, over space
                assert torch.equal(got, projected[:, o:o + w, None, None].expand_as(got))
            else:
                assert torch.equal(got, projected[:, o:o + w])
        opt.step()
    assert not torch.equal(model[0].weight.detach(), w0)


def test_exact_gradients_bypasses_dfa(f64):
    model = dfa_mlp()
    ref = bnn.convert(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)),
                      feedback="bp")
    ref.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(3, 5, requires_grad=True)
    with bnn.exact_gradients():
        model(x).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ref(x2).sum().backward()
    assert torch.equal(x.grad, x2.grad)


def test_unconnected_and_bad_wiring_errors():
    layer = bnn.Linear(3, 2, feedback="dfa")
    with pytest.raises(ConfigError, match="not connected.*connect_dfa"):
        layer(torch.randn(1, 3))
    with torch.no_grad():  # inference needs no wiring
        layer(torch.randn(1, 3))
    with pytest.raises(ConfigError, match="no layer with feedback='dfa'"):
        bnn.connect_dfa(nn.Sequential(bnn.Linear(3, 2)))
    conv_last = nn.Sequential(bnn.Linear(4, 4, feedback="dfa"), nn.Unflatten(1, (1, 4)),
                              bnn.Conv1d(1, 2, 1, feedback="dfa"))
    with pytest.raises(ConfigError, match="must be a Linear"):
        bnn.connect_dfa(conv_last)
    with pytest.raises(ConfigError, match="structure 'channel' is for convolutions"):
        bnn.convert(nn.Sequential(nn.Linear(3, 2)), feedback={"rule": "dfa", "structure": "channel"})
    with pytest.raises(ConfigError, match="The 'structure' parameter of DFA must be one of"):
        bnn.Linear(3, 2, feedback={"rule": "dfa", "structure": "sparse"})


def test_second_backward_through_a_retained_graph(f64):
    model = dfa_mlp()
    x, e = torch.randn(4, 5), torch.randn(4, 3)
    out = model(x)
    out.backward(e, retain_graph=True)
    once = model[0].weight.grad.clone()
    out.backward(e)
    torch.testing.assert_close(model[0].weight.grad, 2 * once, rtol=1e-15, atol=0)
    hidden_only = model[:3](x)  # a loss that does not go through the output layer
    with pytest.raises(ShapeError, match="DFA needs the loss to depend on the network output"):
        hidden_only.sum().backward()
