"""biofa.data: readers of the official file formats, splits, normalisation, loaders, registry."""

import gzip
import pickle
import random
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import biofa.data as bd
from biofa.data.splits import RawData, make_splits
from biofa.errors import ConfigError, DataFileError

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written independently of biofa's reader: magic, big-endian dims, data."""
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, IDX_CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path, array, gz=False):
    data = idx_bytes(array)
    if gz:
        data = gzip.compress(data)
        path = path.with_name(path.name + ".gz")
    path.write_bytes(data)
    return path


def write_mnist(folder, n_train=30, n_test=12, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))
    for name, array in zip(MNIST_FILES, arrays):
        write_idx(folder / name, array, gz)
    return arrays


def write_cifar(folder, n=4, seed=0, protocol=2):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)], b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[name] = batch
    return batches


# -- IDX ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype) if dtype != "u1" else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3", array, gz)
    out = bd.read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype.kind == np.dtype(dtype).kind
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("bad, match", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "magic"),            # first bytes not 0
    (b"\x00\x00\x07\x01\x00\x00\x00\x02ab", "type code"),        # unknown type code
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "truncated or corrupt"),
    (b"", "magic"),
])
def test_read_idx_rejects_corrupt_files(tmp_path, bad, match):
    (tmp_path / "f").write_bytes(bad)
    with pytest.raises(DataFileError, match=match):
        bd.read_idx(tmp_path / "f")


def test_read_idx_rejects_broken_gzip(tmp_path):
    (tmp_path / "f.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8)))[:-6])
    with pytest.raises(DataFileError, match="corrupt"):
        bd.read_idx(tmp_path / "f.gz")


@pytest.mark.parametrize("name, gz", [("mnist", False), ("fashion_mnist", True)])
def test_mnist_from_idx_files(tmp_path, name, gz):
    x_tr, y_tr, x_te, y_te = write_mnist(tmp_path, gz=gz)
    s = bd.load(name, root=tmp_path, validation=0.2, normalize=False, seed=3)
    assert (s.task, s.n_classes, s.n_outputs, s.input_shape, s.name) == ("classification", 10, 10, (1, 28, 28), name)
    assert s.sizes() == {"train": 24, "val": 6, "test": 12}
    # test split untouched and in file order; pixels scaled to [0, 1]
    np.testing.assert_allclose(s.test.tensors[0].numpy(), x_te[:, None] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(s.test.tensors[1].numpy(), y_te)
    assert s.train.tensors[0].dtype == torch.float32 and s.train.tensors[1].dtype == torch.int64
    # train and val partition the training file exactly
    both = np.concatenate([s.train.tensors[0].numpy(), s.val.tensors[0].numpy()]) * 255
    got = sorted(map(bytes, np.rint(both).astype(np.uint8).reshape(30, -1)))
    assert got == sorted(map(bytes, x_tr.reshape(30, -1)))


def test_mnist_torchvision_layout_and_env(tmp_path, monkeypatch):
    write_mnist(tmp_path / "MNIST" / "raw")
    assert bd.load("mnist", root=tmp_path).sizes()["test"] == 12
    monkeypatch.setenv(bd.ENV_VAR, str(tmp_path))
    assert bd.load("mnist").sizes()["test"] == 12


def test_missing_mnist_files_name_everything(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).unlink()
    with pytest.raises(DataFileError) as err:
        bd.load("mnist", root=tmp_path)
    msg = str(err.value)
    assert all(f in msg for f in MNIST_FILES) and str(tmp_path) in msg
    assert "yann.lecun.com/exdb/mnist" in msg and "root=" in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DataFileError, match="zalandoresearch/fashion-mnist"):
        bd.load("fashion_mnist", root=tmp_path / "nowhere")


def test_mnist_inconsistent_files(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.zeros(29, np.uint8))  # one label short
    with pytest.raises(DataFileError, match="one label per image"):
        bd.load("mnist", root=tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.full(30, 10, np.uint8))
    with pytest.raises(DataFileError, match="0..9"):
        bd.load("mnist", root=tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.zeros(30, np.uint8))
    write_idx(tmp_path / MNIST_FILES[0], np.zeros((30, 784), np.uint8))
    with pytest.raises(DataFileError, match="rows, cols"):
        bd.load("mnist", root=tmp_path)


# -- CIFAR-10 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4])
def test_read_cifar10_batch_layout(tmp_path, protocol):
    batch = write_cifar(tmp_path, protocol=protocol)["data_batch_1"]
    x, y = bd.read_cifar10_batch(tmp_path / "data_batch_1")
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, batch[b"labels"])
    # channel-major rows: red plane first, then green, then blue; each plane row by row
    row = batch[b"data"][2]
    assert x[2, 0, 0, 1] == row[1] and x[2, 1, 0, 0] == row[1024] and x[2, 2, 31, 31] == row[3071]
    assert x[2, 0, 1, 0] == row[32]


