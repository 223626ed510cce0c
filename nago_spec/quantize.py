"""Quantised twins of exported models: int8 (static, QDQ, per-channel weights, calibrated on a seeded,
stratified sample of training images) and fp16, both by onnxruntime's tools, each checked and measured.

The exported float32 file is never touched: a quantised model is written beside it, with the same
``nago.*`` metadata and its scheme in ``nago.quantization``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nago_spec.errors import ExportError

log = logging.getLogger(__name__)

#: The schemes ``[export] quantize`` may name.
SCHEMES = ("int8", "fp16")
#: Calibration images of an int8 model (``[export] calibration_images``; the in-trial objective's too).
CALIBRATION_IMAGES = 512
#: Images per onnxruntime call when measuring or calibrating.
BATCH = 256


def suffix(scheme: str) -> str:
    """The file suffix of a ``scheme`` twin: ``trial_3_s0.onnx`` -> ``trial_3_s0.int8.onnx``."""
    return f".{scheme}.onnx"


def calibration_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``min(n, len(y))`` indices of ``y``, stratified: each class in proportion to its share, drawn
    with ``seed``, so the same seed gives the same images (and so the same scales)."""
    y = np.asarray(y)
    n = min(int(n), len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / len(y) * n).astype(int)
    # the remainder goes to the classes with the largest fractional shares (ties: the smaller label)
    rest = n - quota.sum()
    order = np.argsort(-(counts / len(y) * n - quota), kind="stable")
    quota[order[:rest]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


class _Images:
    """onnxruntime's CalibrationDataReader over float32 raw images, BATCH at a time."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: images[i:i + BATCH]} for i in range(0, len(images), BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _metadata(path: Path) -> dict[str, str]:
    """The model's metadata_props; ExportError when ``path`` is not a readable ONNX model."""
    import onnx

    try:
        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, OSError: not a model to quantise
        raise ExportError(f"{path.name}: not a readable ONNX model: {type(exc).__name__}: {exc}") from None


def compact_names(model: Any) -> None:
    """Give every tensor but the graph's input and output a short name (``t1f``), drop the node names
    and the nodes' debug metadata: a quantised graph's generated names (``..._quantized_scale``)
    otherwise weigh as much as its int8 weights."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    short: dict[str, str] = {}

    def name(old: str) -> str:
        if old in keep:
            return old
        return short.setdefault(old, f"t{len(short):x}")

    for t in graph.initializer:
        t.name = name(t.name)
    for v in graph.value_info:
        v.name = name(v.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        del node.metadata_props[:]
        node.input[:] = [name(x) for x in node.input]
        node.output[:] = [name(x) for x in node.output]


def _finish(dst: Path, metadata: Mapping[str, str], scheme: dict[str, Any]) -> None:
    """Give ``dst`` the parent's metadata and its scheme, save it and check it (full check)."""
    import onnx

    model = onnx.load(str(dst))
    compact_names(model)
    del model.metadata_props[:]
    for key, value in {**metadata, "nago.quantization": json.dumps(scheme, sort_keys=True)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save_model(model, str(dst))
    try:
        onnx.checker.check_model(str(dst), full_check=True)
    except onnx.checker.ValidationError as exc:
        dst.unlink(missing_ok=True)
        raise ExportError(f"{dst.name}: onnx.checker rejected the {scheme['scheme']} model: "
                          f"{str(exc).splitlines()[0]}") from None


def quantize_int8(src: Path, dst: Path, images: np.ndarray, *, seed: int | None = None) -> dict[str, Any]:
    """Write the static int8 twin of the float32 model ``src`` to ``dst``: QDQ format, per-channel
    symmetric int8 weights, uint8 activations, MinMax ranges calibrated on ``images`` (float32 raw
    pixels, as the model takes them). Returns its scheme (also in its ``nago.quantization``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from nago_spec.export import INPUT_NAME

    scheme = {"scheme": "int8", "format": "QDQ", "weights": "int8, per channel, symmetric",
              "activations": "uint8, per tensor, asymmetric", "calibration": "MinMax",
              "calibration_images": int(len(images)), "calibration_seed": seed}
    metadata = _metadata(src)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference and constant folding (BatchNorm into its conv) before quantising
            quant_pre_process(str(src), str(pre))
        except Exception as exc:  # noqa: BLE001 - the model quantises without it, only less well
            log.debug("%s: quantisation pre-processing skipped: %s", src.name, exc)
            pre = src
        try:
            quantize_static(str(pre), str(dst), _Images(np.ascontiguousarray(images, np.float32), INPUT_NAME),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; each means "cannot quantise"
            dst.unlink(missing_ok=True)
            raise ExportError(f"{src.name}: onnxruntime could not quantise it to int8: {type(exc).__name__}: "
                              f"{exc}") from None
    _finish(dst, metadata, scheme)
    return scheme


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write the float16 twin of ``src`` to ``dst``: weights and arithmetic in float16, the input and
    output kept float32, so it takes the same images."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    scheme = {"scheme": "fp16", "weights": "float16", "activations": "float16", "io": "float32"}
    metadata = _metadata(src)
    try:
        with _quiet():
            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
            OnnxModel(model).topological_sort()  # the converter appends the input casts after their users
        onnx.save_model(model, str(dst))
    except Exception as exc:  # noqa: BLE001
        dst.unlink(missing_ok=True)
        raise ExportError(f"{src.name}: could not convert it to float16: {type(exc).__name__}: {exc}") from None
    _finish(dst, metadata, scheme)
    return scheme


def make_twin(scheme: str, src: Path, images: np.ndarray | None, seed: int | None = None) -> tuple[Path, dict]:
    """The ``scheme`` twin of ``src`` beside it, and its scheme description."""
    dst = src.with_name(src.name.removesuffix(".onnx") + suffix(scheme))
    if scheme == "int8":
        return dst, quantize_int8(src, dst, images, seed=seed)
    if scheme == "fp16":
        return dst, convert_fp16(src, dst)
    raise ValueError(f"unknown quantisation scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


def predict_labels(path: Path, x: np.ndarray) -> np.ndarray:
    """Top-1 class of each raw image in ``x`` by the model at ``path`` (onnxruntime, 1 thread)."""
    from nago_spec.export import INPUT_NAME, OUTPUT_NAME, onnx_session

    session = onnx_session(path)
    x = np.ascontiguousarray(x, np.float32)
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + BATCH]})[0] for i in range(0, len(x), BATCH)]
    logits = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    if not np.isfinite(logits).all():
        raise ExportError(f"{path.name}: non-finite outputs in onnxruntime")
    return logits.argmax(axis=1)


def weight_bytes(path: Path) -> int:
    """Bytes of the model's initializers (its weights, scales and zero points), as stored."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


def int8_error(model: Any, x_train: Any, y_train: Any, x_val: Any, y_val: Any, seed: int,
               calibration_images: int = CALIBRATION_IMAGES) -> float:
    """Validation error of ``model`` (a trained torch module taking raw images) once post-training
    quantised to int8 as the export quantises it, calibrated on ``calibration_images`` stratified
    training images drawn with ``seed``. The network goes to ONNX through torch's fast TorchScript
    exporter (about 0.2 s against the exporter's 3 to 5 s); the export itself uses the latter."""
    import torch

    from nago_spec.export import INPUT_NAME, OUTPUT_NAME, export_onnx, on_cpu

    model = on_cpu(model).eval()
    x_train, y_train = np.asarray(x_train.cpu()), np.asarray(y_train.cpu())
    x_val, y_val = np.asarray(x_val.cpu(), np.float32), np.asarray(y_val.cpu())
    calib = x_train[calibration_indices(y_train, calibration_images, seed)].astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        try:
            with warnings.catch_warnings(), _quiet():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(2, *x_val.shape[1:]),), str(src), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}},
                                  opset_version=17, dynamo=False)
        except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter: the slow one
            export_onnx(model, src, input_shape=tuple(x_val.shape[1:]))
        quantize_int8(src, dst, calib, seed=seed)
        predicted = predict_labels(dst, x_val)
    return float((predicted != y_val).mean())


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantisation tools log and print about every node; keep the user's output clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
