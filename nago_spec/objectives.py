"""Objectives: the built-ins (error, accuracy, params, flops, memory, latency, ...), installed plug-ins
and user callables named in a spec."""

from __future__ import annotations

import inspect
import logging
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nago_spec.errors import RegistryError
from nago_spec.registry import Registry

log = logging.getLogger(__name__)

#: The entry-point group through which installed packages register objectives.
ENTRY_POINT_GROUP = "nago_spec.objectives"
#: Bytes per parameter and per activation element: networks are float32.
BYTES_PER_VALUE = 4
MIB = 2**20


@dataclass
class EvalContext:
    """What an objective sees of one evaluated architecture (or parameter point).

    ``model`` is the trained torch module (None for cheap objectives and plain-parameter specs),
    ``architecture`` the sampled generator output, ``data`` the in-memory data set, ``train_result``
    the training summary, ``run_dir`` the run directory when there is one. ``model`` and ``data``
    are on ``device``, where the network trained (a GPU's tensors: use ``.cpu()`` for numpy, and
    nago_spec.export.on_cpu for a CPU copy of the model). Objectives may leave
    side results (a latency spread, ...) in ``extra``; they are recorded with the sample.
    """

    params: Mapping[str, Any]
    seed: int
    architecture: Any = None
    model: Any = None
    data: Any = None
    train_result: Any = None
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


@dataclass(frozen=True)
class Objective:
    """A named objective with its direction, unit and cost class.

    ``cheap`` objectives are computed exactly for any candidate without training (the optimiser
    evaluates them for thousands of candidates); the others need training and are modelled.
    ``final_only`` objectives (test error) are measured in final reports and never searched on.
    """

    name: str
    direction: str  # "minimize" | "maximize"
    unit: str
    cheap: bool
    compute: Callable[[EvalContext], float]
    doc: str = ""
    final_only: bool = False


def adapt_callable(fn: Callable[..., Any]) -> Callable[[EvalContext], Any]:
    """Call a user objective as ``fn(params)`` or, when it takes two arguments, ``fn(params, context)``."""
    try:
        params = inspect.signature(fn).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_ctx = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):  # builtins without a signature: params only
        takes_ctx = False
    if takes_ctx:
        return lambda ctx: fn(ctx.params, ctx)
    return lambda ctx: fn(ctx.params)


