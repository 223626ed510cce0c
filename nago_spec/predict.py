"""Classify image files or .npy batches with an exported ONNX classifier (onnxruntime, one thread)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nago_spec.errors import DataError, NagoError
from nago_spec.export import onnx_session

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"})
#: Images per onnxruntime call (models with a dynamic batch axis).
BATCH_SIZE = 256
#: The input range of a model whose metadata does not say (nago-spec exports take raw pixels).
DEFAULT_RANGE = (0, 255)
_RANGES = ((0, 255), (0, 1))


def predict(model: Path, inputs: Sequence[Path], *, top: int = 1) -> list[dict[str, Any]]:
    """The ``top`` most probable classes of every image in ``inputs``, in order.

    ``model`` is an ONNX classifier with one float32 input ``batch x C x H x W`` and logits
    ``batch x K``; its metadata may name the classes (``nago.classes``, a JSON list) and the input
    range (``nago.input_range``, ``[0, 255]`` or ``[0, 1]``; default ``[0, 255]``). ``inputs`` are
    image files (Pillow) or ``.npy`` arrays. Returns one dict per image:
    ``{"source": "digit.png" or "batch.npy[3]", "top": [{"class", "index", "probability"}, ...]}``,
    probabilities by softmax of the logits, most probable first.

    Raises DataError for an input that does not exist or cannot be used (bad input: the command
    line exits 2) and NagoError for a model it cannot use.
    """
    if top < 1:
        raise NagoError(f"top must be >= 1, got {top}")
    for path in (model, *inputs):
        if not Path(path).is_file():
            raise DataError(f"{path}: no such file")
    session, shape, batch_size, classes, divisor = _open(Path(model))
    sources: list[str] = []
    arrays: list[np.ndarray] = []
    resized: list[str] = []
    for path in map(Path, inputs):
        suffix = path.suffix.lower()
        if suffix == ".npy":
            x, names = _load_npy(path, shape, divisor)
        elif suffix in IMAGE_SUFFIXES:
            x, was_resized = _load_image(path, shape, divisor)
            names = [str(path)]
            if was_resized:
                resized.append(str(path))
        else:
            raise DataError(f"{path}: unknown suffix {path.suffix!r}: expected .npy or an image "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        sources += names
        arrays.append(x)
    if resized:
        log.warning("resized %d image(s) to %dx%d with bilinear resampling (first: %s)",
                    len(resized), shape[2], shape[1], resized[0])
    if not arrays:
        return []
    x = np.concatenate(arrays)
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)])
    if logits.ndim != 2 or len(logits) != len(x):
        raise NagoError(f"{model}: the output has shape {list(logits.shape)}, expected [{len(x)}, classes]")
    if classes is None:
        classes = [str(i) for i in range(logits.shape[1])]
    elif len(classes) != logits.shape[1]:
        raise NagoError(f"{model}: nago.classes names {len(classes)} classes but the output has {logits.shape[1]}")
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :top]
    return [
        {"source": source, "top": [{"class": classes[j], "index": int(j), "probability": float(row[j])} for j in best]}
        for source, row, best in zip(sources, p, order)
    ]


def _open(model: Path) -> tuple[Any, tuple[int, int, int], int, list[str] | None, float]:
    """The session, its input ``(C, H, W)``, images per call, the class names (None: unnamed) and what
    uint8 pixels are divided by to reach the model's range (1 or 255)."""
    try:
        session = onnx_session(model)
    except Exception as exc:  # onnxruntime raises its own types for every unreadable model
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        raise NagoError(f"{model}: onnxruntime cannot load it: {first}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise NagoError(f"{model}: the model has {len(inputs)} inputs, expected one image input")
    dims = inputs[0].shape
    if inputs[0].type != "tensor(float)" or len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
        raise NagoError(f"{model}: input {inputs[0].name!r} is {inputs[0].type} {dims}, "
                        "expected float32 [batch, C, H, W] with static C, H, W")
    batch_size = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else BATCH_SIZE
    meta = session.get_modelmeta().custom_metadata_map
    try:
        classes = json.loads(meta["nago.classes"]) if "nago.classes" in meta else None
        lo, hi = json.loads(meta["nago.input_range"]) if "nago.input_range" in meta else DEFAULT_RANGE
    except (ValueError, TypeError) as exc:
        raise NagoError(f"{model}: unreadable metadata: {exc}") from exc
    if (lo, hi) not in _RANGES:
        raise NagoError(f"{model}: nago.input_range = {[lo, hi]}, expected [0, 255] or [0, 1]")
    if classes is not None and not isinstance(classes, list):
        raise NagoError(f"{model}: nago.classes = {meta['nago.classes']!r}, expected a JSON list of names")
    names = None if classes is None else [str(c) for c in classes]
    return session, tuple(dims[1:]), batch_size, names, 255 / hi


def _load_image(path: Path, shape: tuple[int, int, int], divisor: float) -> tuple[np.ndarray, bool]:
    """One image file as float32 ``1 x C x H x W`` in the model's range, and whether it was resized."""
    from PIL import Image

    c, h, w = shape
    if c not in (1, 3):
        raise DataError(f"{path}: the model takes {c} channels; image files give 1 (grey) or 3 (RGB)")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
    except OSError as exc:  # PIL.UnidentifiedImageError included
        raise DataError(f"{path}: cannot read the image: {exc}") from exc
    resized = img.size != (w, h)
    if resized:
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.uint8).reshape(h, w, c).transpose(2, 0, 1)
    return x[None].astype(np.float32) / divisor, resized


def _load_npy(path: Path, shape: tuple[int, int, int], divisor: float) -> tuple[np.ndarray, list[str]]:
    """A .npy file as float32 ``N x C x H x W`` in the model's range, and one source name per image.

    Accepts ``N x C x H x W``, ``N x H x W x C``, ``N x H x W`` (one channel) and one image ``C x H x W``
    or ``H x W`` (one channel); uint8 arrays hold pixels in [0, 255], float arrays values in the model's range.
    """
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the array: {exc}") from exc
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: dtype {x.dtype}, expected uint8 or float")
    c, h, w = shape
    single = False
    if x.ndim == 4 and x.shape[1:] == (c, h, w):
        pass
    elif x.ndim == 4 and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    elif x.ndim == 3 and x.shape == (c, h, w):
        x, single = x[None], True
    elif x.ndim == 2 and c == 1 and x.shape == (h, w):
        x, single = x[None, None], True
    else:
        expected = [f"[N, {c}, {h}, {w}]", f"[N, {h}, {w}, {c}]", f"[{c}, {h}, {w}]"]
        if c == 1:
            expected += [f"[N, {h}, {w}]", f"[{h}, {w}]"]
        raise DataError(f"{path}: array of shape {list(x.shape)} does not fit the model's input {c}x{h}x{w}: "
                        f"expected {' or '.join(expected)}")
    if len(x) == 0:
        raise DataError(f"{path}: the array holds no images (shape {list(x.shape)})")
    x = x.astype(np.float32) / divisor if x.dtype == np.uint8 else x.astype(np.float32)
    names = [str(path)] if single else [f"{path}[{i}]" for i in range(len(x))]
    return x, names
