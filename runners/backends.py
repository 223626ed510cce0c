"""Execution backends: run trials in-process, in a pool of single-threaded worker processes, or as Ray tasks.

Every backend returns a ``concurrent.futures.Future`` per call and enforces the per-call time limit
itself. Two failures are not the called function's own and arrive as exceptions through the future:

- ``TrialTimeout``: the call ran past its limit; it was interrupted, or its worker killed (and
  replaced). The limit counts from the call's start in a worker that is ready, never its start-up.
- ``WorkerLost``: the worker process died under the call (SIGKILL, the kernel's OOM killer, a
  segfault); the worker was replaced. The caller decides whether to run the call again.

Anything else the function raises is delivered through the future unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from nago_spec.device import SHARED_MEMORY_SHARE, Binding, ray_device
from nago_spec.errors import NagoError
from nago_spec.registry import BACKENDS as _BACKENDS
from nago_spec.runners.worker import die_with_parent, init_worker, set_binding

log = logging.getLogger(__name__)


class TrialTimeout(BaseException):
    """A call ran past its time limit and its worker was killed.

    A BaseException, like KeyboardInterrupt: the in-process backend raises it asynchronously inside
    the call, and a user callable's ``except Exception`` must not swallow it.
    """

    def __init__(self, seconds: float, killed: bool = True):
        how = "its worker was killed" if killed else "the call was interrupted"
        super().__init__(f"exceeded the trial time limit of {seconds:g} s; {how}")
        self.seconds = seconds
        self.killed = killed


@contextlib.contextmanager
def _alarm(timeout: float | None) -> Iterator[bool]:
    """Raise TrialTimeout(killed=False) in the main thread once ``timeout`` seconds have passed
    (SIGALRM; it interrupts Python code, and a C call only when it returns). Yields whether it is armed:
    it cannot be off the main thread."""
    if timeout is None or threading.current_thread() is not threading.main_thread():
        yield False
        return

    def expire(signum: int, frame: Any) -> None:
        raise TrialTimeout(timeout, killed=False)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: A call every fresh worker makes before it takes its first timed call: ``(fn, args)``.
Warmup = tuple[Callable[..., Any], tuple[Any, ...]]


def _warm(warmup: Warmup | None) -> None:
    """Run a worker's warm-up; its failure is left to the calls, which meet it again and report it."""
    if warmup is None:
        return
    fn, args = warmup
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the first call will fail with the same cause, as data
        log.debug("worker warm-up failed: %s: %s", type(exc).__name__, exc)


class WorkerLost(Exception):
    """The worker process running a call died before returning."""


class WorkerStartFailed(NagoError):
    """Worker processes could not start: they died (or their set-up raised) ``START_TRIES`` times in
    a row before taking a call. Every queued and later call fails with it; the run stops on it,
    since no trial could ever run."""


