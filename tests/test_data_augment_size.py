"""``size``: random s×s training crops (of the padded image) and the central s×s evaluation crop."""

import numpy as np
import pytest
import torch
from scipy import stats

import biofa.data as bd
from biofa.data import augment
from biofa.errors import ConfigError, ShapeError

ALPHA = 1e-6


def gen(seed):
    return torch.Generator().manual_seed(seed)


def reference(x, dy, dx, flips, p, s):
    """One example at a time: pad by p (zeros), slice s×s at (dy, dx), mirror if flipped."""
    n, c, h, w = x.shape
    out = np.empty((n, c, s, s), dtype=x.dtype)
    for k in range(n):
        padded = np.zeros((c, h + 2 * p, w + 2 * p), dtype=x.dtype)
        padded[:, p:p + h, p:p + w] = x[k]
        crop = padded[:, dy[k]:dy[k] + s, dx[k]:dx[k] + s]
        out[k] = crop[:, :, ::-1] if flips[k] else crop
    return out


@pytest.mark.parametrize("p, s, shape", [(0, 24, (12, 3, 32, 32)), (2, 5, (9, 2, 6, 7)), (0, 6, (4, 1, 6, 6))])
def test_size_crop_matches_the_reference_and_offsets_stay_inside(p, s, shape):
    x = torch.randn(shape, dtype=torch.float64)
    aug = bd.Augment(p, True, size=s)
    dy, dx, flips = aug.draw(shape[0], gen(1), shape[2:])
    assert int(dy.max()) <= shape[2] + 2 * p - s and int(dx.max()) <= shape[3] + 2 * p - s
    out = aug.apply(x, dy, dx, flips)
    assert out.shape == (shape[0], shape[1], s, s)
    np.testing.assert_array_equal(out.numpy(), reference(x.numpy(), dy.numpy(), dx.numpy(), flips.numpy(), p, s))
    assert torch.equal(aug(x, generator=gen(1)), out)  # forward = draw then apply


def test_size_offsets_are_uniform():
    """32×32 → 24×24 without padding: (dy, dx) uniform on {0..8}², chi-square at level ALPHA."""
    n, k = 20000, 9
    dy, dx, _ = bd.Augment(0, False, size=24).draw(n, gen(0), (32, 32))
    counts = torch.bincount(dy * k + dx, minlength=k * k).double()
    expected = n / k**2
    assert int((counts > 0).sum()) == k * k
    assert float(((counts - expected) ** 2 / expected).sum()) <= stats.chi2.ppf(1 - ALPHA, k * k - 1)


@pytest.mark.parametrize("h, w, s, top, left", [(32, 32, 24, 4, 4), (7, 6, 4, 1, 1), (5, 5, 5, 0, 0)])
def test_eval_transform_is_the_central_crop(h, w, s, top, left):
    x = torch.randn(3, 2, h, w)
    out = bd.Augment(size=s).eval_transform(x)
    assert torch.equal(out, x[:, :, top:top + s, left:left + s])  # TF's offset ⌊(H - s)/2⌋


def test_size_spec_forms_and_errors():
    assert augment.parse_spec({"size": 24, "flip": True}) == {"crop": 0, "flip": True, "size": 24}
    assert augment.parse_spec(["size:24", "flip"]) == {"crop": 0, "flip": True, "size": 24}
    aug = bd.Augment.from_spec({"size": 24})
    assert not aug.identity and "size=24" in repr(aug) and aug.output_shape((3, 32, 32)) == (3, 24, 24)
    for bad in ({"size": 0}, {"size": True}, {"size": 2.5}):
        with pytest.raises(ConfigError, match="size must be the side of the crop"):
            augment.parse_spec(bad)
    with pytest.raises(ShapeError, match="does not fit"):
        bd.Augment(size=40)(torch.zeros(2, 3, 32, 32), generator=gen(0))
