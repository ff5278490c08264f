"""DenseFA: conv feedback untied across space, ``delta_in = reshape(g.flatten(1) @ B)``.

The backward equals ``g @ B`` exactly and uses the B it holds (also a substituted one); with B the
unrolled convolution it is backprop; W's gradient is the local one; on Linear it is FA; B's state
survives state_dict, checkpoints, deepcopy and dtype moves; a later input of another size and a B
over the memory limit are clear errors; the memory report counts numel x element size.
"""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import biofa
import biofa.models as bm
import biofa.nn as bnn
from biofa.errors import ConfigError, FeedbackMemoryError, ShapeError
from biofa.feedback import DenseFA, FA
from biofa.init import init_bound

# (torch layer, input shape of one batch): 1-D and 2-D, with stride, padding, dilation, groups
CONVS = [
    (lambda: nn.Conv1d(2, 3, 5, stride=2, padding=1), (3, 2, 13)),
    (lambda: nn.Conv1d(4, 2, 3, padding=2, dilation=2, groups=2), (2, 4, 9)),
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (3, 2, 7, 6)),
    (lambda: nn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(0, 1)), (2, 3, 5, 6)),
    (lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (2, 2, 5, 5)),
]
IDS = ["1d-stride", "1d-dilation-groups", "2d-stride", "2d-rect", "2d-reflect"]


def dense(native, **kw):
    """The biofa copy of a torch conv (same W, b) under DenseFA, inside a Sequential."""
    return bnn.convert(nn.Sequential(native), feedback={"rule": "densefa", **kw})


def grads(model, x, g):
    x = x.clone().requires_grad_()
    model.zero_grad()
    model(x).backward(g)
    return x.grad, model[0].weight.grad, model[0].bias.grad


def padded_shape(layer, x_shape):
    if layer.padding_mode == "zeros":
        return x_shape
    return (*x_shape[:2], *(n + 2 * p for n, p in zip(x_shape[2:], layer._padding_ints)))


@pytest.mark.parametrize("make, shape", CONVS, ids=IDS)
def test_input_gradient_is_g_times_B(f64, make, shape):
    model = dense(make())
    x = torch.randn(shape, requires_grad=True)
    y = model(x)
    g = torch.randn_like(y)
    y.backward(g)
    B = model[0].feedback.matrix()
    layer = model[0]
    inner = padded_shape(layer, shape)  # the convolution's own input (after reflect padding)
    assert B.shape == (y[0].numel(), math.prod(inner[1:]))
    expected = (g.flatten(1) @ B).reshape(inner)
    if inner != shape:  # reflect padding: autograd folds the padded error back, as for any rule
        xp = x.detach().clone().requires_grad_()
        pads = [p for p in reversed(layer._padding_ints) for _ in range(2)]
        F.pad(xp, pads, mode="reflect").backward(expected)
        expected = xp.grad
    assert torch.equal(x.grad, expected)


def unrolled(layer, x_shape):
    """The Jacobian of the convolution of one sample: (C_out L_out, C_in L_in)."""
    w, b = layer.weight.detach(), layer.bias.detach()

    def conv(v):
        return layer._conv(v.reshape(1, *x_shape[1:]), w, b).flatten()

    return torch.autograd.functional.jacobian(conv, torch.zeros(math.prod(x_shape[1:])))


@pytest.mark.parametrize("make, shape", [c for c, i in zip(CONVS, IDS) if i != "2d-reflect"],
                         ids=[i for i in IDS if i != "2d-reflect"])
def test_B_the_unrolled_convolution_gives_backprop(f64, make, shape):
    native = make()
    model, bp = dense(native), bnn.convert(nn.Sequential(native), feedback="bp")
    x = torch.randn(shape)
    model(x)  # draws B
    with torch.no_grad():
        model[0].feedback.B.copy_(unrolled(model[0], shape))
    g = torch.randn_like(bp(x))
    got, want = grads(model, x, g)[0], grads(bp, x, g)[0]
    # the same sums in another order: float64 rounding of sums of |g||W| terms
    scale = float((g.abs().flatten(1) @ model[0].feedback.B.abs()).max())
    torch.testing.assert_close(got, want, rtol=0, atol=64 * scale * torch.finfo(torch.float64).eps)


