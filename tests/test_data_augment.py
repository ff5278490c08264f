"""biofa.data.augment: batched crop + flip against a per-example reference, its laws, its spec."""

import numpy as np
import pytest
import torch
from scipy import stats

import biofa.data as bd
from biofa.data import augment
from biofa.data.splits import RawData, make_splits
from biofa.errors import ConfigError, ShapeError

ALPHA = 1e-6  # per-check false-alarm probability of the statistical tests below


def reference(x: np.ndarray, dy, dx, flips, p: int, fill) -> np.ndarray:
    """Pad each example with ``fill`` (per channel), slice out H×W at (dy, dx), mirror if flipped:
    one example at a time, with plain indexing."""
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for k in range(n):
        padded = np.empty((c, h + 2 * p, w + 2 * p), dtype=x.dtype)
        padded[:] = np.asarray(fill, dtype=x.dtype).reshape(c, 1, 1)
        padded[:, p:p + h, p:p + w] = x[k]
        crop = padded[:, dy[k]:dy[k] + h, dx[k]:dx[k] + w]
        out[k] = crop[:, :, ::-1] if flips[k] else crop
    return out


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("crop, flip, shape", [(4, True, (16, 3, 8, 8)), (2, False, (9, 2, 5, 7)),
                                               (0, True, (7, 1, 4, 6)), (3, True, (5, 3, 3, 9))])
def test_matches_the_per_example_reference_exactly(dtype, crop, flip, shape):
    aug = bd.Augment(crop, flip)
    for seed in range(3):
        x = torch.randn(shape, generator=gen(100 + seed), dtype=dtype)
        dy, dx, flips = aug.draw(shape[0], gen(seed))
        out = aug(x, generator=gen(seed))
        assert out.dtype == dtype and out.shape == x.shape
        expected = reference(x.numpy(), dy.numpy(), dx.numpy(), flips.numpy(), crop, np.zeros(shape[1]))
        assert torch.equal(out, torch.from_numpy(expected))
        assert torch.equal(aug.apply(x, dy, dx, flips), out)


def test_padding_is_black_in_normalised_units_and_normalize_option():
    mean, std = torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64), torch.tensor([0.2, 0.5, 0.4], dtype=torch.float64)
    x = torch.rand(6, 3, 5, 5, generator=gen(0), dtype=torch.float64)
    aug = bd.Augment(2, True, mean=mean.view(3, 1, 1), std=std)  # data already normalised with mean, std
    dy, dx, flips = aug.draw(6, gen(1))
    expected = reference(x.numpy(), dy.numpy(), dx.numpy(), flips.numpy(), 2, (-mean / std).numpy())
    assert torch.equal(aug(x, generator=gen(1)), torch.from_numpy(expected))
    # normalize=True: pixel-unit input, zero padding, then (x - mean) / std; eval batches likewise
    norm = bd.Augment(2, True, mean=mean, std=std, normalize=True)
    raw = torch.from_numpy(reference(x.numpy(), dy.numpy(), dx.numpy(), flips.numpy(), 2, np.zeros(3)))
    shaped = lambda v: v.view(1, 3, 1, 1)  # noqa: E731
    assert torch.equal(norm(x, generator=gen(1)), (raw - shaped(mean)) / shaped(std))
    assert torch.equal(norm.eval_transform(x), (x - shaped(mean)) / shaped(std))
    assert torch.equal(aug.eval_transform(x), x) and torch.equal(bd.Augment()(x), x)


def test_identity_and_determinism():
    x = torch.randn(32, 3, 8, 8, generator=gen(0))
    assert bd.Augment(0, False)(x, generator=gen(0)) is x
    aug = bd.Augment(4, True)
    a, b = aug(x, generator=gen(7)), aug(x, generator=gen(7))
    assert torch.equal(a, b)  # same seed, same augmentation
    assert not torch.equal(a, aug(x, generator=gen(8)))
    g = gen(7)
    first, second = aug(x, generator=g), aug(x, generator=g)  # one run: a fresh draw per batch
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_flip_probability_is_one_half():
    """Flips read off the outputs of a left-right ramp; the count is Binomial(n, 1/2) and lies in
    its central 1 - ALPHA interval (exact binomial quantiles) for every seed."""
    n, w = 20000, 6
    x = torch.arange(w, dtype=torch.float32).expand(n, 1, 2, w)
    lo, hi = stats.binom.interval(1 - ALPHA, n, 0.5)
    for seed in range(4):
        out = bd.Augment(0, True)(x, generator=gen(seed))
        flipped = out[:, 0, 0, 0] == w - 1
        assert torch.equal(out[flipped], x[flipped].flip(3)) and torch.equal(out[~flipped], x[~flipped])
        assert lo <= int(flipped.sum()) <= hi