def _plugin_objective(name: str, obj: Any) -> Objective:
    if isinstance(obj, Objective):
        if obj.name != name:
            raise RegistryError(f"the entry point is named '{name}' but its Objective is named '{obj.name}'")
        return obj
    if not callable(obj):
        raise RegistryError(f"loads to {type(obj).__name__}, not an Objective or a callable")
    direction = getattr(obj, "direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise RegistryError(f"direction must be 'minimize' or 'maximize', but got {direction!r}")
    doc = getattr(obj, "doc", None) or (inspect.getdoc(obj) or name).splitlines()[0]
    return Objective(name, direction, str(getattr(obj, "unit", "value")), bool(getattr(obj, "cheap", False)),
                     adapt_callable(obj), doc)


#: The objective registry: built-ins, plus plug-ins from the ``nago_spec.objectives`` entry points. An
#: entry point loads to an :class:`Objective` or to a callable with the spec callable contract
#: (``fn(params)`` or ``fn(params, ctx)``, returning a number); a callable may carry ``direction``,
#: ``unit``, ``cheap`` and ``doc`` attributes (default: minimize, "value", not cheap, its docstring's
#: first line).
OBJECTIVES: Registry[Objective] = Registry("objective", ENTRY_POINT_GROUP, convert=lambda name, obj: _plugin_objective(name, obj))


# -- built-ins ---------------------------------------------------------------------------------------
def _error(ctx: EvalContext) -> float:
    return 1.0 - float(ctx.train_result.val_accuracy)


def _accuracy(ctx: EvalContext) -> float:
    return float(ctx.train_result.val_accuracy)


def _test_error(ctx: EvalContext) -> float:
    from nago_spec.train import evaluate

    accuracy, _ = evaluate(ctx.model, ctx.data.x_test, ctx.data.y_test)
    return 1.0 - float(accuracy)


def _params(ctx: EvalContext) -> float:
    return float(ctx.architecture.param_count())


def _flops(ctx: EvalContext) -> float:
    return float(ctx.architecture.mac_count())


def _memory_mb(ctx: EvalContext) -> float:
    return ctx.architecture.param_count() * BYTES_PER_VALUE / MIB


def int8_bytes(architecture: Any) -> int:
    """Bytes of a network's weights once quantised to int8 as the export quantises it: one per conv
    and linear weight, four per other parameter (biases and BatchNorm's affine, which fold into
    float32 per-channel scales and int32 biases)."""
    weights = architecture.weight_count()
    return weights + BYTES_PER_VALUE * (architecture.param_count() - weights)


def _int8_size_kb(ctx: EvalContext) -> float:
    return int8_bytes(ctx.architecture) / 1000


def _int8_error(ctx: EvalContext) -> float:
    from nago_spec.quantize import int8_error

    d = ctx.data
    return int8_error(ctx.model, d.x_train, d.y_train, d.x_val, d.y_val, ctx.seed)


def _train_seconds(ctx: EvalContext) -> float:
    return float(ctx.train_result.seconds)


def peak_activation_bytes(module: Any, x: Any) -> int:
    """The largest total size in bytes of the tensors alive at once while ``module(x)`` runs.

    ``x``: float32 ``[1 x C x H x W]``. Every tensor an operator returns during the forward pass (under
    ``torch.no_grad``, so no autograd buffers) is counted from its creation until its last Python
    reference dies, by storage, so views cost nothing extra; ``x`` itself counts throughout.
    Parameters and buffers do not count. Deterministic for a given module and input shape.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    live: dict[int, list[int]] = {}  # storage key -> [bytes, live tensor count]
    state = {"now": 0, "peak": 0}

    def release(key: int) -> None:
        entry = live[key]
        entry[1] -= 1
        if entry[1] == 0:
            state["now"] -= entry[0]
            del live[key]

    def track(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in live:
            live[key][1] += 1
        else:
            live[key] = [storage.nbytes(), 1]
            state["now"] += storage.nbytes()
            state["peak"] = max(state["peak"], state["now"])
        weakref.finalize(t, release, key)

    class Tracker(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            seen: set[int] = set()
            for t in outs:
                # in-place ops return an input; count each tensor object once
                if isinstance(t, torch.Tensor) and id(t) not in seen and id(t) not in tracked:
                    seen.add(id(t))
                    tracked.add(id(t))
                    weakref.finalize(t, tracked.discard, id(t))
                    track(t)
            return out

    tracked: set[int] = set()
    module = module.eval()
    with torch.no_grad():
        x = x.detach().clone()
        tracked.add(id(x))
        weakref.finalize(x, tracked.discard, id(x))
        track(x)
        with Tracker():
            out = module(x)
        del out
    return state["peak"]


def _peak_activation_mb(ctx: EvalContext) -> float:
    import torch

    from nago_spec.network import build_network

    arch = ctx.architecture
    net = build_network(arch, ctx.seed)
    return peak_activation_bytes(net, torch.zeros(1, arch.in_channels, *arch.image_size)) / MIB


#: Timed runs and warm-up runs of the latency objective.
LATENCY_RUNS = 30
LATENCY_WARMUP = 5


def _latency_ms(ctx: EvalContext) -> float:
    import numpy as np

    from nago_spec.export import INPUT_NAME, export_onnx, onnx_session

    arch = ctx.architecture
    model = ctx.model
    if model is None:  # latency does not depend on the weights: an untrained network will do
        from nago_spec.network import build_network

        model = build_network(arch, ctx.seed)
    shape = (arch.in_channels, *arch.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latency.onnx"
        export_onnx(model, path, input_shape=shape)
        session = onnx_session(path)
    x = {INPUT_NAME: np.zeros((1, *shape), dtype=np.float32)}
    for _ in range(LATENCY_WARMUP):
        session.run(None, x)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, x)
        times.append((time.perf_counter() - start) * 1e3)
    p10, p90 = np.percentile(times, [10, 90])
    ctx.extra["latency_ms"] = {"median": statistics.median(times), "p10": float(p10), "p90": float(p90),
                               "runs": LATENCY_RUNS}
    return float(statistics.median(times))


for _objective in (
    Objective("error", "minimize", "fraction", False, _error, "validation error (1 - validation accuracy)"),
    Objective("accuracy", "maximize", "fraction", False, _accuracy, "validation accuracy"),
    Objective("test_error", "minimize", "fraction", False, _test_error,
              "test-set error (1 - test accuracy); final reports only, never searched on", final_only=True),
    Objective("params", "minimize", "count", True, _params, "trainable parameters of the network"),
    Objective("flops", "minimize", "MACs", True, _flops,
              "multiply-accumulates of one batch-1 forward pass (convs and linear); FLOPs = 2 x MACs"),
    Objective("memory_mb", "minimize", "MiB", True, _memory_mb,
              "parameter memory: params x 4 bytes (float32) / 2**20 (the paper's 'memory')"),
    Objective("peak_activation_mb", "minimize", "MiB", True, _peak_activation_mb,
              "largest total size of float32 tensors alive at once in a batch-1 forward pass (input "
              "included, parameters not); costs one untrained forward pass, no training"),
    Objective("latency_ms", "minimize", "ms", False, _latency_ms,
              f"median batch-1 latency of the ONNX export in onnxruntime, 1 thread, {LATENCY_RUNS} runs "
              f"after {LATENCY_WARMUP} warm-up; p10/p90 in the context's extra"),
    Objective("int8_error", "minimize", "fraction", False, _int8_error,
              "validation error of the trained network quantised to int8 as the export does (static QDQ, "
              "per-channel weights, 512 stratified calibration images); measured after training"),
    Objective("int8_size_kb", "minimize", "kB", True, _int8_size_kb,
              "weight bytes once quantised to int8 / 1000: 1 per conv and linear weight, 4 per bias, "
              "scale and BatchNorm parameter"),
    Objective("train_seconds", "minimize", "s", False, _train_seconds,
              "wall time of training (and validation) of the sample"),
):
    OBJECTIVES.register(_objective.name, _objective)
del _objective
