"""Tests of nago_spec.data: the digits and IDX loaders, the seeded stratified splits, every IDX error."""

from __future__ import annotations

import gzip
import math
import struct
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nago_spec.data import DATASETS, FASHION_MNIST_CLASSES, Dataset, load_dataset
from nago_spec.errors import DataError, RegistryError

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _rows(*xs: torch.Tensor) -> Counter:
    """The multiset of images (as bytes) in the given ``N x C x H x W`` tensors."""
    return Counter(bytes(img.numpy().tobytes()) for x in xs for img in x)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


# -- digits ----------------------------------------------------------------------------------------


def test_digits_shapes_and_types(digits):
    assert digits.x_train.dtype == torch.uint8 and digits.y_train.dtype == torch.int64
    assert digits.x_train.shape[1:] == (1, 8, 8)
    assert (digits.in_channels, digits.image_size, digits.num_classes) == (1, (8, 8), 10)
    assert digits.classes == tuple(str(i) for i in range(10))
    assert len(digits.y_train) + len(digits.y_val) + len(digits.y_test) == 1797
    assert len(digits.y_test) == 359  # round(0.2 * n) per class
    for x, y in ((digits.x_train, digits.y_train), (digits.x_val, digits.y_val), (digits.x_test, digits.y_test)):
        assert len(x) == len(y) and int(y.min()) == 0 and int(y.max()) == 9
    assert int(digits.x_train.max()) == 255
    assert "train=" in repr(digits) and "tensor" not in repr(digits)


def test_digits_pixels_are_scaled_sklearn_values(digits):
    from sklearn.datasets import load_digits

    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8)[:, None]
    assert _rows(digits.x_train, digits.x_val, digits.x_test) == _rows(torch.from_numpy(expected))


def test_digits_mean_std_are_from_x_train(digits):
    x = digits.x_train.double() / 255
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert digits.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-9)


def test_validation_split_is_stratified(digits):
    trainval = torch.cat([digits.y_train, digits.y_val])
    for c in range(10):
        n_c = int((trainval == c).sum())
        assert abs(int((digits.y_val == c).sum()) - 0.2 * n_c) <= 1


