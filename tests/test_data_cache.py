"""MNIST-1D's disk cache: the cached arrays are the generated ones bit for bit, the file is written
atomically, an unreadable file is generated again, and an unwritable folder is no error."""

import numpy as np
import pytest

from biofa.data import mnist1d


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("BIOFA_CACHE", str(tmp_path / "cache"))
    mnist1d._generate.cache_clear()
    yield tmp_path / "cache"
    mnist1d._generate.cache_clear()


def _same(a, b):
    return all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_the_cache_holds_the_generated_arrays_bit_for_bit(fresh):
    generated = mnist1d._make(3)
    first = mnist1d._generate(3)  # generates and writes the cache
    path = mnist1d.cache_path(3)
    assert path.parent == fresh and path.is_file() and not list(fresh.glob(".tmp-*"))
    mnist1d._generate.cache_clear()
    cached = mnist1d._generate(3)  # read back from the file
    assert _same(generated, first) and _same(generated, cached)
    assert not any(a.flags.writeable for a in cached)


def test_an_unreadable_cache_file_is_generated_again(fresh):
    path = mnist1d.cache_path(3)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz file")
    assert _same(mnist1d._generate(3), mnist1d._make(3))
    with np.load(path) as stored:  # and rewritten whole
        assert stored["x"].shape == (4000, 40)


def test_an_unwritable_cache_folder_is_no_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("BIOFA_CACHE", str(blocker / "biofa"))
    mnist1d._generate.cache_clear()
    try:
        assert _same(mnist1d._generate(3), mnist1d._make(3))
    finally:
        mnist1d._generate.cache_clear()