class Backend(ABC):
    """Runs functions of the worker module and returns futures; ``workers`` run at once."""

    workers: int

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Future:
        """Start ``fn(*args)``; the future's result is what ``fn`` returned. ``timeout``: seconds
        after which the call is stopped and the future fails with TrialTimeout."""

    def close(self) -> None:
        """Release workers (running calls are abandoned)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBackend(Backend):
    """In-process, one call at a time (debugging, tests, tiny specs).

    The time limit is a SIGALRM timer raising TrialTimeout inside the call, so it needs the main
    thread; it interrupts Python code, and a C call (one torch op) only when it returns.
    """

    def __init__(self, workers: int | None = None, binding: Binding | None = None, warmup: Warmup | None = None):
        self.workers = 1
        init_worker(binding)
        _warm(warmup)

    def submit(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Future:
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        try:
            with _alarm(timeout) as armed:
                if timeout is not None and not armed:
                    log.warning("the local backend enforces trial_timeout only on the main thread; ignored")
                result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - delivered through the future like a pool would
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        return fut


# -- process pool -----------------------------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection, binding: Binding | None = None,
           warmup: Warmup | None = None) -> None:
    """A worker process: bind to its device, warm up, say it is ready, then run each ``(fn, args)``
    received and send back ``(ok, result or exception)``. It ends with the process that spawned it
    (die_with_parent): a killed run leaves no orphan training on."""
    try:
        die_with_parent()
        init_worker(binding)
    except BaseException as exc:  # noqa: BLE001 - the parent reports why this worker could not start
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    _warm(warmup)
    conn.send(None)  # ready: a call's time limit must not count the worker's start-up (imports)
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        fn, args = task
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - the parent's future gets it
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            conn.send((False, RuntimeError(f"could not send the result back: {type(exc).__name__}: {exc}")))


@dataclass
class _Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    timeout: float | None
    future: Future = field(default_factory=Future)


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    task: _Task | None = None
    deadline: float = float("inf")
    ready: bool = False
    why: str | None = None  # what its set-up raised, when it could not start
    gone: bool = False  # stopped for good: the pool could not start workers


class ProcessBackend(Backend):
    """A pool of spawned worker processes with one torch thread each, each watched on its own.

    Unlike ``ProcessPoolExecutor`` (where one dead worker breaks the pool and fails every running
    call), a worker that dies fails only its own call (WorkerLost) and one that runs past its call's
    time limit is killed (TrialTimeout); either is replaced by a fresh process. ``spawn`` rather
    than ``fork``: forking a process that has initialised torch's thread pools can deadlock.
    A dispatcher thread hands queued calls to idle workers and completes the futures.

    ``bindings`` (nago_spec.device.worker_bindings) gives worker ``i`` its device for its whole
    life, a replacement included; their number is the number of workers. ``warmup`` runs in every
    fresh worker before it is ready (loading the spec, its callables and the data), so a call's time
    limit never counts it.

    A worker that dies before it is ready is started again, at most ``START_TRIES`` times in a row
    in its slot; then every queued and later call fails with WorkerStartFailed, its reason the last
    death's (its own traceback is on stderr): a broken start-up would otherwise respawn forever.
    """

    #: Deaths in a row during start-up, in one slot, after which the pool gives up.
    START_TRIES = 3

    def __init__(self, workers: int | None = None, bindings: list[Binding] | None = None,
                 warmup: Warmup | None = None):
        self.workers = len(bindings) if bindings else workers or os.cpu_count() or 1
        self._bindings = bindings or [None] * self.workers
        self._warmup = warmup
        self._ctx = multiprocessing.get_context("spawn")
        self._queue: collections.deque[_Task] = collections.deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._closing = False
        self._broken: WorkerStartFailed | None = None
        self._failed_starts = [0] * self.workers
        self._pool = [self._spawn(i) for i in range(self.workers)]
        self._thread = threading.Thread(target=self._dispatch, name="nago-process-backend", daemon=True)
        self._thread.start()

    def _spawn(self, i: int) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_serve, args=(child, self._bindings[i], self._warmup), daemon=True,
                                    name=f"nago-worker-{i}")
        process.start()
        child.close()
        return _Worker(process, parent)

    def submit(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Future:
        task = _Task(fn, args, timeout)
        with self._lock:
            if self._closing:
                raise RuntimeError("submit on a closed backend")
            if self._broken is not None:
                task.future.set_exception(self._broken)
                return task.future
            self._queue.append(task)
        self._wake_w.send_bytes(b"")
        return task.future

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake_w.send_bytes(b"")
        self._thread.join()

    # -- the dispatcher thread ------------------------------------------------------------------
    def _dispatch(self) -> None:
        while True:
            with self._lock:
                closing = self._closing
                if not closing:
                    for w in self._pool:
                        if w.ready and w.task is None and self._queue:
                            self._start(w, self._queue.popleft())
            if closing:
                return self._shutdown()
            live = [w for w in self._pool if not w.gone]
            busy = [w for w in live if w.task is not None]
            starting = [w for w in live if not w.ready]
            deadline = min((w.deadline for w in busy), default=float("inf"))
            wait = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
            ready = multiprocessing.connection.wait(
                [self._wake_r] + [w.conn for w in busy + starting] + [w.process.sentinel for w in live],
                timeout=wait,
            )
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
            for i, w in enumerate(self._pool):
                if w.gone:
                    continue
                if not w.ready and w.conn in ready:
                    try:
                        w.why = w.conn.recv()
                        w.ready = w.why is None
                    except (EOFError, OSError):  # died while starting: the sentinel says so below
                        pass
                    if w.ready:
                        self._failed_starts[i] = 0
                if w.task is not None and w.conn in ready:
                    self._collect(i, w)
                elif not w.ready and (w.why is not None or w.process.sentinel in ready):
                    self._start_failed(i, w)
                elif w.process.sentinel in ready:
                    self._replace(i, WorkerLost(self._death(w)))
                elif w.task is not None and time.monotonic() >= w.deadline:
                    self._replace(i, TrialTimeout(w.task.timeout))

    def _start(self, w: _Worker, task: _Task) -> None:
        if not task.future.set_running_or_notify_cancel():
            return
        try:
            w.conn.send((task.fn, task.args))
        except Exception as exc:  # noqa: BLE001 - unpicklable arguments: the call's own failure
            task.future.set_exception(exc)
            return
        w.task = task
        w.deadline = time.monotonic() + task.timeout if task.timeout is not None else float("inf")

    def _collect(self, i: int, w: _Worker) -> None:
        try:
            ok, value = w.conn.recv()
        except (EOFError, OSError):  # the process died while (or instead of) answering
            w.process.join(timeout=5)
            return self._replace(i, WorkerLost(self._death(w)))
        task, w.task, w.deadline = w.task, None, float("inf")
        (task.future.set_result if ok else task.future.set_exception)(value)

    def _replace(self, i: int, error: BaseException) -> None:
        """Kill worker ``i`` if alive, fail its call with ``error``, start a fresh process in its place."""
        w = self._pool[i]
        if w.process.is_alive():
            w.process.kill()
        w.process.join()
        w.conn.close()
        if w.task is not None:
            log.warning("worker %s: %s", w.process.pid, error)
            w.task.future.set_exception(error)
        self._pool[i] = self._spawn(i)

    def _start_failed(self, i: int, w: _Worker) -> None:
        """Worker ``i`` died, or its set-up raised, before it was ready: start it again, or give up
        after START_TRIES such deaths in a row."""
        why = w.why or self._death(w)
        self._failed_starts[i] += 1
        if self._broken is None and self._failed_starts[i] < self.START_TRIES:
            log.warning("worker %s could not start (%s); starting it again", w.process.pid, why)
            return self._replace(i, WorkerLost(why))
        w.process.kill()
        w.process.join()
        w.conn.close()
        w.gone = True
        if self._broken is not None:
            return
        self._broken = WorkerStartFailed(
            f"the process backend's workers could not start ({self.START_TRIES} tries): {why}, before taking a "
            f"trial{_main_hint()}")
        with self._lock:
            queued, self._queue = list(self._queue), collections.deque()
        for task in queued:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(self._broken)

    @staticmethod
    def _death(w: _Worker) -> str:
        w.process.join(timeout=5)
        code = w.process.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return f"worker process {w.process.pid} died ({how})"

    def _shutdown(self) -> None:
        for task in self._queue:
            task.future.cancel()
        self._queue.clear()
        for w in self._pool:
            if w.task is not None:  # abandoned: nobody waits for it any more
                w.process.kill()
                w.task.future.cancel() or w.task.future.set_exception(WorkerLost("backend closed"))
            else:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self._pool:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()


def _main_hint() -> str:
    """Why a spawned worker may die while starting, when this process runs a script: a worker imports
    the script again, and one that starts a study outside ``if __name__ == "__main__":`` fails."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or ""
    if getattr(main, "__spec__", None) is not None or not script.endswith(".py"):  # python -m, a console script
        return "; its error is printed above"
    return (f"; its error is printed above. Each worker imports {os.path.basename(script)} again: code that "
            'starts a study must run under if __name__ == "__main__":')


