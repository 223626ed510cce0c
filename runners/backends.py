"""Execution backends: run trials in-process or in a pool of single-threaded worker processes."""

from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from nago_spec.registry import Registry
from runners.worker import init_worker


class Backend(ABC):
    """Runs functions of the worker module and returns futures; ``workers`` run at once."""

    workers: int

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Start ``fn(*args)``; the future's result is what ``fn`` returned."""

    def close(self) -> None:
        """Release workers."""


class LocalBackend(Backend):
    """In-process, one trial at a time (debugging, tests, tiny specs)."""

    def __init__(self, workers: int = 1):
        self.workers = 1
        init_worker()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future like a pool would
            fut.set_exception(exc)
        return fut


class ProcessBackend(Backend):
    """A pool of spawned worker processes with one torch thread each.

    ``spawn`` rather than ``fork``: forking a process that has initialised torch's thread pools can
    deadlock. A worker that dies breaks the pool; the pool is then rebuilt and the caller re-queues.
    """

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("local", LocalBackend)
BACKENDS.register("process", ProcessBackend)


def make_backend(name: str, workers: int | None) -> Backend:
    return BACKENDS.get(name)(workers)
