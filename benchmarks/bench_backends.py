"""What the backends cost: start-up, the round trip of one call, and the throughput of real trials.

The references are the standard library's ``concurrent.futures.ProcessPoolExecutor`` (spawn, one
torch thread per worker, as ours) for the process pool, and a direct call for the local backend.
Ray's figures are its own (local instance); there is no reference for them, only the cost.

- start-up: from the constructor to the first call's result (worker processes spawned and torch
  imported in them; for Ray, ``ray.init`` of a local instance too); every worker is then warmed up
  before the other figures (ProcessPoolExecutor and Ray start workers on demand);
- round trip: the median time of one no-op call, one at a time (the overhead per trial);
- throughput: ``2 * workers`` calls of a CPU-bound torch function (0.5 s alone), all submitted at
  once: calls per second, and the ratio ours / reference.

    python benchmarks/bench_backends.py [--workers 2] [--calls 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait

from nago_spec.runners.backends import LocalBackend, ProcessBackend, RayBackend
from nago_spec.runners.worker import init_worker


def noop() -> int:
    return 0


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def matmuls(seconds: float) -> int:
    """CPU-bound torch work of about ``seconds`` on one thread."""
    import torch

    a = torch.randn(256, 256)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a.T / 256)
        n += 1
    return n


class _Reference:
    """ProcessPoolExecutor with the same worker set-up, under the Backend calling convention."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=init_worker)

    def submit(self, fn: Callable, *args) -> Future:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown()


def measure(make: Callable[[], object], calls: int, work: float) -> dict[str, float]:
    t0 = time.perf_counter()
    backend = make()
    backend.submit(noop).result()
    startup = time.perf_counter() - t0
    n = 2 * backend.workers
    while len({f.result() for f in [backend.submit(pid_after, 0.3) for _ in range(n)]}) < backend.workers:
        pass  # until every worker has started and answered
    trips = []
    for _ in range(calls):
        t = time.perf_counter()
        backend.submit(noop).result()
        trips.append(time.perf_counter() - t)
    t = time.perf_counter()
    wait([backend.submit(matmuls, work) for _ in range(n)])
    rate = n / (time.perf_counter() - t)
    backend.close()
    return {"startup": startup, "trip": statistics.median(trips), "rate": rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--work", type=float, default=0.5, help="seconds of one throughput call")
    args = ap.parse_args()
    rows = [
        ("local", measure(LocalBackend, args.calls, args.work), None),
        ("process", measure(lambda: ProcessBackend(args.workers), args.calls, args.work),
         measure(lambda: _Reference(args.workers), args.calls, args.work)),
    ]
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray: not installed (pip install -c constraints.txt '.[ray]'); skipped")
    else:
        rows.append(("ray", measure(lambda: RayBackend(args.workers), args.calls, args.work), None))
    print(f"{args.workers} workers; throughput: {args.work} s calls; reference: ProcessPoolExecutor (spawn)")
    print(f"{'backend':<9} {'start-up s':>10} {'round trip ms':>13} {'calls/s':>8} {'ref calls/s':>11} {'ratio':>6}")
    for name, ours, ref in rows:
        line = f"{name:<9} {ours['startup']:>10.2f} {1e3 * ours['trip']:>13.2f} {ours['rate']:>8.2f}"
        if ref is not None:
            line += f" {ref['rate']:>11.2f} {ours['rate'] / ref['rate']:>6.2f}"
            line += f"\n{'  (ref)':<9} {ref['startup']:>10.2f} {1e3 * ref['trip']:>13.2f}"
        print(line)


if __name__ == "__main__":
    main()