# -- Ray --------------------------------------------------------------------------------------------

_RAY_THREADS: int | None = None
#: The CUDA_VISIBLE_DEVICES this Ray worker's CUDA was initialised under (None: not initialised yet).
_RAY_VISIBLE_AT_INIT: tuple[str, ...] | None = None
#: The warm-ups this Ray worker process has run.
_RAY_WARMED: set[str] = set()


@dataclass(frozen=True)
class _TimedOut:
    """What a Ray task returns when its own alarm stopped the call (a BaseException would kill the worker)."""

    seconds: float


def _ray_call(threads: int, timeout: float | None, gpu_share: float | None, warmup: Warmup | None,
              fn: Callable[..., Any], *args: Any) -> Any:
    """A Ray task: the worker set-up once per Ray worker process, the task's device (with
    ``gpu_share``, the GPU Ray assigned it, its memory capped at that share when it is a fraction),
    the warm-up once per process, then the call under its time limit, which starts here, not at
    submission (a fresh Ray worker may take seconds to start)."""
    global _RAY_THREADS, _RAY_VISIBLE_AT_INIT
    import torch

    if _RAY_THREADS is None:
        init_worker()
        torch.set_num_threads(threads)
        _RAY_THREADS = threads
    ray = sys.modules["ray"]
    ids = ray.get_gpu_ids() if gpu_share is not None else []
    if ids:
        share = SHARED_MEMORY_SHARE * gpu_share if gpu_share < 1 else None
        set_binding(Binding(ray_device(ids, _RAY_VISIBLE_AT_INIT), None, share, str(ids[0])))
    else:
        set_binding(Binding("cpu"))
    if warmup is not None and repr(warmup) not in _RAY_WARMED:
        _warm(warmup)
        _RAY_WARMED.add(repr(warmup))
    try:
        with _alarm(timeout):
            return fn(*args)
    except TrialTimeout:
        return _TimedOut(timeout)
    finally:
        if ids and _RAY_VISIBLE_AT_INIT is None and torch.cuda.is_initialized():
            _RAY_VISIBLE_AT_INIT = tuple(os.environ.get("CUDA_VISIBLE_DEVICES", "").split(","))


