"""One owner per run directory: an OS file lock (flock) on ``RUN_DIR/.nago.lock``, held by the process
that runs or exports the run and released by the operating system when that process ends, however it
ends (a kill -9 leaves no stale marker). The file names its owner (pid, host, start time) for the
one-line refusal a second process gets and for ``nago status``.

Where the platform has no flock (Windows), nothing is locked.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nago_spec.errors import RunBusy, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".nago.lock"


@contextmanager
def owning(run_dir: Path, what: str = "run") -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; RunBusy, naming the live owner, when another process
    holds it. Re-entrant within one process (an export inside a run)."""
    if fcntl is None or _held_here.get(run_dir.resolve()):
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only file system, no permission: nothing can be written there
        raise StoreError(f"{run_dir}: cannot {what} here: {exc.strerror.lower()} ({exc.filename}); give a "
                         "directory that can be written") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _describe(_read(fd))
        os.close(fd)
        raise RunBusy(f"{run_dir}: in use by {who}; wait for it to end or stop it "
                      "(it resumes where it stopped), or give another directory") from None
    key = run_dir.resolve()
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                 "since": time.time()}).encode())
        _held_here[key] = True
        yield
    finally:
        _held_here.pop(key, None)
        os.close(fd)  # releases the lock


def owner(run_dir: Path) -> dict[str, Any] | None:
    """The live owner of ``run_dir`` (``{"pid", "host", "what", "since"}``), or None when no process
    holds it. Opens the lock file read-only: a read-only run directory can be asked."""
    if fcntl is None:
        return None
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {"pid": None, "host": None, "what": "run", "since": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_owner(info: dict[str, Any]) -> str:
    """``info`` (owner()) as "the run of pid 4242 on host vm, since 12:03:07"."""
    return _describe(info)


#: run directories this process holds (so that an export inside a run does not refuse itself)
_held_here: dict[Path, bool] = {}


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return "another process"
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(info["since"])) if info.get("since") else ""
    return f"the {info.get('what', 'run')} of pid {info['pid']} on host {info.get('host', '?')}{since}"