def test_same_seed_same_split_other_seed_other_split_fixed_test(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(again.x_val, digits.x_val) and torch.equal(again.y_train, digits.y_train)
    assert not torch.equal(other.x_val, digits.x_val)
    assert torch.equal(other.x_test, digits.x_test) and torch.equal(other.y_test, digits.y_test)
    # the split reshuffles the same training pool
    assert _rows(other.x_train, other.x_val) == _rows(digits.x_train, digits.x_val)


def test_limit_is_a_stratified_seeded_subsample():
    d = load_dataset("digits", limit=500, val_fraction=0.2, seed=3)
    assert len(d.y_train) + len(d.y_val) == 500
    counts = torch.bincount(torch.cat([d.y_train, d.y_val]), minlength=10)
    full = load_dataset("digits")
    pool = torch.bincount(torch.cat([full.y_train, full.y_val]), minlength=10)
    assert (counts - 500 * pool / pool.sum()).abs().max() < 1  # proportional, largest remainders
    assert len(d.y_test) == 359  # the test split is never subsampled
    assert torch.equal(load_dataset("digits", limit=500, seed=3).x_train, d.x_train)
    assert not torch.equal(load_dataset("digits", limit=500, seed=4).x_train, d.x_train)
    assert len(load_dataset("digits", limit=10**6).y_train) == len(load_dataset("digits").y_train)


def test_class_names_override_and_mismatch():
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert load_dataset("digits", classes=names).classes == names
    with pytest.raises(DataError, match="classes has 2 names but the data set has 10 classes"):
        load_dataset("digits", classes=("a", "b"))


def test_argument_errors():
    with pytest.raises(RegistryError, match=r"unknown dataset 'digit'.*did you mean 'digits'.*valid: digits, idx"):
        load_dataset("digit")
    with pytest.raises(DataError, match=r"`0 < val_fraction < 1` must hold, but got val_fraction=1.5"):
        load_dataset("digits", val_fraction=1.5)
    with pytest.raises(DataError, match="takes no path"):
        load_dataset("digits", "/tmp")
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("idx")
    with pytest.raises(DataError, match="empty validation split"):
        load_dataset("digits", limit=10, val_fraction=0.01)


def test_registry_names_and_loader_output_is_checked():
    assert {"digits", "idx"} <= set(DATASETS.names())
    bad = "test-float-images"
    if bad not in DATASETS:
        DATASETS.register(bad, lambda path: (np.zeros((4, 1, 2, 2)), np.zeros(4, int), np.zeros((2, 1, 2, 2)),
                                             np.zeros(2, int), ("a",)))
    with pytest.raises(DataError, match=r"train images must be uint8 \[N, C, H, W\], but got float64"):
        load_dataset(bad)


# -- idx -------------------------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_idx_dir(root: Path, *, gz: bool, n_train: int = 40, n_test: int = 20, classes: int = 4) -> dict:
    """Four tiny IDX files (labels cycling over ``classes``); returns the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 5, 6), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % classes).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 5, 6), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % classes).astype(np.uint8),
    }
    for key, arr in arrays.items():
        data = _idx_bytes(arr, 0x803 if arr.ndim == 3 else 0x801)
        name = IDX_NAMES[key]
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_tiny_files(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path / "tiny", gz=gz)
    d = load_dataset("idx", tmp_path / "tiny", val_fraction=0.2, seed=0)
    assert d.x_train.shape[1:] == (1, 5, 6) and d.image_size == (5, 6)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (32, 8, 20)
    assert d.classes == ("0", "1", "2", "3")
    assert torch.bincount(d.y_val).tolist() == [2, 2, 2, 2]
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(arrays["test_images"]))
    assert torch.equal(d.y_test, torch.from_numpy(arrays["test_labels"]).long())
    assert _rows(d.x_train, d.x_val) == _rows(torch.from_numpy(arrays["train_images"])[:, None])


def test_idx_fashion_directory_gets_fashion_names(tmp_path):
    _write_idx_dir(tmp_path / "my-Fashion-copy", gz=True, classes=10)
    assert load_dataset("idx", tmp_path / "my-Fashion-copy").classes == FASHION_MNIST_CLASSES


def _break(root: Path, key: str, data: bytes) -> None:
    (root / f"{IDX_NAMES[key]}.gz").write_bytes(data)


def test_idx_missing_directory_and_files(tmp_path):
    with pytest.raises(DataError, match=r"idx: .*nowhere: no such directory"):
        load_dataset("idx", tmp_path / "nowhere")
    _write_idx_dir(tmp_path / "d", gz=True)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]; expected the four .*"
                                        r"train-images-idx3-ubyte\[\.gz\]"):
        load_dataset("idx", tmp_path / "d")


def test_idx_wrong_magic(tmp_path):
    arrays = _write_idx_dir(tmp_path, gz=True)
    _break(tmp_path, "train_images", gzip.compress(_idx_bytes(arrays["train_images"], 0x801)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: magic number 0x00000801, expected 0x00000803"):
        load_dataset("idx", tmp_path)


def test_idx_truncated(tmp_path):
    arrays = _write_idx_dir(tmp_path, gz=True)
    _break(tmp_path, "test_images", gzip.compress(_idx_bytes(arrays["test_images"], 0x803)[:-7]))
    msg = r"t10k-images-idx3-ubyte.gz: truncated: 609 bytes, the header \[20, 5, 6\] needs 616"
    with pytest.raises(DataError, match=msg):
        load_dataset("idx", tmp_path)
    _break(tmp_path, "test_images", gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(DataError, match="shorter than the 16-byte IDX header"):
        load_dataset("idx", tmp_path)


def test_idx_trailing_bytes(tmp_path):
    arrays = _write_idx_dir(tmp_path, gz=True)
    _break(tmp_path, "train_labels", gzip.compress(_idx_bytes(arrays["train_labels"], 0x801) + b"xx"))
    with pytest.raises(DataError, match="2 bytes after the"):
        load_dataset("idx", tmp_path)


def test_idx_count_mismatch(tmp_path):
    arrays = _write_idx_dir(tmp_path, gz=True)
    _break(tmp_path, "train_labels", gzip.compress(_idx_bytes(arrays["train_labels"][:39], 0x801)))
    msg = "train-images-idx3-ubyte.gz holds 40 images but train-labels-idx1-ubyte.gz holds 39"
    with pytest.raises(DataError, match=msg):
        load_dataset("idx", tmp_path)


def test_idx_bad_gzip(tmp_path):
    arrays = _write_idx_dir(tmp_path, gz=True)
    _break(tmp_path, "test_labels", _idx_bytes(arrays["test_labels"], 0x801))  # raw bytes under a .gz name
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: not a valid gzip file"):
        load_dataset("idx", tmp_path)
    _break(tmp_path, "test_labels", gzip.compress(_idx_bytes(arrays["test_labels"], 0x801))[:-12])
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_dataset("idx", tmp_path)


# -- the real files --------------------------------------------------------------------------------


def test_fashion_mnist(shared_data):
    d = load_dataset("idx", shared_data / "fashion-mnist", val_fraction=0.2, seed=0)
    assert (len(d.y_train) + len(d.y_val), len(d.y_test)) == (60000, 10000)
    assert (len(d.y_train), len(d.y_val)) == (48000, 12000)
    assert d.x_train.shape[1:] == (1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.classes == FASHION_MNIST_CLASSES
    assert torch.bincount(d.y_val).tolist() == [1200] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    full = torch.cat([d.x_train, d.x_val]).double() / 255
    assert float(full.mean()) == pytest.approx(0.2860, abs=5e-5)
    assert d.mean[0] == pytest.approx(0.2860, abs=2e-3) and d.std[0] == pytest.approx(0.3530, abs=2e-3)


def test_mnist_with_limit(shared_data):
    d = load_dataset("idx", shared_data / "mnist", val_fraction=0.1, limit=2000, seed=0)
    assert len(d.y_train) + len(d.y_val) == 2000 and len(d.y_test) == 10000
    assert d.classes == tuple(str(i) for i in range(10))
    assert int(d.y_train.min()) == 0 and int(d.y_train.max()) == 9
    assert d.mean[0] == pytest.approx(0.1307, abs=0.01)


# -- npz -------------------------------------------------------------------------------------------


def _pairs(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> Counter:
    """The multiset of (image bytes, label) pairs: images must keep their labels."""
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    y = y.numpy() if isinstance(y, torch.Tensor) else y
    return Counter((img.tobytes(), int(label)) for img, label in zip(x, y))


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits as the digits loader scales them: uint8 ``N x 8 x 8`` and int labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8), bunch.target.astype(np.int64)


def _unique_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images, pairwise distinct (the first pixel pair encodes the index)."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return x


_LAYOUTS = {
    "NHW": lambda x: x,
    "NHWC": lambda x: x[:, :, :, None],
    "NCHW": lambda x: x[:, None, :, :],
}


@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_npz_digits_without_test_split_equals_the_digits_loader(tmp_path, layout):
    # The carved split uses the digits seed and fraction, so an .npz of the same images in the same
    # order must give exactly the digits data set, for any run seed.
    x, y = _sklearn_digits()
    np.savez(tmp_path / "d.npz", x=_LAYOUTS[layout](x), y=y)
    for seed in (0, 5):
        got = load_dataset("npz", tmp_path / "d.npz", seed=seed)
        ref = load_dataset("digits", seed=seed)
        assert got.x_train.shape[1:] == (1, 8, 8) and got.x_train.dtype == torch.uint8
        for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            assert torch.equal(getattr(got, f), getattr(ref, f)), f
        assert got.classes == ref.classes and got.mean == ref.mean and got.std == ref.std


@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_npz_digits_with_test_split_round_trip(tmp_path, layout):
    x, y = _sklearn_digits()
    cut = 1500
    to = _LAYOUTS[layout]
    np.savez(tmp_path / "d.npz", x=to(x[:cut]), y=y[:cut], x_test=to(x[cut:]), y_test=y[cut:].astype(np.uint8))
    d = load_dataset("npz", tmp_path / "d.npz", val_fraction=0.25, seed=2)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.y_test.dtype == torch.int64
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(x[cut:]))  # the test split as given, in order
    assert torch.equal(d.y_test, torch.from_numpy(y[cut:]))
    assert _pairs(torch.cat([d.x_train, d.x_val]), torch.cat([d.y_train, d.y_val])) == _pairs(x[:cut, None], y[:cut])
    assert len(d.y_val) == sum(int(np.floor(0.25 * n + 0.5)) for n in np.bincount(y[:cut]))
    assert d.classes == tuple(str(i) for i in range(10))


def test_npz_colour_nhwc_and_nchw_agree(tmp_path):
    x, y = _sklearn_digits()
    rgb = np.stack([x, 255 - x, x // 2], axis=1)  # N x 3 x 8 x 8
    np.savez(tmp_path / "nchw.npz", x=rgb, y=y)
    np.savez(tmp_path / "nhwc.npz", x=rgb.transpose(0, 2, 3, 1), y=y)
    a = load_dataset("npz", tmp_path / "nchw.npz")
    b = load_dataset("npz", tmp_path / "nhwc.npz")
    assert a.in_channels == 3 and a.image_size == (8, 8)
    for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert _pairs(torch.cat([a.x_train, a.x_val, a.x_test]), torch.cat([a.y_train, a.y_val, a.y_test])) == _pairs(rgb, y)
    assert torch.equal(a.x_train[:, 1], 255 - a.x_train[:, 0])  # channels not mixed up
    assert a.mean[1] == pytest.approx(1 - a.mean[0], abs=1e-9)


def test_npz_carved_test_is_stratified_fixed_and_disjoint(tmp_path):
    n_per = np.array([30, 11, 7, 52])  # unequal classes, rounding matters
    y = np.repeat(np.arange(4), n_per)
    y = y[np.random.default_rng(1).permutation(len(y))]
    x = _unique_images(len(y), (5, 6))
    np.savez(tmp_path / "u.npz", x=x, y=y)
    runs = [load_dataset("npz", tmp_path / "u.npz", seed=s, val_fraction=0.3) for s in (0, 1, 2)]
    d = runs[0]
    test_counts = torch.bincount(d.y_test, minlength=4).tolist()
    assert test_counts == [int(np.floor(0.2 * n + 0.5)) for n in n_per] == [6, 2, 1, 10]
    for other in runs[1:]:  # the run seed moves the validation split, never the test split
        assert torch.equal(other.x_test, d.x_test) and torch.equal(other.y_test, d.y_test)
        assert not torch.equal(other.x_val, d.x_val)
        assert _rows(other.x_train, other.x_val) == _rows(d.x_train, d.x_val)
    trainval = _rows(d.x_train, d.x_val)
    assert not set(_rows(d.x_test)) & set(trainval)
    assert _pairs(torch.cat([d.x_train, d.x_val, d.x_test]), torch.cat([d.y_train, d.y_val, d.y_test])) == _pairs(
        x[:, None], y
    )
    pool = n_per - np.array(test_counts)
    assert torch.bincount(d.y_val, minlength=4).tolist() == [int(np.floor(0.3 * n + 0.5)) for n in pool]


def test_npz_classes_array_names_the_labels(tmp_path):
    x = _unique_images(40, (6, 6))
    y = np.arange(40) % 4
    names = np.array(["cat", "dog", "emu", "ant"])  # not sorted: index i names label i
    np.savez(tmp_path / "c.npz", x=x, y=y, classes=names)
    d = load_dataset("npz", tmp_path / "c.npz")
    assert d.classes == ("cat", "dog", "emu", "ant") and all(type(c) is str for c in d.classes)
    assert load_dataset("npz", tmp_path / "c.npz", classes=("a", "b", "c", "d")).classes == ("a", "b", "c", "d")
    # without 'classes': "0".."K-1", K = largest label (train or test) + 1
    np.savez(tmp_path / "k.npz", x=x, y=y % 3, x_test=x[:5], y_test=np.array([0, 1, 2, 3, 4]))
    assert load_dataset("npz", tmp_path / "k.npz").classes == ("0", "1", "2", "3", "4")


def test_npz_rgba_and_tensor_ownership(tmp_path):
    x = _unique_images(20, (7, 9, 4))  # NHWC, C=4
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(20) % 2, x_test=x[:4], y_test=np.array([0, 1, 0, 1]))
    d = load_dataset("npz", tmp_path / "a.npz")
    assert d.x_train.shape[1:] == (4, 7, 9) and d.image_size == (7, 9)
    assert torch.equal(d.x_test, torch.from_numpy(x[:4].transpose(0, 3, 1, 2).copy()))
    assert d.x_train.is_contiguous() and d.x_test.is_contiguous()


def _npz_error(path: Path, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        load_dataset("npz", path)
    assert str(path) in str(info.value)


def test_npz_missing_file_and_not_an_npz(tmp_path):
    with pytest.raises(DataError, match="npz: needs a path"):
        load_dataset("npz")
    _npz_error(tmp_path / "absent.npz", r"absent\.npz: no such file")
    _npz_error(tmp_path, "no such file")  # a directory is not a file
    junk = tmp_path / "junk.npz"
    junk.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8)))
    _npz_error(junk, r"junk\.npz: not a readable \.npz file")
    good = tmp_path / "good.npz"
    np.savez(good, x=_unique_images(20, (6, 6)), y=np.arange(20) % 2)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:-40])  # zip central directory gone
    _npz_error(cut, r"cut\.npz: not a readable \.npz file")
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=_unique_images(20, (6, 6)), y=np.arange(20) % 2, classes=np.array(["a", 1], dtype=object))
    _npz_error(obj, r"obj\.npz: not a readable \.npz file")  # no pickles


def test_npz_missing_or_unpaired_arrays(tmp_path):
    x, y = _unique_images(20, (6, 6)), np.arange(20) % 2
    np.savez(tmp_path / "noy.npz", x=x, labels=y)
    _npz_error(tmp_path / "noy.npz", r"missing array 'y'; holds 'x', 'labels'")
    np.savez(tmp_path / "none.npz")
    _npz_error(tmp_path / "none.npz", r"missing array 'x', 'y'; holds no arrays")
    np.savez(tmp_path / "xt.npz", x=x, y=y, x_test=x[:4])
    _npz_error(tmp_path / "xt.npz", r"holds x_test without y_test: give both or neither")
    np.savez(tmp_path / "yt.npz", x=x, y=y, y_test=y[:4])
    _npz_error(tmp_path / "yt.npz", r"holds y_test without x_test")


def test_npz_bad_pixels_and_shapes(tmp_path):
    x, y = _unique_images(20, (6, 6)), np.arange(20) % 2
    np.savez(tmp_path / "f.npz", x=x / 255.0, y=y)
    _npz_error(tmp_path / "f.npz", r"'x' must hold uint8 pixels \(0\.\.255\), but got float64 \(scale and cast it: "
                                   r"\(x \* 255\)\.round\(\)\.astype\(np\.uint8\)")
    np.savez(tmp_path / "i.npz", x=x, y=y, x_test=x[:4].astype(np.int32), y_test=y[:4])
    _npz_error(tmp_path / "i.npz", r"'x_test' must hold uint8 pixels .* got int32")
    np.savez(tmp_path / "v.npz", x=x.reshape(20, 36), y=y)
    _npz_error(tmp_path / "v.npz", r"'x' must be images \[N, H, W\], \[N, H, W, C\] or \[N, C, H, W\], "
                                   r"but got shape \[20, 36\]")
    np.savez(tmp_path / "s.npz", x=x, y=y, x_test=x[:4, :5], y_test=y[:4])
    _npz_error(tmp_path / "s.npz", r"train images are \(1, 6, 6\) but test images are \(1, 5, 6\)")


def test_npz_bad_labels(tmp_path):
    x, y = _unique_images(20, (6, 6)), np.arange(20) % 2
    np.savez(tmp_path / "n.npz", x=x, y=y[:19])
    _npz_error(tmp_path / "n.npz", r"20 images in 'x' but 19 labels in 'y'")
    np.savez(tmp_path / "nt.npz", x=x, y=y, x_test=x[:4], y_test=y[:3])
    _npz_error(tmp_path / "nt.npz", r"4 images in 'x_test' but 3 labels in 'y_test'")
    np.savez(tmp_path / "neg.npz", x=x, y=y - 1)
    _npz_error(tmp_path / "neg.npz", r"'y' holds negative labels \(min -1\)")
    np.savez(tmp_path / "negt.npz", x=x, y=y, x_test=x[:2], y_test=np.array([0, -3]))
    _npz_error(tmp_path / "negt.npz", r"'y_test' holds negative labels \(min -3\)")
    np.savez(tmp_path / "fl.npz", x=x, y=y.astype(np.float32))
    _npz_error(tmp_path / "fl.npz", r"'y' must be integer labels \[N\], but got float32 \[20\]")
    np.savez(tmp_path / "2d.npz", x=x, y=y[:, None])
    _npz_error(tmp_path / "2d.npz", r"'y' must be integer labels \[N\], but got int64 \[20, 1\]")
    np.savez(tmp_path / "few.npz", x=x[:2], y=np.array([0, 1]))  # one image per class: nothing to carve
    _npz_error(tmp_path / "few.npz", r"too few images per class to carve a test split \(2 images\)")


def test_npz_wrong_classes_array(tmp_path):
    x, y = _unique_images(20, (6, 6)), np.arange(20) % 4
    np.savez(tmp_path / "c3.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    _npz_error(tmp_path / "c3.npz", r"'classes' must be 4 strings \(one per label 0\.\.3\), but got <U1 \[3\]")
    np.savez(tmp_path / "ci.npz", x=x, y=y, classes=np.arange(4))
    _npz_error(tmp_path / "ci.npz", r"'classes' must be 4 strings .* but got int64 \[4\]")
    np.savez(tmp_path / "c2d.npz", x=x, y=y, classes=np.array([["a", "b"], ["c", "d"]]))
    _npz_error(tmp_path / "c2d.npz", r"'classes' must be 4 strings .* \[2, 2\]")


def test_npz_given_an_npy_file_is_a_data_error(tmp_path):
    np.save(tmp_path / "x.npy", _unique_images(20, (6, 6)))
    _npz_error(tmp_path / "x.npy", r"x\.npy: not a readable \.npz file")


def test_npz_bytes_classes_array_gives_plain_names(tmp_path):
    np.savez(tmp_path / "b.npz", x=_unique_images(20, (6, 6)), y=np.arange(20) % 2, classes=np.array([b"cat", b"dog"]))
    assert load_dataset("npz", tmp_path / "b.npz").classes == ("cat", "dog")


# -- image-folder ----------------------------------------------------------------------------------


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _write_tree(root: Path, *, classes=("cow", "ant", "bee"), n_train=6, n_test=2, size=(6, 7), seed=0) -> dict:
    """Grey PNGs ``split/class/NNN.png``; returns {(split, class): [pixels in file-name order]}."""
    rng = np.random.default_rng(seed)
    written: dict[tuple[str, str], list[np.ndarray]] = {}
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            for i in range(n):
                img = rng.integers(0, 256, size, dtype=np.uint8)
                img[0, 0], img[0, 1] = k % 256, k // 256  # every image distinct
                k += 1
                _png(root / split / cls / f"{i:03d}.png", img)
                written.setdefault((split, cls), []).append(img)
    return written


def _tar(root: Path, out: Path, prefix: str = "") -> Path:
    """``root`` packed as a .tar.gz, files only, in reverse order (the loader must sort the members)."""
    with tarfile.open(out, "w:gz") as tar:
        for file in sorted(root.rglob("*"), reverse=True):
            if file.is_file():
                tar.add(file, arcname=prefix + file.relative_to(root).as_posix())
    return out


def _same(a: Dataset, b: Dataset) -> None:
    for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert (a.classes, a.mean, a.std) == (b.classes, b.mean, b.std)


def test_image_folder_directory_and_tar_gz_agree(tmp_path):
    written = _write_tree(tmp_path / "tree")
    tgz = _tar(tmp_path / "tree", tmp_path / "tree.tar.gz")
    d = load_dataset("image-folder", tmp_path / "tree", seed=1)
    _same(d, load_dataset("image-folder", tgz, seed=1))
    _same(d, load_dataset("image-folder", str(tgz), seed=1))
    assert d.classes == ("ant", "bee", "cow")  # sorted train directories
    assert d.x_train.shape[1:] == (1, 6, 7) and d.image_size == (6, 7)
    assert (len(d.y_train) + len(d.y_val), len(d.y_test)) == (18, 6)
    # the test split as written, ordered by class then file name
    expected = np.stack([img for cls in d.classes for img in written["test", cls]])[:, None]
    assert torch.equal(d.x_test, torch.from_numpy(expected))
    assert d.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    pool = [(img[None], d.classes.index(cls)) for cls in d.classes for img in written["train", cls]]
    assert _pairs(torch.cat([d.x_train, d.x_val]), torch.cat([d.y_train, d.y_val])) == _pairs(
        np.stack([p for p, _ in pool]), np.array([c for _, c in pool])
    )


def test_image_folder_plain_tar_with_leading_dot_slash(tmp_path):
    _write_tree(tmp_path / "tree")
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(tmp_path / "tree", arcname=".")  # members "./train/ant/000.png"
    _same(load_dataset("image-folder", tmp_path / "tree"), load_dataset("image-folder", tmp_path / "t.tar"))


def test_image_folder_one_colour_image_makes_all_rgb(tmp_path):
    written = _write_tree(tmp_path / "tree", classes=("a", "b"), n_train=5, n_test=2)
    rgb = np.random.default_rng(9).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    _png(tmp_path / "tree" / "train" / "b" / "zzz.png", rgb)
    d = load_dataset("image-folder", tmp_path / "tree")
    assert d.in_channels == 3 and d.x_test.shape[1:] == (3, 6, 7)
    grey_test = np.stack(written["test", "a"] + written["test", "b"])
    assert torch.equal(d.x_test, torch.from_numpy(np.repeat(grey_test[:, None], 3, axis=1)))  # grey replicated
    everything = torch.cat([d.x_train, d.x_val])
    assert _rows(everything[:, :1]) == _rows(
        torch.from_numpy(np.stack(written["train", "a"] + written["train", "b"] + [rgb[:, :, 0]])[:, None])
    )
    colour = [img for img in everything if not torch.equal(img[0], img[1])]
    assert len(colour) == 1 and torch.equal(colour[0], torch.from_numpy(rgb.transpose(2, 0, 1).copy()))


def test_image_folder_grey_stays_one_channel_including_la_and_jpeg(tmp_path):
    from PIL import Image

    _write_tree(tmp_path / "tree", classes=("a", "b"), n_train=5, n_test=1)
    Image.fromarray(np.full((6, 7, 2), 77, np.uint8), mode="LA").save(tmp_path / "tree" / "train" / "a" / "la.png")
    Image.fromarray(np.full((6, 7), 200, np.uint8)).save(tmp_path / "tree" / "train" / "b" / "g.jpg", quality=95)
    d = load_dataset("image-folder", tmp_path / "tree")
    assert d.in_channels == 1
    flat = torch.cat([d.x_train, d.x_val]).flatten(1)
    assert any(bool((row == 77).all()) for row in flat)
    assert any(bool(((row.int() - 200).abs() <= 2).all()) for row in flat)


def test_image_folder_palette_grey_and_16_bit_grey_stay_one_channel(tmp_path):
    from PIL import Image

    _write_tree(tmp_path / "tree", classes=("a", "b"), n_train=5, n_test=1)
    Image.fromarray(np.full((6, 7), 90, np.uint8)).convert("P").save(tmp_path / "tree" / "train" / "a" / "p.png")
    Image.fromarray(np.full((6, 7), 40000, np.uint16)).save(tmp_path / "tree" / "train" / "b" / "w.png")
    d = load_dataset("image-folder", tmp_path / "tree")
    assert d.in_channels == 1
    flat = torch.cat([d.x_train, d.x_val]).flatten(1)
    assert any(bool((row == 90).all()) for row in flat)
    assert any(bool((row == 40000 >> 8).all()) for row in flat)  # scaled to 8 bits, not clipped to 255


def test_image_folder_a_wrapping_folder_is_the_same_in_a_directory_and_a_tar(tmp_path):
    _write_tree(tmp_path / "tree" / "cifar")
    plain = load_dataset("image-folder", tmp_path / "tree" / "cifar")
    _same(plain, load_dataset("image-folder", tmp_path / "tree"))
    _same(plain, load_dataset("image-folder", _tar(tmp_path / "tree", tmp_path / "w.tar.gz")))
    _write_tree(tmp_path / "tree" / "other")
    with pytest.raises(DataError, match=r"tree: 2 folders hold train/ \(cifar/train, other/train\); give the path"):
        load_dataset("image-folder", tmp_path / "tree")


def test_image_folder_skips_dot_files_other_files_and_other_splits(tmp_path, caplog):
    root = tmp_path / "tree"
    _write_tree(root)
    d0 = load_dataset("image-folder", _tar(root, tmp_path / "clean.tar.gz"))
    junk = b"definitely not an image"
    for rel in ("train/ant/.hidden.png", "train/ant/._000.png", "train/.cache/000.png", ".git/x/y.png",
                "train/ant/notes.txt", "train/ant/000.png.bak", "README.png", "train/x.png",
                "val/ant/000.png", "test/ant/deep/000.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(junk)
    (root / "train" / "dir.png").mkdir()  # a directory with an image suffix
    with caplog.at_level("WARNING", logger="nago_spec.data"):
        _same(d0, load_dataset("image-folder", root))
    assert "ignored the folders val/: only train/ and test/ are read" in caplog.text
    _same(d0, load_dataset("image-folder", _tar(root, tmp_path / "messy.tar.gz")))


def test_image_folder_suffixes_are_case_insensitive(tmp_path):
    _write_tree(tmp_path / "tree", classes=("a", "b"), n_train=5, n_test=1)
    extra = np.full((6, 7), 3, np.uint8)
    _png(tmp_path / "tree" / "train" / "a" / "UPPER.PNG", extra)
    d = load_dataset("image-folder", tmp_path / "tree")
    assert len(d.y_train) + len(d.y_val) == 11
    assert extra.tobytes() in {img.numpy().tobytes() for img in torch.cat([d.x_train, d.x_val])}


def test_image_folder_without_test_split_carves_one(tmp_path):
    counts = {"a": 10, "b": 7, "c": 3}
    rng = np.random.default_rng(4)
    images = {}
    k = 0
    for cls, n in counts.items():
        for i in range(n):
            img = rng.integers(0, 256, (5, 5), dtype=np.uint8)
            img[0, 0] = k
            k += 1
            _png(tmp_path / "tree" / "train" / cls / f"{i}.png", img)
            images.setdefault(cls, []).append(img)
    runs = [load_dataset("image-folder", tmp_path / "tree", seed=s) for s in (0, 1)]
    d = runs[0]
    assert torch.bincount(d.y_test, minlength=3).tolist() == [2, 1, 1]  # round(0.2 * n_c)
    assert torch.equal(runs[1].x_test, d.x_test) and torch.equal(runs[1].y_test, d.y_test)
    assert not set(_rows(d.x_test)) & set(_rows(d.x_train, d.x_val))
    allx = np.stack([img for cls in counts for img in images[cls]])[:, None]
    ally = np.repeat(np.arange(3), list(counts.values()))
    assert _pairs(torch.cat([d.x_train, d.x_val, d.x_test]), torch.cat([d.y_train, d.y_val, d.y_test])) == _pairs(allx, ally)
    # the same tree as a tar.gz carves the same split
    _same(d, load_dataset("image-folder", _tar(tmp_path / "tree", tmp_path / "t.tgz"), seed=0))


def _folder_error(path: Path, match: str) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        load_dataset("image-folder", path)
    assert str(path) in str(info.value)
    return info.value


def test_image_folder_path_errors(tmp_path):
    with pytest.raises(DataError, match="image-folder: needs a path"):
        load_dataset("image-folder")
    _folder_error(tmp_path / "nowhere", r"nowhere: no such file or directory")
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    _folder_error(tmp_path / "notes.txt", r"notes\.txt: neither a directory nor a tar archive")
    (tmp_path / "empty.bin").write_bytes(b"")
    _folder_error(tmp_path / "empty.bin", "neither a directory nor a tar archive")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    _folder_error(tmp_path / "img.png", "neither a directory nor a tar archive")


def test_image_folder_truncated_tar_gz(tmp_path):
    _write_tree(tmp_path / "tree")
    tgz = _tar(tmp_path / "tree", tmp_path / "tree.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    _folder_error(cut, r"cut\.tar\.gz: not a readable tar archive")


def test_image_folder_empty_trees(tmp_path):
    (tmp_path / "empty").mkdir()
    _folder_error(tmp_path / "empty", r"empty: no images in train/<class>/ \(expected split/class/image files")
    _write_tree(tmp_path / "testonly")
    import shutil

    shutil.rmtree(tmp_path / "testonly" / "train")
    _folder_error(tmp_path / "testonly", "no images in train/<class>/")
    (tmp_path / "txt" / "train" / "a").mkdir(parents=True)
    (tmp_path / "txt" / "train" / "a" / "0.txt").write_text("x")
    _folder_error(tmp_path / "txt", "no images in train/<class>/")
    _folder_error(_tar(tmp_path / "txt", tmp_path / "txt.tar.gz"), "no images in train/<class>/")


@pytest.mark.parametrize("packed", [False, True], ids=["dir", "tar"])
def test_image_folder_corrupt_image_names_the_member(tmp_path, packed):
    root = tmp_path / "tree"
    _write_tree(root)
    good = (root / "train" / "bee" / "003.png").read_bytes()
    (root / "train" / "bee" / "003.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    (root / "train" / "cow" / "001.png").write_bytes(b"garbage, not a PNG")
    path = _tar(root, tmp_path / "t.tar.gz") if packed else root
    # members are decoded in order, so the first bad one is reported
    _folder_error(path, r": train/bee/003\.png: cannot decode the image")
    (root / "train" / "bee" / "003.png").write_bytes(good)
    path = _tar(root, tmp_path / "t2.tar.gz") if packed else root
    _folder_error(path, r": train/cow/001\.png: cannot decode the image")


def test_image_folder_mixed_sizes(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root, size=(6, 7))
    _png(root / "train" / "bee" / "004.png", np.zeros((7, 6), np.uint8))  # transposed size
    # members are read test/ before train/, so the first image seen is test/ant/000.png
    _folder_error(root, r"train/bee/004\.png is 7x6 \(HxW\), but test/ant/000\.png is 6x7: all images must have one size")


def test_image_folder_test_class_absent_from_train(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root)
    _png(root / "test" / "dog" / "000.png", np.zeros((6, 7), np.uint8))
    _folder_error(root, r"test/dog/000\.png: class 'dog' has no training images")
    _folder_error(_tar(root, tmp_path / "t.tar.gz"), r"test/dog/000\.png: class 'dog' has no training images")


def test_image_folder_carve_needs_two_images_per_class(tmp_path):
    _png(tmp_path / "tree" / "train" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "tree" / "train" / "b" / "0.png", np.ones((4, 4), np.uint8))
    _folder_error(tmp_path / "tree", r"too few images per class to carve a test split \(2 images\)")


# -- the real CIFAR-10 JPEG tar --------------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CACHED_CIFAR = "test-cifar10-jpg-cached"


@pytest.fixture(scope="module")
def cifar10_jpg() -> str:
    """A DATASETS name serving the image-folder loader's output for the real tar, decoded only once."""
    tar = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg" / "cifar10-jpg.tar.gz"
    if not tar.is_file():
        pytest.skip(f"real CIFAR-10 tar not found at {tar}")
    raw = DATASETS.get("image-folder")(tar)
    if _CACHED_CIFAR in DATASETS:
        DATASETS._items.pop(_CACHED_CIFAR)
    DATASETS.register(_CACHED_CIFAR, lambda path: raw)
    yield _CACHED_CIFAR
    DATASETS._items.pop(_CACHED_CIFAR, None)


def test_cifar10_jpg_tar(cifar10_jpg):
    d = load_dataset(cifar10_jpg, seed=0)
    assert d.classes == CIFAR10_CLASSES
    assert d.x_train.shape[1:] == (3, 32, 32) and d.x_test.shape == (10000, 3, 32, 32)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (40000, 10000, 10000)
    assert torch.bincount(d.y_val).tolist() == [1000] * 10
    assert torch.bincount(d.y_train).tolist() == [4000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert d.y_test.tolist()[::1000] == list(range(10))  # class by class, in file order
    for got, ref in zip(d.mean, (0.4914, 0.4822, 0.4465)):
        assert got == pytest.approx(ref, abs=0.005)
    assert not torch.equal(d.x_train[:, 0], d.x_train[:, 1])  # really colour


def test_cifar10_jpg_tar_with_limit(cifar10_jpg):
    d = load_dataset(cifar10_jpg, limit=2000, seed=0)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (1600, 400, 10000)
    assert torch.bincount(torch.cat([d.y_train, d.y_val])).tolist() == [200] * 10
    assert torch.bincount(d.y_val).tolist() == [40] * 10


def test_train_fraction_is_stratified_nested_and_leaves_val_and_test_alone(digits):
    from nago_spec.data import train_fraction

    quarter, half = train_fraction(digits, 0.25, seed=4), train_fraction(digits, 0.5, seed=4)
    assert train_fraction(digits, 1.0, seed=4) is digits
    counts = Counter(digits.y_train.tolist())
    for part, f in ((quarter, 0.25), (half, 0.5)):
        got = Counter(part.y_train.tolist())
        assert all(got[c] == math.ceil(f * n) for c, n in counts.items())
        assert torch.equal(part.x_val, digits.x_val) and torch.equal(part.x_test, digits.x_test)
        assert (part.mean, part.std) == (digits.mean, digits.std)  # the model normalises as the full run does
    assert _pairs(quarter.x_train, quarter.y_train) <= _pairs(half.x_train, half.y_train)  # nested
    assert not torch.equal(train_fraction(digits, 0.25, seed=5).x_train, quarter.x_train)
    with pytest.raises(DataError, match="0 < fraction <= 1"):
        train_fraction(digits, 1.5, seed=0)
