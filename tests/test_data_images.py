"""biofa.data image datasets: CIFAR-100 python batches and ImageNet-layout folders, from tiny files
the tests write in the real formats."""

import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

import biofa.data as bd
from biofa.data import transforms
from biofa.errors import ConfigError, DataFileError


# -- CIFAR-100 ------------------------------------------------------------------------------------
def write_cifar100(folder, n_train=8, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                 b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                 b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


@pytest.mark.parametrize("labels, key, n_classes", [("fine", b"fine_labels", 100), ("coarse", b"coarse_labels", 20)])
def test_cifar100_load(tmp_path, labels, key, n_classes):
    batches = write_cifar100(tmp_path / "cifar-100-python")
    s = bd.load("cifar100", root=tmp_path, validation=2, normalize=False, seed=0, labels=labels)
    assert (s.n_classes, s.n_outputs, s.input_shape) == (n_classes, n_classes, (3, 32, 32))
    assert s.sizes() == {"train": 6, "val": 2, "test": 5}
    np.testing.assert_array_equal(s.test.tensors[1].numpy(), batches["test"][key])
    pixels = batches["test"][b"data"].reshape(5, 3, 32, 32) / 255.0
    np.testing.assert_allclose(s.test.tensors[0].numpy(), pixels, rtol=1e-6)
    x, y = bd.read_cifar100_batch(tmp_path / "cifar-100-python" / "train", labels)
    assert x.shape == (8, 3, 32, 32) and x[3, 2, 31, 31] == batches["train"][b"data"][3, 3071]
    np.testing.assert_array_equal(y, batches["train"][key])
    inside = bd.load("cifar100", root=tmp_path / "cifar-100-python", labels=labels)  # the folder itself
    assert inside.sizes()["test"] == 5 and inside.mean.shape == (3, 1, 1)


def test_cifar100_missing_and_corrupt(tmp_path):
    with pytest.raises(DataFileError, match=r"CIFAR-100 needs the files train, test.*cifar-100-python\.tar\.gz"):
        bd.load("cifar100", root=tmp_path)
    folder = tmp_path / "cifar-100-python"
    write_cifar100(folder)
    with pytest.raises(ConfigError, match="'labels' parameter of cifar100 must be one of"):
        bd.load("cifar100", root=tmp_path, labels="medium")
    batch = pickle.loads((folder / "train").read_bytes())
    batch[b"coarse_labels"][0] = 20
    (folder / "train").write_bytes(pickle.dumps(batch))
    assert bd.load("cifar100", root=tmp_path).n_classes == 100  # the fine labels are fine
    with pytest.raises(DataFileError, match=r"b'coarse_labels' must lie in 0..19"):
        bd.load("cifar100", root=tmp_path, labels="coarse")
    del batch[b"fine_labels"]
    (folder / "train").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataFileError, match="a CIFAR-100 batch is a dict with b'data' and b'fine_labels'"):
        bd.load("cifar100", root=tmp_path)
    (folder / "test").write_bytes(b"garbage")
    with pytest.raises(DataFileError, match="test is not a readable CIFAR-100 python batch"):
        bd.read_cifar100_batch(folder / "test")


# -- image folders --------------------------------------------------------------------------------
CLASSES = {"n02_cat": 5, "n01_dog": 4, "n10_emu": 3}  # written in this (unsorted) order


def write_folder(root, classes=CLASSES, n_val=2, size=(48, 40), seed=0):
    """root/train/<class>/*.JPEG and root/val/<class>/*.JPEG of random colours (W×H = size)."""
    rng = np.random.default_rng(seed)
    for part, counts in (("train", classes), ("val", {c: n_val for c in classes})):
        for name, n in counts.items():
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"{name}_{i}.JPEG", quality=95)
    return root


def test_folder_classes_labels_and_splits(tmp_path):
    write_folder(tmp_path)
    s = bd.load("imagefolder", root=tmp_path, image_size=32, validation=3, seed=0)
    assert s.classes == ("n01_dog", "n02_cat", "n10_emu")  # sorted names, label = position
    assert (s.n_classes, s.input_shape, s.task) == (3, (3, 32, 32), "classification")
    assert s.sizes() == {"train": 9, "val": 3, "test": 6} and not s.in_memory
    for part in (s.train, s.val, s.test):
        for path, label in zip(part.paths, part.labels):
            assert s.classes[label] in path
    # train and validation partition the train folder; the test part is the val folder
    train_files = sorted(str(p) for p in (tmp_path / "train").rglob("*.JPEG"))
    assert sorted([*s.train.paths, *s.val.paths]) == train_files and not set(s.train.paths) & set(s.val.paths)
    assert list(s.test.paths) == sorted(str(p) for p in (tmp_path / "val").rglob("*.JPEG"))
    other = bd.load("imagefolder", root=tmp_path, image_size=32, validation=3, seed=1)
    assert set(other.val.paths) != set(s.val.paths)  # the hold-out depends on the seed...
    assert list(other.test.paths) == list(s.test.paths)  # ...the test part does not
    again = bd.load("imagefolder", root=tmp_path, image_size=32, validation=3, seed=0)
    assert list(again.train.paths) == list(s.train.paths)
    small = bd.load("imagefolder", root=tmp_path, image_size=32, validation=0.25, n_train=8, n_test=4)
    assert small.sizes() == {"train": 6, "val": 2, "test": 4}
    torch.testing.assert_close(s.mean.view(3), torch.tensor(transforms.IMAGENET_MEAN))
    x, y = s.test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0


