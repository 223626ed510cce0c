"""ONNX export of trained networks: dynamic batch, normalisation inside, metadata, checked against torch."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import statistics
import time
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
#: What an exported model takes: raw pixel values (uint8 values as float32); it normalises them itself.
INPUT_RANGE = (0, 255)


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
    ``onnx.checker.check_model(full_check=True)``. A model on an accelerator is exported from a CPU
    copy, as it is deployed; ``model`` itself stays where it is.
    """
    import onnx

    model = on_cpu(model).eval()
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
    for node in proto.graph.node:  # the exporter's debug notes (stack traces, fx nodes): half the file
        del node.metadata_props[:]
        node.doc_string = ""
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: onnx.checker rejected the model: {exc}") from exc


def on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` if it is on the CPU, else a CPU copy of it."""
    if all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers())):
        return model
    return copy.deepcopy(model).cpu()


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


def check_parity(path: Path, model: torch.nn.Module, x: torch.Tensor) -> dict[str, float | None]:
    """Check the export at ``path`` against ``model`` on raw images ``x``; raise ExportError if it is off.

    Passes when max |onnxruntime - torch| <= PARITY_TOLERANCE. A deep, barely trained network can
    amplify float32 rounding beyond that in torch itself; then both are compared with torch in
    float64, and the export passes when onnxruntime is no further from it than twice torch float32's
    own error. Returns ``{"max_abs_diff": ..., "float64_torch": ..., "float64_onnxruntime": ...}``
    (the float64 figures None when not needed).
    """
    x = x.cpu().float()
    model = on_cpu(model).eval()
    with torch.inference_mode():
        expected = model(x).numpy()
    got = onnx_session(path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if got.shape != expected.shape:
        raise ExportError(f"{path}: onnxruntime output shape {got.shape} != torch {expected.shape}")
    diff = float(np.abs(got - expected).max())
    out: dict[str, float | None] = {"max_abs_diff": diff, "float64_torch": None, "float64_onnxruntime": None}
    if diff <= PARITY_TOLERANCE:
        return out
    reference = copy.deepcopy(model).double()
    with torch.inference_mode():
        exact = reference(x.double()).numpy()
    out["float64_torch"] = float(np.abs(expected - exact).max())
    out["float64_onnxruntime"] = float(np.abs(got - exact).max())
    if out["float64_onnxruntime"] > max(PARITY_TOLERANCE, 2 * out["float64_torch"]):
        raise ExportError(
            f"{path.name}: onnxruntime differs from torch by {diff:.2e} > {PARITY_TOLERANCE} and from torch in "
            f"float64 by {out['float64_onnxruntime']:.2e} (torch float32: {out['float64_torch']:.2e})"
        )
    log.info("%s: |onnxruntime - torch| = %.2e, float32 rounding (torch itself is %.2e from float64)",
             path.name, diff, out["float64_torch"])
    return out


def latency_ms(
    path: Path, model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int, *,
    min_runs: int = 10, min_seconds: float = 0.25,
) -> dict[str, float]:
    """Median milliseconds of one forward pass at ``batch`` in onnxruntime (1 thread) and torch eager
    (the caller's threads, ``inference_mode``), the two interleaved run by run so that a busy machine
    slows both alike. Runs until both ``min_runs`` and ``min_seconds`` are reached, after 3 warm-ups.
    """
    session = onnx_session(path)
    x = torch.randint(0, 256, (batch, *input_shape), generator=torch.Generator().manual_seed(0)).float()
    feed = {INPUT_NAME: x.numpy()}
    model = on_cpu(model).eval()
    times: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
    with torch.inference_mode():
        for _ in range(3):
            session.run([OUTPUT_NAME], feed)
            model(x)
        start = time.perf_counter()
        while len(times["torch"]) < min_runs or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            session.run([OUTPUT_NAME], feed)
            times["onnxruntime"].append(time.perf_counter() - t)
            t = time.perf_counter()
            model(x)
            times["torch"].append(time.perf_counter() - t)
    return {k: round(1e3 * statistics.median(v), 4) for k, v in times.items()}


def onnx_latency_ms(paths: Mapping[str, Path], input_shape: tuple[int, ...], batch: int, *, min_runs: int = 10,
                    min_seconds: float = 0.25) -> dict[str, float]:
    """Median milliseconds of one forward pass at ``batch`` of each model of ``paths`` (label -> file;
    onnxruntime, 1 thread), interleaved run by run as latency_ms does, so a busy machine slows all alike."""
    sessions = [(label, onnx_session(p)) for label, p in paths.items()]
    x = torch.randint(0, 256, (batch, *input_shape), generator=torch.Generator().manual_seed(0)).float().numpy()
    times: dict[str, list[float]] = {name: [] for name, _ in sessions}
    for _ in range(3):
        for _, s in sessions:
            s.run([OUTPUT_NAME], {INPUT_NAME: x})
    start = time.perf_counter()
    while min(len(v) for v in times.values()) < min_runs or time.perf_counter() - start < min_seconds:
        for name, s in sessions:
            t = time.perf_counter()
            s.run([OUTPUT_NAME], {INPUT_NAME: x})
            times[name].append(time.perf_counter() - t)
    return {k: round(1e3 * statistics.median(v), 4) for k, v in times.items()}
