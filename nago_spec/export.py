"""ONNX export of trained networks: dynamic batch, normalisation inside, metadata, checked against torch."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from nago_spec.errors import ExportError

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: The largest |onnxruntime - torch| logit difference an export may show on real images.
PARITY_TOLERANCE = 1e-4


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    *,
    input_shape: tuple[int, int, int],
    opset: int = 20,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``model`` (input float32 [batch x C x H x W] raw pixels in [0, 255]) to ``path``.

    The batch axis is dynamic; ``metadata`` lands in the model's metadata_props. The file must pass
    ``onnx.checker.check_model(full_check=True)``.
    """
    import onnx

    model = model.eval()
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        # the exporter reports its progress on stdout and warns about its own internals
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean the same to the user
        raise ExportError(f"{path.name}: torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: onnx.checker rejected the model: {exc}") from exc


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Raise a logger to ERROR for the duration (the exporter logs about optional torchvision ops)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnx_session(path: Path):
    """An onnxruntime CPU session with one thread (the deployment setting we measure)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def parity(path: Path, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Max |onnxruntime - torch| over the logits of raw images ``x`` (uint8 or float, N x C x H x W)."""
    x = x.float()
    model = model.eval()
    with torch.inference_mode():
        expected = model(x).numpy()
    got = onnx_session(path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy().astype(np.float32)})[0]
    if got.shape != expected.shape:
        raise ExportError(f"{path}: onnxruntime output shape {got.shape} != torch {expected.shape}")
    return float(np.abs(got - expected).max())