def test_eval_transform_is_resize_then_center_crop(tmp_path):
    write_folder(tmp_path, size=(48, 40))
    s = bd.load("imagefolder", root=tmp_path, image_size=32, resize=36, normalize=False)
    img = Image.open(s.test.paths[1]).convert("RGB")
    # shorter side 40 -> 36, longer 48 -> int(36 * 48 / 40) = 43; central 32x32 at (round(5.5), 2)
    expected = np.asarray(img.resize((43, 36), Image.Resampling.BILINEAR).crop((6, 2, 38, 34)))
    x, _ = s.test[1]
    np.testing.assert_array_equal(np.rint(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8), expected)
    # normalised items are the ImageNet standardisation of the same pixels
    xn, _ = bd.load("imagefolder", root=tmp_path, image_size=32, resize=36).test[1]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD))
    torch.testing.assert_close(xn, (x - mean) / std, rtol=0, atol=1e-6)
    # the default resize is image_size * 256 / 224
    assert bd.load("imagefolder", root=tmp_path, image_size=224).test.resize == 256
    assert bd.load("imagefolder", root=tmp_path, image_size=32).test.resize == 37


def test_random_resized_crop_box_laws():
    """Inside the image, area fraction and aspect ratio within the ranges (up to rounding to whole
    pixels: |w·h/A - s| and the log-ratio error are bounded by the rounding of w and h by 1/2)."""
    W, H = 48, 40
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    seen_left, seen_top = set(), set()
    for seed in range(500):
        left, top, w, h = transforms.random_resized_crop_box(W, H, random.Random(seed), scale, ratio)
        assert 0 <= left and left + w <= W and 0 <= top and top + h <= H and w > 0 and h > 0
        if (w, h) == (W, H) and (left, top) == (0, 0):
            continue  # possibly the fallback
        assert scale[0] * W * H * 0.5 <= w * h  # generous: area of the rounded box, w, h >= 1
        r_lo, r_hi = ratio[0] * (1 - 0.5 / h) / (1 + 0.5 / w), ratio[1] * (1 + 0.5 / w) / (1 - 0.5 / h)
        assert r_lo <= w / h <= r_hi
        seen_left.add(left)
        seen_top.add(top)
    assert len(seen_left) > 10 and len(seen_top) > 10
    # impossible ranges fall back to the central crop with the ratio clamped
    assert transforms.random_resized_crop_box(W, H, random.Random(0), (1.0, 1.0), (2.0, 3.0)) == (0, 8, 48, 24)
    assert transforms.random_resized_crop_box(W, H, random.Random(0), (1.0, 1.0), (0.25, 0.5)) == (14, 0, 20, 40)
    assert transforms.random_resized_crop_box(W, H, random.Random(0), (1.0, 1.0), (1.2, 1.2)) == (0, 0, 48, 40)