#: What a user joining a cluster of token authentication (the default of `ray start` since Ray 2.5x)
#: must set: Ray enables it by itself only for a cluster it finds on this machine, never for an address.
RAY_AUTH_HINT = ("a cluster with token authentication (the default of `ray start`) needs RAY_AUTH_MODE=token "
                 "and its token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token) in this environment")


def running_cluster(ray: Any) -> str | None:
    """The address of the Ray cluster a plain ``ray.init()`` would join: RAY_ADDRESS, else the one a
    `ray start` on this machine left running; None when there is none (a local instance is then
    started)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without the helper: as if no cluster ran
        return None
    try:
        return canonicalize_bootstrap_address(None)
    except Exception:  # noqa: BLE001 - a malformed RAY_ADDRESS: ray.init reports it below
        return os.environ.get("RAY_ADDRESS") or None


def _listening(address: str, where: str, timeout: float = 5.0) -> None:
    """NagoError unless something accepts a TCP connection at ``address`` ("host:port") within
    ``timeout`` seconds: Ray itself retries an unreachable cluster for minutes without a word. Other
    forms ("auto", "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise NagoError(f"{where}: no Ray cluster answers there ({exc.strerror or exc}); start it (`ray start "
                        "--head`) or give the address `ray start` printed") from None


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address``; without one, the cluster running here (RAY_ADDRESS or a `ray
    start` on this machine), else start a local instance of this machine's CPUs. Failures are one
    NagoError naming the address and, when it may be the cause, the authentication setting."""
    found = running_cluster(ray) if address is None else None
    if address is not None:
        where = f"[run].address = {address!r}"
    elif os.environ.get("RAY_ADDRESS"):
        where = f"RAY_ADDRESS = {os.environ['RAY_ADDRESS']!r}"
    else:
        where = f"the Ray cluster running on this machine ({found})" if found else "a local Ray instance"
    if address or found:
        _listening(address or found, where)
    try:
        if address or found:  # a cluster's resources are its own: num_cpus and num_gpus must not be given
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, AuthenticationError, ValueError: all one line
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = ""
        if (address or found) and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = f"; {RAY_AUTH_HINT}"
        raise NagoError(f"{where}: could not join it ({type(exc).__name__}: {why}){hint}") from None


class RayBackend(Backend):
    """Ray tasks, each claiming ``num_cpus`` and ``num_gpus``; ``address`` joins an existing cluster.

    Without ``address`` it joins the cluster running on this machine (RAY_ADDRESS, or a `ray start`
    here), as a plain ``ray.init()`` does, else starts a local Ray instance (stopped on close). ``workers`` bounds
    the calls in flight (default: the cluster's CPUs divided by ``num_cpus``, and its GPUs divided by
    ``num_gpus`` when tasks claim GPUs). A task runs with ``max(1, int(num_cpus))`` torch threads;
    one that claims GPUs (``use_gpu``) trains on the first GPU Ray assigned it, and a fractional
    claim caps its share of that GPU's memory, so several small networks share a GPU safely. On a
    cluster the run directory, the data and any callable files must be on a file system every node
    sees at the same path, and nago-spec installed in the nodes' environment. A time limit runs from the task's start inside the worker
    (an alarm, as in the local backend); a call stuck in C code is cancelled by the driver with
    ``force=True``, killing its worker, ``HARD_LIMIT_GRACE`` seconds later. A worker or node that dies
    fails the call with WorkerLost.
    """

    def __init__(self, workers: int | None = None, *, address: str | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, use_gpu: bool = True, warmup: Warmup | None = None):
        try:
            import ray
        except ImportError as exc:
            raise NagoError("the ray backend needs Ray: pip install -c constraints.txt 'nago-spec[ray]'") from exc
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            _connect(ray, address)
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1.0) // num_cpus)
        if num_gpus > 0:
            gpus = resources.get("GPU", 0.0)
            if gpus < num_gpus:
                if self._owns:
                    ray.shutdown()
                raise NagoError(f"[run].num_gpus = {num_gpus:g}: the Ray cluster has {gpus:g} GPU(s), so no trial "
                                "could ever start")
            slots = min(slots, int(gpus // num_gpus))
        self.workers = workers or max(1, slots)
        self._threads = max(1, int(num_cpus))
        self._gpu_share = num_gpus if num_gpus > 0 and use_gpu else None
        self._warmup = warmup
        self._remote = ray.remote(_ray_call).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
        self._timers: list[threading.Timer] = []

    #: After the task's own alarm, how long the driver waits before it kills the worker: a call stuck in
    #: C code ignores the alarm, and the task's start (worker start-up, queueing) is not timed by it.
    HARD_LIMIT_GRACE = 60.0

    def submit(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Future:
        ray = self._ray
        ref = self._remote.remote(self._threads, timeout, self._gpu_share, self._warmup, fn, *args)
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        done = threading.Lock()  # the first of the task's end and its timer settles the future

        def settle(ray_future: Future) -> None:
            if not done.acquire(blocking=False):
                return
            exc = ray_future.exception()
            if exc is None:
                result = ray_future.result()
                if isinstance(result, _TimedOut):
                    fut.set_exception(TrialTimeout(result.seconds, killed=False))
                else:
                    fut.set_result(result)
            elif isinstance(exc, ray.exceptions.RayTaskError):
                fut.set_exception(exc.as_instanceof_cause())
            elif isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                  ray.exceptions.OutOfMemoryError, ray.exceptions.LocalRayletDiedError)):
                fut.set_exception(WorkerLost(f"Ray worker died: {type(exc).__name__}: {exc}"))
            else:
                fut.set_exception(exc)

        if timeout is not None:
            def expire() -> None:
                if done.acquire(blocking=False):
                    ray.cancel(ref, force=True)
                    fut.set_exception(TrialTimeout(timeout))

            timer = threading.Timer(timeout + max(self.HARD_LIMIT_GRACE, timeout), expire)
            timer.daemon = True
            timer.start()
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            fut.add_done_callback(lambda _: timer.cancel())
        ref.future().add_done_callback(settle)
        return fut

    def close(self) -> None:
        for t in self._timers:
            t.cancel()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


#: [run].backend -> backend class (the built-ins registered by reference in nago_spec.registry).
BACKENDS = _BACKENDS


def make_backend(name: str, workers: int | None, **options: Any) -> Backend:
    """The backend ``name``; ``options`` go to those that take them: Ray's address, num_cpus, num_gpus
    and use_gpu, the process pool's ``bindings``, the local backend's ``binding``; every built-in
    backend takes ``warmup``."""
    if name == "ray":
        return RayBackend(workers, **options)
    if name == "process":
        return ProcessBackend(workers, options.get("bindings"), options.get("warmup"))
    if name == "local":
        return LocalBackend(workers, options.get("binding"), options.get("warmup"))
    return BACKENDS.get(name)(workers)
