"""In-memory image data sets: registered loaders, then a seeded, stratified train/validation split."""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import math
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nago_spec.errors import DataError
from nago_spec.registry import DATASETS as _DATASETS

log = logging.getLogger(__name__)

#: What a loader returns: ``x_train`` uint8 ``N x C x H x W``, ``y_train`` int ``N``, ``x_test``,
#: ``y_test`` (the same layout) and the class names, index i naming label i. Arrays may be numpy
#: arrays or torch tensors.
LoaderOutput = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]
Loader = Callable[[Path | None], LoaderOutput]

#: Data set name (``[data].dataset`` in a spec) -> loader ``(path) -> LoaderOutput``; the built-ins
#: below are registered there by reference, so a spec names them without importing this module.
DATASETS = _DATASETS

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: The seed of the digits test split. Fixed on purpose: the test set must not depend on the run seed.
DIGITS_TEST_SEED = 20240917
DIGITS_TEST_FRACTION = 0.2
#: The same for an .npz or image folder without a test split of its own.
CARVED_TEST_SEED = DIGITS_TEST_SEED
CARVED_TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set held in memory, already split.

    ``x_*`` are uint8 ``N x C x H x W`` raw pixels, ``y_*`` int64 ``N`` labels in ``[0, num_classes)``.
    ``x_val`` is carved from the training split (seeded and stratified); ``x_test`` is the data set's
    own test split, never touched by the search. ``mean`` / ``std`` are per channel on the [0, 1]
    scale, computed on ``x_train`` only (population std).
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        c, (h, w) = self.in_channels, self.image_size
        return (
            f"Dataset(name={self.name!r}, input={c}x{h}x{w}, classes={self.num_classes}, "
            f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)})"
        )


def load_dataset(
    name: str,
    path: Path | str | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    classes: tuple[str, ...] | None = None,
) -> Dataset:
    """Load data set ``name`` (a DATASETS key) and split it.

    ``limit`` first subsamples the training split to that many images (stratified, seeded, the
    class proportions kept); then ``round(val_fraction * n_c)`` images of each class c go to the
    validation split (seeded by ``seed``; at least one image per class stays in training).
    ``classes`` renames the classes and must have one name per class. The test split is never
    subsampled or reshuffled. Raises RegistryError for an unknown name, DataError for unusable data.
    """
    loader = DATASETS.get(name)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{name}: `0 < val_fraction < 1` must hold, but got val_fraction={val_fraction}")
    if limit is not None and limit < 1:
        raise DataError(f"{name}: `limit >= 1` must hold, but got limit={limit}")
    where = f"{name} ({path})" if path is not None else name
    x_train, y_train, x_test, y_test, names = loader(Path(path) if path is not None else None)
    x_train, y_train = _checked(where, "train", x_train, y_train, len(names))
    x_test, y_test = _checked(where, "test", x_test, y_test, len(names))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}")
    if classes is not None:
        if len(classes) != len(names):
            raise DataError(
                f"{where}: classes has {len(classes)} names but the data set has {len(names)} classes "
                f"(labels 0..{len(names) - 1})"
            )
        names = tuple(classes)

    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(y_train):
        keep = _stratified_subsample(y_train, limit, rng)
        x_train, y_train = x_train[keep], y_train[keep]
    val = _stratified_pick(y_train, val_fraction, rng)
    if not val.any():
        raise DataError(
            f"{where}: val_fraction={val_fraction} of {len(y_train)} training images leaves an empty "
            "validation split (each class rounds to 0)"
        )
    x_val, y_val = x_train[val], y_train[val]
    x_train, y_train = x_train[~val], y_train[~val]
    mean, std = _channel_stats(x_train)
    log.debug("%s: %d train, %d val, %d test images", where, len(y_train), len(y_val), len(y_test))
    return Dataset(
        name=name,
        x_train=_tensor(x_train),
        y_train=_tensor(y_train),
        x_val=_tensor(x_val),
        y_val=_tensor(y_val),
        x_test=_tensor(x_test),
        y_test=_tensor(y_test),
        classes=tuple(names),
        mean=mean,
        std=std,
    )