@pytest.mark.parametrize("make, shape", CONVS, ids=IDS)
def test_weight_gradient_is_backprops_local_one(f64, make, shape):
    native = make()
    model, bp = dense(native), bnn.convert(nn.Sequential(native), feedback="bp")
    x = torch.randn(shape)
    g = torch.randn_like(bp(x))
    _, w_dense, b_dense = grads(model, x, g)
    _, w_bp, b_bp = grads(bp, x, g)
    assert torch.equal(w_dense, w_bp) and torch.equal(b_dense, b_bp)


def test_backward_uses_the_B_it_holds(f64):
    model = dense(nn.Conv2d(2, 3, 3, stride=2, padding=1))
    x = torch.randn(4, 2, 7, 7)
    g = torch.randn_like(model(x))
    before = grads(model, x, g)[0]
    delta = torch.randn_like(model[0].feedback.B)
    with torch.no_grad():
        model[0].feedback.B.add_(delta)
    after = grads(model, x, g)[0]
    assert torch.equal(after, (g.flatten(1) @ model[0].feedback.B).reshape(x.shape))
    torch.testing.assert_close(after - before, (g.flatten(1) @ delta).reshape(x.shape))
    # torch.func.functional_call with a substituted B: the backward uses that B
    other = torch.randn_like(model[0].feedback.B)
    xi = x.clone().requires_grad_()
    functional_call(model, {"0.feedback.B": other}, (xi,)).backward(g)
    assert torch.equal(xi.grad, (g.flatten(1) @ other).reshape(x.shape))


def test_linear_densefa_is_fa(f64):
    def make(rule):
        return bm.build("mlp", input_shape=(12,), n_outputs=4, hidden=[7], feedback=rule,
                        generator=torch.Generator().manual_seed(3))
    a, b = make("densefa"), make("fa")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x, g = torch.randn(5, 12, requires_grad=True), torch.randn(5, 4)
    a(x).backward(g)
    ga = x.grad.clone()
    x.grad = None
    b(x).backward(g)
    assert torch.equal(ga, x.grad)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))
    assert all(type(m.feedback) is DenseFA for m in a.modules() if isinstance(m, bnn.FeedbackLayer))
    assert all(type(m.feedback) is FA for m in b.modules() if isinstance(m, bnn.FeedbackLayer))


def _cnn(seed=0, **kw):
    return bm.build("cnn1d", input_shape=(40,), n_outputs=10, feedback="densefa",
                    generator=torch.Generator().manual_seed(seed), **kw)


def _dense_buffers(model):
    return {k: v for k, v in model.state_dict().items() if ".feedback." in k}


def test_B_is_a_function_of_seed_and_size_and_feedback_init_scale_multiplies_it(f64):
    x = torch.randn(3, 40)
    a, b, c = _cnn(), _cnn(), _cnn(feedback_init_scale=2.0)
    for m in (a, b, c):
        m(x)
    for k, v in _dense_buffers(a).items():
        assert torch.equal(v, _dense_buffers(b)[k]), k
        if k.endswith(".B"):
            assert torch.equal(_dense_buffers(c)[k], 2 * v), k  # x2 is exact
    other = _cnn(seed=1)
    other(x)
    assert not torch.equal(a.features[0].feedback.B, other.features[0].feedback.B)


def test_state_dict_and_checkpoint_round_trip_into_a_fresh_model(f64, tmp_path):
    x, g = torch.randn(3, 40), torch.randn(3, 10)
    trained = _cnn(seed=0)
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    F.cross_entropy(trained(x), torch.tensor([1, 2, 3])).backward()
    opt.step()
    fresh = _cnn(seed=7)  # not run: its convolutions have no B yet
    assert fresh.features[0].feedback.B is None
    fresh.load_state_dict(trained.state_dict())
    for k, v in trained.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k

    def input_grad(m):
        xi = x.clone().requires_grad_()
        m(xi).backward(g)
        return xi.grad

    assert torch.equal(input_grad(trained), input_grad(fresh))
    # a checkpoint, into another fresh model
    biofa.save_checkpoint(tmp_path / "c.pt", model=trained)
    other = _cnn(seed=9)
    biofa.load_checkpoint(tmp_path / "c.pt", model=other)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in trained.state_dict().items())
    # a model that had not drawn B loaded into one that had: B is drawn from the loaded seed
    unrun = _cnn(seed=4)
    state = unrun.state_dict()
    other.load_state_dict(state)
    assert other.features[0].feedback.B is None
    other(x), unrun(x)
    assert torch.equal(other.features[0].feedback.B, unrun.features[0].feedback.B)


