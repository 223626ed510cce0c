"""What runs inside a worker: one torch thread, its device, the resolved Spec it is sent with its
cached data and evaluator, failures as data."""

from __future__ import annotations

import functools
import os
import socket
import traceback
from pathlib import Path
from typing import Any

from nago_spec.device import Binding, free_memory, is_out_of_memory, oom_message
from nago_spec.errors import NagoError, TrialError
from nago_spec.spec import Spec
from nago_spec.store import Outcome

#: Where this process trains (set by init_worker, or per call on Ray: set_binding).
_BINDING = Binding()


def init_worker(binding: Binding | None = None) -> None:
    """Initializer of every worker process: its device binding first (a GPU worker sees only its GPU,
    through CUDA_VISIBLE_DEVICES, before anything can touch CUDA), one torch thread (two collapse on
    a busy 2-core machine), and an allocator that keeps freed activations for the next step."""
    if binding is not None and binding.visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = binding.visible
    import torch

    torch.set_num_threads(1)
    keep_freed_memory()
    if binding is not None:
        set_binding(binding)


#: How often a worker checks that the process that started it still lives.
PARENT_CHECK_SECONDS = 1.0


def die_with_parent() -> None:
    """End this worker within PARENT_CHECK_SECONDS of its parent's death (kill -9, a crash), instead
    of training on for minutes as an orphan: a daemon thread watches the parent pid, and exits the
    process when the worker has been re-parented."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="nago-parent-watch", daemon=True).start()


def set_binding(binding: Binding) -> None:
    """Make ``binding`` this process's training device, capping its share of the GPU's memory when
    the GPU is shared."""
    global _BINDING
    _BINDING = binding
    if binding.device.startswith("cuda") and binding.memory_share is not None:
        import torch

        if torch.cuda.is_available():  # (a simulated GPU binding in the CPU tests has nothing to cap)
            torch.cuda.set_per_process_memory_fraction(binding.memory_share, torch.device(binding.device))


def binding() -> Binding:
    """This process's device binding."""
    return _BINDING


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


@functools.lru_cache(maxsize=4)
def _evaluator(spec: Spec, run_dir: str | None):
    """The spec's evaluator, built once per process, spec and run directory: a Spec is hashable and a
    changed one is another key, so no cache outlives the spec it was built for."""
    from nago_spec.pipeline import Evaluator

    return Evaluator(spec, Path(run_dir) if run_dir else None)


def load_data(spec: Spec, full: bool = False, device: str = "cpu"):
    """The spec's data set, loaded once per process, data section and device (None for plain-parameter
    specs); ``full``: without [data].limit's subsample (the final training with ``[export].full_data``).
    On an accelerator the uint8 tensors are copied there once and stay for the worker's life."""
    if spec.space.kind == "params":
        return None
    d = spec.data
    return _cached_data(d.dataset, d.path, d.val_fraction, spec.seed, None if full else d.limit, d.classes, device)


@functools.lru_cache(maxsize=2)
def _cached_data(dataset, path, val_fraction, seed, limit, classes, device="cpu"):
    if device != "cpu":
        from nago_spec.train import on_device

        return on_device(_cached_data(dataset, path, val_fraction, seed, limit, classes), device)
    from nago_spec.data import load_dataset

    return load_dataset(dataset, path, val_fraction=val_fraction, seed=seed, limit=limit, classes=classes)


def prepare(spec: Spec, run_dir: str | None) -> None:
    """A worker's warm-up for a run: the pipeline's modules, its evaluator (with the custom
    callables imported) and the data on this worker's device, loaded before the first trial's clock
    starts (nago_spec.runners.backends: warmup). Errors surface again in the trial and are recorded there."""
    import nago_spec.network  # noqa: F401 - imported here so that no trial pays for it
    import nago_spec.train  # noqa: F401

    _evaluator(spec, run_dir)
    load_data(spec, device=_BINDING.device)


def evaluate_trial(
    spec: Spec, run_dir: str | None, trial_id: int, params: dict[str, Any], budget: float | None = None,
    config: int | None = None,
) -> Outcome:
    """Evaluate one trial (at ``budget``, with ``config``'s architectures, in a multi-fidelity run) on
    this worker's device; never raises: its Outcome has the values and samples, or the error, and
    the host and device it really ran on. An accelerator's out-of-memory error fails the trial and
    gives the memory back."""
    b = _BINDING
    where = {"host": socket.gethostname(), "device": b.label}
    try:
        evaluator = _evaluator(spec, run_dir)
        data = load_data(spec, device=b.device)
        values, samples = evaluator.evaluate(params, trial_id, data, budget=budget, config=config, device=b.device)
        return Outcome(values=values, samples=samples, **where)
    except NagoError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory"
    except Exception as exc:  # a failing trial is data: keep the cause, let the run go on
        if is_out_of_memory(exc):
            error = oom_message(exc, b.label)
        else:
            tb = traceback.format_exception(exc, limit=-3)
            error = f"{type(exc).__name__}: {exc}\n{''.join(tb).strip()}"
    # out of the except block: the exception, its traceback and the frames holding the trial's model
    # and activations are gone, so their memory can be given back
    free_memory(b.device)
    return Outcome.failed(error, **where)