def train_fraction(data: Dataset, fraction: float, seed: int) -> Dataset:
    """``data`` with its training split cut to ``ceil(fraction * n_c)`` images of each class c (so at
    least one), the rest unchanged: the data-fraction budget of a multi-fidelity search.

    The subsets are nested: each class's images are taken in one fixed order drawn from ``seed``,
    so a larger fraction holds every image of a smaller one.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"{data.name}: `0 < fraction <= 1` must hold, but got fraction={fraction}")
    if fraction == 1.0:
        return data
    y = data.y_train.cpu().numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.append(idx[: math.ceil(round(fraction * len(idx), 9))])
    order = torch.from_numpy(np.sort(np.concatenate(keep))).to(data.x_train.device)
    return dataclasses.replace(data, x_train=data.x_train[order], y_train=data.y_train[order])


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor owning writable, contiguous memory (loaders may hand out read-only views of file bytes),
    with row-major strides even along size-1 dimensions (numpy leaves those arbitrary, and a
    1-channel image batch's strides decide which memory format a convolution uses)."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, order="C")
    return torch.from_numpy(a).view(-1).view(a.shape)


# -- splitting -------------------------------------------------------------------------------------


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def _stratified_pick(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over ``y`` choosing ``round(fraction * n_c)`` items of each class c at random.

    At most ``n_c - 1`` items are chosen from a class, so every class keeps an unpicked item.
    """
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(int(_round_half_up(np.float64(fraction * len(idx)))), len(idx) - 1)
        mask[rng.permutation(idx)[:k]] = True
    return mask


