"""Tests of nago_spec.data: the digits and IDX loaders, the seeded stratified splits, every IDX error."""

from __future__ import annotations

import gzip
import struct
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
    names = tuple("zero one two three four five six seven eight nine".split())
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
