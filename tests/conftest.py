"""Shared test fixtures: one torch thread, and the real data sets in ../shared/data when present."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

# A suite started as a background job of a non-interactive shell (`cmd &`, nohup's too) inherits SIGINT
# ignored, and so does every `nago run` it starts: Python installs no KeyboardInterrupt handler where
# SIGINT is ignored at start. The tests that stop a run with SIGINT (as Ctrl-C in a terminal does) then
# waited forever: the "retry-counter hang" of issue 23, whose signal masks showed SIGINT in SigIgn. The
# tests give their children a terminal's disposition: a handled signal is reset to the default at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder beside the repository; skips where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (only present beside the dev checkout)")
    return SHARED_DATA


def load_benchmark(name: str):
    """The script benchmarks/NAME.py as a module (benchmarks/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TINY_SPEC = """
version = 1
name = "tiny"
seed = 0

[data]
dataset = "digits"
val_fraction = 0.2

[space]
kind = "hnag"
param_budget = 3000
head_width = 16

[space.top]
nodes = [3, 4]
k = 2
p = [0.1, 0.9]
[space.mid]
nodes = [1, 2]
p = 0.5
[space.bottom]
nodes = 3
k = 2
p = [0.1, 0.9]

[train]
epochs = 1
batch_size = 64
lr = 0.1

[[objectives]]
name = "error"
[[objectives]]
name = "params"

[search]
strategy = "bo"
budget = 4
initial = 2
batch = 2

[run]
backend = "local"

[export]
final_epochs = 1
max_models = 1
samples = 2
"""


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    """A network spec that runs end to end in seconds (digits, 4 trials of one epoch)."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture
def tiny_search(tmp_path) -> Path:
    """tiny_spec without the final training and export (5-9 s a run), for tests of the search alone."""
    path = tmp_path / "tiny_search.toml"
    path.write_text(TINY_SPEC.replace("[export]\n", "[export]\nonnx = false\n"))
    return path


def params_spec(path: Path, module: str, function: str, tables: str, *, params: tuple[str, ...] = ("x1",),
                seed: int = 0) -> Path:
    """Write a plain-parameter spec to ``path``: float ``params`` in [0, 1], objectives f1 and f2 both
    measured by ``function`` of the Python file ``module`` (its text) written beside it as
    ``<path stem>_objective.py``, then ``tables`` ([search], [run], ... as TOML)."""
    objective = path.with_name(f"{path.stem}_objective.py")
    objective.write_text(textwrap.dedent(module))
    space = "\n".join(f"{p} = {{ type = \"float\", low = 0.0, high = 1.0 }}" for p in params)
    ref = f"{objective.name}:{function}"
    path.write_text(f'version = 1\nname = "{path.stem}"\nseed = {seed}\n[space]\nkind = "params"\n[space.params]\n'
                    f'{space}\n[[objectives]]\nname = "f1"\ncallable = "{ref}"\n[[objectives]]\nname = "f2"\n'
                    f'callable = "{ref}"\n' + textwrap.dedent(tables))
    return path


def install_plugin(folder: Path, monkeypatch, module: str, source: str, entry_points: str, registries) -> None:
    """A real installed distribution on sys.path: ``module``.py with ``source``, and a dist-info whose
    entry_points.txt is ``entry_points``. Each of the (global) ``registries`` gets this test's own
    bookkeeping, so the plug-ins are gone after it."""
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, module, raising=False)
    for registry in registries:
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_seen", set())
        monkeypatch.setattr(registry, "_failed", {})


def trial_counts(db: Path) -> dict[str, int]:
    """Trials per state, read with a plain connection (the run holds the store; WAL lets us read)."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=5.0)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        conn.close()


def kill_run_at(spec: Path, out: Path, k: int, timeout: float = 60.0) -> None:
    """Start ``nago run`` in a new session and SIGKILL it, with every worker it started, once ``k``
    trials are COMPLETE and one is RUNNING."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nago_spec.runners.cli", "run", str(spec), "--out", str(out), "--progress", "quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            c = trial_counts(out / "study.db")
            if c.get("COMPLETE", 0) >= k and c.get("RUNNING", 0):
                os.kill(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before the kill at {k} complete trials: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no kill point at {k} complete trials within {timeout:g} s (states: {c})")
            time.sleep(0.005)
        proc.wait()
    finally:
        try:  # the pool's workers of the process backend, which we started too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