def _stratified_subsample(y: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``limit`` items of ``y``, each class in proportion (largest remainders)."""
    labels, counts = np.unique(y, return_counts=True)
    quota = counts * (limit / len(y))
    take = np.floor(quota).astype(np.int64)
    # Hand the leftover items to the classes with the largest remainders (ties to the lower label).
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: limit - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(labels, take)]
    return np.sort(np.concatenate(chosen))


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 ``N x C x H x W`` on the [0, 1] scale.

    Exact integer sums, in chunks, so a 60k-image set needs no float copy of itself.
    """
    c = x.shape[1]
    s = np.zeros(c, dtype=np.int64)
    s2 = np.zeros(c, dtype=np.int64)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.int64)
        s += part.sum(axis=(0, 2, 3))
        s2 += np.square(part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = s / n
    var = np.maximum(s2 / n - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 255.0)  # a constant channel: scale 1 instead of dividing by zero
    return tuple(float(m / 255.0) for m in mean), tuple(float(v / 255.0) for v in std)


def _checked(where: str, split: str, x: object, y: object, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A loader's split as (uint8 ``N x C x H x W``, int64 ``N``) numpy arrays, or a DataError saying why not."""
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"{where}: {split} images must be uint8 [N, C, H, W], but got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: {split} labels must be integers [N], but got {y.dtype} {list(y.shape)}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} {split} images but {len(y)} {split} labels")
    if len(y) == 0:
        raise DataError(f"{where}: the {split} split is empty")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{where}: {split} labels range over {lo}..{hi}, but there are {num_classes} classes")
    return x, y.astype(np.int64, copy=False)


# -- loaders ---------------------------------------------------------------------------------------


def _load_digits(path: Path | None) -> LoaderOutput:
    """scikit-learn's 1797 8x8 digits (values 0..16 scaled to 0..255), with a fixed 20 % test split."""
    if path is not None:
        raise DataError(f"digits: takes no path (it ships with scikit-learn), but got {path}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    test = _stratified_pick(y, DIGITS_TEST_FRACTION, np.random.default_rng(DIGITS_TEST_SEED))
    return x[~test], y[~test], x[test], y[test], tuple(str(i) for i in range(10))


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def _load_idx(path: Path | None) -> LoaderOutput:
    """A directory of MNIST-format IDX files, gzipped (``.gz``) or raw.

    Class names are "0".."K-1" (K = largest label + 1), or Fashion-MNIST's names when the directory's
    name contains "fashion".
    """
    if path is None:
        raise DataError("idx: needs a path (a directory of MNIST-format IDX files)")
    if not path.is_dir():
        raise DataError(f"idx: {path}: no such directory")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, stem in _IDX_FILES.items():
        for candidate in (path / f"{stem}.gz", path / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    if missing:
        raise DataError(
            f"idx: {path}: missing {', '.join(missing)}; expected the four MNIST-format files "
            f"{', '.join(s + '[.gz]' for s in _IDX_FILES.values())}"
        )
    x_train = _read_idx_images(found["train_images"])
    y_train = _read_idx_labels(found["train_labels"])
    x_test = _read_idx_images(found["test_images"])
    y_test = _read_idx_labels(found["test_labels"])
    for xs, ys, xf, yf in ((x_train, y_train, "train_images", "train_labels"),
                           (x_test, y_test, "test_images", "test_labels")):
        if len(xs) != len(ys):
            raise DataError(f"idx: {found[xf]} holds {len(xs)} images but {found[yf].name} holds {len(ys)} labels")
    k = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    if "fashion" in path.resolve().name.lower() and k <= len(FASHION_MNIST_CLASSES):
        names = FASHION_MNIST_CLASSES
    else:
        names = tuple(str(i) for i in range(k))
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), names


def _read_bytes(file: Path) -> bytes:
    """The file's content, gunzipped when its name ends in .gz."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"idx: {file}: cannot read: {exc}") from exc
    if file.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"idx: {file}: not a valid gzip file ({exc})") from exc


def _read_idx(file: Path, magic: int, ndim: int, what: str) -> np.ndarray:
    """An IDX file of unsigned bytes as a numpy array of its declared shape (a view of the file's bytes)."""
    data = _read_bytes(file)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"idx: {file}: truncated: {len(data)} bytes, shorter than the {header}-byte IDX header")
    (got,) = struct.unpack(">I", data[:4])
    if got != magic:
        raise DataError(f"idx: {file}: magic number 0x{got:08x}, expected 0x{magic:08x} ({what})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    need = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < need:
        raise DataError(
            f"idx: {file}: truncated: {len(data)} bytes, the header {list(dims)} needs {need}"
        )
    if len(data) > need:
        raise DataError(f"idx: {file}: {len(data) - need} bytes after the {list(dims)} payload (corrupt file?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_images(file: Path) -> np.ndarray:
    """uint8 ``N x 1 x H x W`` (read-only view; the split copies it)."""
    x = _read_idx(file, _IDX_IMAGES_MAGIC, 3, "uint8 images, 3 dimensions")
    return x[:, None, :, :]


def _read_idx_labels(file: Path) -> np.ndarray:
    """uint8 ``N``."""
    return _read_idx(file, _IDX_LABELS_MAGIC, 1, "uint8 labels, 1 dimension")


# -- npz -------------------------------------------------------------------------------------------


def _carve_test(where: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)``: a stratified CARVED_TEST_FRACTION of ``x`` set aside as test.

    The seed is CARVED_TEST_SEED, not the run seed, so the test split is the same in every run.
    """
    test = _stratified_pick(y, CARVED_TEST_FRACTION, np.random.default_rng(CARVED_TEST_SEED))
    if not test.any():
        raise DataError(f"{where}: too few images per class to carve a test split ({len(y)} images)")
    log.info("%s: no test split of its own; carved a stratified %.0f %% of the training images",
             where, 100 * CARVED_TEST_FRACTION)
    return x[~test], y[~test], x[test], y[test]


def _as_nchw(where: str, name: str, x: np.ndarray) -> np.ndarray:
    """uint8 images ``N x H x W``, ``N x H x W x C`` (C in 1, 3, 4 and H > 4) or ``N x C x H x W`` as NCHW."""
    if x.dtype != np.uint8:
        raise DataError(f"{where}: '{name}' must hold uint8 pixels (0..255), but got {x.dtype} "
                        "(scale and cast it: (x * 255).round().astype(np.uint8) for floats in [0, 1])")
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim != 4:
        raise DataError(f"{where}: '{name}' must be images [N, H, W], [N, H, W, C] or [N, C, H, W], "
                        f"but got shape {list(x.shape)}")
    if x.shape[3] in (1, 3, 4) and x.shape[1] > 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _load_npz(path: Path | None) -> LoaderOutput:
    """A NumPy ``.npz`` file with arrays ``x`` (uint8 images) and ``y`` (integer labels), optionally
    ``x_test`` and ``y_test``, and ``classes`` (one name per label).

    Images may be ``N x H x W`` (grey), ``N x H x W x C`` (C = 1, 3 or 4) or ``N x C x H x W``. Without
    ``x_test`` / ``y_test`` a seeded, stratified 20 % of ``x`` becomes the test split (seed
    CARVED_TEST_SEED, the same in every run), so the search never sees it. Class names default to
    "0".."K-1", K = largest label + 1.
    """
    if path is None:
        raise DataError("npz: needs a path (an .npz file with arrays x and y)")
    if not path.is_file():
        raise DataError(f"npz: {path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"npz: {path}: not a readable .npz file ({exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: one bare array
        raise DataError(f"npz: {path}: not a readable .npz file (it holds one {type(loaded).__name__}, not named "
                        "arrays; save with np.savez(path, x=..., y=...))")
    where = f"npz: {path}"
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{where}: missing array {', '.join(repr(k) for k in missing)}; "
                        f"holds {', '.join(repr(k) for k in arrays) or 'no arrays'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{where}: holds {'x_test' if 'x_test' in arrays else 'y_test'} without "
                        f"{'y_test' if 'x_test' in arrays else 'x_test'}: give both or neither")
    splits = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays else [])
    out: list[np.ndarray] = []
    for xk, yk in splits:
        x, y = _as_nchw(where, xk, arrays[xk]), arrays[yk]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: '{yk}' must be integer labels [N], but got {y.dtype} {list(y.shape)}")
        if len(x) != len(y):
            raise DataError(f"{where}: {len(x)} images in '{xk}' but {len(y)} labels in '{yk}'")
        if len(y) and int(y.min()) < 0:
            raise DataError(f"{where}: '{yk}' holds negative labels (min {int(y.min())})")
        out += [x, y.astype(np.int64)]
    if len(out) == 2:
        out = list(_carve_test(where, out[0], out[1]))
    k = int(max(out[1].max(initial=0), out[3].max(initial=0))) + 1
    names = tuple(str(i) for i in range(k))
    if "classes" in arrays:
        given = arrays["classes"]
        if given.ndim != 1 or given.dtype.kind not in "US" or len(given) != k:
            raise DataError(f"{where}: 'classes' must be {k} strings (one per label 0..{k - 1}), "
                            f"but got {given.dtype} {list(given.shape)}")
        names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in given.tolist())
    return out[0], out[1], out[2], out[3], names


# -- image folders ---------------------------------------------------------------------------------


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
_GREY_MODES = ("1", "L", "LA", "I", "F")


def _pixels(img) -> tuple[np.ndarray, bool]:
    """``(uint8 H x W or H x W x 3, grey)`` of a PIL image. 16-bit grey is scaled to 8 bits (not
    clipped); a palette or colour image whose three channels are equal counts as grey."""
    if img.mode.startswith("I;16"):
        return (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), True
    if img.mode in _GREY_MODES:
        return np.asarray(img.convert("L")), True
    rgb = np.asarray(img.convert("RGB"))
    if img.mode in ("P", "PA") and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0]), True
    return rgb, False


def _folder_members(path: Path) -> list[tuple[str, str, str, Callable[[], bytes]]]:
    """``(split, class, name, read)`` for every image ``[root/]split/class/name`` under a directory or in
    a tar, sorted; a directory and the tar of it give the same members.

    The members may sit under one common folder (a tar of ``cifar10/train/...``); two different
    roots holding ``train/`` are refused rather than merged.
    """
    found: list[tuple[tuple[str, ...], str, str, str, Callable[[], bytes]]] = []

    def keep(parts: tuple[str, ...]) -> bool:
        return (len(parts) >= 3 and not any(p.startswith(".") for p in parts)
                and parts[-1].lower().endswith(IMAGE_SUFFIXES))

    if path.is_dir():
        for file in sorted(path.rglob("*")):
            parts = file.relative_to(path).parts
            if keep(parts) and file.is_file():
                found.append((parts[:-3], *parts[-3:], file.read_bytes))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:  # sequential: a .tar.gz is read in one pass, nothing goes to disk
                    parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                    if member.isfile() and keep(parts):
                        blob = tar.extractfile(member).read()
                        found.append((parts[:-3], *parts[-3:], lambda blob=blob: blob))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"image-folder: {path}: not a readable tar archive ({exc})") from exc
    roots = sorted({m[0] for m in found if m[1] == "train"})
    if len(roots) > 1:
        shown = ", ".join("/".join((*r, "train")) for r in roots[:3])
        raise DataError(f"image-folder: {path}: {len(roots)} folders hold train/ ({shown}); give the path of one")
    if roots:
        found = [m for m in found if m[0] == roots[0]]
    return sorted((m[1:] for m in found), key=lambda m: m[:3])


def _load_image_folder(path: Path | None) -> LoaderOutput:
    """Images in ``train/<class>/<file>`` and ``test/<class>/<file>``, in a directory or a tar archive
    (``.tar``, ``.tar.gz``, ``.tgz``; read straight from the archive, nothing is extracted).

    Class names, and so labels, are the sorted class directory names of ``train``. Files are decoded
    with PIL (suffixes IMAGE_SUFFIXES; other files and dot-files are skipped); grey images stay one
    channel unless any image has colour, then all are RGB. Every image must have the same size. Without
    a ``test`` split a seeded, stratified 20 % of ``train`` is set aside as test (as for npz); splits
    other than train and test are ignored.
    """
    from PIL import Image, UnidentifiedImageError

    if path is None:
        raise DataError("image-folder: needs a path (a directory or .tar.gz of split/class/image files)")
    if not path.exists():
        raise DataError(f"image-folder: {path}: no such file or directory")
    if not path.is_dir() and not tarfile.is_tarfile(path):
        raise DataError(f"image-folder: {path}: neither a directory nor a tar archive (.tar, .tar.gz, .tgz)")
    members = _folder_members(path)
    where = f"image-folder: {path}"
    classes = tuple(sorted({c for s, c, _, _ in members if s == "train"}))
    if not classes:
        raise DataError(f"{where}: no images in train/<class>/ (expected split/class/image files, "
                        f"suffixes {', '.join(IMAGE_SUFFIXES)})")
    label = {c: i for i, c in enumerate(classes)}
    ignored = sorted({s for s, _, _, _ in members} - {"train", "test"})
    if ignored:
        log.warning("%s: ignored the folders %s: only train/ and test/ are read (the validation split is "
                    "carved from train/)", where, ", ".join(f"{s}/" for s in ignored))
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    first: tuple[str, tuple[int, int]] | None = None
    colour = False
    for split, cls, name, read in members:
        if split not in images:
            continue
        member = f"{split}/{cls}/{name}"
        if cls not in label:
            raise DataError(f"{where}: {member}: class '{cls}' has no training images")
        try:
            with Image.open(io.BytesIO(read())) as img:
                img.load()
                pixels, grey = _pixels(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{where}: {member}: cannot decode the image ({exc})") from exc
        size = pixels.shape[:2]
        if first is None:
            first = (member, size)
        elif size != first[1]:
            raise DataError(f"{where}: {member} is {size[0]}x{size[1]} (HxW), but {first[0]} is "
                            f"{first[1][0]}x{first[1][1]}: all images must have one size")
        colour |= not grey
        images[split].append(pixels)
        labels[split].append(label[cls])

    def stack(split: str) -> np.ndarray:
        hwc = [p[:, :, None] if p.ndim == 2 else p for p in images[split]]
        if colour:
            hwc = [np.repeat(p, 3, axis=2) if p.shape[2] == 1 else p for p in hwc]
        return np.ascontiguousarray(np.stack(hwc).transpose(0, 3, 1, 2))

    x, y = stack("train"), np.asarray(labels["train"], dtype=np.int64)
    if not labels["test"]:
        return (*_carve_test(where, x, y), classes)
    return x, y, stack("test"), np.asarray(labels["test"], dtype=np.int64), classes