@pytest.mark.parametrize("p", [1, 4])
def test_crop_offsets_are_uniform(p):
    """Offsets (dy, dx) recovered from the outputs of images whose pixels encode their position;
    the (2p+1)² joint counts pass a chi-square test of uniformity at level ALPHA, every cell occurs."""
    n, h, w = 20000, 6, 7
    pos = (torch.arange(h)[:, None] * 100 + torch.arange(w) + 1).double()  # > 0; padding is 0
    x = pos.expand(n, 1, h, w)
    k = 2 * p + 1
    bound = stats.chi2.ppf(1 - ALPHA, k * k - 1)
    for seed in range(3):
        out = bd.Augment(p, False)(x, generator=gen(seed))[:, 0]
        # any pixel inside the image tells the offset: value - 1 = (dy + a - p) * 100 + (dx + b - p)
        flat = out.reshape(n, -1)
        at = (flat > 0).double().argmax(1)  # first pixel that is not padding
        a, b = at // w, at % w
        v = flat[torch.arange(n), at].long() - 1
        dy, dx = v // 100 - a + p, v % 100 - b + p
        assert int(dy.min()) >= 0 and int(dy.max()) <= 2 * p and int(dx.min()) >= 0 and int(dx.max()) <= 2 * p
        counts = torch.bincount(dy * k + dx, minlength=k * k).double()
        assert int((counts > 0).sum()) == k * k
        expected = n / (k * k)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 <= bound, (chi2, bound)
        # the recovered offsets are the ones the generator drew
        dy_drawn, dx_drawn, _ = bd.Augment(p, False).draw(n, gen(seed))
        assert torch.equal(dy, dy_drawn) and torch.equal(dx, dx_drawn)


def test_rejects_bad_batches():
    aug = bd.Augment(2, True)
    for bad in (torch.zeros(3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.int64), np.zeros((2, 3, 8, 8))):
        with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
            aug(bad, generator=gen(0))
    with pytest.raises(ShapeError, match="3 channel statistics for a batch of 1 channels"):
        bd.Augment(2, mean=[0.1, 0.2, 0.3], std=[1, 1, 1])(torch.zeros(2, 1, 4, 4), generator=gen(0))


# -- the spec -------------------------------------------------------------------------------------
def test_spec_forms_are_equivalent():
    table = augment.parse_spec({"crop": 4, "flip": True})
    assert table == augment.parse_spec(["crop:4", "flip"]) == augment.parse_spec(["flip", " crop:4"])
    assert table == {"crop": 4, "flip": True}
    assert augment.parse_spec({"flip": True}) == {"crop": 0, "flip": True}
    for nothing in (False, None, [], {}, {"crop": 0, "flip": False}):
        assert augment.parse_spec(nothing) == {"crop": 0, "flip": False}
        assert augment.build(nothing) is None
    aug = bd.Augment.from_spec(["crop:2"])
    assert (aug.crop, aug.flip) == (2, False) and "crop=2, flip=False" in repr(aug)


@pytest.mark.parametrize("spec, match", [
    ({"crop": -1}, "crop must be the padding in pixels"),
    ({"crop": 1.5}, "crop must be"),
    ({"crop": True}, "crop must be"),
    ({"flip": "yes"}, "flip must be true or false"),
    ({"rotate": 10}, r"unknown key\(s\) \['rotate'\].*crop \(the padding"),
    (["crop"], "'crop' is malformed; write 'crop:<pixels>'"),
    (["crop:x"], "malformed"),
    (["flip:1"], "malformed"),
    (["blur"], "unknown augmentation 'blur'"),
    ([3], "list items are words"),
    (["flip", "flip"], "'flip' is given more than once"),
    ("crop:4", "must be a table such as"),
    (42, "must be a table such as"),
    (True, "must be a table such as"),
])
def test_bad_specs_are_rejected(spec, match):
    with pytest.raises(ConfigError, match=match):
        augment.parse_spec(spec)


def test_constructor_checks():
    with pytest.raises(ConfigError, match="crop"):
        bd.Augment(-2)
    with pytest.raises(ConfigError, match="flip"):
        bd.Augment(1, 1)
    with pytest.raises(ConfigError, match="together"):
        bd.Augment(1, mean=[0.5])
    with pytest.raises(ConfigError, match="std must be positive"):
        bd.Augment(1, mean=[0.5], std=[0.0])
    with pytest.raises(ConfigError, match="normalize=True needs"):
        bd.Augment(1, normalize=True)


def test_build_from_splits():
    rng = np.random.default_rng(0)
    x = rng.random((20, 3, 4, 4))
    raw = RawData(x, np.arange(20) % 2, x[:5], np.arange(5) % 2, "classification", 2, image=True)
    splits = make_splits(raw, "toy", validation=0)
    aug = augment.build({"crop": 1}, splits)
    black = (0 - splits.mean.double().reshape(-1)) / splits.std.double().reshape(-1)
    zero = torch.zeros(1, dtype=torch.int64)
    out = aug.apply(torch.zeros(1, 3, 4, 4), zero, zero, zero.bool())  # offset (0, 0): row 0 is padding
    torch.testing.assert_close(out[0, :, 0, :].double(), black[:, None].expand(3, 4), rtol=0, atol=1e-6)
    assert torch.equal(out[0, :, 1:, 1:], torch.zeros(3, 3, 3))
    assert augment.build(["flip"], make_splits(raw, "toy", validation=0, normalize=False)).mean is None
    flat = RawData(x.reshape(20, -1), raw.y_train, x[:5].reshape(5, -1), raw.y_test, "classification", 2)
    with pytest.raises(ConfigError, match=r"needs image data \(C, H, W\); dataset 'flat' has samples of shape \(48,\)"):
        augment.build(["flip"], make_splits(flat, "flat", validation=0))