def test_deepcopy_pickle_and_dtype_moves(f64):
    model = _cnn()
    x = torch.randn(2, 40)
    model(x)
    clone = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (clone, loaded):
        assert m.features[2].feedback._owner is m.features[2]
        assert torch.equal(m.features[2].feedback.B, model.features[2].feedback.B)
        assert m.features[2].feedback.B.data_ptr() != model.features[2].feedback.B.data_ptr()
        with pytest.raises(ShapeError, match="DenseFA fixes the input size"):
            m.features(torch.randn(2, 1, 41))
    model.to(torch.float32)
    b32 = model.features[2].feedback.B
    assert b32.dtype == torch.float32 and torch.equal(b32, clone.features[2].feedback.B.float())
    xi = x.float().requires_grad_()
    y = model(xi)
    assert y.dtype == torch.float32


def test_another_input_size_is_a_shape_error():
    model = dense(nn.Conv2d(2, 3, 3))
    model(torch.randn(1, 2, 8, 8))
    model(torch.randn(5, 2, 8, 8))  # another batch size is fine
    message = r"DenseFA fixes the input size: layer '0' .* \(8, 8\) and got one of size \(9, 8\)"
    with pytest.raises(ShapeError, match=message):
        model(torch.randn(1, 2, 9, 8))
    with pytest.raises(ShapeError, match="DenseFA fixes the input size"):
        model[0].feedback.materialize((9, 8))
    unrun = dense(nn.Conv2d(2, 3, 3))
    with pytest.raises(ConfigError, match="has not drawn its B yet"):
        unrun[0].feedback.matrix()
    unrun[0].feedback.materialize((8, 8))
    assert unrun[0].feedback.matrix().shape == (3 * 6 * 6, 2 * 8 * 8)


def test_B_has_the_norm_of_fas_kernel_unrolled(f64):
    """E||B||_F^2 = nnz(J) a^2 / 3 (a: the kernel's init bound), counted from the Jacobian itself.
    ||B||^2 / (n a_B^2 / 3) is a mean of n iid (U/a_B)^2 / (1/3), whose relative standard deviation
    is sqrt(Var(U^2)) / E(U^2) / sqrt(n) = sqrt(4/5) / sqrt(n); the test allows 6 of them."""
    native = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    shape = (1, 3, 15, 15)
    for seed in range(3):
        model = bnn.convert(nn.Sequential(native), feedback="densefa",
                            generator=torch.Generator().manual_seed(seed))
        model(torch.randn(shape))
        B = model[0].feedback.B
        nnz = int(torch.count_nonzero(unrolled(model[0], shape)))  # random W: no zero taps
        a = init_bound(model[0].weight.shape, "xavier")
        assert float(B.abs().max()) <= a * math.sqrt(nnz / B.numel())
        ratio = float(B.pow(2).sum()) / (nnz * a**2 / 3)
        assert abs(ratio - 1) < 6 * math.sqrt(0.8) / math.sqrt(B.numel())