def test_train_items_are_seeded_crops_and_flips(tmp_path):
    write_folder(tmp_path)
    # scale 1 and the image's own ratio: the crop is the whole image, resized; then maybe mirrored
    s = bd.load("imagefolder", root=tmp_path, image_size=32, scale=[1.0, 1.0], ratio=[1.2, 1.2], normalize=False)
    img = Image.open(s.train.paths[0]).convert("RGB")
    whole = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR))
    flips = 0
    for seed in range(40):
        x, y = s.train[(0, seed)]
        got = np.rint(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        flipped = not np.array_equal(got, whole)
        np.testing.assert_array_equal(got, whole[:, ::-1] if flipped else whole)
        flips += flipped
        assert torch.equal(x, s.train[(0, seed)][0])  # a function of the key
    assert 0 < flips < 40
    assert s.train.seeded_keys and not s.val.seeded_keys
    # the general case: the drawn box of the image alone, resized, then the drawn flip
    s = bd.load("imagefolder", root=tmp_path, image_size=16, normalize=False)
    img = Image.open(s.train.paths[2]).convert("RGB")
    for seed in range(20):
        rng = random.Random(seed)
        left, top, w, h = transforms.random_resized_crop_box(48, 40, rng)
        expected = np.asarray(img.crop((left, top, left + w, top + h)).resize((16, 16), Image.Resampling.BILINEAR))
        if rng.random() < 0.5:
            expected = expected[:, ::-1]
        got = np.rint(s.train[(2, seed)][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loaders_over_folders_are_seeded_and_worker_independent(tmp_path, num_workers):
    write_folder(tmp_path)
    s = bd.load("imagefolder", root=tmp_path, image_size=32, validation=3, seed=0)
    train, val, test = bd.loaders(s, batch_size=4, seed=3, num_workers=num_workers)
    epoch = lambda loader: [(x.clone(), y.clone()) for x, y in loader]  # noqa: E731
    first, second = epoch(train), epoch(train)
    assert [len(y) for _, y in first] == [4, 4, 1] and first[0][0].shape == (4, 3, 32, 32)
    assert first[0][1].dtype == torch.int64
    labels = sorted(torch.cat([y for _, y in first]).tolist())
    assert labels == sorted(s.train.labels.tolist())  # every example once per epoch
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))  # fresh crops each epoch
    reference = bd.loaders(s, batch_size=4, seed=3, num_workers=0)[0]
    for (xa, ya), (xb, yb) in zip(first, epoch(reference)):  # same seed: same batches, any num_workers
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x_val = torch.cat([x for x, _ in val])
    assert torch.equal(x_val, torch.stack([s.val[i][0] for i in range(3)]))  # in order, deterministic
    x_head, y_head = s.head("test", 4)
    x_test, y_test = next(iter(test))
    assert torch.equal(x_head, x_test) and torch.equal(y_head, y_test)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_image_names_the_file(tmp_path, num_workers):
    write_folder(tmp_path)
    bad = tmp_path / "val" / "n02_cat" / "n02_cat_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated JPEG
    s = bd.load("imagefolder", root=tmp_path, image_size=32)
    test = bd.loaders(s, batch_size=6, num_workers=num_workers)[2]
    with pytest.raises(DataFileError, match=r"cannot decode the image .*n02_cat_1\.JPEG.*corrupt"):
        list(test)


def test_folder_errors(tmp_path, monkeypatch):
    with pytest.raises(DataFileError, match=r"needs the folders train/<class>/ and val/<class>/.*root=") as err:
        bd.load("imagefolder", root=tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataFileError, match="image-net.org"):
        bd.load("imagenet", root=tmp_path)
    write_folder(tmp_path)
    monkeypatch.setenv(bd.ENV_VAR, str(tmp_path.parent))
    (tmp_path.parent / "imagenet").mkdir(exist_ok=True)
    (tmp_path.parent / "imagenet" / "train").symlink_to(tmp_path / "train")
    (tmp_path.parent / "imagenet" / "val").symlink_to(tmp_path / "val")
    assert bd.load("imagenet", image_size=32).sizes()["test"] == 6  # $BIOFA_DATA/imagenet
    (tmp_path / "val" / "n99_owl").mkdir()
    with pytest.raises(DataFileError, match=r"class folders that train/ does not have: \['n99_owl'\]"):
        bd.load("imagefolder", root=tmp_path)
    (tmp_path / "val" / "n99_owl").rmdir()
    (tmp_path / "train" / "n05_empty").mkdir()
    (tmp_path / "train" / "n05_empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataFileError, match=r"n05_empty has no images"):
        bd.load("imagefolder", root=tmp_path)


@pytest.mark.parametrize("options, match", [
    ({"image_size": 0}, "image_size must be a positive int"),
    ({"image_size": 32, "resize": 16}, "resize=16 is smaller than image_size=32"),
    ({"scale": [0.5]}, r"scale must be a pair \[low, high\]"),
    ({"scale": [0.0, 1.0]}, "scale must satisfy"),
    ({"ratio": [2.0, 1.0]}, "ratio must satisfy"),
    ({"size": 32}, r"Unknown option\(s\) \['size'\] for dataset 'imagefolder'"),
])
def test_folder_option_errors(tmp_path, options, match):
    write_folder(tmp_path, classes={"a": 1}, n_val=1)
    with pytest.raises(ConfigError, match=match):
        bd.load("imagefolder", root=tmp_path, **options)


def test_head_of_in_memory_splits():
    s = bd.load("linear_teacher", n_train=20, n_test=5)
    x, y = s.head("train", 3)
    assert s.in_memory and torch.equal(x, s.train.tensors[0][:3]) and torch.equal(y, s.train.tensors[1][:3])
    assert s.head("test", 100)[0].shape == (5, 30)


def test_image_folder_dataset_direct(tmp_path):
    write_folder(tmp_path, classes={"a": 2}, n_val=1)
    ds = bd.ImageFolderDataset(tmp_path, ["train/a/a_1.JPEG"], [0], train=False, image_size=32, resize=37)
    assert len(ds) == 1 and ds.paths == [str(tmp_path / "train" / "a" / "a_1.JPEG")]
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ConfigError, match="2 files but 1 labels"):
        bd.ImageFolderDataset(tmp_path, ["a", "b"], [0], train=False, image_size=32, resize=37)
    with pytest.raises(DataFileError, match="does not exist"):
        bd.ImageFolderDataset(tmp_path, ["gone.JPEG"], [0], train=False, image_size=32, resize=37)[0]
