"""What runs inside a worker: one torch thread, cached spec, data and evaluator, failures as data."""

from __future__ import annotations

import functools
import hashlib
import socket
import traceback
from pathlib import Path
from typing import Any

from nago_spec.errors import NagoError


def init_worker() -> None:
    """Initializer of every worker process: one torch thread (two collapse on a busy 2-core machine),
    and an allocator that keeps freed activations for the next step."""
    import torch

    torch.set_num_threads(1)
    keep_freed_memory()


#: mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve activation-sized blocks from its heap and never hand freed memory back.

    By default glibc maps every block above its mmap threshold (128 KiB, raised only as blocks are
    freed) straight from the kernel and unmaps it on free, so each training step page-faults its
    activations afresh: half of a step's time on narrow many-op networks (benchmarks/bench_network.py:
    530 ms against 1050 ms a step for a 300-op network at batch 128). Memory then stays at its peak
    per process, which is what a training worker needs anyway. Returns False where malloc is not
    glibc's (macOS, musl), changing nothing.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # older glibc refuses thresholds above 32 MiB; blocks larger than that are rare and costly anyway
    mapped = mallopt(_M_MMAP_THRESHOLD, 256 << 20) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    return bool(mapped and mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def _version(path: str) -> str:
    """The file's content hash: caches below must not outlive a rewritten spec.toml."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _evaluator(spec_file: str, run_dir: str | None):
    return _cached_evaluator(spec_file, run_dir, _version(spec_file))


@functools.lru_cache(maxsize=4)
def _cached_evaluator(spec_file: str, run_dir: str | None, version: str):
    from nago_spec.pipeline import Evaluator
    from nago_spec.spec import load_spec

    return Evaluator(load_spec(spec_file), Path(run_dir) if run_dir else None)


def load_data(spec_file: str):
    """The spec's data set, loaded once per process and data section (None for plain-parameter specs)."""
    from nago_spec.spec import load_spec

    spec = load_spec(spec_file)
    if spec.space.kind == "params":
        return None
    d = spec.data
    return _cached_data(d.dataset, d.path, d.val_fraction, spec.seed, d.limit, d.classes)


@functools.lru_cache(maxsize=2)
def _cached_data(dataset, path, val_fraction, seed, limit, classes):
    from nago_spec.data import load_dataset

    return load_dataset(dataset, path, val_fraction=val_fraction, seed=seed, limit=limit, classes=classes)


def evaluate_trial(spec_file: str, run_dir: str | None, trial_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one trial; never raises: returns ``{"ok", "values", "samples", "host"}`` or ``{"ok", "error"}``."""
    host = socket.gethostname()
    try:
        evaluator = _evaluator(spec_file, run_dir)
        values, samples = evaluator.evaluate(params, trial_id, load_data(spec_file))
        return {"ok": True, "values": values, "samples": samples, "host": host}
    except NagoError as exc:
        return {"ok": False, "error": str(exc), "host": host}
    except MemoryError:
        return {"ok": False, "error": "out of memory", "host": host}
    except Exception as exc:  # a failing trial is data: keep the cause, let the run go on
        tb = traceback.format_exception(exc, limit=-3)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}\n{''.join(tb).strip()}", "host": host}


def final_train_export(spec_file: str, run_dir: str, trial_id: int, params: dict[str, Any], out: str) -> dict[str, Any]:
    """Retrain trial ``trial_id``'s first architecture for the final budget, export it to ``out``.

    Returns the model's manifest entry under ``"entry"``, or ``{"ok": False, "error"}``.
    """
    try:
        return {"ok": True, "entry": _final_train_export(spec_file, run_dir, trial_id, params, Path(out))}
    except NagoError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one model failing must not lose the others
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _final_train_export(spec_file: str, run_dir: str, trial_id: int, params: dict[str, Any], out: Path) -> dict[str, Any]:
    import json
    import time

    from torch import nn

    from nago_spec.errors import ExportError
    from nago_spec.export import PARITY_TOLERANCE, export_onnx, parity
    from nago_spec.network import Normalize, build_network
    from nago_spec.pipeline import DataShape, sample_architecture
    from nago_spec.seeds import sample_seed
    from nago_spec.train import evaluate, train

    evaluator = _evaluator(spec_file, run_dir)
    spec = evaluator.spec
    data = load_data(spec_file)
    seed = sample_seed(spec.seed, trial_id, 0)
    arch = sample_architecture(spec, params, seed, DataShape.of(data))
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, seed))
    t = spec.train
    start = time.perf_counter()
    result = train(
        model, data, epochs=spec.export.final_epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum,
        nesterov=t.nesterov, weight_decay=t.weight_decay, seed=seed,
    )
    train_seconds = time.perf_counter() - start
    test_acc, _ = evaluate(model, data.x_test, data.y_test)
    metrics = {
        "val_accuracy": result.val_accuracy,
        "test_accuracy": test_acc,
        "final_epochs": result.epochs,
        "train_seconds": round(train_seconds, 2),
    }
    input_shape = (data.in_channels, *data.image_size)
    export_onnx(
        model,
        out,
        input_shape=input_shape,
        opset=spec.export.opset,
        metadata={
            "nago.spec_hash": spec.search_hash(),
            "nago.trial": str(trial_id),
            "nago.seed": str(seed),
            "nago.generator_params": json.dumps(params, sort_keys=True),
            "nago.metrics": json.dumps(metrics, sort_keys=True),
            "nago.classes": json.dumps(list(data.classes)),
            "nago.input": "float32 [batch, C, H, W], raw pixel values in [0, 255]",
        },
    )
    diff = parity(out, model, data.x_test[:256])
    if diff > PARITY_TOLERANCE:
        raise ExportError(f"{out.name}: onnxruntime differs from torch by {diff:.2e} > {PARITY_TOLERANCE}")
    return {
        "file": out.name,
        "trial": trial_id,
        "seed": seed,
        "params": arch.param_count(),
        "macs": arch.mac_count(),
        "generator_params": params,
        "metrics": metrics,
        "parity_max_abs_diff": diff,
        "input": {
            "name": "image",
            "shape": ["batch", *input_shape],
            "dtype": "float32",
            "range": [0, 255],
            "normalisation": {"inside_model": True, "mean": list(data.mean), "std": list(data.std), "scale": 255},
        },
        "output": {"name": "logits", "shape": ["batch", data.num_classes]},
        "classes": list(data.classes),
    }