def test_autocast_backward_is_g_times_B_in_the_autocast_dtype():
    model = dense(nn.Conv1d(2, 3, 3, stride=2))
    x = torch.randn(4, 2, 11, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    y.retain_grad()
    y.float().pow(2).sum().backward()
    B = model[0].feedback.B
    assert B.dtype == torch.float32 and model[0].weight.grad.dtype == torch.float32
    expected = (y.grad.flatten(1) @ B.to(torch.bfloat16)).reshape(x.shape).float()
    assert torch.equal(x.grad, expected)


# -- memory ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shape", [("lenet", (1, 28, 28)), ("cnn1d", (40,)), ("mlp", (12,))])
def test_memory_report_is_numel_times_element_size(name, shape):
    model = bm.build(name, input_shape=shape, n_outputs=10, feedback="densefa")
    report = bnn.densefa_memory(model, shape)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, bnn.FeedbackLayer)}
    assert [r.name for r in report.layers] == list(layers)
    assert all(m.feedback.B is None for m in layers.values() if not isinstance(m, bnn.Linear))  # nothing drawn
    model(torch.randn(2, *shape))  # now every B exists
    for r in report.layers:
        m = layers[r.name]
        assert r.weight_bytes == m.weight.numel() * m.weight.element_size()
        assert r.feedback_bytes == m.feedback.B.numel() * m.feedback.B.element_size()
    assert report.weight_bytes == sum(m.weight.numel() * m.weight.element_size() for m in layers.values())
    assert report.feedback_bytes == sum(m.feedback.B.numel() * m.feedback.B.element_size() for m in layers.values())
    # the plain torch model gives the same numbers; float64 doubles them
    plain = bm.build_plain(name, input_shape=shape, n_outputs=10)
    assert bnn.densefa_memory(plain, shape) == report
    wide = bnn.densefa_memory(plain, shape, dtype=torch.float64)
    assert (wide.weight_bytes, wide.feedback_bytes) == (2 * report.weight_bytes, 2 * report.feedback_bytes)
    assert "total" in report.table()


def test_too_large_B_is_an_error_before_anything_is_allocated():
    # 8 x 100000 -> 8 x 100000 positions: B would be 6.4e11 float32 entries, 2.56 TB: any attempt to
    # allocate it would fail with torch's own error, not this one
    model = bnn.convert(nn.Sequential(nn.Conv1d(8, 8, 3, padding=1)), feedback="densefa")
    report = bnn.densefa_memory(model, (8, 100_000))
    need = report.layers[0].feedback_bytes
    assert need == 800_000 * 800_000 * 4
    with pytest.raises(FeedbackMemoryError, match=rf"layer '0' .* needs .* = {need} bytes .*feedback='fa'"):
        model(torch.randn(1, 8, 100_000))
    assert model[0].feedback.B is None
    # the limit is max_bytes, overridable; exactly at the limit is allowed
    small = nn.Conv1d(1, 2, 3)
    need = 2 * 8 * 10 * 4
    with pytest.raises(FeedbackMemoryError):
        dense(small, max_bytes=need - 1)(torch.randn(1, 1, 10))
    dense(small, max_bytes=need)(torch.randn(1, 1, 10))
    with pytest.raises(ConfigError, match="max_bytes must be a positive int"):
        DenseFA(max_bytes=0)


def test_an_experiment_with_densefa_on_cnn1d_runs(tmp_path):
    from biofa.experiment import from_dict, load_model, run_study

    spec = from_dict({"data": {"name": "mnist1d", "n_train": 200, "n_test": 50, "validation": 0.2},
                      "model": {"name": "cnn1d"}, "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
                      "metrics": {"update_batch": 32}, "grid": {"feedback": ["densefa"], "seed": [0]}},
                     source="densefa.toml")
    outcome = run_study(spec, tmp_path, jobs=1, progress=False)
    assert outcome.n_ok == 1
    row = outcome.rows[0]
    assert math.isfinite(row["test_loss_final"])
    model = load_model(tmp_path, row["run_id"])  # a fresh model that has not run: B from the file
    assert model.features[0].feedback.B.shape == (25 * 19, 40)


@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_compiled_forward_and_backward_after_the_first_eager_forward(f64):
    """B is drawn eagerly (a seeded generator); once drawn, forward and backward trace as one graph
    and give the eager gradients bit for bit."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    native = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    model = bnn.convert(native, feedback="densefa", generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(4, 2, 4, 4), torch.tensor([0, 1, 2, 1])
    model(x)  # draws B
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    F.cross_entropy(compiled(x), y).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(got, model.parameters()))
    assert sum(counters["graph_break"].values()) == 0
    torch._dynamo.reset()