def final_train_export(
    spec: Spec, run_dir: str, trial_id: int, params: dict[str, Any], sample: int, out: str,
    config: int | None = None,
) -> Outcome:
    """Train architecture ``sample`` of trial ``trial_id``'s generator point for the final budget, test
    it, export it to ``out`` and time it. The architectures are seeded as the search seeded them:
    from ``config``, the configuration a multi-fidelity trial belongs to, else from the trial.

    It trains on this worker's device; the export, its parity check and its timing run on a CPU
    copy, as the model is deployed. Never raises: its Outcome has the manifest entry, or the error.
    """
    device = _BINDING.device
    try:
        entry = _final_train_export(spec, run_dir, trial_id, params, sample, Path(out), device, config)
        return Outcome(entry=entry, host=socket.gethostname(), device=_BINDING.label)
    except NagoError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory"
    except Exception as exc:  # noqa: BLE001 - one model failing must not lose the others
        error = oom_message(exc, _BINDING.label) if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
    free_memory(device)  # as in evaluate_trial, once the failed training's frames are gone
    return Outcome.failed(error, socket.gethostname(), _BINDING.label)


def _check_learned(val_accuracy: float, y_val: Any, test_loss: float) -> None:
    """Refuse a final model that does no better than always answering the validation split's most frequent
    class (nago_spec.train.at_chance): a final training that diverged (dead features, one answer for every
    image) or was far too short must not reach the deployable set; the failed model keeps the reason."""
    from nago_spec.train import at_chance

    chance, majority = at_chance(val_accuracy, y_val)
    if chance:
        raise TrialError(
            f"the final training did not learn: {val_accuracy:.1%} validation accuracy, within two standard "
            f"errors of always answering the most frequent class ({majority:.1%} of {len(y_val)} images; test loss "
            f"{test_loss:.4f}). Train it longer ([export].final_epochs) or, if it diverged, lower [export].lr or "
            "add [export].warmup_epochs; then run the spec again")


def _final_train_export(
    spec: Spec, run_dir: str, trial_id: int, params: dict[str, Any], sample: int, out: Path, device: str = "cpu",
    config: int | None = None,
) -> dict[str, Any]:
    import json
    import time

    from torch import nn

    from nago_spec.export import INPUT_RANGE, check_parity, export_onnx, latency_ms
    from nago_spec.network import Normalize, build_network
    from nago_spec.pipeline import DataShape, fit, sample_architecture
    from nago_spec.seeds import sample_seed
    from nago_spec.train import evaluate

    e = spec.export
    data = load_data(spec, full=e.full_data, device=device)
    # sample 0 is the architecture the search trained (a promotion's: its configuration's)
    seed = sample_seed(spec.seed, trial_id if config is None else config, sample)
    arch = sample_architecture(spec, params, seed, DataShape.of(data), e.param_budget)
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, seed))
    start = time.perf_counter()
    result = fit(model, data, spec.final_train(), seed, device)
    train_seconds = time.perf_counter() - start
    test_acc, test_loss = evaluate(model, data.x_test, data.y_test)
    _check_learned(result.val_accuracy, data.y_val, test_loss)
    model = model.cpu()  # what is deployed: the export, its parity and its latency are the CPU's
    metrics = {
        "val_accuracy": result.val_accuracy,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "final_epochs": result.epochs,
        "train_images": len(data.y_train),
        "train_seconds": round(train_seconds, 2),
    }
    if result.restarted_at is not None:  # died, and trained again warmed up (train)
        metrics["restarted_at"] = result.restarted_at
    input_shape = (data.in_channels, *data.image_size)
    export_onnx(
        model,
        out,
        input_shape=input_shape,
        opset=e.opset,
        metadata={
            "nago.spec_hash": spec.key("search"),
            "nago.trial": str(trial_id),
            "nago.sample": str(sample),
            "nago.seed": str(seed),
            "nago.generator_params": json.dumps(params, sort_keys=True),
            "nago.metrics": json.dumps(metrics, sort_keys=True),
            "nago.params": str(arch.param_count()),
            "nago.classes": json.dumps(list(data.classes)),
            "nago.input_shape": json.dumps(list(input_shape)),
            "nago.input_range": json.dumps(list(INPUT_RANGE)),
            "nago.input": "float32 [batch, C, H, W], raw pixel values in [0, 255]; normalisation is inside",
        },
    )
    agreement = check_parity(out, model, data.x_test[:256].cpu())
    latency = {f"batch_{b}": latency_ms(out, model, input_shape, b) for b in (1, 32)} if e.latency else None
    quantized = _twins(spec, out, data, seed, input_shape)
    return {
        "file": out.name,
        "trial": trial_id,
        "sample": sample,
        "seed": seed,
        "params": arch.param_count(),
        "macs": arch.mac_count(),
        "generator_params": params,
        "metrics": metrics,
        "trained_on": {"device": _BINDING.label, "precision": result.precision},
        "latency_ms": latency,
        "parity_max_abs_diff": agreement["max_abs_diff"],
        "parity": agreement,
        "input": {
            "name": "image",
            "shape": ["batch", *input_shape],
            "dtype": "float32",
            "range": list(INPUT_RANGE),
            "preprocessing": "none: feed raw pixels (uint8 values as float32); the model normalises them",
            "normalisation": {"inside_model": True, "mean": list(data.mean), "std": list(data.std), "scale": 255},
        },
        "output": {"name": "logits", "shape": ["batch", data.num_classes]},
        "classes": list(data.classes),
        **({"quantized": quantized} if quantized else {}),
    }