@pytest.mark.parametrize("inside", [False, True])
def test_cifar10_load(tmp_path, inside):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", n=6)
    root = tmp_path / "cifar-10-batches-py" if inside else tmp_path
    s = bd.load("cifar10", root=root, validation=6, seed=1)
    assert s.sizes() == {"train": 24, "val": 6, "test": 6} and s.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(s.test.tensors[1].numpy(), batches["test_batch"][b"labels"])
    # per-channel statistics of the normalised training part
    x = s.train.tensors[0].double()
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    assert s.mean.shape == (3, 1, 1) and s.std.shape == (3, 1, 1)


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(DataFileError, match=r"data_batch_1.*test_batch.*cs\.toronto\.edu/~kriz/cifar\.html"):
        bd.load("cifar10", root=tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataFileError, match="data_batch_3"):
        bd.load("cifar10", root=tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataFileError, match="3072"):
        bd.load("cifar10", root=tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"labels": [0]}))
    with pytest.raises(DataFileError, match="b'data'"):
        bd.load("cifar10", root=tmp_path)


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_unpickler_refuses_code(tmp_path):
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(DataFileError, match="builtins.print"):
        bd.read_cifar10_batch(tmp_path / "evil")


# -- generated datasets ---------------------------------------------------------------------------
def test_mnist1d_default_split_and_normalisation():
    py_state, np_state = random.getstate(), np.random.get_state()
    s = bd.load("mnist1d")
    assert random.getstate() == py_state  # the generator's set_seed is undone
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], np_state[1:2]))
    assert s.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert (s.input_shape, s.n_classes, s.task) == ((40,), 10, "classification")
    x = s.train.tensors[0].double()
    torch.testing.assert_close(x.mean(0), torch.zeros(40, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(40, dtype=torch.float64), atol=1e-5, rtol=0)
    # statistics from the training part only: applying them to the raw data reproduces val and test
    raw = bd.DATASETS["mnist1d"].source()
    torch.testing.assert_close(s.test.tensors[0], ((torch.tensor(raw.x_test) - s.mean.double()) / s.std.double()).float())
    other = bd.load("mnist1d", seed=1)
    assert torch.equal(other.test.tensors[1], s.test.tensors[1])  # the test set does not depend on seed
    assert not torch.equal(other.val.tensors[1], s.val.tensors[1])
    assert torch.equal(bd.load("mnist1d", seed=1, normalize=False).test.tensors[0], torch.tensor(raw.x_test).float())
    again = bd.load("mnist1d")
    assert torch.equal(again.train.tensors[0], s.train.tensors[0])


def test_digits_stratified():
    s = bd.load("digits", validation=0.0, normalize=False)
    assert s.sizes() == {"train": 1437, "val": 0, "test": 360} and s.input_shape == (64,)
    counts = np.bincount(s.test.tensors[1].numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 1797 digits, ~180 per class, 20 % each
    assert float(s.train.tensors[0].max()) == 1.0
    img = bd.load("digits", image=True)
    assert img.input_shape == (1, 8, 8) and img.mean.shape == (1, 1, 1)
    assert bd.load("digits", split_seed=1).test.tensors[1].tolist() != s.test.tensors[1].tolist()


def test_linear_teacher_is_exactly_linear():
    s = bd.load("linear_teacher", n_train=50, n_test=20, validation=0.2, normalize=False, data_seed=4)
    assert s.task == "regression" and s.n_classes is None and s.n_outputs == 10 and s.input_shape == (30,)
    assert s.sizes() == {"train": 40, "val": 10, "test": 20}
    t = torch.from_numpy(bd.teacher_matrix(30, 10, data_seed=4))
    assert t.abs().max() <= 1.0
    for part in (s.train, s.val, s.test):
        x, y = part.tensors
        torch.testing.assert_close(y.double(), x.double() @ t.T, atol=1e-5, rtol=1e-5)
    small = bd.load("linear_teacher", in_dim=5, out_dim=2, n_train=10, n_test=5)
    assert small.input_shape == (5,) and small.n_outputs == 2 and small.train.tensors[1].shape[1] == 2


def _relu_teacher_by_hand(n_train, n_test, in_dim, hidden, out_dim, data_seed):
    """The documented draw order (biofa/data/teacher.py): W1 ~ N(0, 1/in), b1 ~ N(0, 0.1²),
    W2 ~ N(0, 1/hidden), then the training inputs, then the test inputs, all from
    numpy.random.default_rng(data_seed); y = W2 relu(W1 x + b1). Returns the rng (where the noise
    comes next), the inputs and the clean targets, in float64."""
    rng = np.random.default_rng(data_seed)
    w1 = rng.standard_normal((hidden, in_dim)) / np.sqrt(in_dim)
    b1 = 0.1 * rng.standard_normal(hidden)
    w2 = rng.standard_normal((out_dim, hidden)) / np.sqrt(hidden)
    x_tr, x_te = rng.standard_normal((n_train, in_dim)), rng.standard_normal((n_test, in_dim))

    def teacher(x):
        return np.maximum(x @ w1.T + b1, 0.0) @ w2.T

    return rng, x_tr, teacher(x_tr), x_te, teacher(x_te)


def test_relu_teacher():
    from scipy.stats import chi2

    from biofa.data.teacher import relu_teacher
    s = bd.load("relu_teacher", n_train=100, n_test=30, hidden=7, out_dim=3, noise=0.0)
    assert s.task == "regression" and s.n_outputs == 3 and s.sizes() == {"train": 90, "val": 10, "test": 30}
    assert torch.isfinite(s.train.tensors[1]).all() and s.train.tensors[1].dtype == torch.float32
    assert not torch.equal(bd.load("relu_teacher", data_seed=1).test.tensors[1], bd.load("relu_teacher").test.tensors[1])
    with pytest.raises(ConfigError, match="hidden"):
        bd.load("relu_teacher", hidden=0)
    # the teacher rebuilt from its seed gives the targets exactly (float64), and through load
    # (float32, the test split does not depend on the split seed) the same values rounded once
    _, x_tr, y_tr, x_te, y_te = _relu_teacher_by_hand(100, 30, 30, 7, 3, data_seed=0)
    raw = relu_teacher(n_train=100, n_test=30, hidden=7, out_dim=3, data_seed=0)
    for got, want in ((raw.x_train, x_tr), (raw.y_train, y_tr), (raw.x_test, x_te), (raw.y_test, y_te)):
        assert np.array_equal(got, want)
    plain = bd.load("relu_teacher", n_train=100, n_test=30, hidden=7, out_dim=3, normalize=False)
    assert torch.equal(plain.test.tensors[0], torch.from_numpy(x_te).float())
    assert torch.equal(plain.test.tensors[1], torch.from_numpy(y_te).float())
    # noise: y + sigma z, z ~ N(0, 1) i.i.d., on training and test targets alike. The residual r is
    # known exactly (same draws before the noise), its mean is 0, so sum(r²)/sigma² ~ chi²_n and the
    # sample std sqrt(sum(r²)/n) lies in sigma * sqrt(chi²_n quantiles / n) but for a 1e-9 tail.
    sigma, n_tr, n_te, out = 0.3, 700, 500, 4
    rng, _, y_tr, _, y_te = _relu_teacher_by_hand(n_tr, n_te, 30, 20, out, data_seed=5)
    noisy = relu_teacher(n_train=n_tr, n_test=n_te, out_dim=out, noise=sigma, data_seed=5)
    for residual in (noisy.y_train - y_tr, noisy.y_test - y_te):
        n = residual.size
        lo, hi = (sigma * np.sqrt(chi2.ppf(q, n) / n) for q in (0.5e-9, 1 - 0.5e-9))
        assert lo < np.sqrt(np.mean(residual ** 2)) < hi, (lo, np.sqrt(np.mean(residual ** 2)), hi)
        assert abs(residual.mean()) < 6 * sigma / np.sqrt(n)  # zero mean: 6 standard errors
    # and they are the documented draws: the noise of the training targets, then of the test ones
    np.testing.assert_array_equal(noisy.y_train, y_tr + sigma * rng.standard_normal(y_tr.shape))
    np.testing.assert_array_equal(noisy.y_test, y_te + sigma * rng.standard_normal(y_te.shape))
    through_load = bd.load("relu_teacher", n_train=n_tr, n_test=n_te, out_dim=out, noise=sigma, data_seed=5,
                           normalize=False)
    assert torch.equal(through_load.test.tensors[1], torch.from_numpy(noisy.y_test).float())


# -- splits, options, registry --------------------------------------------------------------------
@given(n=st.integers(2, 60), frac=st.floats(0.0, 0.95), seed=st.integers(0, 10), sub=st.integers(1, 60))
def test_split_partitions_the_training_set(n, frac, seed, sub):
    sub = min(sub, n)
    x = np.arange(n, dtype=np.float64)[:, None]
    raw = RawData(x, np.arange(n) % 3, np.zeros((5, 1)), np.zeros(5, int), "classification", 3)
    n_val = int(round(frac * sub))
    if n_val >= sub:
        with pytest.raises(ConfigError, match="no training examples"):
            make_splits(raw, "toy", validation=frac, normalize=False, seed=seed, n_train=sub)
        return
    s = make_splits(raw, "toy", validation=frac, normalize=False, seed=seed, n_train=sub)
    tr, va = s.train.tensors[0][:, 0].tolist(), s.val.tensors[0][:, 0].tolist()
    assert len(va) == n_val and len(tr) == sub - n_val and not set(tr) & set(va)
    assert set(tr) | set(va) <= set(range(n)) and len(s.test) == 5


def test_constant_feature_is_only_centred():
    x = np.stack([np.arange(10.0), np.full(10, 3.0)], 1)
    s = make_splits(RawData(x, np.zeros(10, int), x, np.zeros(10, int), "classification", 2), "toy", validation=0)
    assert torch.equal(s.train.tensors[0][:, 1], torch.zeros(10))
    assert float(s.std[1]) == 1.0


def test_validation_and_subset_options():
    s = bd.load("mnist1d", validation=100, n_train=1000, n_test=200, seed=2)
    assert s.sizes() == {"train": 900, "val": 100, "test": 200}
    assert bd.load("mnist1d", validation=0).sizes()["val"] == 0
    for bad in (1.0, -0.1, "0.1", True, 4000):
        with pytest.raises(ConfigError, match="validation"):
            bd.load("mnist1d", validation=bad)
    with pytest.raises(ConfigError, match="n_train=5000 exceeds"):
        bd.load("mnist1d", n_train=5000)
    with pytest.raises(ConfigError, match="n_test"):
        bd.load("mnist1d", n_test=0)


def test_registry_and_errors():
    assert bd.available() == sorted(["mnist1d", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100",
                                     "imagefolder", "imagenet", "linear_teacher", "relu_teacher"])
    assert set(bd.DATASETS) == set(bd.available())
    assert bd.DATASETS["linear_teacher"].options()["in_dim"] == 30
    with pytest.raises(ConfigError, match="The 'name' parameter of load must be one of"):
        bd.load("imagenet21k")
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) \['hidden'\] for dataset 'mnist1d'"):
        bd.load("mnist1d", hidden=3)


def test_loaders_seeded_shuffle_and_order():
    s = bd.load("linear_teacher", n_train=100, n_test=30, validation=0.3)
    train, val, test = bd.loaders(s, batch_size=16, seed=5)
    epoch = lambda loader: torch.cat([x for x, _ in loader])  # noqa: E731
    first, second = epoch(train), epoch(train)
    assert len(train) == 5 and first.shape == (70, 30)
    assert sorted(first[:, 0].tolist()) == sorted(s.train.tensors[0][:, 0].tolist())  # each example once
    assert not torch.equal(first, second)  # reshuffled every epoch
    assert torch.equal(first, epoch(bd.loaders(s, batch_size=16, seed=5)[0]))  # same seed, same batches
    assert not torch.equal(first, epoch(bd.loaders(s, batch_size=16, seed=6)[0]))
    assert torch.equal(epoch(val), s.val.tensors[0]) and torch.equal(epoch(test), s.test.tensors[0])
    x, y = next(iter(test))
    assert x.shape == (16, 30) and y.shape == (16, 10)
    assert len(bd.loaders(s, 16, eval_batch_size=100)[2]) == 1
    assert len(bd.loaders(s, 16, drop_last=True)[0]) == 4
    with pytest.raises(ConfigError, match="batch_size"):
        bd.loaders(s, batch_size=0)
