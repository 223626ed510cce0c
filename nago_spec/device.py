"""Where networks train: the spec's ``[run].device`` resolved against the machine, workers placed on GPUs,
and the per-device training choices (precision, out-of-memory errors).

The rules, each a pure function of what torch reports so that tests can simulate any machine:

- ``resolve_device``: "auto" is CUDA when torch sees a GPU, else the CPU (never MPS: its coverage
  of training ops is partial, so it is taken only when asked for); "cuda" takes every GPU torch
  sees; "cuda:N" the N-th of them; asking for what the machine lacks is a DeviceError naming what
  torch sees.
- ``worker_bindings``: the process backend's worker ``i`` is bound to GPU ``i mod GPUs``, so workers
  spread over the GPUs before any GPU gets a second. A worker process starts with
  ``CUDA_VISIBLE_DEVICES`` set to its GPU's entry (an index or a UUID, as the user's own
  ``CUDA_VISIBLE_DEVICES`` names it), so inside it its GPU is always ``cuda:0`` and nothing it does
  can touch another.
- ``ray_device``: a Ray task that claimed GPUs trains on the first GPU Ray gave it.
- ``resolve_precision``: "auto" is fp32 everywhere (on a GPU, cuDNN's TF32 convolutions): on an
  H200, bf16 autocast made a generated network's training step 1.2 to 1.8 times slower (docs/RESULTS.md §7).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass

from nago_spec.errors import NagoError

DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: With several workers on one GPU, each process's caching allocator may hold at most this share of
#: the GPU's memory divided by the workers sharing it, so that one large network runs out of memory
#: on its own instead of starving its neighbours (the rest is for the CUDA contexts themselves).
SHARED_MEMORY_SHARE = 0.9


class DeviceError(NagoError):
    """A device the spec asks for that this machine (or this torch build) does not have."""


@dataclass(frozen=True)
class Machine:
    """What torch sees: the visible GPUs (their ``CUDA_VISIBLE_DEVICES`` entries, in torch's order),
    their names, whether bf16 runs on them, and whether MPS is available."""

    gpus: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    bf16: bool = False
    mps: bool = False
    cuda_built: bool = False

    def describe(self) -> str:
        """One phrase: what torch sees, for error messages and ``nago check``."""
        if self.gpus:
            names = sorted(set(self.names)) or ["GPU"]
            return f"torch sees {len(self.gpus)} CUDA GPU(s) ({', '.join(names)})"
        if self.cuda_built:
            return "torch sees no CUDA GPU" + (" but MPS" if self.mps else "")
        return "torch is a CPU-only build (no CUDA)" + (" with MPS" if self.mps else "")


def visible_entries(count: int, env: str | None) -> tuple[str, ...]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of the ``count`` GPUs torch sees: ``"0"``..``count-1``
    when the variable is unset, else its first ``count`` entries (ids or UUIDs, as written)."""
    if env is None:
        return tuple(str(i) for i in range(count))
    entries = [e.strip() for e in env.split(",") if e.strip()]
    return tuple(entries[:count])


def machine(details: bool = True) -> Machine:
    """This machine as torch sees it. Counting the GPUs does not start CUDA in this process (torch asks
    NVML first); their names and bf16 support (``details``) do, which costs a parent process that
    only hands trials to GPU workers a CUDA context on GPU 0 for its whole life. Without ``details``
    names are empty and bf16 is taken as supported: each trial checks its own GPU."""
    import torch

    count = torch.cuda.device_count()
    gpus = visible_entries(count, os.environ.get("CUDA_VISIBLE_DEVICES"))
    names: tuple[str, ...] = ()
    bf16 = bool(count)
    if count and details:
        names = tuple(torch.cuda.get_device_name(i) for i in range(count))
        bf16 = torch.cuda.is_bf16_supported()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return Machine(gpus, names, bf16, mps, torch.backends.cuda.is_built())


@dataclass(frozen=True)
class Placement:
    """A resolved device: ``kind`` "cpu", "cuda" or "mps" and, for CUDA, the visible GPUs the run
    uses (``CUDA_VISIBLE_DEVICES`` entries) with their indices among those torch sees; ``precision``
    the run's resolved [train].precision there (nago_spec.runners.run.placement_of fills it in)."""

    kind: str
    gpus: tuple[str, ...] = ()
    indices: tuple[int, ...] = ()
    precision: str = "fp32"


def resolve_device(requested: str, m: Machine) -> Placement:
    """The placement ``requested`` ("auto", "cpu", "cuda", "cuda:N", "mps") means on machine ``m``.

    Raises DeviceError (the text after ``[run].device = ...:``) when the machine lacks it.
    """
    kind, _, index = requested.partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceError(f'must be "auto", "cpu", "cuda", "cuda:N" or "mps"; {m.describe()}')
    if kind == "auto":
        kind = "cuda" if m.gpus else "cpu"
    if kind == "cpu":
        return Placement("cpu")
    if kind == "mps":
        if not m.mps:
            raise DeviceError(f"this machine has no MPS device; {m.describe()}")
        return Placement("mps")
    if not m.gpus:
        raise DeviceError(f"this machine has no CUDA GPU: {m.describe()}")
    if index:
        i = int(index)
        if i >= len(m.gpus):
            raise DeviceError(f"there is no GPU {i}: {m.describe()}, numbered 0 to {len(m.gpus) - 1}")
        return Placement("cuda", (m.gpus[i],), (i,))
    return Placement("cuda", m.gpus, tuple(range(len(m.gpus))))


@dataclass(frozen=True)
class Binding:
    """One worker's device: ``device`` as torch names it inside the worker ("cpu", "cuda:0", "mps"),
    ``visible`` the ``CUDA_VISIBLE_DEVICES`` value the worker process starts with (None: the
    parent's view), ``memory_share`` its allocator's cap as a share of the GPU (None: no cap)."""

    device: str = "cpu"
    visible: str | None = None
    memory_share: float | None = None
    gpu: str | None = None  # the GPU as the machine names it (a CUDA_VISIBLE_DEVICES entry), for records

    @property
    def label(self) -> str:
        """Where the worker trains, as trials record it: "cpu", "mps" or "cuda:<the machine's GPU id>"."""
        return f"cuda:{self.gpu}" if self.gpu is not None else self.device


def default_workers(placement: Placement, workers_per_device: int, cores: int | None) -> int:
    """Workers when the spec leaves ``[run].workers`` out: GPUs x workers_per_device on CUDA,
    one per core elsewhere."""
    if placement.kind == "cuda":
        return len(placement.gpus) * workers_per_device
    return max(1, cores or 1)


def worker_bindings(placement: Placement, workers: int) -> list[Binding]:
    """The binding of each of ``workers`` process-backend workers: worker ``i`` sees only GPU
    ``i mod GPUs`` (as ``cuda:0``), its allocator capped by memory_share when the GPU is shared; on
    the CPU or MPS every worker keeps the parent's view."""
    if placement.kind != "cuda":
        return [Binding(placement.kind)] * workers
    share = memory_share(workers, len(placement.gpus))
    gpus = [placement.gpus[i % len(placement.gpus)] for i in range(workers)]
    return [Binding("cuda:0", g, share, g) for g in gpus]


def local_binding(placement: Placement) -> Binding:
    """The binding of in-process trials (the local backend): the placement's first GPU, unmasked."""
    if placement.kind != "cuda":
        return Binding(placement.kind)
    return Binding(f"cuda:{placement.indices[0]}", None, None, placement.gpus[0])


def memory_share(workers: int, gpus: int) -> float | None:
    """The share of one GPU's memory each worker's allocator may hold when several share it (None: one
    worker per GPU, no cap)."""
    per_gpu = -(-workers // max(gpus, 1))
    return SHARED_MEMORY_SHARE / per_gpu if per_gpu > 1 else None


def ray_device(gpu_ids: Sequence[int | str], visible_at_init: Sequence[str] | None) -> str:
    """The device of a Ray task given the GPU ids Ray assigned it (``ray.get_gpu_ids()``).

    Ray sets ``CUDA_VISIBLE_DEVICES`` to those ids before the task runs, so a process whose CUDA is
    not initialised yet finds its GPU at ``cuda:0``. A reused Ray worker whose CUDA was initialised
    under an earlier task keeps the view it started with (``visible_at_init``); the GPU is then at
    its index in that view. No ids (``num_gpus = 0``): the CPU.
    """
    if not gpu_ids:
        return "cpu"
    first = str(gpu_ids[0])
    if visible_at_init is None:
        return "cuda:0"
    if first not in visible_at_init:
        raise DeviceError(f"Ray assigned GPU {first}, but this worker's CUDA was initialised seeing only "
                          f"[{', '.join(visible_at_init)}]")
    return f"cuda:{list(visible_at_init).index(first)}"


def resolve_precision(precision: str, device: str, bf16_supported: bool) -> str:
    """The precision a trial on ``device`` trains in: "fp32", "bf16" or "fp16".

    "auto": fp32 on every device. On a GPU bf16 autocast was slower in each of the 12 cases of the first
    H200 measurement (benchmarks/bench_gpu.py: networks of 10 to 300 ops, NCHW and channels_last,
    cuDNN autotuning off and on; 1.2 to 1.8 times the fp32 step, whose convolutions run in TF32): a
    generated network's step is launch-bound, and autocast adds a cast kernel per layer. On the CPU
    bf16 is faster on some processors but changes the numbers the search compares. So bf16 and fp16
    are opt-in everywhere. Raises DeviceError for a precision the device cannot run.
    """
    kind = device.partition(":")[0]
    if precision == "auto":
        return "fp32"
    if precision == "fp16" and kind != "cuda":
        raise DeviceError(f"fp16 training needs a CUDA GPU (it trains with a gradient scaler); this trial "
                          f"runs on {device}")
    if precision == "bf16" and kind == "cuda" and not bf16_supported:
        raise DeviceError(f"this GPU ({device}) does not support bf16; use \"fp16\" or \"fp32\"")
    if precision == "bf16" and kind == "mps":
        raise DeviceError("bf16 autocast is not supported on MPS; use \"fp32\"")
    return precision


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error of an accelerator (CUDA, MPS)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc) and "MPS" in str(exc)


def free_memory(device: str) -> None:
    """Give an accelerator's cached memory back after a failure (what the failed trial held is garbage
    once its frames are gone)."""
    gc.collect()
    kind = device.partition(":")[0]
    if kind in ("cuda", "mps"):
        import torch

        (torch.cuda if kind == "cuda" else torch.mps).empty_cache()


def oom_message(exc: BaseException, device: str) -> str:
    """The trial's failure reason for an out-of-memory error: the device and torch's first line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"out of memory on {device}: {first}"