def _twins(spec: Spec, parent: Path, data: Any, seed: int, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Each ``[export] quantize`` twin of the exported ``parent``: ``{scheme: entry}`` (``_twin``), the
    parent's own predictions and calibration images made once for all schemes."""
    import numpy as np

    from nago_spec.quantize import calibration_indices, predict_labels

    if not spec.export.quantize:
        return {}
    x_train, y_train = data.x_train.cpu().numpy(), data.y_train.cpu().numpy()
    images = x_train[calibration_indices(y_train, spec.export.calibration_images, seed)].astype(np.float32)
    x_test, x_val = data.x_test.cpu().numpy(), data.x_val.cpu().numpy()
    try:
        parent_labels = predict_labels(parent, x_test), predict_labels(parent, x_val)
    except Exception as exc:  # noqa: BLE001 - no twin can be measured; the float32 model stays
        return dict.fromkeys(spec.export.quantize, {"error": f"{type(exc).__name__}: {exc}"})
    return {scheme: _twin(spec, scheme, parent, data, seed, input_shape, images, parent_labels)
            for scheme in spec.export.quantize}


def _twin(spec: Spec, scheme: str, parent: Path, data: Any, seed: int, input_shape: tuple[int, ...],
          images: Any, parent_labels: tuple[Any, Any]) -> dict[str, Any]:
    """The ``scheme`` twin of the exported ``parent``, measured against it on the same images: test
    and validation accuracy (onnxruntime, both models), top-1 agreement on the test set, file sizes,
    and onnxruntime latency at batch 1 and 32. A twin that cannot be made or measured is
    ``{"error": ...}``: the float32 model stays as it is."""
    from nago_spec.export import onnx_latency_ms
    from nago_spec.quantize import make_twin, predict_labels

    e = spec.export
    x_test, y_test = data.x_test.cpu().numpy(), data.y_test.cpu().numpy()
    x_val, y_val = data.x_val.cpu().numpy(), data.y_val.cpu().numpy()
    parent_test, parent_val = parent_labels
    parent_val_accuracy = float((parent_val == y_val).mean())
    try:
        path, description = make_twin(scheme, parent, images, seed)
        twin_test = predict_labels(path, x_test)
        twin_val_accuracy = float((predict_labels(path, x_val) == y_val).mean())
    except NagoError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors too: the float32 model must not be lost
        return {"error": f"{type(exc).__name__}: {exc}"}
    parent_accuracy = float((parent_test == y_test).mean())
    accuracy = float((twin_test == y_test).mean())
    entry: dict[str, Any] = {
        "file": path.name,
        "scheme": description,
        "test_accuracy": accuracy,
        "val_accuracy": twin_val_accuracy,
        "float32_test_accuracy": parent_accuracy,
        "float32_val_accuracy": parent_val_accuracy,
        "accuracy_drop": parent_accuracy - accuracy,
        "kept": accuracy / parent_accuracy if parent_accuracy > 0 else None,
        "agreement": float((twin_test == parent_test).mean()),
        "size_bytes": path.stat().st_size,
        "float32_size_bytes": parent.stat().st_size,
        "size_ratio": path.stat().st_size / parent.stat().st_size,
    }
    if e.latency:
        both = {"float32": parent, scheme: path}
        entry["latency_ms"] = {f"batch_{b}": onnx_latency_ms(both, input_shape, b) for b in (1, 32)}
    return entry
